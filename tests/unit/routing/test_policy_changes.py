"""Routing policies made through the API (issue 11): validation that names the field, precedence over the
config's, the records of sms.routes.policies.v1, and the decision stage applying a change without a
restart."""

from __future__ import annotations

from typing import Any

import pytest

from smsflow.routing.decisions import DecisionKind, DoubleList
from smsflow.routing.model import (
    ListName,
    PolicyError,
    PolicySource,
    RoutingPolicy,
    Scope,
    parse_policies,
    with_api_policies,
)
from smsflow.routing.policy_changes import (
    ApiPolicies,
    PolicyBody,
    PolicyChange,
    api_scope,
    policy_from_body,
    thresholds_from_options,
)
from smsflow.routing.scopes import ScopeDesk, scopes_of
from tests.routing_factories import SCOPE, S, record

SECTION = parse_policies(
    {
        "routes": [
            {"id": "pa", "kind": "carrier", "carrier": "a", "pool": ["+8526"]},
            {"id": "sb", "kind": "carrier", "carrier": "b", "pool": ["+8526"]},
            {"id": "sc", "kind": "carrier", "carrier": "c", "pool": ["+8527"]},
            {"id": "hook-1", "kind": "webhook", "url": "https://hooks.example.com/1"},
        ],
        "policies": [{"scope": SCOPE, "primary": ["pa"], "secondary": ["sb"], "hold_down_s": 30}],
    }
)


def body(**kw: Any) -> PolicyBody:
    return PolicyBody.model_validate({"primary": ["pa"], "secondary": ["sb"], "reason": "new pool", **kw})


def api_policy(scope: str = SCOPE, version: int = 1, **kw: Any) -> RoutingPolicy:
    return policy_from_body(Scope.model_validate(scope), body(**kw), SECTION, version)


def change(version: int, policy: RoutingPolicy | None, at_s: float = 100, **kw: Any) -> PolicyChange:
    return PolicyChange(
        scope=SCOPE,
        policy=policy,
        version=version,
        actor="ops@example.com [key k1]",
        at=int(at_s * S),
        reason="carrier B is cheaper",
        **kw,
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"primary": ["pa", "nope"]}, "primary[1]: unknown route 'nope'"),
        ({"secondary": ["hook-1"]}, "secondary[0]: route 'hook-1' is a webhook route"),
        ({"secondary": ["pa"]}, "secondary[0]: route 'pa' is listed twice"),
        ({"thresholds": {"probe_latency_ms": {"degraded": 30000}}}, "thresholds.probe_latency_ms: degraded"),
        ({"thresholds": {"no_such_figure": {"down": 1}}}, "thresholds.no_such_figure"),
        ({"thresholds": {"min_probes": 0}}, "thresholds.min_probes"),
    ],
)
def test_a_bad_policy_names_the_field(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as err:
        api_policy(**kw)
    assert str(err.value).startswith(message), str(err.value)


def test_empty_lists_and_bad_scopes_are_refused_with_the_field() -> None:
    with pytest.raises(ValueError, match="primary"):
        body(primary=[])
    for text, field in (("+8526", "scope"), ("prefix:8526", "scope"), ("planet:mars", "scope.kind")):
        with pytest.raises(PolicyError) as err:
            api_scope(text)
        assert str(err.value).startswith(field), str(err.value)
    with pytest.raises(PolicyError, match=r"^scope: a subscription's lists are its endpoints"):
        api_scope("subscription:sub_1")


def test_an_api_policy_wins_over_the_configs_and_deleting_it_brings_the_config_back() -> None:
    swapped = api_policy(primary=["sb"], secondary=["pa"], hold_down_s=10)
    other = api_policy("prefix:+8527", primary=["sc"], secondary=["pa"])
    merged = with_api_policies(SECTION, [swapped, other])
    assert merged.policy(SCOPE) == swapped and merged.policy(SCOPE).source is PolicySource.API
    assert merged.for_number("+85270001234") == other
    assert scopes_of(merged, "sc") == ["prefix:+8527"]
    assert with_api_policies(SECTION, []).policy(SCOPE).source is PolicySource.CONFIG  # type: ignore[union-attr]

    book = ApiPolicies()
    assert book.apply(change(1, swapped)) and book.policies() == [swapped]
    assert not book.apply(change(1, swapped)), "a record read again is not a new change"
    assert book.apply(change(2, None)) and book.policies() == [] and book.next_version(SCOPE) == 3
    assert with_api_policies(SECTION, book.policies()).policy(SCOPE) == SECTION.policies[0]


def test_a_change_record_round_trips_with_its_audit_trail() -> None:
    first = api_policy()
    second = change(2, api_policy(version=2, primary=["sb"], secondary=["pa"]), previous=first)
    back = PolicyChange.from_record(second.to_record())
    assert back == second and back.previous == first and not back.deleted
    deleted = PolicyChange.from_record(change(3, None, previous=second.policy).to_record())
    assert deleted.deleted and deleted.previous == second.policy
    with pytest.raises(PolicyError, match="policy record"):
        PolicyChange.from_record({"scope": SCOPE})


def test_the_config_may_not_claim_to_be_an_api_policy() -> None:
    with pytest.raises(PolicyError, match=r"routing.policies\[0\]: source and version are set by the API"):
        parse_policies(
            {
                "routes": [
                    {"id": "pa", "kind": "carrier", "carrier": "a"},
                    {"id": "sb", "kind": "carrier", "carrier": "b"},
                ],
                "policies": [{"scope": SCOPE, "primary": ["pa"], "secondary": ["sb"], "source": "api"}],
            }
        )


def test_cli_threshold_options() -> None:
    assert thresholds_from_options(["probe_latency_ms.degraded=4000", "min_probes=5"]) == {
        "probe_latency_ms": {"degraded": 4000.0},
        "min_probes": 5,
    }
    for bad, what in (
        ("probe_latency_ms=x", r"--threshold\[0\]: write"),
        ("probe_latency_ms.max=1", "the limit"),
    ):
        with pytest.raises(PolicyError, match=what):
            thresholds_from_options([bad])


def test_the_stage_applies_a_policy_change_at_once_audited_and_only_once() -> None:
    """A scope on the config's policy (pa primary) is given an API policy that swaps the lists: one
    policy_set decision with who and why, the version on it and on every later decision; the next health
    record is judged under the new lists; the same record read again after a restart changes nothing."""
    config_desk = ScopeDesk(SECTION, SECTION.policies[0])
    state, _ = config_desk.on_health(config_desk.initial(), record("pa", 10, "healthy"))
    state, _ = config_desk.on_health(state, record("sb", 10, "healthy"))

    swapped = api_policy(primary=["sb"], secondary=["pa"], hold_down_s=10)
    desk = ScopeDesk(with_api_policies(SECTION, [swapped]), swapped)
    state, [set_] = desk.on_policy(state, change(1, swapped, at_s=12))
    rec = set_.to_record()
    assert rec["kind"] == DecisionKind.POLICY_SET.value and rec["policy_source"] == "api"
    assert rec["policy_version"] == 1 and rec["policy_actor"] == "ops@example.com [key k1]"
    assert "carrier B is cheaper" in rec["reason"] and "primary ['sb']" in rec["reason"]
    assert rec["active"] == "primary" and {e["route_id"]: e["list"] for e in rec["evidence"]} == {
        "sb": "primary",
        "pa": "secondary",
    }
    assert desk.on_policy(state, change(1, swapped, at_s=12)) == (state, [])  # read again: no-op

    # the new primary (sb) goes down: failover to the new secondary (pa), decided by the API policy
    state, [failover] = desk.on_health(state, record("sb", 20, "down"))
    assert failover.kind is DecisionKind.FAILOVER and failover.active is ListName.SECONDARY
    assert failover.to_record()["policy_version"] == 1

    # deleted: the config's policy decides again, and says so
    state, decisions = config_desk.on_policy(state, change(2, None, at_s=25, previous=swapped))
    assert decisions[0].kind is DecisionKind.POLICY_DELETED
    assert "the config's policy decides again" in decisions[0].reason
    assert decisions[0].to_record()["policy_source"] == "config"
    assert state.policy_change == 2


def test_a_policy_for_a_scope_the_config_never_had_decides_from_its_first_record() -> None:
    scope = "prefix:+8527"
    new = api_policy(scope, primary=["sc"], secondary=["pa"])
    section = with_api_policies(SECTION, [new])
    desk = ScopeDesk(section, new)
    created = PolicyChange(scope, new, 1, "ops", 5 * S, "new pool")
    state, [first] = desk.on_policy(desk.initial(), created)
    assert first.kind is DecisionKind.POLICY_SET and first.decision_id == f"{scope}#1"
    state, _ = desk.on_health(state, record("pa", 10, "healthy"))
    state, [failover] = desk.on_health(state, record("sc", 10, "down"))
    assert failover.kind is DecisionKind.FAILOVER and failover.scope == scope

    # deleted with no config policy behind it: one last audited decision by the deleted policy
    gone = PolicyChange(scope, None, 2, "ops", 30 * S, "pool returned", previous=new)
    state, decisions = DoubleList(new).on_policy(state, gone)
    assert [d.kind for d in decisions] == [DecisionKind.POLICY_DELETED]
    assert "no policy left for this scope" in decisions[0].reason
