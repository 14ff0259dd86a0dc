"""API keys for the subscriptions API, stored only as salted SHA-256 digests.

A key reads ``sfk_<key id>_<secret>``; the key id finds the record, the secret is checked in constant time.
The secret has 256 bits of entropy, so a fast salted hash is enough (a slow KDF protects guessable passwords,
and would cost a few milliseconds on every request here for no gain).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smsflow.subscriptions.holdings import is_operator_owner

TOKEN_PREFIX = "sfk_"


class Scope(StrEnum):
    READ = "subscriptions:read"
    WRITE = "subscriptions:write"  # create, update, delete, rotate, enable/disable
    MESSAGES = "messages:write"  # resend and recover


ALL_SCOPES = frozenset(Scope)


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKey:
    """A stored key. ``owner`` None means an operator key that may act for every owner."""

    key_id: str
    owner: str | None
    scopes: frozenset[Scope]
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)
    label: str = ""

    def __post_init__(self) -> None:
        # An owner key for an operator owner would manage the subscriptions that bypass holdings.
        if self.owner is not None and is_operator_owner(self.owner):
            raise ValueError(f"owner {self.owner!r} is reserved for operator subscriptions; use an admin key")

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes

    def may_access(self, owner: str) -> bool:
        return self.owner is None or self.owner == owner

    def to_record(self) -> dict[str, Any]:
        """The form to keep in config or a topic: hashes only."""
        return {
            "key_id": self.key_id,
            "owner": self.owner,
            "scopes": sorted(self.scopes),
            "salt": self.salt.hex(),
            "sha256": self.digest.hex(),
            "label": self.label,
        }

    @classmethod
    def from_token(
        cls, token: str, owner: str | None = None, scopes: Iterable[Scope] = ALL_SCOPES, label: str = ""
    ) -> ApiKey:
        """The stored form of a token someone already holds (e.g. an admin key from the environment)."""
        parsed = parse_token(token)
        if parsed is None:
            raise ValueError(f"not an API key: expected {TOKEN_PREFIX}<key id>_<secret>")
        key_id, secret = parsed
        salt = _random.token_bytes(16)
        return cls(key_id, owner, frozenset(scopes), salt, _digest(salt, secret), label)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ApiKey:
        return cls(
            key_id=str(record["key_id"]),
            owner=record.get("owner"),
            scopes=frozenset(Scope(s) for s in record.get("scopes", ())),
            salt=bytes.fromhex(record["salt"]),
            digest=bytes.fromhex(record["sha256"]),
            label=str(record.get("label", "")),
        )


def parse_token(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


class ApiKeyStore:
    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._keys = {k.key_id: k for k in keys}
        # Compared against when the key id is unknown, so a miss costs the same as a wrong secret.
        self._decoy = ApiKey("", None, frozenset(), _random.token_bytes(16), _random.token_bytes(32))

    def issue(
        self, owner: str | None, scopes: Iterable[Scope] = ALL_SCOPES, label: str = ""
    ) -> tuple[ApiKey, str]:
        """Create a key; the plaintext token is returned here once and never stored."""
        key_id = _random.token_hex(8)
        secret = _random.token_urlsafe(32)
        salt = _random.token_bytes(16)
        key = ApiKey(key_id, owner, frozenset(scopes), salt, _digest(salt, secret), label)
        self._keys[key_id] = key
        return key, f"{TOKEN_PREFIX}{key_id}_{secret}"

    def add(self, key: ApiKey) -> None:
        self._keys[key.key_id] = key

    def revoke(self, key_id: str) -> bool:
        return self._keys.pop(key_id, None) is not None

    def authenticate(self, token: str) -> ApiKey | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        key = self._keys.get(key_id)
        candidate = key or self._decoy
        matches = hmac.compare_digest(_digest(candidate.salt, secret), candidate.digest)
        return key if key is not None and matches else None
