"""The webhook attempts ledger: which retry records have already been carried out (ADR 0005).

The retry agent acks a record of ``sms.webhook.retry.v1`` only after its attempt, and Kafka commits only the
contiguous acked prefix of a partition; a record due in hours therefore holds the committed offset back, and
after a restart every record behind it is read again. Without a ledger each of those would be attempted
again, and its failure scheduled again: retries multiplied with every restart. Now, once a record's outcome is
durable (next retry record or dead letter written), the agent writes its position to the compacted topic
``sms.webhook.attempts.v1``; a record read again whose position is in the ledger is acked without sending.

Key = ``<retry partition>:<offset>``, value = JSON ``{"attempt", "outcome", "ts"}``. Every worker reads
the whole topic at start and follows it, so after a rebalance the new owner of a partition knows what the
previous one did. Entries are useful only while the retry record can be read again: the topic is
``compact,delete`` with the retry topic's retention, and memory keeps entries for that long.
"""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Message

from smsflow.compacted import CompactedFollower
from smsflow.schemas import WEBHOOK_ATTEMPTS_TOPIC

KEEP_S = 2 * 86400.0  # the retry topic's retention (1 d) with a margin
_PRUNE_EVERY = 10_000


def ledger_key(partition: int, offset: int) -> bytes:
    return f"{partition}:{offset}".encode()


def ledger_value(attempt: int, outcome: str) -> bytes:
    return orjson.dumps({"attempt": attempt, "outcome": outcome, "ts": int(time.time() * 1000)})


class AttemptLedger:
    def __init__(self, bootstrap: str, topic: str = WEBHOOK_ATTEMPTS_TOPIC, keep_s: float = KEEP_S) -> None:
        self.topic = topic
        self.keep_s = keep_s
        self._done: dict[bytes, float] = {}  # key -> when it was recorded (epoch s)
        self._since_prune = 0
        self._follower = CompactedFollower(bootstrap, (topic,), self._on_record, "webhook-attempts")

    async def start(self, timeout: float = 60.0) -> None:
        await self._follower.start(timeout)

    async def stop(self) -> None:
        await self._follower.stop()

    def done(self, partition: int, offset: int) -> bool:
        return ledger_key(partition, offset) in self._done

    def mark(self, key: bytes, at: float | None = None) -> None:
        """Remember a position this process recorded (its own write comes back through the topic too)."""
        self._done[key] = time.time() if at is None else at
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self.prune()

    def prune(self, now: float | None = None) -> None:
        horizon = (time.time() if now is None else now) - self.keep_s
        self._done = {k: t for k, t in self._done.items() if t >= horizon}
        self._since_prune = 0

    def __len__(self) -> int:
        return len(self._done)

    def _on_record(self, msg: Message) -> None:
        key = msg.key()
        if key is None:
            return
        if msg.value() is None:
            self._done.pop(key, None)
            return
        self.mark(key, msg.timestamp()[1] / 1000)
