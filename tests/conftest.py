"""Session services for integration tests, started through the same classes users run.

- ``kafka``: a real broker (LocalKafka on free loopback ports, data in a temp folder), or the cluster named by
  KAFKA_BOOTSTRAP_SERVERS, in which case nothing is started.
- ``registry_url``: the embedded schema registry on a background thread, or SCHEMA_REGISTRY_URL.
- ``zipkin``: a Zipkin server, started only if a test asks for it (ZIPKIN_URL to use another).

Everything started is stopped at the end of the session, also when tests fail; a broker started here also
dies with the test process if that is killed (see devkit.local.jvm.spawn).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devkit.local.kafka import LocalKafka
from devkit.local.zipkin import LocalZipkin


@dataclass
class KafkaUnderTest:
    """The cluster the tests talk to; ``local`` is None when it is an external one (not ours to restart)."""

    bootstrap: str
    local: LocalKafka | None


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaUnderTest]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield KafkaUnderTest(external, None)
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), quick_jit=True)
    try:
        broker.fetch()
        broker.format()
        broker.start()
        broker.wait_ready(timeout=90)
        yield KafkaUnderTest(broker.bootstrap, broker)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def registry_url(kafka: KafkaUnderTest) -> Iterator[str]:
    external = os.environ.get("SCHEMA_REGISTRY_URL")
    if external:
        yield external
        return
    from devkit.registry import RegistryThread

    registry = RegistryThread(kafka.bootstrap)
    try:
        yield registry.start()
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def zipkin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a Zipkin server (``http://127.0.0.1:PORT``)."""
    external = os.environ.get("ZIPKIN_URL")
    if external:
        yield external.rstrip("/")
        return
    server = LocalZipkin(tmp_path_factory.mktemp("zipkin"))
    try:
        server.fetch()
        server.start()
        server.wait_ready(timeout=120)
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A short random suffix, so topics, groups and subjects never collide between tests or runs."""
    return uuid.uuid4().hex[:10]
