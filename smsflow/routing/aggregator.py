"""Hopping-window aggregation of route observations into health records, as a pure class.

Time only moves through the observations' own timestamps and explicit ``advance(now)`` calls, so the same
inputs give the same records whatever the wall clock, and however often ``advance`` is called in between.
A window of ``size`` ending at a multiple of ``step`` closes when time reaches its end; it is kept as
``size/step`` step buckets, so each observation is counted once and each window merges a few buckets.

The state is bounded whatever the traffic: webhook attempt durations, one per POST, are counted per value
rounded to three significant digits (``latency_key``), so a bucket holds at most a few thousand distinct
values however many attempts it counts, and the p95 is the true nearest-rank p95 rounded the same way
(rounding is monotonic). Probe latencies and enquire_link round trips come a few per minute and are kept as
they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smsflow.routing.health import HealthRecord, scored
from smsflow.routing.model import Route, RouteKind, Thresholds, WindowSpec
from smsflow.routing.observations import (
    AttemptOutcome,
    BindRefused,
    CarrierOutcome,
    CarrierTraffic,
    EnquireLinkRtt,
    Observation,
    ProbeReturned,
    ProbeSent,
    SessionBound,
    SessionLost,
    WebhookAttempt,
)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation between two."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


_MAX_LATENCY_MS = 1e9  # ~11 days: anything longer (or not a number) is not a duration we measured


def latency_key(ms: float) -> str:
    """A duration rounded to three significant digits, as a JSON-safe key: ``9876.5`` -> ``"9.88e+03"``."""
    value = float(ms)
    if not value > 0:  # zero, negative, NaN
        value = 0.0
    return format(min(value, _MAX_LATENCY_MS), ".3g")


def counted_percentile(counts: Mapping[str, int], q: float) -> float:
    """``percentile`` of the values ``counts`` holds (``latency_key`` -> how many), without expanding them."""
    ordered = sorted((float(k), n) for k, n in counts.items() if n > 0)
    rank = max(1, math.ceil(q * sum(n for _, n in ordered)))
    seen = 0
    for value, n in ordered:
        seen += n
        if seen >= rank:
            return value
    raise ValueError("no values")


@dataclass
class _Bucket:
    bind_failures: int = 0
    rtts: list[float] = field(default_factory=list)
    carrier: dict[CarrierOutcome, int] = field(default_factory=dict)
    probe_latencies: list[float] = field(default_factory=list)
    probes_lost: int = 0
    attempts: dict[AttemptOutcome, int] = field(default_factory=dict)
    attempt_latencies: dict[str, int] = field(default_factory=dict)  # latency_key -> attempts


@dataclass
class _RouteTrack:
    kind: RouteKind
    buckets: dict[int, _Bucket] = field(default_factory=dict)
    bound: set[str] | None = None  # None until the first bind event: unknown is not "zero sessions"
    baseline: float | None = None  # messages per window, from complete windows only
    probes: dict[str, int] = field(default_factory=dict)  # probe id -> sent at
    last_busy: tuple[int, dict[str, float]] | None = None  # webhook: the last window with attempts

    def bucket(self, index: int) -> _Bucket:
        b = self.buckets.get(index)
        if b is None:
            b = self.buckets[index] = _Bucket()
        return b

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "buckets": {str(i): _bucket_dict(b) for i, b in self.buckets.items()},
            "bound": None if self.bound is None else sorted(self.bound),
            "baseline": self.baseline,
            "probes": dict(self.probes),
            "last_busy": None if self.last_busy is None else [self.last_busy[0], self.last_busy[1]],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _RouteTrack:
        busy = data.get("last_busy")
        return cls(
            kind=RouteKind(data["kind"]),
            buckets={int(i): _bucket_from(b) for i, b in data["buckets"].items()},
            bound=None if data["bound"] is None else set(data["bound"]),
            baseline=data["baseline"],
            probes={k: int(v) for k, v in data["probes"].items()},
            last_busy=None if busy is None else (int(busy[0]), {k: float(v) for k, v in busy[1].items()}),
        )


def _bucket_dict(b: _Bucket) -> dict[str, Any]:
    return {
        "bind_failures": b.bind_failures,
        "rtts": b.rtts,
        "carrier": {o.value: n for o, n in b.carrier.items()},
        "probe_latencies": b.probe_latencies,
        "probes_lost": b.probes_lost,
        "attempts": {o.value: n for o, n in b.attempts.items()},
        "attempt_latencies": dict(b.attempt_latencies),
    }


def _bucket_from(d: Mapping[str, Any]) -> _Bucket:
    return _Bucket(
        bind_failures=int(d["bind_failures"]),
        rtts=[float(v) for v in d["rtts"]],
        carrier={CarrierOutcome(o): int(n) for o, n in d["carrier"].items()},
        probe_latencies=[float(v) for v in d["probe_latencies"]],
        probes_lost=int(d["probes_lost"]),
        attempts={AttemptOutcome(o): int(n) for o, n in d["attempts"].items()},
        attempt_latencies=_latency_counts(d["attempt_latencies"]),
    )


def _latency_counts(saved: Any) -> dict[str, int]:
    """A snapshot's attempt durations: counted per ``latency_key``, or (a snapshot written before they were)
    the list of every duration."""
    if isinstance(saved, Mapping):
        return {latency_key(float(k)): int(n) for k, n in saved.items()}
    counts: dict[str, int] = {}
    for v in saved:
        key = latency_key(float(v))
        counts[key] = counts.get(key, 0) + 1
    return counts


class HealthAggregator:
    """Feed observations in time order (late ones count only towards windows still open)."""

    def __init__(
        self,
        routes: Iterable[Route],
        start: int,
        window: WindowSpec | None = None,
        thresholds: Thresholds | None = None,
        route_thresholds: Mapping[str, Thresholds] | None = None,
    ) -> None:
        self.window = window or WindowSpec()
        self.thresholds = thresholds or Thresholds()
        self.route_thresholds = dict(route_thresholds or {})
        self.start = start
        self._tracks = {r.id: _RouteTrack(r.kind) for r in sorted(routes, key=lambda r: r.id)}
        step = self.window.step_ms
        self._closed = (start // step) * step  # the last window end already emitted
        decay = self.window.step_s / self.window.baseline_half_life_s
        self._alpha = 1.0 - 0.5**decay
        self.ignored = 0  # observations for routes nobody configured, or stale probe returns

    @property
    def now(self) -> int:
        return self._closed

    def snapshot(self) -> dict[str, Any]:
        """Everything the aggregator remembers, JSON-safe: what the stage keeps in its state table."""
        return {
            "start": self.start,
            "closed": self._closed,
            "ignored": self.ignored,
            "routes": {rid: track.to_dict() for rid, track in self._tracks.items()},
        }

    def set_routes(self, routes: Iterable[Route]) -> None:
        """The routes changed while running (a subscription's endpoints came or went): a new route starts
        empty from the next window, a removed one stops; the others keep their buckets."""
        wanted = {r.id: r.kind for r in routes}
        tracks = {rid: t for rid, t in self._tracks.items() if wanted.get(rid) is t.kind}
        for rid, kind in wanted.items():
            tracks.setdefault(rid, _RouteTrack(kind))
        self._tracks = dict(sorted(tracks.items()))

    def restore(self, data: Mapping[str, Any]) -> None:
        """Continue from a snapshot. Routes come from the config: new ones start empty, removed ones go."""
        self.start = int(data["start"])
        self._closed = int(data["closed"])
        self.ignored = int(data.get("ignored", 0))
        for rid, track in data["routes"].items():
            if rid in self._tracks and self._tracks[rid].kind.value == track["kind"]:
                self._tracks[rid] = _RouteTrack.from_dict(track)

    def observe(self, obs: Observation) -> list[HealthRecord]:
        """Close every window that ends at or before ``obs.at``, then count the observation."""
        out = self.advance(obs.at)
        track = self._tracks.get(obs.route_id)
        if track is None:
            self.ignored += 1
            return out
        self._count(track, obs)
        return out

    def advance(self, now: int) -> list[HealthRecord]:
        """Close the windows that end at or before ``now``; one record per route per closed window."""
        step = self.window.step_ms
        out: list[HealthRecord] = []
        while self._closed + step <= now:
            end = self._closed + step
            for route_id, track in self._tracks.items():
                self._expire_probes(track, end)
                out.append(self._close(route_id, track, end))
            self._closed = end
            oldest_needed = (end + step - self.window.size_ms) // step
            for track in self._tracks.values():
                for index in [i for i in track.buckets if i < oldest_needed]:
                    del track.buckets[index]
        return out

    def _index(self, at: int) -> int:
        return at // self.window.step_ms

    def _count(self, track: _RouteTrack, obs: Observation) -> None:
        b = track.bucket(self._index(obs.at))
        match obs:
            case SessionBound():
                track.bound = (track.bound or set()) | {obs.session}
            case SessionLost():
                track.bound = (track.bound or set()) - {obs.session}
                if not obs.clean:
                    b.bind_failures += 1
            case BindRefused():
                track.bound = (track.bound or set()) - {obs.session}
                b.bind_failures += 1
            case EnquireLinkRtt():
                b.rtts.append(obs.rtt_ms)
            case CarrierTraffic():
                b.carrier[obs.outcome] = b.carrier.get(obs.outcome, 0) + 1
            case ProbeSent():
                track.probes[obs.probe_id] = obs.at
            case ProbeReturned():
                sent = track.probes.pop(obs.probe_id, None)
                if sent is None:
                    self.ignored += 1
                elif obs.at - sent > self.window.probe_timeout_s * 1000:
                    # Back after its deadline: lost, counted when it expired, as if the return never came.
                    track.bucket(self._index(sent + self.window.probe_timeout_s * 1000)).probes_lost += 1
                else:
                    b.probe_latencies.append(float(obs.at - sent))
            case WebhookAttempt():
                b.attempts[obs.outcome] = b.attempts.get(obs.outcome, 0) + 1
                key = latency_key(obs.latency_ms)
                b.attempt_latencies[key] = b.attempt_latencies.get(key, 0) + 1

    def _expire_probes(self, track: _RouteTrack, end: int) -> None:
        timeout = self.window.probe_timeout_s * 1000
        for probe_id, sent in sorted(track.probes.items()):
            if sent + timeout < end:
                del track.probes[probe_id]
                track.bucket(self._index(sent + timeout)).probes_lost += 1

    def _close(self, route_id: str, track: _RouteTrack, end: int) -> HealthRecord:
        start = end - self.window.size_ms
        first, last = self._index(start), self._index(end - 1)
        buckets = [track.buckets[i] for i in range(first, last + 1) if i in track.buckets]
        if track.kind is RouteKind.CARRIER:
            figures = self._carrier_figures(track, buckets, complete=start >= self.start)
        else:
            figures = self._webhook_figures(track, buckets, end)
        thresholds = self.route_thresholds.get(route_id, self.thresholds)
        return scored(route_id, track.kind, start, end, figures, thresholds)

    def _carrier_figures(
        self, track: _RouteTrack, buckets: list[_Bucket], complete: bool
    ) -> dict[str, float]:
        f: dict[str, float] = {}
        if track.bound is not None:
            f["bound_sessions"] = float(len(track.bound))
        f["bind_failures"] = float(sum(b.bind_failures for b in buckets))
        rtts = [v for b in buckets for v in b.rtts]
        if rtts:
            f["enquire_link_rtt_ms"] = percentile(rtts, 0.95)
        counts = {o: sum(b.carrier.get(o, 0) for b in buckets) for o in CarrierOutcome}
        messages = sum(counts.values())
        f["messages"] = float(messages)
        f["outcomes"] = float(messages)
        if messages:
            f["error_rate"] = counts[CarrierOutcome.ERROR] / messages
            f["temporary_error_rate"] = counts[CarrierOutcome.TEMPORARY_ERROR] / messages
        if track.baseline is not None:
            f["baseline_messages"] = round(track.baseline, 6)
            if track.baseline > 0:
                f["throughput_ratio"] = round(messages / track.baseline, 6)
        if complete:
            # Only whole windows teach the baseline: a half-filled first window is not "normal".
            track.baseline = (
                float(messages)
                if track.baseline is None
                else track.baseline + self._alpha * (messages - track.baseline)
            )
        latencies = [v for b in buckets for v in b.probe_latencies]
        lost = sum(b.probes_lost for b in buckets)
        if latencies:
            f["probe_latency_ms"] = percentile(latencies, 0.95)
        f["probes_resolved"] = float(len(latencies) + lost)
        if latencies or lost:
            f["probe_loss"] = lost / (len(latencies) + lost)
        return f

    def _webhook_figures(self, track: _RouteTrack, buckets: list[_Bucket], end: int) -> dict[str, float]:
        counts = {o: sum(b.attempts.get(o, 0) for b in buckets) for o in AttemptOutcome}
        attempts = sum(counts.values())
        f: dict[str, float] = {"attempts": float(attempts)}
        if not attempts:
            if track.last_busy is None:
                return f  # never used: no evidence against it, so an idle secondary can take over
            # A broken endpoint must not turn healthy by being left alone once traffic moved away:
            # it keeps its last judged figures until attempts (traffic or pings) show otherwise.
            at, held = track.last_busy
            return {**held, "idle_ms": float(end - at)}
        latencies: dict[str, int] = {}
        for b in buckets:
            for key, n in b.attempt_latencies.items():
                latencies[key] = latencies.get(key, 0) + n
        f["latency_p95_ms"] = counted_percentile(latencies, 0.95)
        f["success_rate"] = counts[AttemptOutcome.SUCCESS] / attempts
        f["timeout_rate"] = counts[AttemptOutcome.TIMEOUT] / attempts
        f["throttled_rate"] = counts[AttemptOutcome.THROTTLED] / attempts
        connect = counts[AttemptOutcome.CONNECT_ERROR] + counts[AttemptOutcome.TLS_ERROR]
        f["connect_error_rate"] = connect / attempts
        track.last_busy = (end, f)
        return f
