"""What a callback_url receives for one status transition (`sms.outbound.status.v1` record -> JSON).

One POST per transition, per segment and overall, in the order of the message's history. `event_id`
(`message_id#n`) is also the Standard Webhooks `webhook-id`: the same on every replay and retry, so a receiver
deduplicates on it, and `sequence` (n) orders a message's callbacks when a retried one arrives late.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

CALLBACK_TYPE = "message.status"


def callback_payload(record: Mapping[str, Any]) -> dict[str, Any]:
    event_id = str(record["event_id"])
    _, _, n = event_id.rpartition("#")
    return {
        "type": CALLBACK_TYPE,
        "event_id": event_id,
        "message_id": str(record["message_id"]),
        "sequence": int(n) if n.isdigit() else 0,
        "status": record["overall"],
        "segment": record.get("segment"),
        "segments_total": record["segments_total"],
        "old_state": record["old_state"],
        "new_state": record["new_state"],
        "reason": record["reason"],
        "at": _iso(record["at"]),
        "carrier_message_id": record.get("carrier_message_id"),
        "detail": record.get("detail"),
    }


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        at = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        at = datetime.fromtimestamp(int(value) / 1000, UTC)  # type: ignore[call-overload]
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
