"""Routing policies made through the API/CLI: the records of ``sms.routes.policies.v1`` and their rules.

The topic is compacted, keyed by scope; each record is one change, with the audit trail in it: who, when,
why, the version (1, 2, ... per scope, a delete counts) and the policy before and after. A delete is a record
with ``policy: null``, not a tombstone, so the last word on a scope keeps who removed it and why; the scope
then falls back to the config's policy, if the config has one for it.

Precedence: an API policy replaces the config's policy for the same scope (``with_api_policies``); the
config's comes back when the API policy is deleted. Subscription scopes are not managed here: a
subscription's endpoints are its lists (``PUT /v1/subscriptions/{id}``).

Records are JSON, like the overrides and the subscriptions (the other operator-written topics). Pure: no
Kafka, no clock; the API gives ``at`` and the actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smsflow.fieldpath import validation_messages
from smsflow.routing.model import (
    PolicyError,
    PolicySource,
    RoutingPolicy,
    RoutingSection,
    Scope,
    ScopeKind,
    Thresholds,
    policy_errors,
)

# A policy change's copy on sms.routes.overrides.v1 is ``{POLICY_CHANGE: record}``: the decide agent reads
# that topic (in order with pins) and turns the copy into the audited decision.
POLICY_CHANGE = "policy_change"


class PolicyBody(BaseModel):
    """What an operator writes: the lists, optionally thresholds and hold-down, and why."""

    model_config = ConfigDict(extra="forbid")

    primary: list[str] = Field(min_length=1, description="route ids, in order of preference")
    secondary: list[str] = Field(min_length=1, description="route ids, in order of preference")
    thresholds: dict[str, Any] = Field(
        default_factory=dict, description="per figure {degraded, down}; a partial limit keeps the default"
    )
    hold_down_s: int = Field(default=60, ge=1, description="failback hold-down; least gap between switches")
    reason: str = Field(min_length=1, max_length=500, description="why (kept in the audit trail)")


@dataclass(frozen=True)
class PolicyChange:
    """One record of sms.routes.policies.v1 (key = scope)."""

    scope: str
    policy: RoutingPolicy | None  # None: the API policy was deleted
    version: int
    actor: str
    at: int  # epoch ms, when the operator asked
    reason: str
    previous: RoutingPolicy | None = None  # the API policy this one replaced, for the audit

    @property
    def deleted(self) -> bool:
        return self.policy is None

    def to_record(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "policy": _policy_record(self.policy),
            "version": self.version,
            "actor": self.actor,
            "at": self.at,
            "reason": self.reason,
            "previous": _policy_record(self.previous),
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> PolicyChange:
        try:
            return cls(
                scope=str(data["scope"]),
                policy=_policy_of(data.get("policy")),
                version=int(data["version"]),
                actor=str(data["actor"]),
                at=int(data["at"]),
                reason=str(data["reason"]),
                previous=_policy_of(data.get("previous")),
            )
        except (KeyError, TypeError, ValidationError) as exc:
            raise PolicyError(f"policy record: {exc}") from None


def _policy_record(policy: RoutingPolicy | None) -> dict[str, Any] | None:
    return None if policy is None else policy.model_dump(mode="json")


def _policy_of(data: Any) -> RoutingPolicy | None:
    return None if data is None else RoutingPolicy.model_validate(data)


def api_scope(text: str) -> Scope:
    """The scope an API policy may have: a number, prefix or country (carrier routes)."""
    try:
        scope = Scope.model_validate(text)
    except ValidationError as exc:
        raise PolicyError("\n".join(validation_messages(exc, "scope"))) from None
    if scope.kind is ScopeKind.SUBSCRIPTION:
        raise PolicyError(
            "scope: a subscription's lists are its endpoints (PUT /v1/subscriptions/{id}), not an API policy"
        )
    return scope


def policy_from_body(scope: Scope, body: PolicyBody, section: RoutingSection, version: int) -> RoutingPolicy:
    """The policy an operator's body makes, checked against the config's routes; errors name the field."""
    try:
        thresholds = Thresholds.model_validate(body.thresholds)
    except ValidationError as exc:
        raise PolicyError("\n".join(validation_messages(exc, "thresholds"))) from None
    try:
        policy = RoutingPolicy(
            scope=scope,
            primary=tuple(body.primary),
            secondary=tuple(body.secondary),
            thresholds=thresholds,
            hold_down_s=body.hold_down_s,
            source=PolicySource.API,
            version=version,
        )
    except ValidationError as exc:
        raise PolicyError("\n".join(validation_messages(exc, ""))) from None
    errors = policy_errors(policy, {r.id: r for r in section.routes}, "")
    if errors:
        raise PolicyError("\n".join(e.removeprefix(".") for e in errors))
    return policy


class ApiPolicies:
    """The latest change per scope, as read from the topic; ``policies()`` are the live (not deleted) ones."""

    def __init__(self) -> None:
        self.changes: dict[str, PolicyChange] = {}

    def apply(self, change: PolicyChange) -> bool:
        """Keep ``change`` unless a later version of its scope is already here; True if it was kept."""
        held = self.changes.get(change.scope)
        if held is not None and held.version >= change.version:
            return False
        self.changes[change.scope] = change
        return True

    def policies(self) -> list[RoutingPolicy]:
        return [c.policy for _, c in sorted(self.changes.items()) if c.policy is not None]

    def next_version(self, scope: str) -> int:
        held = self.changes.get(scope)
        return 1 if held is None else held.version + 1


def thresholds_from_options(items: list[str]) -> dict[str, Any]:
    """``["probe_latency_ms.degraded=4000", "min_probes=5"]`` (the CLI's ``--threshold``) -> the thresholds
    mapping of a policy body; the API checks the figures and limits."""
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        name, sep, raw = item.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = None
        if not sep or value is None:
            raise PolicyError(
                f"--threshold[{i}]: write FIGURE.degraded=N, FIGURE.down=N or min_*=N, got {item!r}"
            )
        figure, dot, limit = name.strip().partition(".")
        if dot:
            if limit not in ("degraded", "down"):
                raise PolicyError(f"--threshold[{i}]: the limit is degraded or down, got {limit!r}")
            out.setdefault(figure, {})[limit] = value
        else:
            out[figure] = int(value) if value.is_integer() else value
    return out


__all__ = [
    "POLICY_CHANGE",
    "ApiPolicies",
    "PolicyBody",
    "PolicyChange",
    "api_scope",
    "policy_from_body",
    "thresholds_from_options",
]
