"""The record formats of the delivery topics, shared by the delivery agent and the API process.

- ``sms.delivery.v1`` (Avro ``DeliveryEvent``, key = message id): :func:`event_record` turns a
  :class:`DeliveryEvent` into the Avro record.
- ``sms.webhook.retry.v1`` (JSON, key = message id, or the batch's webhook-id): :func:`retry_record`. A record
  holds one ``message``, or for a batched subscription the whole batch as ``messages``, so that a retry of a
  batch carries the same ``webhook-id``. ``attempt`` is the number of the attempt to make when ``due_at``
  (epoch ms) comes; ``first_at`` is when the delivery was first queued (the maximum age counts from it).
- ``sms.webhook.dlq.v1`` (JSON, key = message id): :func:`dead_letter_record`, one per message, with the
  reason.

Resend and recover write ordinary retry records with ``attempt`` 1 and ``due_at`` now: the delivery agent then
sends them like any retry, under the message id as ``webhook-id``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from smsflow.delivery.events import DeliveryEvent, DeliveryState
from smsflow.subscriptions.model import Subscription, redact_url, utcnow

RESPONSE_BODY_IN_EVENT = 1024


def ms(t: dt.datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


def from_ms(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)


def event_record(ev: DeliveryEvent) -> dict[str, Any]:
    """The Avro record (schemas/delivery_event.avsc) of one delivery event."""
    return {
        "event_id": ev.event_id,
        "ts": ms(ev.ts),
        "state": str(ev.state),
        "message_id": ev.message_id,
        "subscription_id": ev.subscription_id,
        "webhook_id": ev.webhook_id,
        "attempt": ev.attempt,
        "status_code": ev.status_code,
        "failure": str(ev.failure) if ev.failure else None,
        "error": ev.error,
        "duration_ms": ev.duration_ms,
        "next_attempt_at": ms(ev.next_attempt_at),
        "url": ev.url,
        "batch_size": ev.batch_size,
        "response_body": ev.response_body[:RESPONSE_BODY_IN_EVENT] if ev.response_body else None,
        "route_id": ev.route_id,
    }


def queued_event(sub: Subscription, message_id: str, *, error: str | None = None) -> DeliveryEvent:
    """``queued``: the message matched ``sub`` (or was queued again by resend/recover), before attempt 1."""
    return DeliveryEvent(
        state=DeliveryState.QUEUED,
        message_id=message_id,
        subscription_id=sub.id,
        webhook_id=message_id if sub.batch is None else None,  # a batch's id is known once it is assembled
        attempt=1,
        error=error,
        url=redact_url(sub.url),
    )


def retry_record(
    subscription_id: str,
    messages: list[dict[str, Any]],
    *,
    attempt: int,
    due_at: dt.datetime,
    first_at: dt.datetime,
    reason: str,
    batched: bool = False,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "subscription_id": subscription_id,
        "attempt": attempt,
        "due_at": ms(due_at),
        "first_at": ms(first_at),
        "reason": reason,
    }
    if batched or len(messages) != 1:
        rec["messages"] = messages
    else:
        rec["message"] = messages[0]
    return rec


def retry_messages(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of a retry record (one, or a batch)."""
    if "messages" in rec:
        return list(rec["messages"])
    return [rec["message"]]


def requeue_record(subscription_id: str, message: dict[str, Any], reason: str) -> dict[str, Any]:
    """A retry record that makes the delivery agent send ``message`` again now, as attempt 1."""
    now = utcnow()
    return retry_record(subscription_id, [message], attempt=1, due_at=now, first_at=now, reason=reason)


def dead_letter_record(
    subscription_id: str,
    message: dict[str, Any],
    *,
    attempts: int,
    reason: str,
    state: str,
    webhook_id: str | None = None,
) -> dict[str, Any]:
    return {
        "subscription_id": subscription_id,
        "attempts": attempts,
        "reason": reason,
        "state": state,
        "ts": int(time.time() * 1000),
        "webhook_id": webhook_id,
        "message": message,
    }
