"""What each customer holds — numbers, number prefixes, routes — and so which inbound SMS it may receive.

A subscription's ``owner`` says who manages it; its *holding* says what it may ever receive. Every filter is
intersected with the owner's holding: when the API accepts a filter (:func:`outside_holding` names each value
that lies outside it), when the worker matches a message (:func:`receives`, so a holding removed later stops
delivery at once) and when resend/recover pick messages (the same :func:`receives`). An empty filter means
"everything I hold"; an owner that holds nothing receives nothing.

A message is held when its destination number equals a held number, starts with a held prefix, or arrived on
a held route (a carrier connection dedicated to that customer). Numbers are compared on their digits.

Operator subscriptions: the owners in :data:`OPERATOR_OWNERS` are not customers. ``config`` owns the
subscriptions declared in the config file, ``operator`` those an admin key creates for the operator's own use
(an archive, a monitoring hook). They need no holding and receive whatever their filter matches — an empty
filter, everything. Only an admin key can create or change them, and no customer API key can be issued for
those names.

Topic ``sms.holdings.v1`` (compacted): key = owner (UTF-8), value = :func:`holding_to_record` (JSON, nothing
secret in it), a tombstone removes the owner's holding.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from smsflow.subscriptions.model import (
    MessageFilter,
    Subscription,
    number_digits,
    private_of,
    require_digits,
    utcnow,
)

OPERATOR_OWNERS = frozenset({"operator", "config"})
HOLDING_RECORD_FORMAT = "smsflow.holding/1"


def is_operator_owner(owner: str) -> bool:
    return owner in OPERATOR_OWNERS


class Holding(BaseModel):
    """The numbers, prefixes and routes one owner holds. Any of them makes a message the owner's (OR)."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=128)
    numbers: list[str] = Field(default_factory=list, max_length=100_000, description="E.164 numbers")
    prefixes: list[str] = Field(default_factory=list, max_length=10_000, description="E.164 number prefixes")
    route_ids: list[str] = Field(default_factory=list, max_length=1_000, description="dedicated routes")
    sender_ids: list[str] = Field(
        default_factory=list,
        max_length=1_000,
        description="alphanumeric senders the owner may send as (POST /v1/messages `from`; compared without "
        "case); outbound only",
    )
    updated_at: datetime = Field(default_factory=utcnow)

    # digits of the numbers and prefixes, computed once: matching runs for every inbound message
    _numbers: frozenset[str] = PrivateAttr(default=frozenset())
    _prefixes: tuple[str, ...] = PrivateAttr(default=())

    def model_post_init(self, context: Any, /) -> None:
        self._numbers = frozenset(number_digits(n) for n in self.numbers)
        self._prefixes = tuple(number_digits(p) for p in self.prefixes)

    @field_validator("numbers", "prefixes")
    @classmethod
    def _has_digits(cls, v: list[str]) -> list[str]:
        return require_digits(v)

    @field_validator("sender_ids")
    @classmethod
    def _sender_id_shaped(cls, v: list[str]) -> list[str]:
        for i, sender in enumerate(v):
            if not 0 < len(sender.strip()) <= 11 or sender != sender.strip():
                raise ValueError(f"[{i}] {sender!r}: 1-11 characters, no surrounding spaces")
        return v

    @field_validator("route_ids")
    @classmethod
    def _route_named(cls, v: list[str]) -> list[str]:
        for i, route in enumerate(v):
            if not route.strip():
                raise ValueError(f"[{i}] is empty")
        return v

    @property
    def empty(self) -> bool:
        return not (self.numbers or self.prefixes or self.route_ids)

    def holds_number(self, number: str) -> bool:
        digits = number_digits(number)
        private = private_of(self)  # not self._numbers: see private_of
        return bool(digits) and (digits in private["_numbers"] or digits.startswith(private["_prefixes"]))

    def holds_prefix(self, prefix: str) -> bool:
        """Every number starting with ``prefix`` is held: the prefix lies within a held prefix. A prefix equal
        to a held *number* is not held: it also matches the longer numbers that start with it."""
        digits = number_digits(prefix)
        return bool(digits) and digits.startswith(private_of(self)["_prefixes"])

    def holds_sender_id(self, sender: str) -> bool:
        """Whether the owner may send as the alphanumeric ``sender`` (its registration, compared without case:
        holding ``ACME`` allows ``Acme``; nobody else may send as either)."""
        wanted = sender.casefold()
        return any(s.casefold() == wanted for s in self.sender_ids)

    def holds(self, message: Mapping[str, Any]) -> bool:
        if self.route_ids and message.get("route_id") in self.route_ids:
            return True
        return self.holds_number(str(message.get("to_number") or ""))


def receives(sub: Subscription, holding: Holding | None, message: Mapping[str, Any]) -> bool:
    """Whether ``message`` goes to ``sub``: its filter AND its owner's holding (operators: the filter only).
    Callers check ``enabled`` separately."""
    if not sub.matches(message):
        return False
    if is_operator_owner(sub.owner):
        return True
    return holding is not None and holding.holds(message)


def outside_holding(filters: MessageFilter, holding: Holding | None) -> list[tuple[str, str]]:
    """``(field path, reason)`` for every part of ``filters`` that reaches beyond ``holding``; empty = inside.

    A destination number must be held; a destination prefix must lie within a held prefix. With a held route,
    any destination can arrive on it, so destinations are not refused then; a ``route_ids`` value only narrows
    a filter (criteria are ANDed), so it is refused only when it names a route while the owner holds routes
    and no numbers, and not that route.
    """
    if holding is None or holding.empty:
        return [("filters", "this owner holds no numbers, prefixes or routes; ask the operator for them")]
    out: list[tuple[str, str]] = []
    any_destination = bool(holding.route_ids)
    for i, number in enumerate(filters.destination_numbers):
        if not any_destination and not holding.holds_number(number):
            out.append((f"filters.destination_numbers.{i}", f"{number} is not a number this owner holds"))
    for i, prefix in enumerate(filters.destination_prefixes):
        if not any_destination and not holding.holds_prefix(prefix):
            out.append(
                (f"filters.destination_prefixes.{i}", f"{prefix} reaches beyond the numbers this owner holds")
            )
    if holding.route_ids and not (holding.numbers or holding.prefixes):
        for i, route in enumerate(filters.route_ids):
            if route not in holding.route_ids:
                out.append((f"filters.route_ids.{i}", f"route {route} is not held by this owner"))
    return out


def holding_to_record(holding: Holding) -> bytes:
    doc = holding.model_dump(mode="json")
    if not doc["sender_ids"]:  # left out when empty: a process from before sender IDs reads the record
        del doc["sender_ids"]
    doc["format"] = HOLDING_RECORD_FORMAT
    return orjson.dumps(doc)


def holding_from_kafka(key: bytes, value: bytes | None) -> tuple[str, Holding | None]:
    """Decode one record of the compacted topic; ``(owner, None)`` is a tombstone (holding removed)."""
    owner = key.decode("utf-8")
    if value is None:
        return owner, None
    doc = orjson.loads(value)
    if doc.pop("format", None) != HOLDING_RECORD_FORMAT:
        raise ValueError(f"not a {HOLDING_RECORD_FORMAT} record")
    holding = Holding.model_validate(doc)
    if holding.owner != owner:
        raise ValueError(f"record key {owner!r} does not match owner {holding.owner!r}")
    return owner, holding
