"""Outbound stage handlers: requests to submissions, ledger entries to statuses, receipts to segments.

Declared in streams/topology.py; three agents (docs/outbound.md):

- `outbound-requests` on sms.outbound.v1 (keyed by destination): encode the text (a concatenation
  reference from the partition's table of references per sender and destination), choose the routes (the
  double list: `route_candidates` over the decisions of sms.routes.decisions.v1, followed into
  `ctx.route_states`; with no routing policy, the configured carriers in order), write the message's `Plan`
  to sms.outbound.ledger.v1 and one `Submission` per segment to sms.outbound.submit.v1 keyed by the first
  route's carrier, each acknowledged before the request is acked. A replayed request makes the same
  submissions again; the connector's ledger submits none of them twice.
- `outbound-status` on sms.outbound.ledger.v1 (keyed by message id) and its tick topic: fold every entry
  into the message's `Track` (table `outbound-status`), publish each transition to sms.outbound.status.v1
  (Avro, keyed by message id), and on each tick expire the messages whose validity has passed.
- `outbound-receipts` on sms.receipts.v1: match each receipt to a segment by the carrier's id
  (`SubmitIndex`, built from every accepted outcome of the ledger, read whole by each worker) with the
  carrier's receipt id form; a match becomes a `ReceiptMatch` ledger entry, anything else goes to
  sms.outbound.receipts.unmatched.v1 with its reason. A receipt can overtake the outcome that names its id
  (they travel on different topics), so a miss is looked up again for a few seconds before it is unmatched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, cast

import faust
import orjson
from aiokafka.partitioner import murmur2
from confluent_kafka import Message

from smsflow.compacted import CompactedFollower
from smsflow.delivery.failover import ActiveList
from smsflow.logsummary import SummarizedLog
from smsflow.metrics import OUTBOUND_LEDGER_SKIPPED
from smsflow.outbound.correlation import Matched, SegmentRef, SubmitIndex, resp_key
from smsflow.outbound.encode import EncodeError, encode_message, segments_needed
from smsflow.outbound.expiry import ExpiryIndex
from smsflow.outbound.records import request_from_record
from smsflow.outbound.references import (
    RefExhausted,
    RefsIndex,
    allocate_in,
    destination_of,
    free_at,
    refs_key,
)
from smsflow.outbound.submission import (
    LEDGER_TOPIC,
    SUBMIT_TOPIC,
    UNMATCHED_RECEIPTS_TOPIC,
    Candidate,
    Carried,
    Plan,
    ReceiptMatch,
    Submission,
    ledger_value,
    owner_headers,
    read_ledger,
)
from smsflow.outbound.tracking import Track, begin, expire, fold
from smsflow.records import DeliveryReceipt
from smsflow.routing.model import RouteKind, ScopeKind, with_api_policies
from smsflow.routing.policy_book import PolicyBook
from smsflow.schemas import OUTBOUND_STATUS_TOPIC, OUTBOUND_TOPIC, RECEIPTS_TOPIC, ROUTE_DECISIONS_TOPIC
from streams.context import StreamContext
from streams.punctuation import punctuate_owned

log = logging.getLogger(__name__)

SUBSCRIPTION_SCOPE_PREFIX = f"{ScopeKind.SUBSCRIPTION.value}:"

RECEIPT_LOOKUP_S = 5.0
"""How long after its arrival a receipt may wait for the accepted outcome that names its id."""


def carrier_candidates(ctx: StreamContext) -> tuple[Candidate, ...]:
    """With no routing policy for a destination: every carrier that can submit, in config order (the first
    is the primary, the others the secondary list)."""
    return tuple(Candidate(c.route_id, c.id) for c in ctx.config.carriers if c.bind != "receiver")


def choose_routes(ctx: StreamContext, destination: str) -> tuple[Candidate, ...] | str:
    """The routes to try, in order, or why there is none."""
    routing = ctx.routing or getattr(ctx.config, "routing", None)
    if routing is not None:
        from smsflow.outbound.route_choice import NoRoute, route_candidates

        choice = route_candidates(routing, ctx.route_states, destination, None)
        if isinstance(choice, NoRoute):
            fallback = carrier_candidates(ctx)
            return fallback if routing.for_number(destination, None) is None and fallback else choice.reason
        return tuple(Candidate(c.route_id, c.carrier) for c in choice)
    return carrier_candidates(ctx) or "no carrier that can submit is configured"


class FollowedRouteStates:
    """The double list's latest decision per carrier scope, read whole from sms.routes.decisions.v1
    (compacted, key = scope, each decision carries the scope's whole state) and then followed, into
    ``ctx.route_states``: the outbound agent submits through the active list. A restarted worker reads the
    topic again before it plans anything, so it never falls back to a stale "primary" while the latest
    decision says secondary."""

    def __init__(self, ctx: StreamContext) -> None:
        self.states = ctx.route_states
        self.decode = lambda value: ctx.serde.decode(ROUTE_DECISIONS_TOPIC, value)
        self.follower = CompactedFollower(
            ctx.bootstrap, (ROUTE_DECISIONS_TOPIC,), self._on_record, "outbound-route-decisions"
        )

    def _on_record(self, msg: Message) -> None:
        key = msg.key()
        if key is None:
            return
        scope = key.decode("utf-8")
        if scope.startswith(SUBSCRIPTION_SCOPE_PREFIX):
            return  # a webhook subscription's list: delivery follows those
        value = msg.value()
        if value is None:  # a tombstone: the policy is gone
            self.states.pop(scope, None)
            return
        try:
            self.states[scope] = ActiveList.from_decision(self.decode(value))
        except Exception as exc:  # one unreadable decision must not stop the following of the others
            log.error(
                "%s @%s: unreadable decision for %s ignored: %s",
                ROUTE_DECISIONS_TOPIC,
                msg.offset(),
                scope,
                exc,
            )


class ReceiptIndex:
    """`SubmitIndex` over every accepted outcome in the ledger, updated as the ledger is followed."""

    def __init__(self, bootstrap: str) -> None:
        self._by_key: dict[Any, SegmentRef] = {}
        self.index = SubmitIndex(self._by_key)  # the dict is filled in place: one entry per accepted segment
        self._lock = threading.Lock()
        self.follower = CompactedFollower(bootstrap, (LEDGER_TOPIC,), self._on_record, "outbound-receipts")

    def _on_record(self, msg: Message) -> None:
        value = msg.value()
        if value is None:
            return
        entry = read_ledger(value)
        if isinstance(entry, Carried) and getattr(entry.record, "kind", None) == "accepted":
            carrier_id = getattr(entry.record, "carrier_message_id", None)
            if carrier_id:
                with self._lock:
                    self._by_key[(entry.carrier, resp_key(carrier_id))] = SegmentRef(
                        entry.record.message_id, entry.record.seq
                    )


OUTPUTS = (LEDGER_TOPIC, SUBMIT_TOPIC, OUTBOUND_STATUS_TOPIC, UNMATCHED_RECEIPTS_TOPIC)


class OutboundStage:
    """The outbound agents' handlers. ``outputs``: a topic per name in `OUTPUTS`; ``refs`` and ``tracks``:
    the tables of concatenation references (by destination) and message tracks (by message id);
    ``punctuation``: the internal topic the timer writes and the status agent reads beside the ledger."""

    @staticmethod
    def now_ms() -> int:
        """Wall-clock epoch ms (the ledger topic's retention is by it too); tests replace it."""
        return int(time.time() * 1000)

    def __init__(
        self,
        app: faust.App,
        ctx: StreamContext,
        outputs: dict[str, faust.TopicT],
        refs: Any,
        tracks: Any,
        punctuation: faust.TopicT,
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.outputs = outputs
        self.refs = refs
        self.tracks = tracks
        self.punctuation = punctuation
        self.punctuation_name = punctuation.get_topic_name()
        self.receipt_index = ReceiptIndex(ctx.bootstrap)
        self.expiry = ExpiryIndex(int(ctx.config.outbound.track_retention_s * 1000))
        self.skips = SummarizedLog(log)
        self.refs_index = RefsIndex()
        self.index_ready = asyncio.Event()
        self._index_ready_at = 0.0
        self.id_forms = {c.id: c.receipts.id_form for c in ctx.config.carriers}
        # the routes are chosen from the double list's decisions, once they are read whole. With no carrier
        # route in the routing section no policy can exist (not even one made through the API later): the
        # configured carriers in order
        carrier_routes = any(r.kind is RouteKind.CARRIER for r in ctx.config.routing.routes)
        self.route_states = FollowedRouteStates(ctx) if carrier_routes else None
        # ... and the policies by the API's (sms.routes.policies.v1) merged into the config's, as the routes
        # stage decides by them: a scope whose policy exists only through the API is routed by it
        self.policies = PolicyBook(ctx.bootstrap, "outbound-route-policies") if carrier_routes else None
        self.route_states_ready = asyncio.Event()
        if self.route_states is None:
            self.route_states_ready.set()
        else:
            ctx.loading_tasks.append(self.load_route_states)

    async def _send(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        fut = await self.outputs[topic].send(key=key.encode(), value=value, headers=headers)
        await fut  # the broker's ack (acks=all): the input is acked only after its outputs are stored

    # ---- requests -> plan + submissions ----

    async def requests(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            if event.message.topic == self.punctuation_name:
                self._prune_refs(event.message.partition, json.loads(event.value)["now"])
                continue
            try:
                req = request_from_record(self.ctx.serde.decode(OUTBOUND_TOPIC, event.value))
            except Exception as exc:  # an unreadable request cannot be sent; it must not block its partition
                self.skips.log(
                    "unreadable sms.outbound.v1 requests",
                    logging.ERROR,
                    "sms.outbound.v1 @%s: unreadable request skipped: %s",
                    event.message.offset,
                    exc,
                )
                continue
            await self._plan_and_submit(req, int(time.time() * 1000), event.message.partition)

    def _prune_refs(self, partition: int, now_ms: int) -> None:
        """Delete the references table's entries of this partition whose references have all aged out (a
        tombstone in its changelog): the table holds the pairs used within the reuse window."""
        if not self.refs_index.built(partition):
            # once per assignment of the partition (its table recovered): the only walk of every entry
            self.refs_index.rebuild(partition, self._refs_of(partition))
        for key in self.refs_index.due(partition, now_ms):
            doc = self.refs.get(key)
            if doc is None:
                continue
            if free_at(doc, self.refs_index.reuse_after_ms) > now_ms:  # the table decides
                self.refs_index.note(partition, key, doc)
                continue
            del self.refs[key]

    def _refs_of(self, partition: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (key, doc)
            for key, doc in list(self.refs.items())
            if doc is not None and _partition_of(destination_of(key), self.ctx.partitions) == partition
        ]

    async def load_route_states(self) -> None:
        """A loading task: the decisions topic read whole (before the first request is planned)."""
        assert self.route_states is not None and self.policies is not None
        self.policies.listeners.append(self._policy_changed)
        await asyncio.gather(self.route_states.follower.start(120.0), self.policies.start(120.0))
        self.use_policies()
        self.route_states_ready.set()
        if self.ctx.liveness is not None:
            self.ctx.liveness.startup.mark("outbound route decisions loaded")

    def use_policies(self) -> None:
        """Route by the config's policies with the API's merged in (an API policy for a scope replaces the
        config's)."""
        if self.policies is not None:
            self.ctx.routing = with_api_policies(self.ctx.config.routing, self.policies.api.policies())

    async def _policy_changed(self, change: Any) -> None:
        self.use_policies()

    async def _plan_and_submit(self, req: Any, now: int, partition: int) -> None:
        await self.route_states_ready.wait()
        ref = 0
        if segments_needed(req.text) > 1:
            got = allocate_in(self.refs, req.sender, req.to, now)
            if isinstance(got, RefExhausted):
                await self._send(LEDGER_TOPIC, req.message_id, ledger_value(_plan(req, 1, now, got.reason)))
                return
            ref = got
            key = refs_key(req.sender, req.to)
            self.refs_index.note(partition, key, self.refs[key])
        try:
            encoded = encode_message(req.text, ref)
        except EncodeError as exc:  # the API checked it; a request written by other means may not be
            await self._send(LEDGER_TOPIC, req.message_id, ledger_value(_plan(req, 1, now, exc.reason)))
            return
        routes = choose_routes(self.ctx, req.to)
        parts = len(encoded.segments)
        no_route = routes if isinstance(routes, str) else None
        await self._send(LEDGER_TOPIC, req.message_id, ledger_value(_plan(req, parts, now, no_route)))
        if isinstance(routes, str):
            return
        for seg in encoded.segments:
            sub = Submission(
                message_id=req.message_id,
                seq=seg.seq,
                parts=parts,
                destination=req.to,
                sender=req.sender,
                sender_kind=req.sender_kind,
                data_coding=encoded.data_coding,
                esm_class=seg.esm_class,
                short_message=seg.short_message,
                priority=req.priority,
                expires_at_ms=req.expires_at_ms,
                ref=encoded.ref,
                candidates=routes,
            )
            await self._send(SUBMIT_TOPIC, sub.route.carrier, sub.to_json(), owner_headers(req.owner))

    # ---- ledger -> statuses ----

    async def _publish(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            value = self.ctx.serde.encode(OUTBOUND_STATUS_TOPIC, rec)
            await self._send(OUTBOUND_STATUS_TOPIC, rec["message_id"], value)

    def _skip(self, reason: str, level: int, msg: str, *args: object) -> None:
        """A ledger entry the status agent skips: counted by ``reason``, and logged as a summary when they
        come in a flood (a ledger read again from its start would otherwise log a line or two per message
        ever sent)."""
        OUTBOUND_LEDGER_SKIPPED.labels(reason).inc()
        self.skips.log(f"ledger entries skipped ({reason})", level, msg, *args)

    async def status(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            if event.message.topic == self.punctuation_name:
                await self._expire_partition(event.message.partition, json.loads(event.value)["now"])
                self.skips.flush()
                continue
            try:
                entry = read_ledger(event.value)
            except Exception as exc:
                self._skip(
                    "unreadable",
                    logging.ERROR,
                    "%s @%s: unreadable entry skipped: %s",
                    LEDGER_TOPIC,
                    event.message.offset,
                    exc,
                )
                continue
            mid = event.key.decode() if event.key else ""
            raw = self.tracks.get(mid)
            if isinstance(entry, Plan):
                if raw is not None:
                    continue  # a replayed request's plan: the message is tracked already
                if entry.at_ms + self.expiry.retention_ms < self.now_ms():
                    # older than any track is kept: a message whose track was pruned (a ledger read again
                    # from its start); beginning it again would publish its first statuses a second time
                    self._skip(
                        "plan_past_retention",
                        logging.INFO,
                        "%s: plan older than the track retention; not tracked again",
                        mid,
                    )
                    continue
                track, records = begin(entry)
            elif raw is None:
                self._skip(
                    "before_plan", logging.WARNING, "%s: ledger entry before the message's plan; ignored", mid
                )
                continue
            else:
                out = fold(Track.from_dict(raw), entry)
                if not isinstance(out, tuple):
                    self._skip("refused", logging.WARNING, "%s: %s", mid, out.reason)
                    continue
                track, records = out
            await self._publish(records)
            self._write_track(event.message.partition, mid, track)

    def _write_track(self, partition: int, mid: str, track: Track) -> None:
        # The ledger is keyed by message id, co-partitioned with the table: its partition is the track's.
        self.tracks[mid] = track.to_dict()
        self.expiry.note(partition, mid, track.status.expires_at_ms, track.final, track.settled_at_ms)

    async def _expire_partition(self, partition: int, now_ms: int) -> None:
        if not self.expiry.built(partition):
            # Once per assignment of the partition (its table recovered): the only walk of every track.
            self.expiry.rebuild(partition, self._tracks_of(partition))
        for mid in self.expiry.due(partition, now_ms):
            raw = self.tracks.get(mid)
            if raw is None:
                continue
            track = Track.from_dict(raw)
            if track.final or now_ms < track.status.expires_at_ms:
                continue
            track, records = expire(track, now_ms)
            await self._publish(records)
            self._write_track(partition, mid, track)
        self._prune(partition, now_ms)

    def _prune(self, partition: int, now_ms: int) -> None:
        """Delete the final tracks kept past their retention (a tombstone in the table's changelog): the
        table holds the last days' messages, not every message ever sent."""
        for mid in self.expiry.prunable(partition, now_ms):
            raw = self.tracks.get(mid)
            if raw is None:
                continue
            track = Track.from_dict(raw)
            expires, settled = track.status.expires_at_ms, track.settled_at_ms
            if not track.final or self.expiry.prune_time(expires, settled) > now_ms:
                # the index disagrees with the table: the table decides, and is noted again
                self.expiry.note(partition, mid, expires, track.final, settled)
                continue
            del self.tracks[mid]

    def _tracks_of(self, partition: int) -> list[tuple[str, int, bool, int]]:
        out = []
        for mid, raw in list(self.tracks.items()):
            if raw is None or _partition_of(mid, self.ctx.partitions) != partition:
                continue
            track = Track.from_dict(raw)
            out.append((mid, track.status.expires_at_ms, track.final, track.settled_at_ms))
        return out

    async def on_partitions_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        # Another worker may write the partition's tracks meanwhile: rebuilt from the table when it is back.
        for tp in revoked:
            if tp.topic in (LEDGER_TOPIC, self.punctuation_name):
                self.expiry.forget(tp.partition)
            if tp.topic in (OUTBOUND_TOPIC, self.punctuation_name):
                self.refs_index.forget(tp.partition)

    async def punctuate(self) -> None:
        """The timer: one punctuation record for each partition of the ledger this worker owns."""
        await punctuate_owned(self.app, self.punctuation)

    # ---- receipts -> segments ----

    async def follow_ledger(self) -> None:
        await self.receipt_index.follower.start(120.0)
        self._index_ready_at = time.time()
        self.index_ready.set()

    async def stop(self, app: Any, **kwargs: Any) -> None:
        await self.receipt_index.follower.stop()
        if self.route_states is not None:
            await self.route_states.follower.stop()
        if self.policies is not None:
            await self.policies.stop()

    async def receipts(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                rec = self.ctx.serde.decode(RECEIPTS_TOPIC, event.value)
            except Exception as exc:
                self.skips.log(
                    "unreadable receipts",
                    logging.ERROR,
                    "%s @%s: unreadable receipt skipped: %s",
                    RECEIPTS_TOPIC,
                    event.message.offset,
                    exc,
                )
                continue
            await self._match(rec)

    async def _match(self, rec: dict[str, Any]) -> None:
        carrier = str(rec["carrier_id"])
        info = cast(DeliveryReceipt, rec)
        form = self.id_forms.get(carrier, "auto")
        at = _ms(rec["received_at"])
        # nothing is judged on a half-read ledger (a restarted worker reads receipts before it has read the
        # outcomes they name); then the wait counts from the receipt's arrival, not from now, so a backlog
        # of receipts nobody can match (MTs another platform sent) waits no more
        await self.index_ready.wait()
        deadline = max(at / 1000 + RECEIPT_LOOKUP_S, self._index_ready_at + 1.0)
        while True:
            found = self.receipt_index.index.match(carrier, info, form)
            if isinstance(found, Matched) or time.time() >= deadline:
                break
            await asyncio.sleep(0.25)
        if isinstance(found, Matched):
            ref = found.segment
            match = ReceiptMatch(
                ref.message_id, ref.seq, at, info["state"], info["error_code"], carrier, info["message_id"]
            )
            await self._send(LEDGER_TOPIC, ref.message_id, ledger_value(match))
            return
        doc = {
            "carrier_id": carrier,
            "receipt_id": rec["receipt_id"],
            "message_id": info["message_id"],
            "state": info["state"],
            "received_at": at,
            "reason": found.reason,
        }
        await self._send(UNMATCHED_RECEIPTS_TOPIC, carrier, orjson.dumps(doc))


def _plan(req: Any, parts: int, now: int, no_route: str | None) -> Plan:
    return Plan(req.message_id, req.owner, parts, req.expires_at_ms, req.callback_url, now, no_route)


def _partition_of(key: str, partitions: int) -> int:
    """The partition the Java client's (and aiokafka's) default partitioner gives a key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)
