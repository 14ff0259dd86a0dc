"""Record keys chosen for co-partitioning (see ARCHITECTURE.md, "Key by conversation").

Every segment and every copy of one SMS must hash to the same partition of ``sms.raw.v1`` even when the
copies came over different carriers that write numbers differently (``+852...``, ``00852...``, national
form on a CN route). So the key uses the number normalised to E.164 digits wherever that is knowable from
the address alone plus the carrier's default region.
"""

from __future__ import annotations

from smsflow.numbers import NumberInfo, normalize_number
from smsflow.smpp.address import Address


def number_key(info: NumberInfo) -> str:
    """One side of the key, from the address as read (``info.original`` is the carrier's text)."""
    if info.e164:
        return info.e164.lstrip("+")
    return info.original.strip().upper()


def address_key(addr: Address, default_region: str | None) -> str:
    return number_key(normalize_number(addr.digits, addr.ton, addr.npi, default_region))


def conversation_key(source: Address, dest: Address, default_region: str | None) -> str:
    """``destination|source``, each normalised: the key of every ``sms.raw.v1`` record."""
    return conversation_key_of(
        normalize_number(source.digits, source.ton, source.npi, default_region),
        normalize_number(dest.digits, dest.ton, dest.npi, default_region),
    )


def conversation_key_of(source: NumberInfo, dest: NumberInfo) -> str:
    """The same key from addresses already read (the connector reads them once for key and record)."""
    return f"{number_key(dest)}|{number_key(source)}"
