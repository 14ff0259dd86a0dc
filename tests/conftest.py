"""Session services for integration tests, started through the same classes users run.

- ``kafka``: a real broker (LocalKafka on free loopback ports, data in a temp folder), or the cluster named by
  KAFKA_BOOTSTRAP_SERVERS, in which case nothing is started.
- ``registry_url``: the embedded schema registry on a background thread, or SCHEMA_REGISTRY_URL.
- ``zipkin``: a Zipkin server, started only if a test asks for it (ZIPKIN_URL to use another).

Everything started is stopped at the end of the session, also when tests fail; a broker started here also
dies with the test process if that is killed (see devkit.local.jvm.spawn).
"""

from __future__ import annotations

import gc
import os
import time
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


# --- the test process's own pauses ------------------------------------------------------------------------
# e2e tests run the carrier simulator, the customers' webhook and callback endpoints in this process: a long
# garbage collection here looks, from the worker, like a slow endpoint (a callback POST timing out). The
# longest pauses are reported at the end of the run, so a timing failure can be told from a product one
# (wall time: on a loaded machine it includes time the process waited for a CPU).

_gc_started: list[float] = []
_gc_ours = [False]  # an explicit collection of the fixture below: not a pause in the middle of a test
_gc_pauses: list[tuple[float, int, str]] = []  # (seconds, generation, test)


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[:] = [time.perf_counter()]
    elif _gc_started:
        took = time.perf_counter() - _gc_started.pop()
        if took > 0.05 and not _gc_ours[0]:
            _gc_pauses.append((took, info.get("generation", -1), os.environ.get("PYTEST_CURRENT_TEST", "")))


gc.callbacks.append(_gc_timer)


@pytest.fixture(autouse=True)
def _short_gc_pauses(request: pytest.FixtureRequest) -> None:
    """Before each test that plays a peer of the pipeline (all but tests/unit): collect what earlier tests
    left, then freeze the survivors (imports, session fixtures, the reports pytest keeps), so this test's
    collections walk only its own objects, whatever ran before it (e2e tests come first in a full run, but
    not in every selection). After the unit tests a full collection took ~0.35 s on a quiet machine and up
    to 1.2 s of wall time on a loaded one; some e2e tests give webhooks 2 s."""
    if "unit" not in request.node.path.parts:
        _gc_ours[0] = True
        try:
            gc.collect()
        finally:
            _gc_ours[0] = False
        gc.freeze()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    worst = sorted(_gc_pauses, reverse=True)[:3]
    if worst:
        shown = "; ".join(f"{s * 1000:.0f} ms (gen {g}) in {t.split(' ')[0]}" for s, g, t in worst)
        terminalreporter.write_line(
            f"test process: {len(_gc_pauses)} GC pauses over 50 ms, longest: {shown}; "
            f"{len(gc.get_objects())} objects tracked, {gc.get_freeze_count()} frozen"
        )
