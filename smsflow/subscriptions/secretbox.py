"""Encryption of webhook signing secrets at rest (project rule: no secrets in logs or topics in clear).

Signing needs the secret in clear, so it cannot be hashed; it is sealed with AES-256-GCM instead. A sealed
value is ``enc:v1:<key id>:<base64(nonce || ciphertext+tag)>``; the subscription id is the associated data,
so a sealed secret copied into another subscription's record does not open. Keys come from the environment
(``SMSFLOW_SECRETS_KEYS="k2:<base64 32 bytes>,k1:<base64 32 bytes>"``): the first key seals, every listed key
opens, which lets operators rotate the key without rewriting the topic at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets as _random
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENV_KEYS = "SMSFLOW_SECRETS_KEYS"
_PREFIX = "enc:v1:"
_NONCE_BYTES = 12


class SecretBoxError(ValueError):
    """A key ring or sealed value that cannot be used; the message names the reason, never the secret."""


class SecretBox:
    def __init__(self, keys: Mapping[str, bytes], primary: str | None = None) -> None:
        if not keys:
            raise SecretBoxError("at least one key is required")
        for kid, key in keys.items():
            if not kid or ":" in kid or "," in kid:
                raise SecretBoxError(f"key id {kid!r}: must be non-empty without ':' or ','")
            if len(key) != 32:
                raise SecretBoxError(f"key {kid!r}: must be 32 bytes, not {len(key)}")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self._raw = dict(keys)  # for derive(): keys for other purposes, never these keys themselves
        self._primary = primary or next(iter(keys))
        if self._primary not in self._keys:
            raise SecretBoxError(f"primary key {self._primary!r} is not in the key ring")

    def __repr__(self) -> str:
        return f"SecretBox(primary={self._primary!r}, keys={sorted(self._keys)!r})"

    @staticmethod
    def generate_key() -> str:
        """A new base64 key for the ``SMSFLOW_SECRETS_KEYS`` variable."""
        return base64.b64encode(_random.token_bytes(32)).decode("ascii")

    @classmethod
    def from_spec(cls, spec: str) -> SecretBox:
        """Parse ``kid:base64key[,kid:base64key...]``; the first entry seals."""
        keys: dict[str, bytes] = {}
        for i, part in enumerate(p.strip() for p in spec.split(",") if p.strip()):
            kid, sep, b64 = part.partition(":")
            if not sep:
                raise SecretBoxError(f"{ENV_KEYS}[{i}]: expected 'key-id:base64-key'")
            try:
                keys[kid] = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise SecretBoxError(f"{ENV_KEYS}[{i}] ({kid}): key is not valid base64") from exc
        return cls(keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretBox:
        env = os.environ if environ is None else environ
        spec = env.get(ENV_KEYS, "")
        if not spec:
            raise SecretBoxError(f"{ENV_KEYS} is not set; generate a key with SecretBox.generate_key()")
        return cls.from_spec(spec)

    def derive(self, label: str) -> list[bytes]:
        """One 32-byte key per key of the ring for ``label`` (HMAC-SHA256 of the label under the key: an
        independent key for each purpose and label), the sealing key's first. While a key is being rotated
        out, both derivations are valid, so what is signed with all of them verifies with either."""
        order = [self._primary, *(kid for kid in self._raw if kid != self._primary)]
        message = b"smsflow derive\0" + label.encode("utf-8")
        return [hmac.new(self._raw[kid], message, hashlib.sha256).digest() for kid in order]

    def seal(self, plaintext: str, context: str) -> str:
        nonce = _random.token_bytes(_NONCE_BYTES)
        ct = self._keys[self._primary].encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return f"{_PREFIX}{self._primary}:{base64.b64encode(nonce + ct).decode('ascii')}"

    def open(self, sealed: str, context: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise SecretBoxError("sealed value does not start with 'enc:v1:'")
        kid, sep, b64 = sealed[len(_PREFIX) :].partition(":")
        if not sep:
            raise SecretBoxError("sealed value has no key id")
        aead = self._keys.get(kid)
        if aead is None:
            raise SecretBoxError(f"sealed with key {kid!r}, which is not in the key ring")
        try:
            blob = base64.b64decode(b64, validate=True)
            return aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], context.encode("utf-8")).decode(
                "utf-8"
            )
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise SecretBoxError(f"sealed value does not open with key {kid!r} for this record") from exc
