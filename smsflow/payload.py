"""The JSON a customer's webhook receives for one inbound SMS: the seed's fields first, then ours."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return (
        dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def webhook_payload(msg: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "sms.inbound",
        "message_id": msg["message_id"],
        "from_number": msg["from_number"],
        "to_number": msg["to_number"],
        "body": msg["body"],
        "timestamp": _iso(msg.get("received_at")),
        "encoding": "unicode" if msg["encoding"] == "ucs2" else msg["encoding"],
        "country_code": msg.get("country_code"),
        "otp": msg.get("otp"),
        "otp_validity_seconds": msg.get("otp_validity_seconds"),
        "sender_signature": msg.get("sender_signature"),
        "language": msg.get("language"),
        "from_type": msg.get("from_type"),
        "from_calling_code": msg.get("from_calling_code"),
        "from_operator": msg.get("from_operator"),
        "from_original": msg.get("from_original"),
        "to_country_code": msg.get("to_country_code"),
        "to_calling_code": msg.get("to_calling_code"),
        "to_type": msg.get("to_type"),
        "to_operator": msg.get("to_operator"),
        "to_original": msg.get("to_original"),
        "segment_count": msg.get("segment_count", 1),
        "incomplete": msg.get("incomplete", False),
        "missing_segments": msg.get("missing_segments", []),
        "route_id": msg.get("route_id"),
        "carrier_id": msg.get("carrier_id"),
        "received_at": msg.get("received_at"),
        "completed_at": msg.get("completed_at"),
        "udh_elements": [
            {"iei": e["iei"], "data": base64.b64encode(e["data"]).decode()}
            for e in msg.get("udh_elements", [])
        ],
    }
