"""Callback targets: a message's ``callback_url`` as the webhook engine's unit of delivery.

The engine delivers to a :class:`Subscription`; a callback is the one-endpoint subscription of (owner,
callback URL) that this module makes on demand, never stored. It gets everything the engine does for
subscriptions: Standard Webhooks signatures, the retry schedule (``webhooks.retry_delays_s``), the dead
letter after the budget, the egress policy on every connection, and slots per endpoint, so a dead callback
URL holds only its own slots. Its id is a digest of owner and URL: the same target gets the same slots and
circuit whichever message it serves, and a retry record names the target (``callback_target``) instead of a
stored subscription.

Signing secret: one per owner, derived from the secrets key ring (``SMSFLOW_SECRETS_KEYS``) with the owner
in the label, so nothing is stored and every API and worker process derives the same one. The customer reads
it at ``GET /v1/callback-secret``. While a key of the ring is rotated out, callbacks carry a signature from
each key (Standard Webhooks allows several), so either secret verifies.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from smsflow.delivery.signing import SECRET_PREFIX
from smsflow.subscriptions.model import SigningSecret, Subscription
from smsflow.subscriptions.secretbox import SecretBox

CALLBACK_ID_PREFIX = "callback."
_PURPOSE = "outbound callback signing/"


@dataclass(frozen=True)
class CallbackTarget:
    owner: str
    url: str

    @property
    def subscription_id(self) -> str:
        digest = hashlib.sha256(f"{self.owner}\0{self.url}".encode()).hexdigest()[:24]
        return CALLBACK_ID_PREFIX + digest

    def to_record(self) -> dict[str, str]:
        return {"owner": self.owner, "url": self.url}

    @classmethod
    def from_record(cls, doc: dict[str, Any]) -> CallbackTarget:
        return cls(str(doc["owner"]), str(doc["url"]))


def owner_callback_secrets(box: SecretBox, owner: str) -> list[str]:
    """The owner's callback secrets (``whsec_``), the current key's first."""
    return [SECRET_PREFIX + base64.b64encode(k).decode("ascii") for k in box.derive(_PURPOSE + owner)]


class CallbackSigner:
    """Makes the subscription of a callback target, signed with its owner's secrets."""

    def __init__(self, box: SecretBox, timeout_s: float = 10.0) -> None:
        self.box = box
        self.timeout_s = timeout_s

    def subscription(self, target: CallbackTarget) -> Subscription:
        return Subscription.model_validate(
            {
                "id": target.subscription_id,
                "owner": target.owner,
                "url": target.url,
                "description": "callback_url of outbound messages",
                "secrets": [SigningSecret.new(s) for s in owner_callback_secrets(self.box, target.owner)],
                "timeout_seconds": self.timeout_s,
            }
        )


def callback_target(sub: Subscription) -> CallbackTarget | None:
    """The callback target a subscription stands for, or None for a stored subscription."""
    if not sub.id.startswith(CALLBACK_ID_PREFIX):
        return None
    return CallbackTarget(sub.owner, sub.url)
