"""The registry's state, kept where Confluent Schema Registry keeps it: the compacted `_schemas` topic.

Each subject version is one record, keyed and shaped as Confluent writes them::

    key   {"keytype":"SCHEMA","subject":"sms.raw.v1-value","version":1,"magic":1}
    value {"subject":"sms.raw.v1-value","version":1,"id":1,"schema":"{...}","deleted":false}

compatibility settings are ``CONFIG`` records, and a permanent delete is a tombstone. At start the whole topic
is read into memory, so ids and versions survive restarts; every write goes to Kafka first (acks=all) and is
applied to memory only when read back, in log order.

Ids are global: the same schema (same JSON, whatever the whitespace or key order) has one id under every
subject. They are handed out sequentially by whoever writes. One registry writing at a time is the intended
set-up (as with Confluent's single leader); should two processes register at once, the log order decides
and the loser repairs the log and retries (see ``_write``), so every reader agrees on every id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from devkit.registry.compatibility import LEVELS, AvroSchema, InvalidSchema, compatibility_problems
from smsflow.topics import TopicSpec, ensure_topics

log = logging.getLogger(__name__)

SCHEMAS_TOPIC = "_schemas"
DEFAULT_COMPATIBILITY = "BACKWARD"


class RegistryError(Exception):
    """An error the REST API reports as Confluent does: HTTP status plus Confluent's error code."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(version: object) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found.")


def schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, detail)


@dataclass
class SubjectVersion:
    subject: str
    version: int
    id: int
    schema: str
    schema_type: str = "AVRO"
    deleted: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "subject": self.subject,
            "version": self.version,
            "id": self.id,
            "schema": self.schema,
        }
        if self.schema_type != "AVRO":
            out["schemaType"] = self.schema_type
        return out


def _key(keytype: str, subject: str | None, version: int | None = None) -> bytes:
    # Field order matters: compaction keeps one record per identical key *bytes*.
    if keytype == "SCHEMA":
        body: dict[str, Any] = {"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}
    else:
        body = {"keytype": keytype, "subject": subject, "magic": 0}
    return json.dumps(body, separators=(",", ":")).encode()


class KafkaSchemaStore:
    """Subjects, versions, ids and compatibility settings, persisted in a compacted topic.

    Blocking (it talks to Kafka); thread-safe. The aiohttp server calls it from worker threads.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = SCHEMAS_TOPIC,
        *,
        default_compatibility: str = DEFAULT_COMPATIBILITY,
        timeout: float = 30.0,
    ) -> None:
        if default_compatibility.upper() not in LEVELS:
            raise ValueError(f"default_compatibility: must be one of {LEVELS}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self._default_compatibility = default_compatibility.upper()
        self._lock = threading.RLock()
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._tp = TopicPartition(topic, 0)
        self._position = 0
        self._reset_memory()

    def _reset_memory(self) -> None:
        self._versions: dict[str, dict[int, SubjectVersion]] = {}
        self._by_id: dict[int, AvroSchema] = {}
        self._id_by_identity: dict[str, int] = {}
        self._config: dict[str | None, str] = {}
        self._max_id = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the topic if needed and read it whole."""
        spec = TopicSpec(self.topic, 1, cleanup_policy="compact", replication_factor=3, min_insync_replicas=2)
        ensure_topics(self.bootstrap, [spec], timeout=self.timeout)
        self._producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
            }
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"smsflow-registry-{uuid.uuid4()}",  # never joins or commits: assign() only
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                # The watermark queries of catch_up() share the connection with the long-poll fetch and
                # wait behind it: keep the poll short so a lookup never waits the default 500 ms.
                "fetch.wait.max.ms": 100,
            }
        )
        self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        with self._lock:
            self._reset_memory()
            self._position = 0
            self.catch_up()
        log.info(
            "schema store: %d subject(s), %d schema id(s) loaded from %s",
            len(self._versions),
            len(self._by_id),
            self.topic,
        )

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self.timeout)
                self._producer = None
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    # -- reading the log ---------------------------------------------------------------------------------
    def catch_up(self) -> None:
        """Apply every record written so far (by us or any other registry on this topic)."""
        consumer = self._require(self._consumer)
        with self._lock:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    _low, high = consumer.get_watermark_offsets(self._tp, timeout=self.timeout, cached=False)
                    break
                except KafkaException as exc:
                    # a just-created topic may not have its leader elected yet: retriable until the deadline
                    code = exc.args[0].code()
                    transient = (
                        KafkaError.NOT_LEADER_FOR_PARTITION,
                        KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                    )
                    if not (exc.args[0].retriable() or code in transient) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            while self._position < high:
                for msg in self._fetch(consumer):
                    self._apply_message(msg)
                pos = consumer.position([self._tp])[0].offset
                if pos >= 0:
                    self._position = max(self._position, pos)
                if time.monotonic() > deadline:
                    raise RegistryError(
                        500, 50002, f"timed out reading {self.topic} ({self._position}/{high})"
                    )

    @staticmethod
    def _fetch(consumer: Consumer) -> list[Message]:
        # consume(n, timeout) waits for n records or the whole timeout; poll returns at the first one.
        first = consumer.poll(0.5)
        if first is None:
            return []
        return [first, *consumer.consume(1000, timeout=0)]

    def _apply_message(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return
            raise RegistryError(500, 50002, f"reading {self.topic}: {err}")
        self._position = (msg.offset() or 0) + 1
        try:
            key = json.loads(msg.key() or b"null")
            raw = msg.value()
            value = json.loads(raw) if raw else None
            self._apply(key, value)
        except (ValueError, KeyError, TypeError, InvalidSchema) as exc:
            log.warning("%s offset %s: skipped unreadable record (%s)", self.topic, msg.offset(), exc)

    def _apply(self, key: dict[str, Any], value: dict[str, Any] | None) -> bool:
        """Apply one record to memory; False when it loses to an earlier conflicting one."""
        keytype = key.get("keytype")
        if keytype == "CONFIG":
            subject = key.get("subject")
            if value is None:
                self._config.pop(subject, None)
            else:
                self._config[subject] = str(value["compatibilityLevel"]).upper()
            return True
        if keytype != "SCHEMA":
            return True  # NOOP, DELETE_SUBJECT, MODE … from a Confluent-written topic: nothing to keep
        subject, version = str(key["subject"]), int(key["version"])
        versions = self._versions.setdefault(subject, {})
        if value is None:  # permanent delete
            gone = versions.pop(version, None)
            if not versions:
                self._versions.pop(subject, None)
            if gone is not None:
                self._forget_id_if_unused(gone.id)
            return True
        sid = int(value["id"])
        schema_type = str(value.get("schemaType", "AVRO"))
        parsed = AvroSchema.parse(value["schema"])
        known = self._by_id.get(sid)
        if known is not None and known.identity != parsed.identity:
            return False  # the id already names another schema: the earlier record wins
        existing = versions.get(version)
        if existing is not None and existing.id != sid:
            return False  # the version already holds another schema: the earlier record wins
        if known is None:
            self._by_id[sid] = parsed
            self._id_by_identity.setdefault(parsed.identity, sid)
        self._max_id = max(self._max_id, sid)
        versions[version] = SubjectVersion(
            subject, version, sid, parsed.text, schema_type, bool(value["deleted"])
        )
        return True

    def _forget_id_if_unused(self, sid: int) -> None:
        if any(v.id == sid for vs in self._versions.values() for v in vs.values()):
            return
        gone = self._by_id.pop(sid, None)
        if gone is not None and self._id_by_identity.get(gone.identity) == sid:
            del self._id_by_identity[gone.identity]

    # -- writing -----------------------------------------------------------------------------------------
    def _write(self, key: bytes, value: dict[str, Any] | None) -> bool:
        """Produce one record, wait for the broker, read the log up to it; True if it took effect."""
        producer = self._require(self._producer)
        errors: list[KafkaError] = []
        offsets: list[int] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)
            else:
                offsets.append(msg.offset() or 0)

        payload = None if value is None else json.dumps(value, separators=(",", ":")).encode()
        producer.produce(self.topic, key=key, value=payload, partition=0, on_delivery=delivered)
        producer.flush(self.timeout)
        if errors or not offsets:
            raise RegistryError(500, 50001, f"Error while storing to {self.topic}: {errors or 'timed out'}")
        # Read everything up to and including our record, noting whether ours was applied.
        consumer = self._require(self._consumer)
        ours = offsets[0]
        applied = True
        deadline = time.monotonic() + self.timeout
        while self._position <= ours:
            for msg in self._fetch(consumer):
                if msg.error() is None and msg.offset() == ours:
                    self._position = ours + 1
                    raw = msg.value()
                    applied = self._apply(json.loads(msg.key() or b"null"), json.loads(raw) if raw else None)
                else:
                    self._apply_message(msg)
            if time.monotonic() > deadline:
                raise RegistryError(500, 50002, f"timed out reading back {self.topic}")
        if not applied:
            self._repair(key)
        return applied

    def _repair(self, key: bytes) -> None:
        """Our record lost to a concurrent writer: make sure compaction can never let it win later."""
        k = json.loads(key)
        current = self._versions.get(str(k["subject"]), {}).get(int(k["version"]))
        log.warning("schema store: concurrent registration on %s; retrying", key.decode())
        producer = self._require(self._producer)
        body = None
        if current is not None:  # same key: re-write the winner so it is the key's latest value
            body = {
                "subject": current.subject,
                "version": current.version,
                "id": current.id,
                "schema": current.schema,
                "deleted": current.deleted,
            }
            if current.schema_type != "AVRO":
                body["schemaType"] = current.schema_type
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        producer.produce(self.topic, key=key, value=payload, partition=0)
        producer.flush(self.timeout)
        self.catch_up()

    # -- queries -----------------------------------------------------------------------------------------
    def schema_by_id(self, sid: int) -> tuple[AvroSchema, str]:
        """The schema with this id and its type; refreshes from the topic once on a miss."""
        with self._lock:
            if sid not in self._by_id:
                self.catch_up()
            if sid not in self._by_id:
                raise schema_not_found(f"Schema {sid} not found")
            types = {v.schema_type for vs in self._versions.values() for v in vs.values() if v.id == sid}
            return self._by_id[sid], (types.pop() if types else "AVRO")

    def versions_of_id(self, sid: int, deleted: bool = False) -> list[SubjectVersion]:
        with self._lock:
            self.schema_by_id(sid)
            return [
                v
                for subject in sorted(self._versions)
                for v in sorted(self._versions[subject].values(), key=lambda x: x.version)
                if v.id == sid and (deleted or not v.deleted)
            ]

    def subjects(self, deleted: bool = False, prefix: str = "") -> list[str]:
        with self._lock:
            self.catch_up()
            return sorted(
                s
                for s, vs in self._versions.items()
                if s.startswith(prefix) and any(deleted or not v.deleted for v in vs.values())
            )

    def versions(self, subject: str, deleted: bool = False) -> list[SubjectVersion]:
        """Versions of a subject, oldest first; raises 40401 when it has none (live ones unless deleted)."""
        with self._lock:
            if subject not in self._versions:
                self.catch_up()
            found = [v for v in self._versions.get(subject, {}).values() if deleted or not v.deleted]
            if not found:
                raise subject_not_found(subject)
            return sorted(found, key=lambda v: v.version)

    def get_version(self, subject: str, version: str | int, deleted: bool = False) -> SubjectVersion:
        with self._lock:
            versions = self.versions(subject, deleted=deleted)
            if str(version) in ("latest", "-1"):
                return versions[-1]
            try:
                n = int(version)
            except ValueError:
                raise RegistryError(
                    422, 42202, f"The specified version '{version}' is not a valid version id."
                ) from None
            if n < 1:
                raise RegistryError(
                    422, 42202, f"The specified version '{version}' is not a valid version id."
                )
            for v in versions:
                if v.version == n:
                    return v
            raise version_not_found(n)

    def lookup(self, subject: str, schema: AvroSchema, deleted: bool = False) -> SubjectVersion:
        """The version of ``subject`` that holds exactly this schema (POST /subjects/{subject})."""
        with self._lock:
            versions = self.versions(subject, deleted=deleted)
            sid = self._id_by_identity.get(schema.identity)
            for v in reversed(versions):
                if v.id == sid:
                    return v
            raise schema_not_found()

    # -- compatibility -----------------------------------------------------------------------------------
    def compatibility(self, subject: str | None = None, default_to_global: bool = True) -> str | None:
        with self._lock:
            if subject is not None:
                level = self._config.get(subject)
                if level is not None or not default_to_global:
                    return level
            return self._config.get(None, self._default_compatibility)

    def set_compatibility(self, level: str, subject: str | None = None) -> str:
        level = level.upper()
        if level not in LEVELS:
            raise RegistryError(
                422, 42203, f"Invalid compatibility level {level!r}; valid: {', '.join(LEVELS)}"
            )
        with self._lock:
            self.catch_up()
            self._write(_key("CONFIG", subject), {"compatibilityLevel": level})
            return level

    def delete_compatibility(self, subject: str | None) -> str:
        with self._lock:
            self.catch_up()
            previous = self.compatibility(subject)
            self._write(_key("CONFIG", subject), None)
            return previous or self._default_compatibility

    def check(self, subject: str, schema: AvroSchema, version: str | int | None) -> list[str]:
        """Compatibility problems of ``schema`` against one version (or, with None, what the level says)."""
        with self._lock:
            self.catch_up()
            level = self.compatibility(subject) or self._default_compatibility
            try:
                live = self.versions(subject)
            except RegistryError:
                if version is None or str(version) in ("latest", "-1"):
                    return []
                raise
            if version is None:
                return compatibility_problems(level, schema, [self._by_id[v.id] for v in live])
            target = self.get_version(subject, version)
            plain = level.removesuffix("_TRANSITIVE")
            return compatibility_problems(plain, schema, [self._by_id[target.id]])

    # -- registering and deleting ------------------------------------------------------------------------
    def register(self, subject: str, schema: AvroSchema, schema_type: str = "AVRO") -> SubjectVersion:
        """Register ``schema`` under ``subject`` (or return the version that already holds it).

        Raises RegistryError 409 when the subject's compatibility level forbids it.
        """
        with self._lock:
            for _attempt in range(5):
                self.catch_up()
                versions = sorted(self._versions.get(subject, {}).values(), key=lambda v: v.version)
                live = [v for v in versions if not v.deleted]
                sid = self._id_by_identity.get(schema.identity)
                for v in reversed(live):
                    if v.id == sid:
                        return v
                level = self.compatibility(subject) or self._default_compatibility
                problems = compatibility_problems(level, schema, [self._by_id[v.id] for v in live])
                if problems:
                    raise RegistryError(
                        409,
                        409,
                        f"Schema being registered is incompatible with an earlier schema for subject "
                        f'"{subject}" (compatibility {level}), details: {problems}',
                    )
                new_id = sid if sid is not None else self._max_id + 1
                new_version = (versions[-1].version if versions else 0) + 1
                body: dict[str, Any] = {
                    "subject": subject,
                    "version": new_version,
                    "id": new_id,
                    "schema": schema.text,
                    "deleted": False,
                }
                if schema_type != "AVRO":
                    body["schemaType"] = schema_type
                if self._write(_key("SCHEMA", subject, new_version), body):
                    return self._versions[subject][new_version]
            raise RegistryError(500, 50001, "could not register: too many concurrent registrations")

    def delete_version(self, subject: str, version: str | int, permanent: bool = False) -> int:
        with self._lock:
            self.catch_up()
            target = self.get_version(subject, version, deleted=permanent)
            if permanent:
                if not target.deleted:
                    raise RegistryError(
                        404,
                        40407,
                        f"Subject '{subject}' Version {target.version} was not deleted first before being"
                        " permanently deleted",
                    )
                self._write(_key("SCHEMA", subject, target.version), None)
            elif target.deleted:
                raise version_not_found(target.version)
            else:
                self._write(_key("SCHEMA", subject, target.version), {**target.as_json(), "deleted": True})
            return target.version

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        with self._lock:
            self.catch_up()
            versions = self.versions(subject, deleted=permanent)
            if permanent and any(not v.deleted for v in versions):
                raise RegistryError(
                    404, 40405, f"Subject '{subject}' was not deleted first before being permanently deleted"
                )
            for v in versions:
                if permanent:
                    self._write(_key("SCHEMA", subject, v.version), None)
                else:
                    self._write(_key("SCHEMA", subject, v.version), {**v.as_json(), "deleted": True})
            return [v.version for v in versions]

    @staticmethod
    def _require(thing: Any) -> Any:
        if thing is None:
            raise RegistryError(500, 50003, "schema store is not started")
        return thing
