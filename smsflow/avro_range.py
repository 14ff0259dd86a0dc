"""What an Avro number can hold, and reading carrier-supplied numbers into it without ever raising.

Every number ingest writes comes either from a fixed-size wire field (an SMPP octet, a UDH counter:
always in range) or from text a carrier or a sender typed (a receipt's ``sub:``/``dlvrd:`` counters,
a validity "valid for 9999 days"). The second kind goes through this module: a value the schema's
type cannot hold becomes None (the fields are nullable), and a digit string is never converted
beyond ``MAX_DIGITS`` — Python refuses int/str conversions past 4,300 digits with an exception,
and a long conversion is quadratic anyway.

Every number ingest writes, and why it fits (checked by the fuzz targets, docs/fuzzing.md):

- DeliveryReceipt submitted, delivered (int?): typed by the carrier, read with ``read_count``.
- InboundMessage otp_validity_seconds (int?): typed by the sender, passed through ``avro_int``.
- esm_class, data_coding, segment_count, missing_segments, UDH iei (int): PDU, UDH or SAR octets (≤ 255).
- from_calling_code, to_calling_code (int?): libphonenumber's calling codes (≤ 3 digits).
- received_at, completed_at, source_offset (long): the raw record's long, the clock, a Kafka offset;
  status, source_partition (int): constants and a Kafka partition.
"""

from __future__ import annotations

import re

INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # Avro "int": 32-bit signed
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1  # Avro "long": 64-bit signed
MAX_DIGITS = 20  # enough for any long; longer digit strings are not numbers we can store

_DECIMAL = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


def avro_int(value: int | None) -> int | None:
    """``value`` when an Avro int holds it, else None."""
    if value is None or not INT_MIN <= value <= INT_MAX:
        return None
    return value


def avro_long(value: int | None) -> int | None:
    """``value`` when an Avro long holds it, else None."""
    if value is None or not LONG_MIN <= value <= LONG_MAX:
        return None
    return value


def read_count(text: str | None) -> int | None:
    """A non-negative decimal counter as a carrier wrote it (``001``), or None when it is not one
    (letters, signs, Unicode digits, more than ``MAX_DIGITS`` digits) or does not fit an Avro int."""
    if text is None or _DECIMAL.fullmatch(text) is None:
        return None
    return avro_int(int(text))
