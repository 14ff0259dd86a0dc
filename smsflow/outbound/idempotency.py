"""Idempotency-Key for POST /v1/messages: the same key with the same body within 24 h is the same message.

Clients retry a POST whose answer they lost; without this a retried OTP is a second SMS. Per owner, a key
remembers the request's fingerprint (SHA-256 of its canonical JSON) and the message id it got:

- same key, same body, within `window_ms` → `Replay`: answer 202 with the first message id, send nothing;
- same key, another body → `Conflict` (the API answers 422): the client reused a key by mistake, and
  silently sending either body would be wrong;
- a key older than the window is forgotten, and the request is new again.

The book is a value; the API rebuilds it at start from the request records of sms.outbound.v1 (each carries
its owner and key: smsflow/api/message_feed.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Remembered:
    fingerprint: str
    message_id: str
    at_ms: int


@dataclass(frozen=True)
class Replay:
    message_id: str


@dataclass(frozen=True)
class Conflict:
    reason: str


def fingerprint(body: Mapping[str, object]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IdempotencyBook:
    window_ms: int = DAY_MS
    keys: Mapping[tuple[str, str], Remembered] = field(default_factory=dict)

    def look_up(
        self, owner: str, key: str, body: Mapping[str, object], now_ms: int
    ) -> Replay | Conflict | None:
        """None: a new request (send it, then `remember` it)."""
        known = self.keys.get((owner, key))
        if known is None or now_ms - known.at_ms >= self.window_ms:
            return None
        if known.fingerprint != fingerprint(body):
            return Conflict(
                f"Idempotency-Key {key!r} was used at {known.at_ms} for another request (message "
                f"{known.message_id}); use a new key for a new message"
            )
        return Replay(known.message_id)

    def remember(
        self, owner: str, key: str, body: Mapping[str, object], message_id: str, now_ms: int
    ) -> IdempotencyBook:
        live = {k: v for k, v in self.keys.items() if now_ms - v.at_ms < self.window_ms}
        live[(owner, key)] = Remembered(fingerprint(body), message_id, now_ms)
        return replace(self, keys=live)
