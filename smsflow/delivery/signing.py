"""Standard Webhooks signatures (https://www.standardwebhooks.com).

A signature is ``v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``. During a secret rotation every
still-valid secret signs, and the signatures are sent space-separated in one ``webhook-signature`` header, so
a receiver holding either the old or the new secret accepts the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# The spec asks for 24..64 random bytes; 32 matches an HMAC-SHA256 block's key strength.
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE_S = 300

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class InvalidSecret(ValueError):
    """A secret that is not ``whsec_`` + base64 of 24..64 bytes."""


class SignatureMismatch(ValueError):
    """A webhook whose headers do not verify; the message says which check failed."""


def generate_secret(nbytes: int = SECRET_BYTES) -> str:
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise InvalidSecret(f"secret length must be {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(nbytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"secret must start with {SECRET_PREFIX!r}")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("secret is not valid base64 after the prefix") from exc
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"secret must decode to {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, not {len(raw)}"
        )
    return raw


def secret_fingerprint(secret: str) -> str:
    """A short, non-reversible label for a secret, safe to show in the API and logs."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    signed = b"%s.%d.%s" % (msg_id.encode("utf-8"), timestamp, body)
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    values = [sign(s, msg_id, timestamp, body) for s in secrets]
    if not values:
        raise InvalidSecret("at least one secret is needed to sign")
    return " ".join(values)


def webhook_headers(
    secrets: Iterable[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one request."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(ts),
        HEADER_SIGNATURE: signature_header(secrets, msg_id, ts, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Receiver side, for our demo receiver and tests; raises :class:`SignatureMismatch`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get(HEADER_ID)
    ts_text = lowered.get(HEADER_TIMESTAMP)
    sig_text = lowered.get(HEADER_SIGNATURE)
    if not (msg_id and ts_text and sig_text):
        raise SignatureMismatch("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(ts_text)
    except ValueError as exc:
        raise SignatureMismatch("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureMismatch(f"webhook-timestamp is more than {tolerance_s}s away from now")
    expected = sign(secret, msg_id, ts, body).encode("ascii")
    for candidate in sig_text.split(" "):
        if hmac.compare_digest(candidate.encode("ascii", "replace"), expected):
            return
    raise SignatureMismatch("no signature matches the secret")
