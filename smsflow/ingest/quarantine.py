"""The one builder of ``sms.quarantine.v1`` records (schemas/quarantine.avsc), for every stage that keeps an
input it could not accept: the connector (a PDU refused per protocol), ingest (a record that does not decode,
parse or encode), delivery (an inbound record that does not decode) and the connector's submit path (a
record of sms.outbound.submit.v1 it cannot submit; ``pdu`` holds the record)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from smsflow.records import QuarantinedPdu

Stage = Literal["connector", "ingest", "deliver", "submit"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where in Kafka the quarantined record was read, when it was read from Kafka at all."""

    topic: str | None
    partition: int | None
    offset: int | None


def quarantine_record(
    stage: Stage,
    reason: str,
    *,
    carrier_id: str = "",
    route_id: str = "",
    session_id: str = "",
    received_at: int = 0,
    status: int = 0,
    pdu: bytes = b"",
    source: Source | None = None,
) -> QuarantinedPdu:
    """``status``: what the carrier was answered (0 when accepted before the error was found)."""
    return {
        "stage": stage,
        "carrier_id": carrier_id,
        "route_id": route_id,
        "session_id": session_id,
        "received_at": received_at,
        "status": status,
        "reason": reason,
        "pdu": pdu,
        "source_topic": source.topic if source else None,
        "source_partition": source.partition if source else None,
        "source_offset": source.offset if source else None,
    }
