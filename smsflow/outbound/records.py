"""The outbound values as the Avro records of schemas/outbound_request.avsc and outbound_status.avsc."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from smsflow.outbound.request import OutboundRequest
from smsflow.outbound.status import MessageStatus, Transition

REQUEST_TOPIC = "sms.outbound.v1"
STATUS_TOPIC = "sms.outbound.status.v1"


def request_record(req: OutboundRequest) -> dict[str, Any]:
    return {
        "message_id": req.message_id,
        "owner": req.owner,
        "to": req.to,
        "sender": req.sender,
        "sender_kind": req.sender_kind,
        "text": req.text,
        "callback_url": req.callback_url,
        "validity_s": req.validity_s,
        "priority": req.priority,
        "idempotency_key": req.idempotency_key,
        "accepted_at": req.accepted_at_ms,
    }


def request_from_record(record: Mapping[str, Any]) -> OutboundRequest:
    """The request back from its record (`accepted_at` as the Avro decoder gives it, or epoch ms)."""
    accepted = record["accepted_at"]
    return OutboundRequest(
        message_id=str(record["message_id"]),
        owner=str(record["owner"]),
        to=str(record["to"]),
        sender=str(record["sender"]),
        sender_kind=record["sender_kind"],
        text=str(record["text"]),
        callback_url=record.get("callback_url"),
        validity_s=int(record["validity_s"]),
        priority=record["priority"],
        idempotency_key=record.get("idempotency_key"),
        accepted_at_ms=int(accepted.timestamp() * 1000) if isinstance(accepted, datetime) else int(accepted),
    )


def status_record(
    owner: str, status: MessageStatus, transition: Transition, n: int, callback_url: str | None = None
) -> dict[str, Any]:
    """`n` counts the message's transitions from 1, so a replay writes the same event ids."""
    seg = status.segments[transition.seq - 1] if transition.seq is not None else None
    return {
        "event_id": f"{status.message_id}#{n}",
        "message_id": status.message_id,
        "owner": owner,
        "segment": transition.seq,
        "segments_total": len(status.segments),
        "old_state": transition.old,
        "new_state": transition.new,
        "overall": status.overall,
        "reason": transition.reason,
        "at": transition.at_ms,
        "carrier_message_id": seg.carrier_message_id if seg else None,
        "route_id": seg.route if seg else None,
        "detail": seg.detail if seg else None,
        "callback_url": callback_url,
    }
