"""The topics manifest (infra/topics.yaml) and applying it to a cluster, idempotently.

``ensure_topics`` creates missing topics, adds partitions where the manifest declares more than exist, and
reports configuration drift (logged as warnings, and returned by ``topic_drift``). It never deletes a topic,
never lowers a partition count and never rewrites a config: those are decisions for a person.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).resolve().parents[1] / "infra" / "topics.yaml"
_DURATION = re.compile(r"^(\d+)\s*(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_POLICIES = {"delete", "compact", "compact,delete", "delete,compact"}


class ManifestError(ValueError):
    """The manifest is malformed; the message names the field (``topics[3].partitions: must be ≥ 1``)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: str = "delete"
    retention_ms: int | None = None
    min_insync_replicas: int = 1
    replication_factor: int = 1
    key: str = ""
    doc: str = ""
    config: Mapping[str, str] = field(default_factory=dict)

    def topic_config(self, brokers: int) -> dict[str, str]:
        """The topic-level configs to create it with on a cluster of ``brokers`` brokers."""
        conf = {"cleanup.policy": self.cleanup_policy, "min.insync.replicas": str(self.min_isr(brokers))}
        if self.retention_ms is not None:
            conf["retention.ms"] = str(self.retention_ms)
        conf.update({k: str(v) for k, v in self.config.items()})
        return conf

    def replicas(self, brokers: int) -> int:
        return max(1, min(self.replication_factor, brokers))

    def min_isr(self, brokers: int) -> int:
        # Never more than the replicas the topic really has, or acks=all could never succeed. When the
        # cluster is too small for the declared factor, keep one replica of slack as production would.
        rf = self.replicas(brokers)
        if rf < self.replication_factor:
            return max(1, min(self.min_insync_replicas, rf - 1))
        return min(self.min_insync_replicas, rf)


def parse_retention(value: Any, where: str) -> int | None:
    """``"7d"`` → 604800000; ``"forever"``/-1 → -1; None → None (broker default)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ManifestError(f"{where}: must be a duration like 7d, 12h, 30m, or 'forever'")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in ("forever", "infinite", "-1"):
        return -1
    m = _DURATION.match(text)
    if not m:
        raise ManifestError(f"{where}: {value!r} is not a duration like 7d, 12h, 30m, 500ms, or 'forever'")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ManifestError(f"{where}: must be an integer ≥ 1, got {value!r}")
    return value


def load_manifest(path: Path = MANIFEST) -> list[TopicSpec]:
    """Read and validate the topics manifest."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("topics"), list):
        raise ManifestError(f"{path}: must be a mapping with a 'topics' list")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ManifestError("defaults: must be a mapping")
    specs: list[TopicSpec] = []
    seen: set[str] = set()
    known = {"name", "partitions", "cleanup_policy", "retention", "min_insync_replicas", "replication_factor"}
    known |= {"key", "doc", "config"}
    for i, item in enumerate(raw["topics"]):
        where = f"topics[{i}]"
        if not isinstance(item, dict):
            raise ManifestError(f"{where}: must be a mapping")
        unknown = set(item) - known
        if unknown:
            raise ManifestError(f"{where}: unknown field(s) {sorted(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name):
            raise ManifestError(f"{where}.name: must be a Kafka topic name, got {name!r}")
        if name in seen:
            raise ManifestError(f"{where}.name: {name} is declared twice")
        seen.add(name)
        policy = str(item.get("cleanup_policy", "delete")).replace(" ", "")
        if policy not in _POLICIES:
            raise ManifestError(f"{where}.cleanup_policy: must be one of {sorted(_POLICIES)}, got {policy!r}")
        config = item.get("config") or {}
        if not isinstance(config, dict):
            raise ManifestError(f"{where}.config: must be a mapping")
        specs.append(
            TopicSpec(
                name=name,
                partitions=_positive_int(item.get("partitions"), f"{where}.partitions"),
                cleanup_policy=policy,
                retention_ms=parse_retention(item.get("retention"), f"{where}.retention"),
                min_insync_replicas=_positive_int(
                    item.get("min_insync_replicas", defaults.get("min_insync_replicas", 1)),
                    f"{where}.min_insync_replicas",
                ),
                replication_factor=_positive_int(
                    item.get("replication_factor", defaults.get("replication_factor", 1)),
                    f"{where}.replication_factor",
                ),
                key=str(item.get("key", "")),
                doc=str(item.get("doc", "")),
                config={str(k): str(v) for k, v in config.items()},
            )
        )
    return specs


def _wanted_partitions(spec: TopicSpec, override: int | None) -> int:
    # Single-partition topics are single on purpose (one ordered log read whole); an override (fewer
    # partitions for a small test, more for a benchmark) applies to the others only.
    if override is None or spec.partitions == 1:
        return spec.partitions
    return override


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient(
        {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 5000, "log_level": 4}
    )


def topic_drift(
    bootstrap: str, specs: Iterable[TopicSpec], partitions_override: int | None = None, timeout: float = 30.0
) -> list[str]:
    """Differences between the manifest and existing topics, one sentence each; missing topics included."""
    admin = _admin(bootstrap)
    md = admin.list_topics(timeout=timeout)
    brokers = max(1, len(md.brokers))
    specs = list(specs)
    out: list[str] = []
    existing = [s for s in specs if s.name in md.topics]
    for s in specs:
        if s.name not in md.topics:
            out.append(f"{s.name}: missing")
            continue
        have = len(md.topics[s.name].partitions)
        want = _wanted_partitions(s, partitions_override)
        if have != want:
            out.append(f"{s.name}: has {have} partitions, manifest wants {want}")
    if not existing:
        return out
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in existing])
    by_name = {s.name: s for s in existing}
    for resource, fut in futures.items():
        spec = by_name[resource.name]
        try:
            entries = fut.result(timeout=timeout)
        except KafkaException as exc:
            out.append(f"{spec.name}: cannot read config ({exc})")
            continue
        for key, want_value in spec.topic_config(brokers).items():
            have_value = entries[key].value if key in entries else None
            if _normalise(key, have_value) != _normalise(key, want_value):
                out.append(f"{spec.name}: {key} is {have_value!r}, manifest wants {want_value!r}")
    return out


def _normalise(key: str, value: str | None) -> str | None:
    if value is not None and key == "cleanup.policy":
        return ",".join(sorted(value.replace(" ", "").split(",")))
    return value


def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], partitions_override: int | None = None, timeout: float = 30.0
) -> list[str]:
    """Create missing topics and grow under-partitioned ones; return the names created.

    Config drift on existing topics is logged as warnings, not changed. Returns once every declared topic
    has a leader for each partition, so a producer can write to it at once.
    """
    specs = list(specs)
    admin = _admin(bootstrap)
    md = admin.list_topics(timeout=timeout)
    brokers = max(1, len(md.brokers))
    created: list[str] = []

    missing = [s for s in specs if s.name not in md.topics]
    if missing:
        new = [
            NewTopic(
                s.name,
                num_partitions=_wanted_partitions(s, partitions_override),
                replication_factor=s.replicas(brokers),
                config=s.topic_config(brokers),
            )
            for s in missing
        ]
        for name, fut in admin.create_topics(new, request_timeout=timeout).items():
            try:
                fut.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race: fine
                    raise
        clamped = [s.name for s in missing if s.replicas(brokers) < s.replication_factor]
        if clamped:
            log.info(
                "created %d topic(s) with replication factor %d (cluster has %d broker(s))",
                len(clamped),
                min(s.replicas(brokers) for s in missing),
                brokers,
            )

    grow = {
        s.name: NewPartitions(s.name, _wanted_partitions(s, partitions_override))
        for s in specs
        if s.name in md.topics
        and len(md.topics[s.name].partitions) < _wanted_partitions(s, partitions_override)
    }
    if grow:
        for name, fut in admin.create_partitions(list(grow.values()), request_timeout=timeout).items():
            fut.result(timeout=timeout)
            log.warning(
                "%s: partitions increased to %d (keys of existing records now map to other partitions)",
                name,
                grow[name].new_total_count,
            )

    _wait_for_leaders(admin, specs, timeout)
    for sentence in topic_drift(bootstrap, [s for s in specs if s.name not in created], partitions_override):
        log.warning("topic drift: %s", sentence)
    return created


def partition_count(bootstrap: str, topic: str, timeout: float = 30.0) -> int:
    """Partitions of an existing topic (what co-partitioned internal topics must match)."""
    md = _admin(bootstrap).list_topics(topic, timeout=timeout)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise ManifestError(f"{topic}: topic not found on {bootstrap} (apply infra/topics.yaml first)")
    return len(meta.partitions)


def partition_counts(bootstrap: str, topics: Iterable[str], timeout: float = 30.0) -> dict[str, int]:
    """Partitions of each existing topic, from one metadata request (0 for a missing one): a worker checks
    all its internal topics at every start, and a client per topic cost seconds on a loaded machine."""
    md = _admin(bootstrap).list_topics(timeout=timeout)
    out: dict[str, int] = {}
    for name in topics:
        meta = md.topics.get(name)
        out[name] = 0 if meta is None or meta.error is not None else len(meta.partitions)
    return out


def _wait_for_leaders(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    names = {s.name for s in specs}
    while True:
        md = admin.list_topics(timeout=timeout)
        pending = [
            n
            for n in names
            if n not in md.topics
            or not md.topics[n].partitions
            or any(p.leader < 0 for p in md.topics[n].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without leaders after {timeout:.0f}s: {sorted(pending)}")
        time.sleep(0.1)
