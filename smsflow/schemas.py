"""The Avro contracts in ``schemas/`` and the topics they belong to."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

RAW_TOPIC = "sms.raw.v1"
INBOUND_TOPIC = "sms.inbound.v1"
RECEIPTS_TOPIC = "sms.receipts.v1"
QUARANTINE_TOPIC = "sms.quarantine.v1"
DELIVERY_TOPIC = "sms.delivery.v1"
SUBSCRIPTIONS_TOPIC = "sms.subscriptions.v1"
HOLDINGS_TOPIC = "sms.holdings.v1"
WEBHOOK_RETRY_TOPIC = "sms.webhook.retry.v1"
WEBHOOK_ATTEMPTS_TOPIC = "sms.webhook.attempts.v1"
WEBHOOK_CIRCUITS_TOPIC = "sms.webhook.circuits.v1"
WEBHOOK_DLQ_TOPIC = "sms.webhook.dlq.v1"
OPS_TOPIC = "sms.ops.events.v1"
ROUTE_OBSERVATIONS_TOPIC = "sms.routes.observations.v1"
ROUTE_HEALTH_TOPIC = "sms.routes.health.v1"
ROUTE_DECISIONS_TOPIC = "sms.routes.decisions.v1"
ROUTE_OVERRIDES_TOPIC = "sms.routes.overrides.v1"
ROUTE_POLICIES_TOPIC = "sms.routes.policies.v1"
OUTBOUND_TOPIC = "sms.outbound.v1"
OUTBOUND_STATUS_TOPIC = "sms.outbound.status.v1"

# topic -> schema file (value schema; keys are plain UTF-8 strings)
TOPIC_SCHEMAS: dict[str, str] = {
    RAW_TOPIC: "raw_pdu.avsc",
    INBOUND_TOPIC: "inbound_message.avsc",
    RECEIPTS_TOPIC: "delivery_receipt.avsc",
    QUARANTINE_TOPIC: "quarantined_pdu.avsc",
    DELIVERY_TOPIC: "delivery_event.avsc",
    ROUTE_OBSERVATIONS_TOPIC: "route_observation.avsc",
    ROUTE_HEALTH_TOPIC: "route_health.avsc",
    ROUTE_DECISIONS_TOPIC: "route_decision.avsc",
    OUTBOUND_TOPIC: "outbound_request.avsc",
    OUTBOUND_STATUS_TOPIC: "outbound_status.avsc",
}


@cache
def schema_text(filename: str) -> str:
    return (SCHEMA_DIR / filename).read_text(encoding="utf-8")


def schema_for_topic(topic: str) -> str:
    return schema_text(TOPIC_SCHEMAS[topic])


def schema_dict(filename: str) -> dict[str, Any]:
    return dict(json.loads(schema_text(filename)))
