"""The routing config section and overrides: defaults, and errors that name the field path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from smsflow.routing.model import (
    ListName,
    PolicyError,
    RouteKind,
    Scope,
    ScopeKind,
    Thresholds,
    parse_override,
    parse_policies,
)

ROUTES = [
    {"id": "hk-a", "kind": "carrier", "carrier": "carrier-a", "pool": ["+8526"]},
    {"id": "hk-b", "kind": "carrier", "carrier": "carrier-b", "pool": ["+8526"]},
    {"id": "hook-1", "kind": "webhook", "url": "https://a.example/sms"},
    {"id": "hook-2", "kind": "webhook", "url": "https://b.example/sms"},
]


def section(*policies: dict[str, object], **extra: object) -> dict[str, object]:
    return {"routes": ROUTES, "policies": list(policies), **extra}


def test_a_minimal_section_gets_the_documented_defaults() -> None:
    sec = parse_policies(section({"scope": "prefix:+8526", "primary": ["hk-a"], "secondary": ["hk-b"]}))
    [p] = sec.policies
    assert p.scope == Scope(kind=ScopeKind.PREFIX, value="+8526") and p.scope.key == "prefix:+8526"
    assert p.hold_down_s == 60 and p.routes(ListName.SECONDARY) == ("hk-b",)
    assert p.thresholds.probe_latency_ms.degraded == 5000 and p.thresholds.probe_latency_ms.down == 20000
    assert (sec.window.size_s, sec.window.step_s, sec.window.probe_timeout_s) == (60, 10, 30)
    assert sec.route("hook-1").kind is RouteKind.WEBHOOK and sec.policy("prefix:+8526") is p
    assert parse_policies(None).policies == ()


def test_the_most_specific_policy_governs_a_number() -> None:
    sec = parse_policies(
        section(
            {"scope": "country:HK", "primary": ["hk-b"], "secondary": ["hk-a"]},
            {"scope": "prefix:+852", "primary": ["hk-a"], "secondary": ["hk-b"]},
            {"scope": "prefix:+8526", "primary": ["hk-b"], "secondary": ["hk-a"]},
            {"scope": "number:+85260001234", "primary": ["hk-a"], "secondary": ["hk-b"]},
            {"scope": "subscription:sub_1", "primary": ["hook-1"], "secondary": ["hook-2"]},
        )
    )

    def scope(number: str, country: str | None = "HK") -> str | None:
        p = sec.for_number(number, country)
        return p.scope.key if p else None

    assert scope("+85260001234") == "number:+85260001234"
    assert scope("+85260009999") == "prefix:+8526"
    assert scope("+85290009999") == "prefix:+852"
    assert scope("+85370009999", "HK") == "country:HK"  # outside every prefix: the country the caller names
    assert scope("+8613800138000", "CN") is None
    sub = sec.for_subscription("sub_1")
    assert sub is not None and sub.primary == ("hook-1",) and sec.for_subscription("sub_2") is None


def test_a_partial_limit_keeps_the_other_default() -> None:
    t = Thresholds.model_validate({"probe_latency_ms": {"degraded": 3000}, "success_rate": {"down": 0.2}})
    assert (t.probe_latency_ms.degraded, t.probe_latency_ms.down) == (3000, 20000)
    assert (t.success_rate.degraded, t.success_rate.down) == (0.95, 0.2)


BAD = [
    (
        section({"scope": "prefix:+8526", "primary": ["hk-a", "x"], "secondary": ["hk-b"]}),
        "routing.policies[0].primary[1]: unknown route 'x'",
    ),
    (
        section({"scope": "prefix:+8526", "primary": ["hk-a"], "secondary": ["hook-1"]}),
        "routing.policies[0].secondary[0]: route 'hook-1' is a webhook route; a prefix scope lists carrier",
    ),
    (
        section({"scope": "subscription:sub_1", "primary": ["hook-1"], "secondary": ["hook-1"]}),
        "routing.policies[0].secondary[0]: route 'hook-1' is listed twice",
    ),
    (
        section({"scope": "prefix:+8526", "primary": [], "secondary": ["hk-b"]}),
        "routing.policies[0].primary: Tuple should have at least 1 item",
    ),
    (
        section(
            {"scope": "prefix:+8526", "primary": ["hk-a"], "secondary": ["hk-b"]},
            {"scope": "prefix:+8526", "primary": ["hk-b"], "secondary": ["hk-a"]},
        ),
        "routing.policies[1].scope: a second policy for 'prefix:+8526'",
    ),
    (
        section({"scope": "hk", "primary": ["hk-a"], "secondary": ["hk-b"]}),
        "routing.policies[0].scope: 'hk': write a scope as kind:value",
    ),
    (
        section({"scope": "country:hk", "primary": ["hk-a"], "secondary": ["hk-b"]}),
        "routing.policies[0].scope: country scope needs an ISO 3166 alpha-2 code like HK, got 'hk'",
    ),
    (
        section(
            {
                "scope": "prefix:+8526",
                "primary": ["hk-a"],
                "secondary": ["hk-b"],
                "thresholds": {"probe_latency_ms": {"degraded": 30000}},
            }
        ),
        "routing.policies[0].thresholds.probe_latency_ms: degraded (30000.0) must be below down (20000.0)",
    ),
    (
        section({"scope": "prefix:+8526", "primary": ["hk-a"], "secondary": ["hk-b"], "hold_down_s": 0}),
        "routing.policies[0].hold_down_s: Input should be greater than or equal to 1",
    ),
    ({"routes": [{"id": "a", "kind": "carrier"}]}, "routing.routes[0].carrier: a carrier route names its"),
    (
        {"routes": [{"id": "a", "kind": "webhook", "url": "ftp://x"}]},
        "routing.routes[0].url: a webhook route",
    ),
    (
        {"routes": [{"id": "a", "kind": "carrier", "carrier": "c", "pool": ["+852", "852"]}]},
        "routing.routes[0].pool[1]: '852' is not an E.164 number or prefix",
    ),
    ({"routes": [ROUTES[0], ROUTES[0]]}, "routing.routes[1].id: duplicate route id 'hk-a'"),
    ({"window": {"size_s": 65}}, "routing.window.size_s: must be a multiple of step_s (10), got 65"),
    ({"polices": []}, "routing.polices: Extra inputs are not permitted"),
    ([], "routing: must be a mapping"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[m.split(":")[0] + " " + m[-30:] for _, m in BAD])
def test_errors_name_the_field_path(data: object, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policies(data)
    assert message in str(err.value)


def test_the_loader_chooses_the_path_prefix() -> None:
    with pytest.raises(PolicyError, match=r"^config\.yaml: routing\.policies\[0\]\.primary\[0\]: unknown"):
        parse_policies(
            section({"scope": "prefix:+8526", "primary": ["x"], "secondary": ["hk-b"]}),
            "config.yaml: routing",
        )


def test_overrides_need_a_reason_an_actor_and_a_future_expiry() -> None:
    ok = parse_override(
        {
            "scope": "prefix:+8526",
            "pin": "secondary",
            "reason": "A down",
            "actor": "ops",
            "at": 10,
            "expires_at": 20,
        }
    )
    assert ok.pinned is ListName.SECONDARY
    assert (
        parse_override(
            {"scope": "prefix:+8526", "pin": "auto", "reason": "done", "actor": "ops", "at": 30}
        ).pinned
        is None
    )
    cases = [
        (
            {"pin": "secondary", "reason": "r", "actor": "a", "at": 10},
            "override.expires_at: a pin needs an expiry",
        ),
        (
            {"pin": "primary", "reason": "r", "actor": "a", "at": 10, "expires_at": 10},
            "override.expires_at: must be after",
        ),
        (
            {"pin": "primary", "reason": "", "actor": "a", "at": 1, "expires_at": 9},
            "override.reason: String should have at least 1",
        ),
        (
            {"pin": "sideways", "reason": "r", "actor": "a", "at": 1, "expires_at": 9},
            "override.pin: Input should be",
        ),
    ]
    for data, message in cases:
        with pytest.raises(PolicyError) as err:
            parse_override({"scope": "prefix:+8526", **data})
        assert message in str(err.value)


def test_the_documented_example_section_is_valid() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "double-list.md").read_text()
    [example] = re.findall(r"```yaml\n(routing:.*?)```", doc, flags=re.S)
    sec = parse_policies(yaml.safe_load(example)["routing"])
    assert {p.scope.key for p in sec.policies} == {"prefix:+8526", "subscription:sub_demo"}
