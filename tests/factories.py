"""Build RawPdu records the way the connector writes them, from logical SMS and segment lists."""

from __future__ import annotations

from typing import Any

from devkit.simulator.smsc import deliver_sm_params
from smsflow.smpp.constants import CommandId
from smsflow.smpp.pdu import Pdu, Tlv, encode_pdu
from smsflow.sms.segmentation import Segment, split_for_smpp


def deliver_sm_bytes(
    source: str,
    dest: str,
    short_message: bytes,
    data_coding: int,
    esm_class: int = 0,
    tlvs: list[tuple[int, bytes]] | tuple[tuple[int, bytes], ...] = (),
    seq: int = 1,
    source_ton: int = 1,
    dest_ton: int = 1,
) -> bytes:
    pdu = Pdu(
        CommandId.deliver_sm,
        0,
        seq,
        params=deliver_sm_params(source, dest, short_message, data_coding, esm_class, source_ton, dest_ton),
        tlvs=[Tlv(t, v) for t, v in tlvs],
    )
    return encode_pdu(pdu)


def raw_record(
    pdu: bytes,
    source: str,
    dest: str,
    data_coding: int,
    esm_class: int = 0,
    carrier: str = "c1",
    route: str = "r1",
    received_at: int = 1_700_000_000_000,
    source_ton: int = 1,
    dest_ton: int = 1,
) -> dict[str, Any]:
    return {
        "carrier_id": carrier,
        "route_id": route,
        "session_id": "s1",
        "protocol": "smpp3.4",
        "received_at": received_at,
        "command_id": int(CommandId.deliver_sm),
        "sequence_number": 1,
        "source_addr": source,
        "source_addr_ton": source_ton,
        "source_addr_npi": 1,
        "destination_addr": dest,
        "dest_addr_ton": dest_ton,
        "dest_addr_npi": 1,
        "esm_class": esm_class,
        "data_coding": data_coding,
        "pdu": pdu,
        "remote_addr": None,
        "numbers": None,  # no hand-off (smsflow/numbers/handoff.py): the ingest stage reads the addresses
    }


def inbound_record(mid: str) -> dict[str, Any]:
    """A canonical InboundMessage with every enrichment field set (Chinese text, an emoji, a UDH element)."""
    return {
        "message_id": mid,
        "from_number": "+85261234567",
        "to_number": "+85230001000",
        "from_original": "85261234567",
        "to_original": "85230001000",
        "body": "【京东】您的验证码是 825959。😀",
        "encoding": "ucs2",
        "data_coding": 8,
        "segment_count": 1,
        "incomplete": False,
        "missing_segments": [],
        "received_at": 1_795_000_000_000,
        "completed_at": 1_795_000_000_020,
        "carrier_id": "c1",
        "route_id": "r1",
        "country_code": "HK",
        "otp": "825959",
        "otp_validity_seconds": 300,
        "from_type": "mobile",
        "from_calling_code": 852,
        "from_operator": "unknown",
        "to_country_code": "HK",
        "to_operator": "unknown",
        "to_calling_code": 852,
        "to_type": "fixed_line",
        "sender_signature": "京东",
        "language": "zh-Hans",
        "udh_elements": [{"iei": 0x24, "data": b"\x01"}],
    }


def segment_records(
    text: str,
    data_coding: int,
    method: str,
    ref: int,
    source: str = "85261234567",
    dest: str = "85230001000",
    carrier: str = "c1",
    route: str = "r1",
    split_anywhere: bool = False,
    received_at: int = 1_700_000_000_000,
) -> list[dict[str, Any]]:
    segs: list[Segment] = split_for_smpp(
        text,
        data_coding,
        method=method,
        ref=ref,  # type: ignore[arg-type]
        split_anywhere=split_anywhere,
    )
    return [
        raw_record(
            deliver_sm_bytes(source, dest, s.short_message, data_coding, s.esm_class, s.tlvs),
            source,
            dest,
            data_coding,
            s.esm_class,
            carrier,
            route,
            received_at,
        )
        for s in segs
    ]


def attempt_result(sub_id: str = "s", status: int | None = 500, failure: Any = None) -> Any:
    """An AttemptResult of one POST to ``sub_id``: ``status`` 200 is a success; ``failure`` defaults to
    ``http_status`` for any other status."""
    from datetime import UTC, datetime

    from smsflow.delivery.events import AttemptResult, FailureKind

    if failure is None and status != 200:
        failure = FailureKind.HTTP_STATUS
    return AttemptResult(
        subscription_id=sub_id,
        webhook_id="m",
        message_ids=["m"],
        attempt=1,
        url="https://x.example/h",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=1,
        status_code=status,
        failure=failure,
    )


class CountingTable(dict[str, Any]):
    """A table that counts reads, as each read of a Faust table costs a lookup and a decode."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.reads += 1
        return super().__contains__(key)
