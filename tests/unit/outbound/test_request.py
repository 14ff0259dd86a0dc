"""The outbound request: what the API accepts, and every refusal named by its field."""

from __future__ import annotations

from typing import Any

import pytest

from smsflow.outbound.request import (
    DEFAULT_VALIDITY_S,
    FieldError,
    OutboundRequest,
    read_request,
)

HOLDINGS = ["+85261234567", "+44 7700 900123"]
NOW = 1_700_000_000_000


def read(body: dict[str, Any], key: str | None = "k-1") -> OutboundRequest | list[FieldError]:
    return read_request(
        body, message_id="m1", owner="acme", holdings=HOLDINGS, sender_ids=None, now_ms=NOW,
        idempotency_key=key,
    )  # fmt: skip


def test_a_valid_request_is_normalised() -> None:
    req = read(
        {"to": "+852 9123 4567", "from": "+447700900123", "text": "Your code is 123456", "priority": "otp"}
    )
    assert isinstance(req, OutboundRequest)
    assert (req.to, req.sender, req.sender_kind, req.priority) == (
        "+85291234567",
        "+447700900123",
        "number",
        "otp",
    )
    assert req.validity_s == DEFAULT_VALIDITY_S
    assert req.expires_at_ms == NOW + DEFAULT_VALIDITY_S * 1000
    assert req.idempotency_key == "k-1"


def test_an_alphanumeric_sender_is_kept_verbatim() -> None:
    req = read(
        {"to": "+85291234567", "from": "AcmeBank", "text": "hi", "callback_url": "https://x.example/cb"}
    )
    assert isinstance(req, OutboundRequest)
    assert (req.sender, req.sender_kind, req.callback_url) == (
        "AcmeBank",
        "alphanumeric",
        "https://x.example/cb",
    )


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        ({"from": "AcmeBank", "text": "hi"}, "to", "required"),
        ({"to": "91234567", "from": "AcmeBank", "text": "hi"}, "to", "E.164"),
        ({"to": "+8529", "from": "AcmeBank", "text": "hi"}, "to", "not a valid E.164"),
        ({"to": "+85291234567", "from": "+85290000000", "text": "hi"}, "from", "not one of your numbers"),
        ({"to": "+85291234567", "from": "AcmeBankLtd12", "text": "hi"}, "from", "at most 11"),
        ({"to": "+85291234567", "from": "Acme€", "text": "hi"}, "from", "GSM default-alphabet"),
        ({"to": "+85291234567", "from": "Bank中", "text": "hi"}, "from", "GSM default-alphabet"),
        ({"to": "+85291234567", "from": "AcmeBank", "text": ""}, "text", "empty"),
        ({"to": "+85291234567", "from": "AcmeBank", "text": "a" * 2000}, "text", "at most 10"),
        (
            {"to": "+85291234567", "from": "AcmeBank", "text": "hi", "callback_url": "ftp://x"},
            "callback_url",
            "http",
        ),
        ({"to": "+85291234567", "from": "AcmeBank", "text": "hi", "validity_s": 10}, "validity_s", "60-"),
        (
            {"to": "+85291234567", "from": "AcmeBank", "text": "hi", "validity_s": "1h"},
            "validity_s",
            "seconds",
        ),
        ({"to": "+85291234567", "from": "AcmeBank", "text": "hi", "priority": "urgent"}, "priority", "otp"),
        ({"to": "+85291234567", "from": "AcmeBank", "text": "hi", "body": "x"}, "body", "unknown field"),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], path: str, reason: str) -> None:
    errors = read(body)
    assert isinstance(errors, list)
    assert [e.path for e in errors] == [path]
    assert reason in errors[0].reason


def test_every_error_is_reported_at_once() -> None:
    errors = read({"to": "123", "text": 5, "priority": "x"}, key="has space")
    assert isinstance(errors, list)
    assert sorted(e.path for e in errors) == ["Idempotency-Key", "from", "priority", "text", "to"]


def test_an_alphanumeric_sender_must_be_one_of_the_owners_sender_ids() -> None:
    body = {"to": "+85291234567", "from": "AcmeBank", "text": "hi"}
    kw = {"message_id": "m1", "owner": "acme", "holdings": HOLDINGS, "now_ms": NOW}
    held = read_request(body, sender_ids=lambda s: s.casefold() == "acmebank", **kw)
    assert isinstance(held, OutboundRequest) and held.sender == "AcmeBank"
    refused = read_request(body, sender_ids=lambda s: False, **kw)
    assert isinstance(refused, list) and [e.path for e in refused] == ["from"]
    assert "not one of your sender IDs" in refused[0].reason
