"""Record keys chosen for co-partitioning (see ARCHITECTURE.md, "Key by conversation").

Every segment and every copy of one SMS must hash to the same partition of ``sms.raw.v1`` even when the
copies came over different carriers that write numbers differently (``+852...``, ``00852...``, national
form on a CN route). So the key uses the number normalised to E.164 digits wherever that is knowable from
the address alone plus the carrier's default region.
"""

from __future__ import annotations

from smsflow.numbers import normalize_number


def address_key(addr: str, ton: int, npi: int, default_region: str | None) -> str:
    info = normalize_number(addr, ton, npi, default_region)
    if info.e164:
        return info.e164.lstrip("+")
    return addr.strip().upper()


def conversation_key(
    source: str,
    source_ton: int,
    source_npi: int,
    dest: str,
    dest_ton: int,
    dest_npi: int,
    default_region: str | None,
) -> str:
    return (
        f"{address_key(dest, dest_ton, dest_npi, default_region)}|"
        f"{address_key(source, source_ton, source_npi, default_region)}"
    )
