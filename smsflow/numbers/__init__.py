"""Phone numbers: an SMPP address (digits + TON/NPI) read as E.164, its kind, country and allocated operator.

Its own package, not part of enrichment, so the connector (which keys records by normalised numbers) loads
libphonenumber only, never the language-detection model.
"""

from smsflow.numbers.normalize import NUMBER_KINDS, NumberInfo, normalize_number
from smsflow.numbers.operators import UNKNOWN_OPERATOR

__all__ = ["NUMBER_KINDS", "UNKNOWN_OPERATOR", "NumberInfo", "normalize_number"]
