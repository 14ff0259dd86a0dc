"""Webhook delivery: subscriptions, Standard Webhooks signing, retry policy, the HTTP sender and the
subscriptions API. Nothing here talks to Kafka; the delivery agent wires it to topics. See docs/webhooks.md.
"""

from smsflow.webhooks.engine import DeliveryEngine, DeliveryOutcome
from smsflow.webhooks.model import (
    AttemptResult,
    BatchConfig,
    DeliveryEvent,
    DeliveryState,
    FailureKind,
    MessageFilter,
    SigningSecret,
    Subscription,
)
from smsflow.webhooks.policy import Action, RetryDecision, RetryPolicy, RetrySchedule
from smsflow.webhooks.sender import SenderConfig, WebhookSender

__all__ = [
    "Action",
    "AttemptResult",
    "BatchConfig",
    "DeliveryEngine",
    "DeliveryEvent",
    "DeliveryOutcome",
    "DeliveryState",
    "FailureKind",
    "MessageFilter",
    "RetryDecision",
    "RetryPolicy",
    "RetrySchedule",
    "SenderConfig",
    "SigningSecret",
    "Subscription",
    "WebhookSender",
]
