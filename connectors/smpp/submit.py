"""The connector's submit path: segments from `sms.outbound.submit.v1` to submit_sm on the carrier's binds.

Per carrier: a window (`carriers[].submit_window` submit_sm awaiting their resp over all its binds, taken
OTP first) and a rate (`carriers[].submit_per_s`). Per segment, the submission ledger
(`smsflow.outbound.ledger`, on `sms.outbound.ledger.v1`) decides, and is written around every submit_sm:

1. `next_step` on what the ledger holds for the segment: submit attempt n, wait (accepted already, or an
   outcome nobody can know under the `hold` policy), or give up;
2. the `Intent` is written and acknowledged by the broker (acks=all) BEFORE the submit_sm is written;
3. the `Outcome` after the resp: accepted (with the carrier's id), refused (a permanent error: the segment
   is rejected with that status), retryable (ESME_RTHROTTLED, ESME_RMSGQFUL: back off and retry), or
   timeout (unknown: held, never sent again under `hold`).

After `outbound.attempts_per_route` retryable refusals, or when no bind of the carrier is up within
`outbound.bind_wait_s` (nothing was sent then), the submission is handed to the next route of its list
(another record on the submit topic, keyed by that route's carrier); with no route left, an `Abandoned`
entry tells the status stage. A submission record's offset is committed once its segment has reached one of
those ends, so a kill -9 replays it, and the ledger (read whole at start) makes the replay submit nothing
that was submitted. A second copy of a submission (a replayed worker output) waits for the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from connectors.smpp.pacing import Pacer
from connectors.smpp.session import EsmeSession
from smsflow.compacted import CompactedFollower
from smsflow.config import CarrierConfig, OutboundConfig
from smsflow.ingest.quarantine import Source, quarantine_record
from smsflow.keyed_locks import KeyedLocks
from smsflow.logsummary import SummarizedLog
from smsflow.outbound.ledger import GiveUp, Intent, Ledger, LedgerPolicy, Outcome, Refusal, Submit, Wait
from smsflow.outbound.request import PRIORITY_RANK
from smsflow.outbound.submission import (
    LEDGER_TOPIC,
    SUBMIT_TOPIC,
    Abandoned,
    Carried,
    LedgerEntry,
    Submission,
    ledger_value,
    owner_headers,
    owner_of,
    read_ledger,
    submission_identity,
)
from smsflow.producer import AsyncProducer
from smsflow.schemas import QUARANTINE_TOPIC
from smsflow.smpp.constants import CommandId
from smsflow.smpp.pdu import Pdu, PduError, encode_pdu

if TYPE_CHECKING:
    from smsflow.serde import Serde

log = logging.getLogger(__name__)
_floods = SummarizedLog(log)  # per-record lines a flood would repeat (smsflow/logsummary.py)

TON_ALPHANUMERIC = 5
# A carrier's segments started at once (submitting, or waiting for its window, rate or a retry's backoff):
# this many times its window; the rest wait in memory (TakenOn), up to PARKED_MAX over all carriers.
RUNNING_PER_WINDOW = 8
PARKED_MAX = 20_000

T = TypeVar("T")
R = TypeVar("R")


def _now_ms() -> int:
    return int(time.time() * 1000)


class PriorityWindow:
    """At most `size` holders; waiters are let in by priority rank, then arrival (OTP before bulk)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, rank: int) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rank, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # it was handed the slot as it was cancelled
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


@dataclass
class CarrierLine:
    """One carrier's binds, window and rate, shared by every segment submitted to it."""

    carrier: CarrierConfig
    sessions: list[EsmeSession]
    window: PriorityWindow = field(init=False)
    pacer: Pacer = field(init=False)
    _rr: int = 0

    def __post_init__(self) -> None:
        self.window = PriorityWindow(self.carrier.submit_window)
        self.pacer = Pacer(self.carrier.submit_per_s)

    async def bound_session(self, wait_s: float) -> EsmeSession | None:
        deadline = time.monotonic() + wait_s
        while True:
            bound = [s for s in self.sessions if s.bound]
            if bound:
                self._rr += 1
                return bound[self._rr % len(bound)]
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)


class TakenOn(Generic[T]):
    """Records of the submit topic read and not finished, per carrier (``lane``): at most ``running(lane)`` of
    one carrier's are started (submitting, or waiting for its window, its rate or a retry's backoff); the
    rest wait here until one of that carrier's finishes; at most ``parked_max`` wait over all carriers, then
    the consumer reads no more until fewer do.

    A carrier that submits slowly (its rate, an SMSC that throttles or is down, a bulk campaign's backlog)
    holds only its own records. With one bound for every carrier's records together (2,000), a backlog of one
    carrier's filled it, and the other carriers' segments behind them in the topic (OTPs included) were not
    even read until that backlog drained; nor were the carrier's own OTPs behind its bulk.

    Waiting records start by priority (OTP first), then shared fairly between customers (``party``): start-
    time fair queuing, each customer's records taking turns with every other's that wait, so that one
    customer's flood delays another's segment by one of its own per customer waiting, not by all of them;
    then in the order read."""

    def __init__(self, running: Callable[[str], int], parked_max: int) -> None:
        self._running_max = running
        self.parked_max = parked_max
        self.running: dict[str, int] = {}
        self.parked = 0
        self._waiting: dict[str, list[tuple[int, int, int, T]]] = {}
        self._turn: dict[str, int] = {}  # lane -> the turn of the last record started from its waiters
        self._last: dict[str, dict[str | None, int]] = {}  # lane -> party -> its last waiting record's turn
        self._order = itertools.count()

    @property
    def full(self) -> bool:
        return self.parked >= self.parked_max

    def offer(self, lane: str, rank: int, item: T, party: str | None = None) -> bool:
        """True: start ``item`` now (it counts as running); False: it waits for ``finished(lane)``."""
        running = self.running.get(lane, 0)
        if running < self._running_max(lane) and not self._waiting.get(lane):
            self.running[lane] = running + 1
            return True
        last = self._last.setdefault(lane, {})
        turn = max(self._turn.get(lane, 0), last.get(party, 0)) + 1
        last[party] = turn
        heapq.heappush(self._waiting.setdefault(lane, []), (rank, turn, next(self._order), item))
        self.parked += 1
        return False

    def drop(self, gone: Callable[[T], bool]) -> int:
        """Forget the waiting items ``gone`` says (those of partitions this consumer no longer owns: their
        next owner reads them again); returns how many."""
        dropped = 0
        for lane, waiting in list(self._waiting.items()):
            kept = [w for w in waiting if not gone(w[3])]
            dropped += len(waiting) - len(kept)
            if kept:
                heapq.heapify(kept)
                self._waiting[lane] = kept
            else:
                self._forget_turns(lane)
        self.parked -= dropped
        return dropped

    def _forget_turns(self, lane: str) -> None:
        """Nobody of ``lane`` waits any more: its turns start again."""
        del self._waiting[lane]
        self._turn.pop(lane, None)
        self._last.pop(lane, None)

    def finished(self, lane: str) -> T | None:
        """One of ``lane``'s has finished: the item to start in its place, if one waits (it runs in the
        place of the finished one)."""
        waiting = self._waiting.get(lane)
        if waiting:
            _, turn, _, item = heapq.heappop(waiting)
            self.parked -= 1
            self._turn[lane] = turn
            if not waiting:
                self._forget_turns(lane)
            return item
        left = self.running.get(lane, 1) - 1
        if left > 0:
            self.running[lane] = left
        else:
            self.running.pop(lane, None)
        return None


class _Progress:
    """Offsets of one partition taken on and finished; the commit point is the end of the finished prefix."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.done: set[int] = set()

    def take(self, offset: int) -> None:
        heapq.heappush(self.pending, offset)

    def finish(self, offset: int) -> None:
        self.done.add(offset)

    def commit_point(self) -> int | None:
        last = None
        while self.pending and self.pending[0] in self.done:
            last = heapq.heappop(self.pending)
            self.done.discard(last)
        return None if last is None else last + 1


def submit_pdu(sub: Submission, validity_until_ms: int) -> Pdu:
    alpha = sub.sender_kind == "alphanumeric"
    until = datetime.fromtimestamp(validity_until_ms / 1000, UTC)
    return Pdu(
        CommandId.submit_sm,
        params={
            "service_type": "",
            "source_addr_ton": TON_ALPHANUMERIC if alpha else 1,
            "source_addr_npi": 0 if alpha else 1,
            "source_addr": sub.sender if alpha else sub.sender.lstrip("+"),
            "dest_addr_ton": 1,
            "dest_addr_npi": 1,
            "destination_addr": sub.destination.lstrip("+"),
            "esm_class": sub.esm_class,
            "protocol_id": 0,
            "priority_flag": 1 if sub.priority == "otp" else 0,
            "schedule_delivery_time": "",
            # absolute, UTC: YYMMDDhhmmss, tenths, quarter hours from UTC, '+'
            "validity_period": until.strftime("%y%m%d%H%M%S") + "000+",
            "registered_delivery": 1,  # a receipt for success and failure: statuses come from receipts
            "replace_if_present_flag": 0,
            "data_coding": sub.data_coding,
            "sm_default_msg_id": 0,
            "short_message": sub.short_message,
        },
    )


@dataclass(frozen=True, slots=True)
class _Finished:
    """The ledger of a segment whose last attempt was accepted or refused: all that a later copy of it needs
    (it submits nothing). A connector holds every segment of the ledger topic's 4 days; a full `Ledger` is
    ~1.1 KB per segment, this one shared object per kind (the dict entry and its key remain)."""

    step: Wait | GiveUp

    @property
    def segments(self) -> dict[tuple[str, int], tuple[Any, ...]]:
        return {}

    def add(self, record: Intent | Outcome) -> _Finished:
        return self  # a replayed or late record of a finished segment changes nothing

    def next_step(self, message_id: str, seq: int, policy: LedgerPolicy, now_ms: int) -> Wait | GiveUp:
        return self.step


_ACCEPTED = _Finished(Wait("accepted: waiting for the receipt"))
_REFUSED = _Finished(GiveUp("refused by the carrier"))


def _compact(key: tuple[str, int], ledger: Ledger) -> Ledger | _Finished:
    attempts = ledger.segments.get(key, ())
    outcome = attempts[-1].outcome if attempts else None
    if outcome is not None and outcome.kind == "accepted":
        return _ACCEPTED
    if outcome is not None and outcome.kind == "refused":
        return _REFUSED
    return ledger


class SubmitPath:
    def __init__(
        self,
        app_id: str,
        bootstrap: str,
        carriers: Sequence[CarrierConfig],
        sessions: dict[str, list[EsmeSession]],
        producer: AsyncProducer,
        settings: OutboundConfig,
        serde: Serde | None = None,
    ) -> None:
        """``serde``: writes the sms.quarantine.v1 records of submit-topic records that cannot be submitted
        (without one they are only logged)."""
        self.bootstrap = bootstrap
        self.serde = serde
        self.group_id = f"{app_id}-outbound-submit"
        # a receiver bind cannot submit: its carrier's segments go to the next route
        self.lines = {c.id: CarrierLine(c, sessions.get(c.id, [])) for c in carriers if c.bind != "receiver"}
        self.producer = producer
        self.settings = settings
        self.policy = LedgerPolicy(
            max_attempts=settings.attempts_per_route * max(2, len(carriers)) + 1,
            backoff_ms=tuple(int(s * 1000) for s in settings.retry_backoff_s),
            unknown=settings.unknown_outcome,
        )
        # one small ledger per segment: folding into one big value would copy it on every record
        self._ledgers: dict[tuple[str, int], Ledger | _Finished] = {}
        self._ledger_lock = threading.Lock()
        self._follower = CompactedFollower(bootstrap, (LEDGER_TOPIC,), self._on_ledger, "submit-ledger")
        # copies of one segment (a worker replay) take it in turn
        self._segment_locks: KeyedLocks[tuple[str, int]] = KeyedLocks()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The tasks working on records (`_launch`), each with the partition its record came from (what a
        # revocation asks); the tasks waiting where nothing of their segment is written yet (a revocation
        # or a stop cancels them there); and the partitions being revoked.
        self._task_tp: dict[asyncio.Task[None], tuple[str, int]] = {}
        self._resting: set[asyncio.Task[Any]] = set()
        self._revoking: set[tuple[str, int]] = set()
        # how long a revocation waits for the revoked partitions' submits in progress: a resp, its outcome
        self.revoke_wait_s = max((c.response_timeout_s for c in carriers), default=10.0) + 10.0
        self.submitted = 0
        self.handed_over = 0
        self.refused = 0
        """Submit-topic records given up without a submit_sm: unreadable, unencodable, or failed here."""

    # ---- the ledger ----

    def _on_ledger(self, msg: Message) -> None:
        value = msg.value()
        if value is None:
            return
        entry = read_ledger(value)
        if isinstance(entry, Carried):
            self._fold(entry.record)

    def _fold(self, record: Intent | Outcome) -> None:
        key = (record.message_id, record.seq)
        with self._ledger_lock:
            new = self._ledgers.get(key, Ledger()).add(record)
            if isinstance(new, Ledger):
                new = _compact(key, new)
            if isinstance(new, Refusal):
                _floods.log(
                    "submission ledger refusals", logging.WARNING, "submission ledger: %s", new.reason
                )
            else:
                self._ledgers[key] = new

    def _ledger_of(self, key: tuple[str, int]) -> Ledger | _Finished:
        with self._ledger_lock:
            return self._ledgers.get(key, Ledger())

    async def _store(
        self, topic: str, value: bytes, key: str, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Send a record and wait for the broker's ack, retried until it is stored: nothing that follows
        (a submit_sm after its intent, the commit of a handed-over submission) may go on without it."""
        await self._retried(
            lambda: self.producer.send(topic, value, key=key, headers=headers), f"{topic}: not stored"
        )

    async def _retried(
        self, attempt: Callable[[], Awaitable[object]], failed: str, until_stopping: bool = False
    ) -> None:
        """``attempt`` until it succeeds, backing off from 0.2 s to 5 s (``until_stopping``: or the connector
        stops)."""
        delay = 0.2
        while not (until_stopping and self._stopping.is_set()):
            try:
                await attempt()
                return
            except Exception as exc:
                _floods.log(failed, logging.WARNING, "%s (%s); retrying in %.1f s", failed, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _write(self, key: str, entry: LedgerEntry) -> None:
        """Write a ledger entry, stored before anything goes on, and fold it into the segment's ledger."""
        await self._store(LEDGER_TOPIC, ledger_value(entry), key)
        if isinstance(entry, Carried):
            self._fold(entry.record)

    # ---- lifecycle ----

    async def start(self, timeout: float = 60.0) -> None:
        await self._follower.start(timeout)
        self._task = asyncio.create_task(self._consume(), name="outbound-submit")

    @property
    def ended(self) -> asyncio.Task[None]:
        """The consuming task: it ends only when stopped, or when it failed (``failure``)."""
        assert self._task is not None, "start() first"
        return self._task

    def failure(self) -> str | None:
        """Why the consuming task ended on its own, or None (still running, or stopped as asked)."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        exc = task.exception()
        if exc is not None:
            return f"{type(exc).__name__}: {exc}"
        return None if self._stopping.is_set() else "it ended unasked"

    async def stop(self, timeout: float | None = None) -> None:
        """Stop taking segments; wait (up to ``timeout``, by default long enough for a submit_sm's resp)
        for those in the middle of a submit to reach their outcome."""
        timeout = self.revoke_wait_s + 5.0 if timeout is None else timeout
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._task, timeout)
        await self._follower.stop()

    # ---- consuming submissions ----

    async def _consume(self) -> None:
        consumer = self._new_consumer()
        progress: dict[tuple[str, int], _Progress] = defaultdict(_Progress)
        taken: TakenOn[tuple[Submission, str | None, tuple[str, int], int]] = TakenOn(
            self._running_per_carrier, PARKED_MAX
        )
        room = asyncio.Event()  # set whenever fewer than PARKED_MAX records wait
        room.set()

        def start(lane: str, item: tuple[Submission, str | None, tuple[str, int], int]) -> None:
            sub, owner, tp, offset = item
            of_partition = progress[tp]

            def finished(t: asyncio.Task[None]) -> None:
                if not t.cancelled():
                    if t.exception() is None:
                        of_partition.finish(offset)  # not the partition's next owner's (a revocation)
                    else:  # not given up either (its ledger entry was not stored): replayed after a restart
                        log.error("submit topic @%d/%d: %r", tp[1], offset, t.exception())
                if self._stopping.is_set():
                    return  # nothing new is started; what waits is read again after a restart
                nxt = taken.finished(lane)
                if nxt is not None:
                    start(lane, nxt)
                if not taken.full:
                    room.set()

            self._launch(self._take_guarded(sub, owner, tp, offset), tp, finished)

        # Rebalances (inside consume(): in its thread). Two connectors must never both work on one segment:
        # the ledger serialises one connector's copies only. So a revocation returns only when nothing of the
        # revoked partitions runs here any more: their waiting records are forgotten, their segments that
        # wrote nothing yet are cancelled where they wait, and those in the middle of a submit_sm are let
        # reach their outcome (bounded); then what finished is committed, so the next owner, which gets the
        # partitions only after this returns, starts after it. It reads the ledger up to its end before
        # taking records of a partition it was given (on_assign), so it sees every outcome written here.
        loop = asyncio.get_running_loop()
        assigned: list[tuple[str, int]] = []

        async def quiesce(gone: set[tuple[str, int]]) -> list[TopicPartition]:
            self._revoking |= gone
            dropped = taken.drop(lambda item: item[2] in gone)
            running = [t for t, tp in self._task_tp.items() if tp in gone]
            late = await self._settle(running)
            if late:  # a broker that stores nothing: they go on, and cancel themselves at their next wait
                log.error(
                    "submit topic: %d submits of revoked partitions still running after %.0f s",
                    len(late), self.revoke_wait_s,
                )  # fmt: skip
            offsets = []
            for topic, partition in gone:
                p = progress.pop((topic, partition), None)  # its commits are the next owner's now
                point = p.commit_point() if p is not None else None
                if point is not None:
                    offsets.append(TopicPartition(topic, partition, point))
            log.info(
                "submit topic: %d partitions revoked; %d waiting segments left to their next owner, %d "
                "stopped before writing anything, %d finished first",
                len(gone), dropped, sum(t.cancelled() for t in running), len(running) - len(late)
                - sum(t.cancelled() for t in running),
            )  # fmt: skip
            if not taken.full:
                room.set()
            return offsets

        def revoke(c: Consumer, partitions: list[TopicPartition], commit: bool) -> None:
            gone = {(tp.topic, tp.partition) for tp in partitions}
            if not gone:
                return
            try:
                offsets = asyncio.run_coroutine_threadsafe(quiesce(gone), loop).result(self.revoke_wait_s + 5)
            except Exception as exc:
                log.error("submit topic: revocation of %s: %r", sorted(gone), exc)
                return
            if commit and offsets:
                try:
                    c.commit(offsets=offsets, asynchronous=False)
                except KafkaException as exc:
                    log.warning("submit topic: commit at revocation failed: %s", exc)

        def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            mine = [(tp.topic, tp.partition) for tp in partitions]
            loop.call_soon_threadsafe(self._revoking.difference_update, mine)
            assigned.extend(mine)

        consumer.subscribe(
            [SUBMIT_TOPIC],
            on_assign=on_assign,
            on_revoke=lambda c, ps: revoke(c, ps, commit=True),
            on_lost=lambda c, ps: revoke(c, ps, commit=False),  # another owner may have them already
        )
        try:
            while not self._stopping.is_set():
                if taken.full:
                    room.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(room.wait(), 0.2)
                    await self._commit(consumer, progress)
                    continue
                msgs = await asyncio.to_thread(self._consumer_read, consumer)
                if assigned:
                    assigned.clear()
                    await self._ledger_current()
                for msg in msgs:
                    if msg.error() is not None:
                        log.warning("submit topic: %s", msg.error())
                        continue
                    tp = (msg.topic() or SUBMIT_TOPIC, msg.partition() or 0)
                    offset = msg.offset() or 0
                    progress[tp].take(offset)
                    sub = self._read(msg)
                    if isinstance(sub, str):  # unreadable: quarantined, its segment given up, committed past
                        self._refuse_record(msg.value() or b"", sub, tp, offset, progress[tp])
                        continue
                    lane, owner = sub.route.carrier, owner_of(msg.headers())
                    item = (sub, owner, tp, offset)
                    if taken.offer(lane, PRIORITY_RANK.get(sub.priority, 1), item, owner):
                        start(lane, item)
                await self._commit(consumer, progress)
            # Stopping: a segment that wrote nothing yet is left to the next run (its offset not committed),
            # one between its intent and its outcome is let reach the outcome (held as unknown otherwise).
            await self._settle(list(self._task_tp))
            await self._commit(consumer, progress)
        finally:
            for t in list(self._task_tp):
                t.cancel()
            await asyncio.to_thread(consumer.close)

    def _new_consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
            }
        )

    @staticmethod
    def _consumer_read(consumer: Consumer) -> list[Message]:
        return consumer.consume(200, 0.2)

    def _running_per_carrier(self, carrier: str) -> int:
        """How many of a carrier's segments may be started at once: its window a few times over, so that its
        window never waits for a record to be read (a carrier this connector does not serve: its segments
        are handed over at once)."""
        line = self.lines.get(carrier)
        return RUNNING_PER_WINDOW * line.carrier.submit_window if line is not None else RUNNING_PER_WINDOW

    async def _commit(self, consumer: Consumer, progress: dict[tuple[str, int], _Progress]) -> None:
        offsets = []
        for (topic, partition), p in progress.items():
            point = p.commit_point()
            if point is not None:
                offsets.append(TopicPartition(topic, partition, point))
        if offsets:
            try:
                await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # a rebalance took the partition: its new owner replays
                log.warning("submit topic: commit failed: %s", exc)

    @staticmethod
    def _read(msg: Message) -> Submission | str:
        """The record's submission, or why it is not one."""
        try:
            return Submission.from_json(msg.value() or b"")
        except (ValueError, KeyError, TypeError) as exc:
            return f"not a submission the connector can submit: {exc}"

    def _refuse_record(
        self, raw: bytes, reason: str, tp: tuple[str, int], offset: int, of_partition: _Progress
    ) -> None:
        """An unreadable submit-topic record: kept on sms.quarantine.v1 with the reason, its segment given up
        when its message id and number read (the status stage tells the customer), then committed past."""
        _floods.log(
            "unreadable submit-topic records", logging.ERROR, "submit topic @%d/%d: %s", tp[1], offset, reason
        )
        self.refused += 1
        who = submission_identity(raw)

        async def refuse() -> None:
            await self._quarantine(raw, reason, tp, offset)
            if who is not None:
                await self._write(who[0], Abandoned(who[0], who[1], _now_ms(), 0, reason))

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled():
                of_partition.finish(offset)

        self._launch(refuse(), tp, done)

    def _launch(
        self,
        work: Coroutine[Any, Any, None],
        tp: tuple[str, int],
        done: Callable[[asyncio.Task[None]], None],
    ) -> None:
        """Run ``work`` for a record of ``tp`` (the partition a revocation or a stop asks about); ``done``
        after it ended, however."""
        task = asyncio.create_task(work)
        self._task_tp[task] = tp

        def finished(t: asyncio.Task[None]) -> None:
            self._task_tp.pop(t, None)
            done(t)

        task.add_done_callback(finished)

    async def _quarantine(self, raw: bytes, reason: str, tp: tuple[str, int], offset: int) -> None:
        if self.serde is None:
            return
        record = quarantine_record(
            "submit", reason, received_at=_now_ms(), pdu=raw, source=Source(tp[0], tp[1], offset)
        )
        try:
            value = self.serde.encode(QUARANTINE_TOPIC, record)
        except Exception as exc:  # the registry is down: the log line above keeps the reason
            _floods.log(
                "submit-topic records not quarantined",
                logging.ERROR,
                "submit topic @%d/%d: not quarantined (%s)",
                tp[1],
                offset,
                exc,
            )
            return
        await self._store(QUARANTINE_TOPIC, value, "submit")

    async def _settle(self, tasks: list[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        """Cancel those of ``tasks`` that wait where nothing of their segment is written yet, and wait (up to
        ``revoke_wait_s``) for the others to reach their outcome; the ones still running then."""
        for t in tasks:
            if t in self._resting:
                t.cancel()
        if not tasks:
            return set()
        _, late = await asyncio.wait(tasks, timeout=self.revoke_wait_s)
        return late

    async def _at_rest(self, waiting: Awaitable[R]) -> R:
        """Await ``waiting``, a wait before anything of the segment is written (its copy's turn, the carrier's
        window, rate, bind or a retry's backoff): there a revocation of its partition or a stop cancels the
        task, and a task of a partition being revoked, or of a connector stopping, goes no further."""
        task = asyncio.current_task()
        revoked = task is not None and self._task_tp.get(task) in self._revoking  # type: ignore[arg-type]
        if revoked or self._stopping.is_set():
            if inspect.iscoroutine(waiting):
                waiting.close()
            raise asyncio.CancelledError
        self._resting.add(task)  # type: ignore[arg-type]
        try:
            return await waiting
        finally:
            self._resting.discard(task)  # type: ignore[arg-type]

    async def _ledger_current(self) -> None:
        """Read the ledger up to its end: before taking records of partitions just assigned (their previous
        owner wrote its last outcomes just before it let them go), and before a handed-over segment's
        attempts are counted (another connector may have made them just before)."""
        await self._retried(self._follower.current, "submit ledger: not read to its end", until_stopping=True)

    async def _take_guarded(
        self, sub: Submission, owner: str | None, tp: tuple[str, int], offset: int
    ) -> None:
        """One segment, whatever happens to it: a failure of ours gives the segment up with the reason
        (the customer's status says so) instead of holding its partition's commit point until a restart."""
        try:
            await self._take_submission(sub, owner)
        except Exception as exc:
            _floods.log(
                f"segments the connector failed on ({type(exc).__name__})",
                logging.ERROR,
                "%s#%d (submit topic @%d/%d): failed in the connector; given up", sub.message_id, sub.seq,
                tp[1], offset,
                exc_info=True,
            )  # fmt: skip
            self.refused += 1
            reason = f"the connector failed on it: {type(exc).__name__}: {exc}"[:500]
            await self._write(sub.message_id, Abandoned(sub.message_id, sub.seq, _now_ms(), 0, reason))

    async def _take_submission(self, sub: Submission, owner: str | None = None) -> None:
        async with self._segment_locks.hold((sub.message_id, sub.seq), self._at_rest):
            await self._submit(sub, owner)

    async def _submit(self, sub: Submission, owner: str | None = None) -> None:
        key = (sub.message_id, sub.seq)
        line = self.lines.get(sub.route.carrier)
        try:  # before any intent: a segment that cannot be written must not look sent
            encode_pdu(submit_pdu(sub, sub.expires_at_ms))
        except PduError as exc:
            self.refused += 1
            why = f"does not encode as a submit_sm: {exc}"
            _floods.log(
                "segments that do not encode as a submit_sm",
                logging.ERROR,
                "%s#%d: %s; given up",
                sub.message_id,
                sub.seq,
                why,
            )
            await self._write(
                sub.message_id, Abandoned(sub.message_id, sub.seq, _now_ms(), int(exc.status), why)
            )
            return
        if sub.position > 0:  # handed over, maybe by another connector: see what it wrote before
            await self._at_rest(self._ledger_current())
        if line is None:
            await self._hand_over(
                sub, 0, f"carrier {sub.route.carrier} is not served by this connector", owner
            )
            return
        while not self._stopping.is_set():
            ledger = self._ledger_of(key)
            step = ledger.next_step(sub.message_id, sub.seq, self.policy, _now_ms())
            if not isinstance(step, Submit):
                log.debug("%s#%d: %s", sub.message_id, sub.seq, getattr(step, "why", step))
                return
            attempts = ledger.segments.get(key, ())
            here = [a for a in attempts if a.intent.route == sub.route.route_id and a.outcome is not None]
            if len(here) >= self.settings.attempts_per_route:
                last = here[-1].outcome
                status = last.command_status or 0 if last is not None else 0
                await self._hand_over(
                    sub, status, f"refused for now {len(here)} times on {sub.route.route_id}", owner
                )
                return
            wait_s = (step.not_before_ms - _now_ms()) / 1000
            if wait_s > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await self._at_rest(asyncio.wait_for(self._stopping.wait(), wait_s))
                continue  # re-read the ledger: it may have moved on while we slept
            session = await self._at_rest(line.bound_session(self.settings.bind_wait_s))
            if session is None:  # nothing was written to the carrier: the next route may take it
                await self._hand_over(
                    sub, 0, f"no bind of {line.carrier.id} up within {self.settings.bind_wait_s:g} s", owner
                )
                return
            outcome = await self._attempt(sub, line, session, step.attempt)
            if outcome.kind != "retryable":
                return
        # stopping, and the segment is not done: left to the next run (its offset must not be committed as
        # if it were finished; the ledger tells the next run what was done)
        raise asyncio.CancelledError

    async def _attempt(
        self, sub: Submission, line: CarrierLine, session: EsmeSession, attempt: int
    ) -> Outcome:
        await self._at_rest(line.window.acquire(PRIORITY_RANK.get(sub.priority, 1)))
        try:
            await self._at_rest(line.pacer.wait())
            intent = Intent(
                sub.message_id, sub.seq, attempt, sub.route.route_id, sub.destination, sub.ref, _now_ms()
            )
            await self._write(sub.message_id, Carried(intent, line.carrier.id))
            try:
                resp = await session.request(
                    submit_pdu(sub, sub.expires_at_ms), line.carrier.response_timeout_s
                )
            except (TimeoutError, ConnectionError, OSError) as exc:
                _floods.log(
                    f"{line.carrier.id}: submit_sm not answered ({type(exc).__name__})",
                    logging.WARNING,
                    "%s#%d attempt %d via %s: no resp (%s)",
                    sub.message_id,
                    sub.seq,
                    attempt,
                    line.carrier.id,
                    type(exc).__name__,
                )
                outcome = Outcome(sub.message_id, sub.seq, attempt, "timeout", _now_ms())
            else:
                self.submitted += 1
                status = resp.command_status
                kind = self.policy.classify(status)
                carrier_id = str(resp.params.get("message_id", "") or "") if kind == "accepted" else None
                outcome = Outcome(sub.message_id, sub.seq, attempt, kind, _now_ms(), carrier_id, status)
            await self._write(sub.message_id, Carried(outcome, line.carrier.id))
            return outcome
        finally:
            line.window.release()

    async def _hand_over(self, sub: Submission, status: int, why: str, owner: str | None = None) -> None:
        nxt = sub.handed_over()
        if nxt is None:
            reason = f"every route was tried; last: {why}"
            _floods.log(
                "segments given up on every route",
                logging.WARNING,
                "%s#%d: %s",
                sub.message_id,
                sub.seq,
                reason,
            )
            await self._write(sub.message_id, Abandoned(sub.message_id, sub.seq, _now_ms(), status, reason))
            return
        _floods.log(
            f"segments handed to route {nxt.route.route_id}",
            logging.INFO,
            "%s#%d: %s; handing it to %s",
            sub.message_id,
            sub.seq,
            why,
            nxt.route.route_id,
        )
        self.handed_over += 1
        await self._store(SUBMIT_TOPIC, nxt.to_json(), nxt.route.carrier, owner_headers(owner))
