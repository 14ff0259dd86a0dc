"""Match a delivery receipt to the segment it reports on, by the carrier's message id.

SMPP 3.4 says the receipt carries the id that submit_sm_resp returned, but carriers differ: many return a
hex id in submit_sm_resp and write the same number in decimal in the receipt's text (`id:…`), others repeat
the exact string, some pad with leading zeros or change the case. Each carrier is configured with how its
receipts write the id (`IdForm`):

- "hex": the receipt has the resp's id in the same digits (case and leading zeros aside); this also fits the
  carriers that use the same decimal string in both places;
- "decimal": the receipt has the decimal value of the resp's id read as hex (an id with a-f in it, as the
  receipted_message_id TLV may carry beside a decimal text form, is still read as hex);
- "auto": either; a receipt is matched only when exactly one submit fits, else it is unmatched as ambiguous.

Ids that are not hex digits at all (UUIDs, "msg-17") are compared as text, case-folded. Ids are only unique
per carrier, so the index is keyed by carrier. The index is a value; `remember` returns a new one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from smsflow.records import ReceiptReading

IdForm = Literal["hex", "decimal", "auto"]
_HEX = re.compile(r"[0-9a-fA-F]+")
_DEC = re.compile(r"[0-9]+")

Key = tuple[str, int | str]


@dataclass(frozen=True)
class SegmentRef:
    message_id: str
    seq: int


@dataclass(frozen=True)
class Matched:
    segment: SegmentRef
    read_as: str
    """How the receipt's id was read ("hex", "decimal", "text"), for the status event and debugging."""


@dataclass(frozen=True)
class Unmatched:
    carrier: str
    receipt_id: str
    reason: str


@dataclass(frozen=True)
class SubmitIndex:
    by_key: Mapping[Key, SegmentRef] = field(default_factory=dict)

    def remember(self, carrier: str, resp_message_id: str, segment: SegmentRef) -> SubmitIndex:
        """Index the id from a submit_sm_resp (its hex reading when it is hex digits, its text otherwise)."""
        return replace(self, by_key={**self.by_key, (carrier, resp_key(resp_message_id)): segment})

    def match(self, carrier: str, receipt: ReceiptReading, form: IdForm) -> Matched | Unmatched:
        rid = receipt["message_id"].strip()
        if not rid:
            return Unmatched(
                carrier, rid, "the receipt has no message id (neither the TLV nor id: in the text)"
            )
        hits: dict[SegmentRef, str] = {}
        for read_as, key in _receipt_keys(rid, form):
            ref = self.by_key.get((carrier, key))
            if ref is not None:
                hits.setdefault(ref, read_as)
        if len(hits) == 1:
            ref, read_as = next(iter(hits.items()))
            return Matched(ref, read_as)
        if hits:
            which = ", ".join(f"{r.message_id}#{r.seq} (as {how})" for r, how in hits.items())
            return Unmatched(carrier, rid, f"id {rid} is ambiguous under 'auto': it fits {which}")
        readings = ", ".join(how for how, _ in _receipt_keys(rid, form)) or "no reading"
        return Unmatched(
            carrier, rid, f"no submit to {carrier} has id {rid} (read as {readings}, id form {form!r})"
        )


def resp_key(resp_id: str) -> int | str:
    resp_id = resp_id.strip()
    return int(resp_id, 16) if _HEX.fullmatch(resp_id) else resp_id.casefold()


def _receipt_keys(rid: str, form: IdForm) -> list[tuple[str, int | str]]:
    if not _HEX.fullmatch(rid):
        return [("text", rid.casefold())]
    decimal = _DEC.fullmatch(rid) is not None
    keys: list[tuple[str, int | str]] = []
    # A "decimal" carrier's id with a-f in it can only be hex (the TLV form, beside a decimal text form).
    if form in ("hex", "auto") or not decimal:
        keys.append(("hex", int(rid, 16)))
    if form in ("decimal", "auto") and decimal:
        keys.append(("decimal", int(rid, 10)))
    return keys
