"""The outbound stage follows the double list's decisions: the latest decision of a carrier scope (read from
sms.routes.decisions.v1 into ``ctx.route_states``) decides which carrier a new message's segments go to
first; a worker reading the same topic again after a restart decides the same."""

from __future__ import annotations

from typing import Any

from smsflow.config import parse_config
from smsflow.outbound.route_choice import route_candidates
from smsflow.outbound.submission import Candidate
from streams.context import StreamContext
from streams.outbound import FollowedRouteStates, choose_routes

SCOPE = "prefix:+8526"
CONFIG = {
    "carriers": [
        {
            "id": f"carrier-{i}",
            "route_id": f"route-{i}",
            "host": "127.0.0.1",
            "port": 2775,
            "system_id": f"a{i}",
            "password_env": "E2E_SMPP_PASSWORD",
        }
        for i in range(2)
    ],
    "routing": {
        "routes": [
            {"id": f"hk-{x}", "kind": "carrier", "carrier": f"carrier-{i}", "pool": ["+8526"]}
            for i, x in enumerate("ab")
        ],
        "policies": [{"scope": SCOPE, "primary": ["hk-a"], "secondary": ["hk-b"]}],
    },
}
PRIMARY = (Candidate("hk-a", "carrier-0"), Candidate("hk-b", "carrier-1"))
SECONDARY = (Candidate("hk-b", "carrier-1"), Candidate("hk-a", "carrier-0"))


class Record:
    """A consumed record as confluent-kafka gives it; the value is already the decoded decision."""

    def __init__(self, key: str | None, value: dict[str, Any] | None, offset: int = 0) -> None:
        self._key, self._value, self._offset = key, value, offset

    def key(self) -> bytes | None:
        return None if self._key is None else self._key.encode()

    def value(self) -> Any:
        return self._value

    def offset(self) -> int:
        return self._offset


class PassThrough:
    def decode(self, topic: str, value: Any) -> Any:
        if value == "garbage":
            raise ValueError("not Avro")
        return value


def decision(active: str, states: dict[str, str] | None = None, scope: str = SCOPE) -> dict[str, Any]:
    evidence = [{"route_id": r, "list": "primary", "state": s} for r, s in (states or {}).items()]
    return {"decision_id": f"{scope}#1", "scope": scope, "active": active, "evidence": evidence}


def worker() -> tuple[StreamContext, FollowedRouteStates]:
    ctx = StreamContext(parse_config(CONFIG), "127.0.0.1:9", PassThrough(), 6)  # type: ignore[arg-type]
    return ctx, FollowedRouteStates(ctx)


def test_without_a_decision_the_primary_carrier_goes_first() -> None:
    ctx, _ = worker()
    assert choose_routes(ctx, "+85260001234") == PRIMARY


def test_a_decision_to_the_secondary_puts_its_carrier_first_and_a_tombstone_gives_the_primary_back() -> None:
    ctx, follower = worker()
    follower._on_record(Record(SCOPE, decision("secondary", {"hk-a": "down", "hk-b": "healthy"})))
    # the primary is down by the decision's evidence: it is left out, not merely put second
    assert choose_routes(ctx, "+85260001234") == SECONDARY[:1]
    follower._on_record(Record(SCOPE, decision("secondary", {"hk-a": "degraded", "hk-b": "healthy"})))
    assert choose_routes(ctx, "+85260001234") == SECONDARY
    follower._on_record(Record(SCOPE, None))
    assert choose_routes(ctx, "+85260001234") == PRIMARY


def test_a_restarted_worker_reading_the_topic_again_decides_the_same() -> None:
    log = [
        Record(SCOPE, decision("secondary", {"hk-a": "down"}), 0),
        Record("subscription:sub_1", decision("secondary", scope="subscription:sub_1"), 1),
        Record(SCOPE, decision("primary"), 2),
        Record(SCOPE, decision("secondary", {"hk-a": "degraded"}), 3),
        Record(SCOPE, "garbage", 4),  # an unreadable record is skipped, the ones after it still apply
    ]
    choices = []
    for _ in range(2):  # before and after a restart: a new worker, the same topic read from the start
        ctx, follower = worker()
        for rec in log:
            follower._on_record(rec)
        assert set(ctx.route_states) == {SCOPE}  # subscription scopes are delivery's
        choices.append(choose_routes(ctx, "+85260001234"))
    assert choices == [SECONDARY, SECONDARY]


def test_route_candidates_read_an_active_list_like_a_scope_state() -> None:
    ctx, follower = worker()
    follower._on_record(Record(SCOPE, decision("primary", {"hk-a": "down"})))
    [only] = route_candidates(ctx.config.routing, ctx.route_states, "+85260001234", None)  # type: ignore[misc]
    assert (only.route_id, only.carrier, only.list_name.value) == ("hk-b", "carrier-1", "secondary")


def test_a_scope_with_only_an_api_policy_is_routed_by_it_and_by_its_decisions() -> None:
    """A policy made through the API/CLI (sms.routes.policies.v1, no config policy for its scope): outbound
    follows it as the routes stage decides by it - its primary first, then its decisions."""
    from types import SimpleNamespace

    from smsflow.routing.policy_book import PolicyBook
    from smsflow.routing.policy_changes import PolicyChange
    from streams.outbound import OutboundStage

    ctx, follower = worker()
    macau = "+85365550000"  # no config policy covers +853: the configured carriers in order
    assert choose_routes(ctx, macau) == (Candidate("route-0", "carrier-0"), Candidate("route-1", "carrier-1"))
    book = PolicyBook("127.0.0.1:9")
    stage = SimpleNamespace(ctx=ctx, policies=book)
    policy = {"scope": "prefix:+853", "primary": ["hk-b"], "secondary": ["hk-a"]}
    record = {"scope": "prefix:+853", "policy": policy, "version": 1, "actor": "ops", "at": 1, "reason": "MO"}
    assert book.api.apply(PolicyChange.from_record(record))
    OutboundStage.use_policies(stage)  # type: ignore[arg-type]
    assert choose_routes(ctx, macau) == (Candidate("hk-b", "carrier-1"), Candidate("hk-a", "carrier-0"))
    follower._on_record(Record("prefix:+853", decision("secondary", scope="prefix:+853")))
    assert choose_routes(ctx, macau) == (Candidate("hk-a", "carrier-0"), Candidate("hk-b", "carrier-1"))
    # the config's scope is unchanged by it
    assert choose_routes(ctx, "+85260001234") == PRIMARY
    # deleted through the API: back to the configured carriers
    gone = dict(record, policy=None, version=2, previous=policy)
    assert book.api.apply(PolicyChange.from_record(gone))
    OutboundStage.use_policies(stage)  # type: ignore[arg-type]
    follower._on_record(Record("prefix:+853", None))
    assert choose_routes(ctx, macau) == (Candidate("route-0", "carrier-0"), Candidate("route-1", "carrier-1"))
