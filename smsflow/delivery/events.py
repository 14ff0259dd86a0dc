"""What delivery attempts produce: the result of one POST, and the delivery events published on
``sms.delivery.v1`` (schemas/delivery_event.avsc)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import orjson
from pydantic import BaseModel, Field

from smsflow.subscriptions.model import utcnow


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    EXPIRED = "expired"
    DEAD_LETTERED = "dead_lettered"
    ENDPOINT_DISABLED = "endpoint_disabled"


class FailureKind(StrEnum):
    HTTP_STATUS = "http_status"  # a response outside 2xx
    REDIRECT = "redirect"  # 3xx: never followed
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset, closed mid-response
    DNS = "dns"
    TLS = "tls"  # handshake or certificate verification failed
    BLOCKED_ADDRESS = "blocked_address"  # SSRF guard: a private/loopback/... address
    HTTPS_REQUIRED = "https_required"
    INVALID_REQUEST = "invalid_request"  # the request could not be built (bad URL, unserialisable body)
    INVALID_RESPONSE = "invalid_response"  # an answer came but could not be interpreted: failed, retried
    DEFERRED = "deferred"  # local back-pressure: the endpoint's slots stayed full; nothing was sent


class AttemptResult(BaseModel):
    """What one POST (or a decision not to POST) produced."""

    subscription_id: str
    webhook_id: str
    message_ids: list[str]
    attempt: int = Field(ge=1)
    url: str = Field(description="without credentials")
    endpoint_id: str | None = Field(None, description="which of the subscription's endpoints was tried")
    route_id: str | None = Field(None, description="that endpoint's route id in the double list")
    started_at: datetime
    duration_ms: float
    status_code: int | None = None
    failure: FailureKind | None = None
    error: str | None = None
    response_body: str | None = None
    response_truncated: bool = False
    retry_after: str | None = Field(None, description="raw Retry-After header")

    @property
    def ok(self) -> bool:
        return self.failure is None and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def request_sent(self) -> bool:
        return self.failure not in (
            FailureKind.DEFERRED,
            FailureKind.HTTPS_REQUIRED,
            FailureKind.INVALID_REQUEST,
            FailureKind.BLOCKED_ADDRESS,
        )


class DeliveryEvent(BaseModel):
    """One step of one message's delivery to one subscription, as published on ``sms.delivery.v1``."""

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ts: datetime = Field(default_factory=utcnow)
    state: DeliveryState
    message_id: str
    subscription_id: str
    webhook_id: str | None = None
    attempt: int = 0
    status_code: int | None = None
    failure: FailureKind | None = None
    error: str | None = None
    duration_ms: float | None = None
    next_attempt_at: datetime | None = None
    response_body: str | None = None
    url: str | None = None
    batch_size: int = 1
    route_id: str | None = None  # the endpoint's route (`<subscription>.<endpoint>`): health is per route

    @classmethod
    def from_attempt(
        cls,
        result: AttemptResult,
        state: DeliveryState,
        message_id: str,
        *,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
        ts: datetime | None = None,
    ) -> DeliveryEvent:
        return cls(
            ts=ts or utcnow(),
            state=state,
            message_id=message_id,
            subscription_id=result.subscription_id,
            webhook_id=result.webhook_id,
            attempt=result.attempt,
            status_code=result.status_code,
            failure=result.failure,
            error=error if error is not None else result.error,
            duration_ms=result.duration_ms,
            next_attempt_at=next_attempt_at,
            response_body=result.response_body,
            url=result.url,
            batch_size=len(result.message_ids),
            route_id=result.route_id,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes | str) -> DeliveryEvent:
        return cls.model_validate(orjson.loads(data))
