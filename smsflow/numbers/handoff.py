"""The connector's reading of a PDU's two addresses, handed to the ingest stage inside ``sms.raw.v1``.

The connector reads both addresses for the record key (smsflow/keys.py); a cold read is a libphonenumber
parse, type and operator look-up (~30-50 µs), and every new sender is cold. Before this hand-off the ingest
stage read the same two addresses again for the inbound record. It now takes the connector's reading where
it is the reading it would make itself: the same address text, TON and region (the carrier's
``default_region`` in each process's config). Anything else (an older connector, another writer of
``sms.raw.v1``, a config that differs between the two processes, a value that is not well formed) is read
again, so what a message says never depends on which process read its numbers.

The field is compact JSON in an Avro string, not a nested Avro record: fastavro spends ~0.7 µs per field, and
16 more fields cost more to write and read (~23 µs) than half of what the hand-off saves. Shape::

    [region, source, destination]   each side: [address, ton, e164, kind, country, calling_code, operator]

(``display`` is not sent: it is the E.164 form, or the address NFKC-normalised and stripped, as
normalize.py makes it.) Whoever may write ``sms.raw.v1`` is trusted as before: such a writer can already
put any address in the PDU itself.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson

from smsflow.numbers.normalize import NUMBER_KINDS, NumberInfo, normalize_number

_KINDS = frozenset(NUMBER_KINDS)
_MAX_CALLING_CODE = 999  # ITU-T E.164 country codes have 1 to 3 digits


def read_pair(
    source: str, source_ton: int, dest: str, dest_ton: int, region: str | None
) -> tuple[NumberInfo, NumberInfo, str]:
    """Both addresses read with ``region``, and the raw record's ``numbers`` field that hands them on."""
    region = region.upper() if region else None
    src = normalize_number(source, source_ton, 0, region)
    dst = normalize_number(dest, dest_ton, 0, region)
    return src, dst, orjson.dumps([region, _side(src, source_ton), _side(dst, dest_ton)]).decode()


def _side(info: NumberInfo, ton: int) -> list[Any]:
    return [info.original, ton, info.e164, info.kind, info.country, info.calling_code, info.operator]


def handed(
    numbers: str | None,
    source: str,
    source_ton: int,
    dest: str,
    dest_ton: int,
    region: str | None,
) -> tuple[NumberInfo, NumberInfo] | None:
    """The handed-on reading of the two addresses, or None when it is absent or not exactly the one this
    process would make (the caller then reads them itself)."""
    if not numbers:
        return None
    try:
        value = orjson.loads(numbers)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list) or len(value) != 3:
        return None
    region = region.upper() if region else None
    if value[0] != region:
        return None
    src = _info(value[1], source, source_ton)
    dst = _info(value[2], dest, dest_ton)
    if src is None or dst is None:
        return None
    return src, dst


def _info(side: Any, address: str, ton: int) -> NumberInfo | None:
    if not isinstance(side, list) or len(side) != 7:
        return None
    original, side_ton, e164, kind, country, calling_code, operator = side
    if original != address or type(side_ton) is not int or side_ton != ton:
        return None
    if (
        kind not in _KINDS
        or not isinstance(operator, str)
        or not (e164 is None or (isinstance(e164, str) and e164.startswith("+")))
        or not (country is None or isinstance(country, str))
        or not (calling_code is None or (type(calling_code) is int and 0 < calling_code <= _MAX_CALLING_CODE))
    ):
        return None
    display = e164 if e164 else unicodedata.normalize("NFKC", address).strip()
    return NumberInfo(address, e164, display, kind, country, calling_code, operator)
