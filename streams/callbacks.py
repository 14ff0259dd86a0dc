"""Callback agent: sms.outbound.status.v1 -> a signed POST to the message's callback_url per transition.

Declared in streams/topology.py with the delivery agents (it runs where webhooks are delivered: the worker's
`deliver` role). Each transition of a message that has a callback_url goes through the same webhook engine as
inbound SMS (`KafkaDelivery.attempt`): Standard Webhooks signatures with the owner's callback secret
(`smsflow.delivery.callbacks`), a failed POST to sms.webhook.retry.v1 on the retry schedule, a dead letter on
sms.webhook.dlq.v1 after the budget, every attempt on sms.delivery.v1. A record is acked once its POST has a
durable outcome (delivered, handed to the retry topic, dead-lettered), so a crash replays the transitions
whose callback was not settled, under the same `webhook-id` (`event_id`).

Order: a message's transitions arrive in order on one partition (the topic is keyed by message id) and each
waits for the POST of the one before it, so a live endpoint receives them in order; different messages do not
wait for each other, and a dead endpoint holds only its own slots. A transition whose POST failed is retried
later, after the ones behind it: the payload's `sequence` orders them for the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

import faust

from smsflow.delivery.callbacks import CallbackTarget
from smsflow.logsummary import SummarizedLog
from smsflow.outbound.callbacks import callback_payload
from smsflow.schemas import OUTBOUND_STATUS_TOPIC
from smsflow.subscriptions.model import utcnow
from streams.context import StreamContext
from streams.deliver import DeliverStage

log = logging.getLogger(__name__)
_floods = SummarizedLog(log)  # per-record lines a flood would repeat (smsflow/logsummary.py)

MAX_CALLBACKS_IN_FLIGHT = 4096


class CallbackStage:
    def __init__(self, ctx: StreamContext, deliver: DeliverStage) -> None:
        self.ctx = ctx
        self.deliver = deliver  # its Kafka side, outputs and start-up state are the callbacks' too
        self.gate = asyncio.Semaphore(MAX_CALLBACKS_IN_FLIGHT)
        self._latest: dict[str, asyncio.Task[None]] = {}  # per message: the last transition's POST

    async def callbacks(self, stream: faust.StreamT[bytes]) -> None:
        """The agent of sms.outbound.status.v1: one task per transition with a callback_url."""
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            try:
                rec = self.ctx.serde.decode(OUTBOUND_STATUS_TOPIC, event.value)
            except Exception as exc:  # a poison record must not stall the partition's commits
                offset = event.message.offset
                _floods.log(
                    "unreadable status records",
                    logging.ERROR,
                    "%s @%s: unreadable status, no callback: %s",
                    OUTBOUND_STATUS_TOPIC,
                    offset,
                    exc,
                )
                await stream.ack(event)
                continue
            if not rec.get("callback_url"):
                await stream.ack(event)
                continue
            await self.gate.acquire()
            mid = str(rec["message_id"])
            task = asyncio.ensure_future(self._post(stream, event, rec, self._latest.get(mid)))
            self._latest[mid] = task
            task.add_done_callback(functools.partial(self._forget, mid))

    def _forget(self, mid: str, task: asyncio.Task[None]) -> None:
        if self._latest.get(mid) is task:
            del self._latest[mid]

    async def _post(
        self, stream: Any, event: Any, rec: dict[str, Any], before: asyncio.Task[None] | None
    ) -> None:
        try:
            if before is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(before)  # in order per message; its failure is its own
            await self.deliver.state_ready.wait()
            target = CallbackTarget(str(rec["owner"]), str(rec["callback_url"]))
            sub = self.deliver.callback_subscription(target)
            await self.deliver.engine().attempt(sub, [callback_payload(rec)], 1, utcnow(), None)
            await stream.ack(event)
        except Exception as exc:
            # not acked: the outcome is not durable, so a restart replays it under the same webhook-id
            _floods.log(
                f"callbacks not completed ({type(exc).__name__})",
                logging.ERROR,
                "callback of %s not completed",
                rec.get("event_id"),
                exc_info=True,
            )
        finally:
            self.gate.release()
