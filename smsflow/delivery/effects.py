"""What follows from one delivery attempt, as data: the records to write and the counters to move.

The delivery stage's Kafka side (``streams.deliver.KafkaDelivery``) only writes what this returns, so the
rules (a retry record keyed by message id, or by webhook id for a batch; one dead letter per message, all
under the batch's webhook id; an ops event when the endpoint was switched off) are unit-tested without a
broker.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from smsflow.delivery.callbacks import callback_target
from smsflow.delivery.engine import DeliveryOutcome
from smsflow.delivery.events import DeliveryEvent
from smsflow.delivery.policy import Action
from smsflow.delivery.records import dead_letter_record, retry_record
from smsflow.delivery.sender import webhook_id_for
from smsflow.schemas import OPS_TOPIC, WEBHOOK_DLQ_TOPIC, WEBHOOK_RETRY_TOPIC
from smsflow.subscriptions.model import Subscription


@dataclass(frozen=True, slots=True)
class Write:
    """One record to write; ``traced``: it carries the attempt's trace context in its headers."""

    topic: str
    key: str
    value: bytes
    traced: bool = False


@dataclass
class AttemptEffects:
    events: list[DeliveryEvent]  # for sms.delivery.v1, in order
    # retry, dead-letter and ops records; with ``fail_over`` only the ops record of an endpoint switched off
    writes: list[Write] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # delivered | retry_scheduled | dead_lettered
    # the local rule of the double list: attempt the next route now, in the same call; nothing is written
    fail_over: bool = False


def attempt_effects(
    sub: Subscription,
    messages: list[dict[str, Any]],
    attempt: int,
    first_at: dt.datetime,
    outcome: DeliveryOutcome,
    now_ms: int | None = None,
    *,
    can_fail_over: bool = False,
) -> AttemptEffects:
    """``can_fail_over``: the subscription's double list offered a next route during this attempt."""
    decision = outcome.decision
    effects = AttemptEffects(outcome.all_events)
    batched = sub.batch is not None or len(messages) > 1
    n = len(messages)
    if decision.action is Action.DONE:
        effects.counts["delivered"] = n
    elif decision.action is Action.RETRY and outcome.next_endpoint is not None and can_fail_over:
        effects.fail_over = True  # no retry record: the next attempt is made now (an ops event may follow)
    elif decision.action is Action.RETRY:
        effects.counts["retry_scheduled"] = n
        assert decision.next_attempt is not None and decision.next_attempt_at is not None
        record = retry_record(
            sub.id,
            messages,
            attempt=decision.next_attempt,
            due_at=decision.next_attempt_at,
            first_at=first_at,
            reason=decision.reason,
            batched=batched,
        )
        target = callback_target(sub)
        if target is not None:  # no stored subscription to look up when it is due: the record names it
            record["callback_target"] = target.to_record()
        key = webhook_id_for(sub, messages) if batched else str(messages[0]["message_id"])
        effects.writes.append(Write(WEBHOOK_RETRY_TOPIC, key, orjson.dumps(record), traced=True))
    else:
        effects.counts["dead_lettered"] = n
        wid = webhook_id_for(sub, messages)
        for m in messages:
            record = dead_letter_record(
                sub.id, m, attempts=attempt, reason=decision.reason, state=str(decision.state), webhook_id=wid
            )
            effects.writes.append(Write(WEBHOOK_DLQ_TOPIC, str(m["message_id"]), orjson.dumps(record)))
    if outcome.disabled_reason is not None:
        ops = {
            "type": "endpoint_disabled",
            "subscription_id": sub.id,
            "owner": sub.owner,
            "reason": outcome.disabled_reason,
            # one endpoint switched off alone: the subscription's other endpoints keep receiving
            **({"endpoint_id": outcome.disabled_endpoint} if outcome.disabled_endpoint else {}),
            "ts": int(time.time() * 1000) if now_ms is None else now_ms,
        }
        effects.writes.append(Write(OPS_TOPIC, sub.id, orjson.dumps(ops)))
    return effects
