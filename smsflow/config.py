"""The one YAML config file every process takes with ``--config``.

Validation errors name the field path (``carriers[1].port: ...``) so an operator can fix the file without
reading code. Secrets never live in the file: it names environment variables that hold them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from smsflow.carriers import PRESETS, ReceiptIdForm, apply_preset
from smsflow.fieldpath import validation_messages
from smsflow.routing.model import RoutingSection, routing_errors


class ConfigError(ValueError):
    """A config file that cannot be used; the message names every bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=1, le=65535)]


class KafkaConfig(_Strict):
    bootstrap_servers: str | None = Field(
        default=None, description="host:port list; empty = start the local single-node broker"
    )
    partitions: int = Field(default=6, ge=1, description="partitions for topics the manifest creates")
    replication_factor: int = Field(default=1, ge=1)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username_env: str | None = None
    sasl_password_env: str | None = None

    @field_validator("security_protocol")
    @classmethod
    def _plaintext_only(cls, v: str) -> str:
        # Accepted and then silently ignored would connect in clear text to a cluster that expects TLS/SASL.
        if v != "PLAINTEXT":
            raise ValueError(
                "not supported yet: the processes connect with PLAINTEXT only (secured clusters come later); "
                "remove it or set PLAINTEXT"
            )
        return v

    @field_validator("sasl_mechanism", "sasl_username_env", "sasl_password_env")
    @classmethod
    def _no_sasl_yet(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError("not supported yet: SASL is not wired into the Kafka clients; remove it")
        return v


class RegistryConfig(_Strict):
    url: str | None = Field(default=None, description="Confluent-compatible registry; empty = embedded")
    basic_auth_user_env: str | None = None
    basic_auth_password_env: str | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> RegistryConfig:
        if (self.basic_auth_user_env is None) != (self.basic_auth_password_env is None):
            user_only = self.basic_auth_password_env is None
            missing = "basic_auth_password_env" if user_only else "basic_auth_user_env"
            raise ValueError(
                f"{missing}: required with the other basic_auth field (user and password go together)"
            )
        return self


class TracingConfig(_Strict):
    zipkin_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:9411/api/v2/spans")
    otlp_endpoint: str | None = None
    service_name_prefix: str = "smsflow"
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    schedule_delay_ms: float | None = Field(
        default=None, gt=0, description="span export batching delay; default OTEL_BSP_SCHEDULE_DELAY or 1000"
    )


class ReconnectConfig(_Strict):
    initial_s: float = Field(default=1.0, gt=0)
    max_s: float = Field(default=30.0, gt=0)
    healthy_after_s: float = Field(
        default=10.0, ge=0, description="a session bound this long resets the backoff to initial_s"
    )


Alphabet = Literal[
    "gsm7", "ascii", "latin1", "ucs2", "binary", "shift_jis", "iso8859_5", "iso8859_8", "iso2022_jp", "euc_kr"
]
# SMPP 3.4 §5.2.5/§5.2.6: TON 0-6, NPI 0,1,3,4,6,8,9,10,14,18 are the defined values.
_NPI_VALUES = (0, 1, 3, 4, 6, 8, 9, 10, 14, 18)


class TonNpi(_Strict):
    ton: int = Field(ge=0, le=6)
    npi: int

    @field_validator("npi")
    @classmethod
    def _defined_npi(cls, v: int) -> int:
        if v not in _NPI_VALUES:
            raise ValueError(f"must be one of {', '.join(map(str, _NPI_VALUES))} (SMPP 3.4 §5.2.6)")
        return v


class ReceiptProfile(_Strict):
    id_form: ReceiptIdForm = Field(
        default="auto", description="receipt id is hex / decimal; auto = hex only when it has a-f digits"
    )
    in_text: bool = Field(
        default=False, description="treat an esm_class 0 message whose text reads id:… stat:… as a receipt"
    )


# What the wire can carry (SMPP 3.4 §4.1.1, C-Octet Strings less their NUL): refused when the config is read,
# naming the field, rather than failing every bind at run time.
_BIND_OCTETS = {"system_id": 15, "password": 8, "system_type": 12, "address_range": 40}


def _latin1_octets(value: str) -> int:
    try:
        return len(value.encode("latin-1"))
    except UnicodeEncodeError:
        raise ValueError("must be Latin-1 text (SMPP C-Octet String)") from None


class CarrierConfig(_Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    route_id: str = Field(min_length=1)
    profile: str | None = Field(
        default=None, description="a preset (smsflow.carriers.PRESETS); fields override it"
    )
    protocol: Literal["smpp"] = "smpp"
    host: str = Field(min_length=1)
    port: Port
    system_id: str = Field(min_length=1)
    password_env: str = Field(min_length=1, description="name of the env var holding the bind password")
    system_type: str = ""
    bind: Literal["receiver", "transceiver"] = "transceiver"
    interface_version: Literal["3.3", "3.4", "5.0"] = "3.4"
    address_range: str = ""
    enquire_link_s: float = Field(default=30.0, gt=0)
    response_timeout_s: float = Field(default=10.0, gt=0)
    window: int = Field(default=32, ge=1, le=1024, description="deliver_sm in flight before we stop reading")
    sessions: int = Field(default=1, ge=1, le=16, description="parallel binds to this carrier")
    default_region: str | None = Field(default=None, description="ISO region for national numbers, e.g. CN")
    gsm_default_alphabet: Literal["gsm7", "ascii", "latin1"] = "gsm7"
    data_coding: dict[int, Alphabet] = Field(
        default_factory=dict, description="data_coding value -> alphabet, overriding the standard meaning"
    )
    source_ton_npi: TonNpi | None = Field(default=None, description="replace the TON/NPI the SMSC sends")
    destination_ton_npi: TonNpi | None = None
    receipts: ReceiptProfile = ReceiptProfile()
    max_pdu_size: int = Field(
        default=64 * 1024, ge=512, le=1024 * 1024, description="a longer command_length is a framing error"
    )
    max_messages_per_s: float | None = Field(
        default=None, gt=0, description="per session: read no faster than this (the SMSC queues the rest)"
    )
    reconnect: ReconnectConfig = ReconnectConfig()
    submit_per_s: float | None = Field(
        default=None, gt=0, description="outbound: submit_sm per second over all this carrier's binds (TPS)"
    )
    submit_window: int = Field(
        default=10, ge=1, le=1024, description="outbound: submit_sm awaiting their resp, over all binds"
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return apply_preset(data)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown profile {v!r} (known: {', '.join(sorted(PRESETS))})")
        return v

    @field_validator("data_coding", mode="before")
    @classmethod
    def _octet_keys(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out = {}
        for key, alphabet in v.items():
            try:
                dc = int(key, 0) if isinstance(key, str) else int(key)
            except (TypeError, ValueError):
                raise ValueError(f"key {key!r} is not a data_coding value (write 0x01 or 1)") from None
            if not 0 <= dc <= 0xFF:
                raise ValueError(f"key {key!r} is not an octet (0x00-0xFF)")
            out[dc] = alphabet
        return out

    @field_validator("system_id", "system_type", "address_range")
    @classmethod
    def _fits_the_bind(cls, v: str, info: ValidationInfo) -> str:
        limit = _BIND_OCTETS[str(info.field_name)]
        if _latin1_octets(v) > limit:
            raise ValueError(f"at most {limit} octets in SMPP 3.4")
        return v

    def password(self) -> str:
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(
                f"carriers[{self.id}].password_env: environment variable {self.password_env} is not set"
            )
        try:
            octets = _latin1_octets(value)
        except ValueError as exc:
            raise ConfigError(f"carriers[{self.id}].password_env: {self.password_env} {exc}") from None
        if octets > _BIND_OCTETS["password"]:
            raise ConfigError(
                f"carriers[{self.id}].password_env: {self.password_env} holds {octets} octets; "
                f"at most {_BIND_OCTETS['password']} octets in SMPP 3.4"
            )
        return value


class SubscriptionConfig(_Strict):
    """A webhook subscription declared in the file (demo and bootstrap); the API manages the rest."""

    id: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    secret_env: str = Field(min_length=1, description="env var holding the whsec_ signing secret")
    destinations: list[str] = Field(default_factory=list)
    destination_prefixes: list[str] = Field(default_factory=list)
    countries: list[str] = Field(default_factory=list)
    otp_only: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    max_in_flight: int = Field(default=16, ge=1)

    def secret(self) -> str:
        value = os.environ.get(self.secret_env)
        if value is None:
            raise ConfigError(
                f"subscriptions[{self.id}].secret_env: environment variable {self.secret_env} is not set"
            )
        return value


class PipelineConfig(_Strict):
    reassembly_timeout_s: float = Field(default=60.0, gt=0)
    incomplete_policy: Literal["emit", "dead_letter"] = "emit"
    dedup_window_s: float = Field(default=600.0, gt=0)
    tick_interval_s: float = Field(default=1.0, gt=0)
    max_segments: int = Field(
        default=255, ge=2, le=255, description="a multipart SMS announcing more parts is quarantined"
    )
    max_message_bytes: int = Field(
        default=65_536, ge=140, le=1_000_000, description="reassembled user data beyond this is quarantined"
    )
    connector_linger_ms: int = Field(
        default=2,
        ge=0,
        le=100,
        description="how long the connector gathers raw PDUs into one produce request; every SMS waits it "
        "before its carrier hears the resp and ingest reads it (latency at low rates vs broker requests "
        "at saturation, docs/BENCHMARKS.md)",
    )
    connector_gather_ms: float = Field(
        default=10.0,
        ge=0,
        le=50,
        description="while busy (connector_gather_above_per_s), the connector hands the raw PDUs of this "
        "many milliseconds to its producer together: fewer produce requests and wake-ups per SMS for the "
        "connector, the broker and the stages after it, at most this much longer before the carrier hears "
        "the resp (a bind with a window of 1 may then drop to about 1000/connector_gather_ms PDUs per "
        "second; 0: never; docs/BENCHMARKS.md)",
    )
    connector_gather_above_per_s: float = Field(
        default=400.0,
        gt=0,
        description="records per second (over the last half second) above which the connector gathers; below "
        "it every PDU is written at once",
    )


class CircuitSettings(_Strict):
    """When an endpoint is switched off automatically (docs/webhooks.md); null turns a condition off. The
    streaks are kept in sms.webhook.circuits.v1, so restarts do not reset them."""

    failing_for_s: float | None = Field(
        default=5 * 86400, gt=0, description="disable after every attempt failed for this long"
    )
    max_consecutive_dead_letters: int | None = Field(
        default=100, ge=1, description="disable after this many messages in a row were dead-lettered"
    )


class WorkerConfig(_Strict):
    """How a stream worker joins its consumer group and keeps its table state (docs/consistency.md)."""

    instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="static group membership (group.instance.id): a restarted worker with the same id takes "
        "its partitions back without a rebalance; unique per worker; env SMSFLOW_WORKER_INSTANCE_ID wins",
    )
    session_timeout_s: float = Field(
        default=10.0,
        ge=6,
        le=300,
        description="a worker silent this long is dead: its partitions move (Kafka's range is 6-300 s)",
    )
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    standby_replicas: int = Field(default=0, ge=0, description="warm copies of each table on other workers")
    store: Literal["memory", "rocksdb"] = Field(
        default="memory", description="table store: memory, or rocksdb (needs the rocksdict package)"
    )
    start_attempts: int = Field(
        default=5, ge=1, description="times the worker tries to verify its topics before it exits non-zero"
    )
    max_not_ready_s: float = Field(
        default=900.0,
        ge=30,
        description="a worker not ready this long (a recovery or rebalance that never ends) exits non-zero",
    )
    producer_linger_ms: int = Field(
        default=1,
        ge=0,
        le=100,
        description="how long the worker's producer gathers records into one request (latency vs CPU)",
    )
    ingest_batch_max: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="most raw records the ingest agent takes at once of those fetched (1: one at a time)",
    )
    ingest_gather_ms: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="the direct ingest loop, while busy (ingest_gather_above_per_s), holds a batch open "
        "this long for more records: one produce request per partition for more SMS (0: never; "
        "docs/BENCHMARKS.md)",
    )
    ingest_gather_above_per_s: float = Field(
        default=400.0,
        gt=0,
        description="records per second (over the last half second) above which the loop gathers; below it "
        "every batch is what has arrived, and no SMS waits",
    )
    inbound_reader: Literal["faust", "direct"] = Field(
        default="faust",
        description="who reads sms.inbound.v1 for the deliver stage: Faust's consumer (the 'deliver' "
        "agent), or 'direct', a confluent-kafka consumer of its own in the worker "
        "(streams/inbound_reader.py, group <app_id>-deliver); never both in one deployment",
    )

    def effective_instance_id(self) -> str | None:
        return os.environ.get("SMSFLOW_WORKER_INSTANCE_ID") or self.instance_id


class WebhookDeliveryConfig(_Strict):
    block_private_addresses: bool = True
    https_only: bool = False
    ca_bundle: str | None = Field(default=None, description="PEM CA bundle replacing the system trust store")
    retry_delays_s: list[float] = Field(
        default=[0, 5, 300, 1800, 7200, 18000, 36000, 36000],
        min_length=1,
        description="wait before each attempt (the first is normally 0); see docs/webhooks.md",
    )
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    max_age_s: float = Field(default=48 * 3600, gt=0, description="a message older than this is expired")
    deferred_delay_s: float = Field(default=5.0, gt=0, description="retry delay when an endpoint had no slot")
    circuit: CircuitSettings = CircuitSettings()

    @model_validator(mode="after")
    def _delays_non_negative(self) -> WebhookDeliveryConfig:
        for i, d in enumerate(self.retry_delays_s):
            if d < 0:
                raise ValueError(f"retry_delays_s[{i}]: must be >= 0")
        return self


class SendRate(_Strict):
    """One owner's own send rate (``api.segment_rates``)."""

    per_second: float = Field(gt=0, le=100_000, description="segments per second")
    burst: int = Field(ge=10, le=10_000_000, description="segments at once (at least one whole message: 10)")


class ApiConfig(_Strict):
    """The subscriptions management API (``smsflow api``)."""

    host: str = "127.0.0.1"
    port: Port = 8090
    admin_key_env: str | None = Field(
        default="SMSFLOW_ADMIN_API_KEY",
        description="env var holding a bootstrap admin API key (hashed in memory)",
    )
    keys_file: str | None = Field(default=None, description="JSON lines of hashed API keys (ApiKey records)")
    rotation_overlap_s: float = Field(default=24 * 3600, ge=0)
    resend_history_lookback_s: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="resend: how far back to read sms.delivery.v1 for the message's first event",
    )
    resend_search_window_s: float = Field(
        default=3600,
        gt=0,
        description="resend: read sms.inbound.v1 from this long before the first delivery event",
    )
    recover_settle_s: float = Field(
        default=30,
        ge=0,
        le=600,
        description="recover: how long to wait for the deliver stage to finish the inbound messages stored "
        "so far (its committed offsets) before reading their delivery history; what it has not finished by "
        "then is left to it (the answer's not_examined)",
    )
    max_subscriptions_per_owner: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="subscriptions one owner may have; creating one more answers 409. Every inbound message "
        "is matched against every subscription, so one owner's count must not slow everyone's traffic",
    )
    subscription_changes_per_minute: int = Field(
        default=60,
        ge=1,
        le=100_000,
        description="changes (create, update, delete, enable, disable, rotate) one owner's API keys may make "
        "to its subscriptions per minute, per API process; more answers 429 with Retry-After. Every change "
        "is applied by every worker and API process (operators' keys are not counted)",
    )
    max_filter_entries: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="entries one list of a subscription's filters may hold (destination_numbers, "
        "destination_prefixes, countries, sender_signatures, route_ids); more answers 422 naming the list. "
        "Every worker and API process keeps every subscription's lists in memory",
    )
    segments_per_second_per_owner: float = Field(
        default=100,
        gt=0,
        le=100_000,
        description="SMS segments one owner may send through POST /v1/messages per second, per API process "
        "(a message of n parts counts n); more answers 429 with Retry-After. One tenant's flood would "
        "otherwise fill the carriers' windows and the connectors' waiting places ahead of everyone else",
    )
    segments_burst_per_owner: int = Field(
        default=1000,
        ge=10,
        le=10_000_000,
        description="segments one owner may send at once before segments_per_second_per_owner applies "
        "(at least one whole message of 10 parts)",
    )
    alphanumeric_senders: Literal["held", "any"] = Field(
        default="held",
        description="which alphanumeric `from` an owner may send as: held (the sender_ids of its holding, "
        "set by an operator: nobody sends as another's brand) or any (a single-tenant deployment)",
    )
    idempotency_keys_per_owner: int = Field(
        default=200_000,
        ge=1000,
        le=100_000_000,
        description="Idempotency-Keys of POST /v1/messages the API remembers per owner (for 24 h); beyond it "
        "the owner's oldest key is forgotten first. About 400 bytes each in every API process",
    )
    segment_rates: dict[str, SendRate] = Field(
        default_factory=dict,
        description="owners with their own send rate instead of the two above: owner id -> per_second, burst",
    )


class OutboundConfig(_Strict):
    """Outbound SMS (docs/outbound.md): how submit_sm is retried, and what a restart does with a submit whose
    outcome it cannot know."""

    attempts_per_route: int = Field(
        default=3,
        ge=1,
        le=20,
        description="ESME_RTHROTTLED/ESME_RMSGQFUL retries on one route before the next",
    )
    retry_backoff_s: list[float] = Field(
        default_factory=lambda: [1.0, 5.0, 30.0],
        min_length=1,
        description="wait before retry n (last repeats)",
    )
    unknown_outcome: Literal["hold", "resubmit"] = Field(
        default="hold", description="a submit in flight at a crash: never again (hold) or again (resubmit)"
    )
    bind_wait_s: float = Field(
        default=5.0,
        gt=0,
        description="wait this long for a bound session, then hand the segment to the next route",
    )
    callback_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="a callback POST with no complete answer by then is retried"
    )
    track_retention_s: float = Field(
        default=5 * 86400,
        ge=3600,
        description="a finished message's track (the status stage's table) is deleted this long after the "
        "later of its validity and its last change; keep it above sms.outbound.ledger.v1's retention (4 d), "
        "so no ledger entry can still name it. Its statuses stay in sms.outbound.status.v1",
    )


class MetricsConfig(_Strict):
    """Prometheus /metrics per process role; null = not served."""

    host: str = "127.0.0.1"
    connector_port: Port | None = None
    worker_port: Port | None = None
    ingest_port: Port | None = Field(default=None, description="the direct ingest loop (smsflow ingest)")


GC_THRESHOLD0 = 10_000  # gc_tuning.py: measured in docs/BENCHMARKS.md (2026-12-03)
GC_FREEZE_AFTER_S = 20.0


class GcConfig(_Strict):
    """CPython's cyclic garbage collector in the long-running processes (smsflow/gc_tuning.py, issue 13)."""

    threshold0: int = Field(
        default=GC_THRESHOLD0,
        ge=100,
        le=1_000_000,
        description="container allocations between young collections (CPython's default: 700)",
    )
    freeze_after_s: float | None = Field(
        default=GC_FREEZE_AFTER_S,
        ge=0,
        le=3600,
        description="seconds after start when every object alive is frozen out of the collector's "
        "traversals (gc.freeze); null: never",
    )


class Config(_Strict):
    app_id: str = Field(default="smsflow", pattern=r"^[A-Za-z0-9_.-]+$")
    kafka: KafkaConfig = KafkaConfig()
    schema_registry: RegistryConfig = RegistryConfig()
    tracing: TracingConfig = TracingConfig()
    carriers: list[CarrierConfig] = Field(default_factory=list)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)
    pipeline: PipelineConfig = PipelineConfig()
    worker: WorkerConfig = WorkerConfig()
    webhooks: WebhookDeliveryConfig = WebhookDeliveryConfig()
    api: ApiConfig = ApiConfig()
    outbound: OutboundConfig = OutboundConfig()
    metrics: MetricsConfig = MetricsConfig()
    routing: RoutingSection = Field(
        default_factory=RoutingSection, description="routes, double-list policies (docs/double-list.md)"
    )
    gc: GcConfig = Field(
        default_factory=GcConfig,
        description="the garbage collector of the worker, ingest loop and connector (smsflow/gc_tuning.py)",
    )
    data_dir: str = Field(default=".work/data", description="Faust table state and local services")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="the worker's and the connector's asyncio loop (smsflow/event_loop.py)"
    )

    @model_validator(mode="after")
    def _cross_field_checks(self) -> Config:
        for name, ids in (
            ("carriers", [c.id for c in self.carriers]),
            ("subscriptions", [s.id for s in self.subscriptions]),
        ):
            seen: set[str] = set()
            for i, item_id in enumerate(ids):
                if item_id in seen:
                    raise ValueError(f"{name}[{i}].id: duplicate id {item_id!r}")
                seen.add(item_id)
        if self.worker.heartbeat_interval_s * 3 > self.worker.session_timeout_s:
            raise ValueError("worker.heartbeat_interval_s: must be at most a third of session_timeout_s")
        for i, c in enumerate(self.carriers):
            if c.reconnect.max_s < c.reconnect.initial_s:
                raise ValueError(f"carriers[{i}].reconnect.max_s: must be >= initial_s")
        errors = routing_errors(self.routing, "routing")
        if errors:  # each names its full field path (routing.policies[0].primary[1]: unknown route 'x')
            raise ValueError("\n  ".join(errors))
        carrier_ids = {c.id for c in self.carriers}
        for i, route in enumerate(self.routing.routes):
            if route.carrier is not None and route.carrier not in carrier_ids:
                raise ValueError(f"routing.routes[{i}].carrier: no carrier {route.carrier!r} in carriers")
        return self

    def bootstrap_servers(self) -> str | None:
        """KAFKA_BOOTSTRAP_SERVERS in the environment wins over the file."""
        return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or self.kafka.bootstrap_servers

    def registry_url(self) -> str | None:
        return os.environ.get("SCHEMA_REGISTRY_URL") or self.schema_registry.url

    def registry_credentials(self, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """User and password for the schema registry's basic auth, read from the environment variables the
        config names; None when it names none."""
        reg = self.schema_registry
        if reg.basic_auth_user_env is None or reg.basic_auth_password_env is None:
            return None
        env = os.environ if environ is None else environ
        values = []
        for name, var in (
            ("basic_auth_user_env", reg.basic_auth_user_env),
            ("basic_auth_password_env", reg.basic_auth_password_env),
        ):
            if not env.get(var):
                raise ConfigError(f"schema_registry.{name}: {var} is not set in the environment")
            values.append(env[var])
        return values[0], values[1]

    def require_endpoints(self) -> tuple[str, str]:
        """Kafka bootstrap servers and registry URL, for a process that must not start without them."""
        bootstrap = self.bootstrap_servers()
        registry = self.registry_url()
        if not bootstrap:
            raise ConfigError(
                "kafka.bootstrap_servers: not set (nor KAFKA_BOOTSTRAP_SERVERS); `smsflow run` starts "
                "a local broker, a single role needs one given"
            )
        if not registry:
            raise ConfigError("schema_registry.url: not set (nor SCHEMA_REGISTRY_URL)")
        self.registry_credentials()  # a named variable missing from the environment: an error now, not later
        return bootstrap, registry


def parse_config(data: Any, source: str = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = validation_messages(exc)
        raise ConfigError(f"{source}: invalid config\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_config(data, str(p))
