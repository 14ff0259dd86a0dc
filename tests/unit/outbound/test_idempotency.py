"""Idempotency-Key: a retried POST is the same message; a reused key with another body is a conflict."""

from __future__ import annotations

from smsflow.outbound.idempotency import DAY_MS, Conflict, IdempotencyBook, Replay

BODY = {"to": "+85291234567", "from": "AcmeBank", "text": "Your code is 123456", "priority": "otp"}
T = 1_700_000_000_000


def test_a_retry_with_the_same_body_replays_the_first_message_id() -> None:
    book = IdempotencyBook()
    assert book.look_up("acme", "k1", BODY, T) is None
    book = book.remember("acme", "k1", BODY, "m1", T)
    reordered = dict(reversed(list(BODY.items())))  # key order is not part of the request
    assert book.look_up("acme", "k1", reordered, T + 60_000) == Replay("m1")


def test_the_same_key_with_another_body_is_a_conflict() -> None:
    book = IdempotencyBook().remember("acme", "k1", BODY, "m1", T)
    result = book.look_up("acme", "k1", {**BODY, "text": "Your code is 654321"}, T + 1)
    assert isinstance(result, Conflict) and "m1" in result.reason


def test_keys_are_per_owner_and_forgotten_after_the_window() -> None:
    book = IdempotencyBook().remember("acme", "k1", BODY, "m1", T)
    assert book.look_up("other", "k1", BODY, T + 1) is None
    assert book.look_up("acme", "k1", BODY, T + DAY_MS - 1) == Replay("m1")
    assert book.look_up("acme", "k1", BODY, T + DAY_MS) is None
    later = book.remember("acme", "k2", BODY, "m2", T + DAY_MS)
    assert ("acme", "k1") not in later.keys  # expired entries are dropped as the book moves on
