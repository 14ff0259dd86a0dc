"""What the simulated carrier does with a submit_sm: answer it, remember it, loop probes back, send receipts.

Every submit_sm is written to the ledger, answered or not, so a test of outbound traffic can check that
nothing was submitted twice and that what was answered with an error was not counted as sent. A submit to one
of the configured *test numbers* is a probe: the carrier hands it back as an MO deliver_sm on the same account
after the probe latency (the health stage times that round trip), unless the ``probe_loss`` fault eats it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from smsflow.smpp.constants import MessageState, TlvTag
from smsflow.smpp.pdu import Pdu, Tlv, make_tlv

MessageIdFormat = Literal["hex", "decimal"]
SubmitOutcome = Literal["accepted", "error", "unanswered"]
ProbeOutcome = Literal["pending", "looped", "lost"]


def digits(number: str) -> str:
    """A number as carriers compare it: without '+' or spaces."""
    return "".join(ch for ch in number if ch.isdigit())


@dataclass
class SubmitRecord:
    """One submit_sm as the carrier saw it and what it answered."""

    account: str
    sequence_number: int
    source: str
    dest: str
    short_message: bytes
    data_coding: int
    registered_delivery: int
    received_at: float  # time.monotonic()
    outcome: SubmitOutcome
    status: int | None  # None: never answered (the "silent" fault)
    message_id: str = ""
    probe: ProbeOutcome | None = None  # None: not a probe
    looped_at: float | None = None  # when the MO copy of a probe was queued for delivery
    receipt_queued: bool = False

    @property
    def content(self) -> tuple[str, str, bytes, int]:
        return (self.source, self.dest, self.short_message, self.data_coding)

    def to_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "sequence_number": self.sequence_number,
            "source": self.source,
            "dest": self.dest,
            "short_message_hex": self.short_message.hex(),
            "data_coding": self.data_coding,
            "outcome": self.outcome,
            "status": self.status,
            "message_id": self.message_id,
            "probe": self.probe,
        }


class SubmitLedger:
    """Every submit_sm received, in order."""

    def __init__(self) -> None:
        self.records: list[SubmitRecord] = []

    def add(self, record: SubmitRecord) -> SubmitRecord:
        self.records.append(record)
        return record

    def for_account(self, account: str) -> list[SubmitRecord]:
        return [r for r in self.records if r.account == account]

    def accepted(self, account: str | None = None) -> list[SubmitRecord]:
        return [r for r in self.records if r.outcome == "accepted" and account in (None, r.account)]

    def submitted_twice(self) -> list[tuple[tuple[str, str, bytes, int], int]]:
        """Contents (source, dest, short_message, data_coding) accepted more than once, with their counts:
        what an outbound test expects to be empty."""
        counts = Counter(r.content for r in self.accepted())
        return [(content, n) for content, n in counts.items() if n > 1]

    def summary(self, account: str) -> dict[str, int]:
        recs = self.for_account(account)
        out = Counter(r.outcome for r in recs)
        probes = Counter(r.probe for r in recs if r.probe is not None)
        return {
            "submits": len(recs),
            "accepted": out["accepted"],
            "errors": out["error"],
            "unanswered": out["unanswered"],
            "probes_looped": probes["looped"],
            "probes_lost": probes["lost"],
            "probes_pending": probes["pending"],
        }


def format_message_id(n: int, fmt: MessageIdFormat) -> str:
    return f"{n:08X}" if fmt == "hex" else str(n)


def submit_text(pdu: Pdu) -> bytes:
    """The message octets of a submit_sm: message_payload when present (SMPP 3.4 lets it replace
    short_message), else short_message."""
    payload = pdu.tlv(TlvTag.message_payload)
    if payload is not None:
        return payload
    value = pdu.params.get("short_message", b"")
    return value if isinstance(value, bytes) else str(value).encode("latin-1")


def _smpp_date(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%y%m%d%H%M")


def receipt_deliver_sm(
    record: SubmitRecord, submitted_wall: float
) -> tuple[dict[str, int | str | bytes], list[Tlv]]:
    """A DELIVRD delivery receipt for an accepted submit: the de-facto text form and the SMPP 3.4 TLVs.

    Addresses are swapped (the receipt comes from the handset's side), esm_class 0x04 marks it a receipt."""
    preview = record.short_message[:20].decode("latin-1", errors="replace")
    now = time.time()
    text = (
        f"id:{record.message_id} sub:001 dlvrd:001 submit date:{_smpp_date(submitted_wall)} "
        f"done date:{_smpp_date(now)} stat:DELIVRD err:000 text:{preview}"
    )
    params: dict[str, int | str | bytes] = {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": record.dest,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": record.source,
        "esm_class": 0x04,
        "data_coding": 0,
        "short_message": text.encode("latin-1", errors="replace"),
    }
    tlvs = [
        make_tlv(TlvTag.receipted_message_id, record.message_id),
        make_tlv(TlvTag.message_state, int(MessageState.DELIVERED)),
    ]
    return params, tlvs


def probe_deliver_sm(record: SubmitRecord, pdu: Pdu) -> tuple[dict[str, int | str | bytes], list[Tlv]]:
    """The MO a probe comes back as: from the test number to the sender, the same octets and coding."""
    params: dict[str, int | str | bytes] = {
        "source_addr_ton": int(pdu.params.get("dest_addr_ton", 1) or 1),
        "source_addr_npi": int(pdu.params.get("dest_addr_npi", 1) or 1),
        "source_addr": record.dest,
        "dest_addr_ton": int(pdu.params.get("source_addr_ton", 1) or 1),
        "dest_addr_npi": int(pdu.params.get("source_addr_npi", 1) or 1),
        "destination_addr": record.source,
        "esm_class": 0,
        "data_coding": record.data_coding,
    }
    tlvs: list[Tlv] = []
    if len(record.short_message) > 254:
        params["short_message"] = b""
        tlvs.append(Tlv(TlvTag.message_payload, record.short_message))
    else:
        params["short_message"] = record.short_message
    return params, tlvs
