"""The topics manifest applies cleanly and idempotently to the real broker."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from smsflow.topics import MANIFEST, ManifestError, TopicSpec, ensure_topics, load_manifest, topic_drift

if TYPE_CHECKING:
    from tests.conftest import KafkaUnderTest


def _renamed(specs: list[TopicSpec], unique: str) -> list[TopicSpec]:
    # Same declarations under run-unique names, so the test never touches a shared cluster's real topics.
    return [dataclasses.replace(s, name=f"t{unique}.{s.name.lstrip('_')}") for s in specs]


def _configs(bootstrap: str, topic: str) -> dict[str, str | None]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [fut] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
    return {k: v.value for k, v in fut.result(timeout=30).items()}


def test_manifest_declares_every_topic() -> None:
    specs = {s.name: s for s in load_manifest(MANIFEST)}
    assert set(specs) == {
        "sms.raw.v1",
        "sms.inbound.v1",
        "sms.receipts.v1",
        "sms.quarantine.v1",
        "sms.delivery.v1",
        "sms.subscriptions.v1",
        "sms.holdings.v1",
        "sms.webhook.retry.v1",
        "sms.webhook.attempts.v1",
        "sms.webhook.circuits.v1",
        "sms.webhook.dlq.v1",
        "sms.routes.observations.v1",
        "sms.routes.overrides.v1",
        "sms.routes.policies.v1",
        "sms.routes.health.v1",
        "sms.routes.decisions.v1",
        "sms.outbound.v1",
        "sms.outbound.status.v1",
        "sms.outbound.submit.v1",
        "sms.outbound.ledger.v1",
        "sms.outbound.receipts.unmatched.v1",
        "sms.ops.events.v1",
        "_schemas",
    }
    assert specs["sms.raw.v1"].partitions == 6 and specs["sms.raw.v1"].retention_ms == 7 * 86_400_000
    assert specs["sms.quarantine.v1"].retention_ms == 30 * 86_400_000
    assert specs["sms.webhook.retry.v1"].retention_ms == 86_400_000
    assert specs["sms.subscriptions.v1"].cleanup_policy == "compact"
    assert specs["sms.holdings.v1"].cleanup_policy == "compact"
    assert specs["sms.routes.policies.v1"].cleanup_policy == "compact"
    assert specs["_schemas"].partitions == 1
    assert all(s.key and s.doc for s in specs.values())


def test_manifest_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "topics.yaml"
    bad.write_text("topics:\n  - name: a.b\n    partitions: 1\n  - name: c.d\n    partitions: 0\n")
    with pytest.raises(ManifestError, match=r"topics\[1\]\.partitions"):
        load_manifest(bad)
    bad.write_text("topics:\n  - name: a.b\n    partitions: 1\n    retention: 7 weeks\n")
    with pytest.raises(ManifestError, match=r"topics\[0\]\.retention"):
        load_manifest(bad)


@pytest.mark.integration
def test_apply_manifest_twice_is_idempotent(kafka: KafkaUnderTest, unique: str) -> None:
    specs = _renamed(load_manifest(MANIFEST), unique)
    created = ensure_topics(kafka.bootstrap, specs)
    assert sorted(created) == sorted(s.name for s in specs)
    assert ensure_topics(kafka.bootstrap, specs) == []
    assert topic_drift(kafka.bootstrap, specs) == []

    md = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=30)
    by_name = {s.name: s for s in specs}
    raw = by_name[f"t{unique}.sms.raw.v1"]
    assert len(md.topics[raw.name].partitions) == 6
    conf = _configs(kafka.bootstrap, raw.name)
    assert conf["cleanup.policy"] == "delete" and conf["retention.ms"] == str(7 * 86_400_000)
    subs = by_name[f"t{unique}.sms.subscriptions.v1"]
    assert len(md.topics[subs.name].partitions) == 1
    assert _configs(kafka.bootstrap, subs.name)["cleanup.policy"] == "compact"


@pytest.mark.integration
def test_partitions_grow_and_drift_is_reported(kafka: KafkaUnderTest, unique: str) -> None:
    specs = _renamed([s for s in load_manifest(MANIFEST) if s.name in ("sms.inbound.v1", "_schemas")], unique)
    inbound = next(s for s in specs if s.name.endswith("inbound.v1"))
    schemas = next(s for s in specs if s.name.endswith("schemas"))
    assert sorted(ensure_topics(kafka.bootstrap, specs, partitions_override=2)) == sorted(
        s.name for s in specs
    )
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    md = admin.list_topics(timeout=30)
    assert len(md.topics[inbound.name].partitions) == 2
    assert len(md.topics[schemas.name].partitions) == 1  # single on purpose: the override leaves it alone

    # The manifest wants 6: applying it again grows the topic, creates nothing.
    assert ensure_topics(kafka.bootstrap, specs) == []
    assert len(admin.list_topics(timeout=30).topics[inbound.name].partitions) == 6

    # Someone changes retention by hand: reported, not reverted.
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        inbound.name,
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    [fut] = admin.incremental_alter_configs([resource]).values()
    fut.result(timeout=30)
    drift = topic_drift(kafka.bootstrap, specs)
    assert drift == [f"{inbound.name}: retention.ms is '3600000', manifest wants '{7 * 86_400_000}'"]
    assert ensure_topics(kafka.bootstrap, specs) == []
    assert _configs(kafka.bootstrap, inbound.name)["retention.ms"] == "3600000"
