"""Time to detect and switch for each fault, with the default settings, through the pure double-list core.

    .venv/bin/python bench/bench_double_list.py

A simulated minute-by-minute world, no Kafka: two carrier routes serving one pool (hk-a primary, hk-b
secondary; 2 binds each, 1 inbound SMS/s each, a probe every 10 s that returns in 1.5 s, enquire_link every
30 s) and two webhook endpoints (hook-1 primary, hook-2 secondary; 5 attempts/s on the active one). A fault
starts on the primary at several phases relative to the 10 s window step; the figures are logical times (the
window and decision rules), without the Kafka hops the Faust stage adds. The e2e test measures those later.
It also reports the cost per observation of the aggregator and per record of the state machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smsflow.routing.aggregator import HealthAggregator
from smsflow.routing.decisions import Decision, DecisionKind, DoubleList
from smsflow.routing.health import HealthState
from smsflow.routing.model import RoutingSection, parse_policies
from smsflow.routing.observations import (
    AttemptOutcome,
    BindRefused,
    CarrierTraffic,
    EnquireLinkRtt,
    Observation,
    ProbeReturned,
    ProbeSent,
    SessionBound,
    SessionLost,
    WebhookAttempt,
)

S = 1000
T0 = 1_700_000_000_000
WARMUP = 600 * S  # ten quiet minutes: baselines learnt, nothing recent in any window

SECTION: RoutingSection = parse_policies(
    {
        "routes": [
            {"id": "hk-a", "kind": "carrier", "carrier": "carrier-a", "pool": ["+8526"]},
            {"id": "hk-b", "kind": "carrier", "carrier": "carrier-b", "pool": ["+8526"]},
            {"id": "hook-1", "kind": "webhook", "url": "https://primary.example/sms"},
            {"id": "hook-2", "kind": "webhook", "url": "https://secondary.example/sms"},
        ],
        "policies": [
            {"scope": "prefix:+8526", "primary": ["hk-a"], "secondary": ["hk-b"]},
            {"scope": "subscription:sub_demo", "primary": ["hook-1"], "secondary": ["hook-2"]},
        ],
    }
)

Fault = Callable[[str, int], bool]  # (route, time) -> is the fault on


def carrier_world(route: str, start: int, end: int, fault: Fault, kind: str) -> Iterator[Observation]:
    yield from (SessionBound(route, start, f"{route}/{i}") for i in range(2))
    dropped = False
    for t in range(start, end, 500):
        bad = fault(route, t)
        if kind == "binds" and bad and not dropped:
            dropped = True
            yield from (SessionLost(route, t, f"{route}/{i}") for i in range(2))
        if kind == "binds" and not bad and dropped:
            dropped = False
            yield from (SessionBound(route, t, f"{route}/{i}") for i in range(2))
        if kind == "binds" and bad and t % (5 * S) == 0:
            yield BindRefused(route, t, f"{route}/0", "connection refused")
        if t % S == 0 and not (bad and kind in ("binds", "silent")):
            yield CarrierTraffic(route, t)
        if t % (30 * S) == 0 and not (bad and kind == "binds"):
            yield EnquireLinkRtt(route, t, 20.0)
        if t % (10 * S) == 0 and not (bad and kind == "binds"):
            yield ProbeSent(route, t, f"{route}@{t}")
    yield from ()


def probe_returns(observations: list[Observation], fault: Fault, kind: str) -> list[Observation]:
    out = list(observations)
    for obs in observations:
        if isinstance(obs, ProbeSent):
            bad = fault(obs.route_id, obs.at)
            if bad and kind == "probe_loss":
                continue
            delay = 8 * S if bad and kind == "probe_latency" else 1500
            out.append(ProbeReturned(obs.route_id, obs.at + delay, obs.probe_id))
    return sorted(out, key=lambda o: o.at)


def webhook_world(
    start: int, end: int, fault: Fault, kind: str, active: Callable[[], str]
) -> Iterator[Observation]:
    for t in range(start, end, 200):
        # Traffic goes to the active endpoint; the one off the active list gets a ping every 10 s (what the
        # later stage must send, or a failed endpoint never shows it has recovered).
        on = active()
        targets = [on] + [r for r in ("hook-1", "hook-2") if r != on and t % (10 * S) == 0]
        for route in targets:
            if fault(route, t) and kind == "webhook_503":
                yield WebhookAttempt(route, t, AttemptOutcome.HTTP_ERROR, 15.0)
            elif fault(route, t):
                yield WebhookAttempt(route, t, AttemptOutcome.TIMEOUT, 10_000.0)
            else:
                yield WebhookAttempt(route, t, AttemptOutcome.SUCCESS, 25.0)


def run(kind: str, fault: Fault, duration: int) -> tuple[list[Decision], dict[str, int]]:
    """Feed the world through the aggregator and both policies; decisions and first non-healthy record."""
    agg = HealthAggregator(SECTION.routes, start=T0, window=SECTION.window)
    machines = {p.scope.key: DoubleList(p) for p in SECTION.policies}
    states = {k: m.initial() for k, m in machines.items()}
    by_route = {rid: p.scope.key for p in SECTION.policies for rid in (*p.primary, *p.secondary)}
    decisions: list[Decision] = []
    first_bad: dict[str, int] = {}
    end = T0 + duration

    def handle(records: list) -> None:
        for rec in records:
            if rec.state is not HealthState.HEALTHY and rec.window_end > T0 + WARMUP:
                first_bad.setdefault(rec.route_id, rec.window_end)
            scope = by_route[rec.route_id]
            states[scope], ds = machines[scope].on_health(states[scope], rec)
            decisions.extend(ds)

    carrier: list[Observation] = []
    for route in ("hk-a", "hk-b"):
        carrier += carrier_world(route, T0, end, fault, kind)
    for obs in probe_returns(carrier, fault, kind):
        handle(agg.observe(obs))
    # Webhook traffic follows the decisions: each attempt goes to the active list's first route.
    agg2 = HealthAggregator(SECTION.routes, start=T0, window=SECTION.window)
    scope = "subscription:sub_demo"
    agg, states[scope] = agg2, machines[scope].initial()

    def active() -> str:
        return "hook-1" if states[scope].active.value == "primary" else "hook-2"

    for obs in webhook_world(T0, end, fault, kind, active):
        handle([r for r in agg.observe(obs) if r.kind.value == "webhook"])
    handle([r for r in agg.advance(end) if r.kind.value == "webhook"])
    return decisions, first_bad


def between(start: int, stop: int | None = None) -> Fault:
    def on(route: str, t: int) -> bool:
        return route in ("hk-a", "hook-1") and start <= t < (stop if stop is not None else 1 << 62)

    return on


FAULTS = {
    "binds": "primary carrier: binds refused / connection dropped",
    "probe_latency": "primary carrier: probe latency 1.5 s -> 8 s",
    "probe_loss": "primary carrier: probes lost",
    "silent": "primary carrier: goes silent (binds up, no traffic)",
    "webhook_503": "primary endpoint answers 503",
    "webhook_timeout": "primary endpoint times out (10 s)",
}


def main() -> None:
    print("| fault | detect (first non-healthy record) | switch (decision) | failback after recovery |")
    print("| --- | --- | --- | --- |")
    for kind, label in FAULTS.items():
        detect, switch, back = [], [], []
        for phase in (0, 2500, 5000, 7500, 9900):
            start = T0 + WARMUP + phase
            stop = start + 120 * S
            decisions, first_bad = run(kind, between(start, stop), WARMUP + 400 * S)
            route = "hook-1" if kind.startswith("webhook") else "hk-a"
            detect.append((first_bad[route] - start) / S)
            over = next(
                d
                for d in decisions
                if d.kind is DecisionKind.FAILOVER
                and d.scope.endswith("sub_demo" if route == "hook-1" else "+8526")
            )
            switch.append((over.at - start) / S)
            fb = next(d for d in decisions if d.kind is DecisionKind.FAILBACK and d.scope == over.scope)
            back.append((fb.at - stop) / S)
        print(
            f"| {label} | {min(detect):g}–{max(detect):g} s | {min(switch):g}–{max(switch):g} s "
            f"| {min(back):g}–{max(back):g} s |"
        )

    # Probe latency flapping around the limit: 8 s for 20 s, 1.5 s for 20 s, ... for 2 minutes.
    start = T0 + WARMUP

    def flapping(route: str, t: int) -> bool:
        return route == "hk-a" and start <= t < start + 120 * S and (t - start) // (20 * S) % 2 == 0

    decisions, _ = run("probe_latency", flapping, WARMUP + 400 * S)
    switches = [
        d for d in decisions if d.scope == "prefix:+8526" and d.kind is not DecisionKind.BOTH_DEGRADED
    ]
    shown = ", ".join(f"{d.kind.value}@{(d.at - start) / S:g}s" for d in switches)
    print(f"\nprobe latency flapping (8 s / 1.5 s every 20 s) for 120 s: {len(switches)} decisions ({shown})")

    agg = HealthAggregator(SECTION.routes, start=T0)
    obs = [CarrierTraffic("hk-a", T0 + i) for i in range(200_000)]
    t = time.perf_counter()
    for o in obs:
        agg.observe(o)
    per_obs = (time.perf_counter() - t) / len(obs) * 1e6
    machine = DoubleList(SECTION.policies[0])
    records = [
        r for i in range(2000) for r in agg.advance(T0 + 200 * S + i * 10 * S) if r.route_id.startswith("hk")
    ]
    state = machine.initial()
    t = time.perf_counter()
    for r in records:
        state, _ = machine.on_health(state, r)
    per_rec = (time.perf_counter() - t) / len(records) * 1e6
    print(f"\ncost: aggregator {per_obs:.1f} µs per observation; state machine {per_rec:.1f} µs per record")


if __name__ == "__main__":
    main()
