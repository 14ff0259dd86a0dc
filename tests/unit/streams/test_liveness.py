"""Issue 9: a worker that cannot process says so (/health, smsflow_ready) and exits non-zero, never a
half-dead process that holds its partitions while processing nothing."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest

from smsflow import metrics
from smsflow.config import parse_config
from streams.liveness import EXIT_CANNOT_PROCESS, Liveness


def _app(crashed_agent: bool = False, recovering: bool = False) -> Any:
    completed = SimpleNamespace(is_set=lambda: not recovering)
    actor = SimpleNamespace(crashed=crashed_agent, crash_reason=RuntimeError("boom"))
    agent = SimpleNamespace(name="ingest", _actors={actor} if False else [actor])
    return SimpleNamespace(
        crashed=False,
        agents={"ingest": agent},
        tables=SimpleNamespace(_recovery=SimpleNamespace(completed=completed)),
        rebalancing=False,
    )


def test_readiness_says_why_the_worker_cannot_process() -> None:
    assert Liveness(_app()).ready() == (True, "processing")
    assert Liveness(_app(recovering=True)).ready() == (False, "recovering table state from changelogs")
    ready, reason = Liveness(_app(crashed_agent=True)).ready()
    assert not ready and "agent ingest crashed" in reason and "boom" in reason


def test_a_fatal_problem_ends_the_process_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_exit(code: int) -> None:
        raise SystemExit(code)

    live = Liveness(_app(), grace_s=60)
    monkeypatch.setattr("streams.liveness.os._exit", fake_exit)
    live.fail("sms.raw.v1:0:7: KafkaTimeoutError (after 5 attempts)")
    with pytest.raises(SystemExit) as exc:
        live._watch(0.01)  # a fatal problem does not wait for the grace period
    assert exc.value.code == EXIT_CANNOT_PROCESS
    assert "KafkaTimeoutError" in capsys.readouterr().err


def test_a_worker_that_never_finishes_recovering_exits_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_exit(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr("streams.liveness.os._exit", fake_exit)
    live = Liveness(_app(recovering=True), max_not_ready_s=0.05)
    with pytest.raises(SystemExit) as exc:
        live._watch(0.01)
    assert exc.value.code == EXIT_CANNOT_PROCESS
    assert "not ready for" in capsys.readouterr().err


def test_not_ready_time_counts_only_while_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovered after 0.5 s of a 1 s allowance: the count ends, and 3.5 s of readiness later no exit."""
    app = _app(recovering=True)
    clock = {"now": 0.0}
    monkeypatch.setattr("streams.liveness.time.monotonic", lambda: clock["now"])
    live = Liveness(app, max_not_ready_s=1.0)
    exits: list[int] = []
    monkeypatch.setattr("streams.liveness.os._exit", exits.append)

    def sleep(_: float) -> None:
        clock["now"] += 0.1
        live.last_beat = clock["now"]
        if clock["now"] >= 0.5:
            app.tables._recovery.completed = SimpleNamespace(is_set=lambda: True)
        if clock["now"] >= 4.0:
            raise StopIteration  # end the watch loop

    monkeypatch.setattr("streams.liveness.time.sleep", sleep)
    with pytest.raises(StopIteration):
        live._watch(0.1)
    assert exits == [] and live._not_ready_since is None


def test_health_endpoint_answers_503_with_the_reason_then_200() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = {"ready": False}
    metrics.set_health(lambda: (state["ready"], "ok" if state["ready"] else "recovering table state"))
    metrics.serve(port)
    url = f"http://127.0.0.1:{port}/health"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=5)
    assert err.value.code == 503 and b"recovering table state" in err.value.read()
    state["ready"] = True
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert b"smsflow_ready 1.0" in resp.read()


def test_worker_exits_non_zero_when_its_topics_never_become_ready(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from smsflow import roles, topics

    def no_cluster(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("sms.raw.v1: no leader for partition 3")

    monkeypatch.setattr(topics, "partition_count", no_cluster)
    monkeypatch.setattr(roles.time, "sleep", lambda s: None)
    cfg = parse_config({"worker": {"start_attempts": 2}})
    with pytest.raises(SystemExit) as exc:
        roles._build_app_with_topics(cfg, {"ingest"}, "127.0.0.1:1", "http://127.0.0.1:1")
    assert exc.value.code == EXIT_CANNOT_PROCESS
    assert "topics not ready after 2 attempts: sms.raw.v1: no leader" in capsys.readouterr().err


def test_heartbeat_must_fit_the_session_timeout() -> None:
    from smsflow.config import ConfigError

    with pytest.raises(ConfigError, match=r"worker\.heartbeat_interval_s: must be at most a third"):
        parse_config({"worker": {"session_timeout_s": 6, "heartbeat_interval_s": 3}})


def test_a_worker_whose_inbound_reader_has_not_joined_is_not_ready_and_then_exits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from streams.inbound_reader import InboundReader

    async def flush() -> None:
        return None

    reader = InboundReader("127.0.0.1:1", "app", print, asyncio.Semaphore(1), print, flush)
    live = Liveness(_app(), max_not_ready_s=0.05)
    live.require(reader.not_ready)
    assert live.ready() == (False, "the inbound reader has not joined group app-deliver yet")
    reader.ready = True  # its first assignment (possibly empty: a worker beyond the partition count)
    assert live.ready() == (True, "processing")
    reader.failed = RuntimeError("poll thread died")
    ready, why = live.ready()
    assert not ready and "poll thread died" in why

    def fake_exit(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr("streams.liveness.os._exit", fake_exit)
    reader.failed, reader.ready = None, False  # one that never joins holds nothing: it exits
    with pytest.raises(SystemExit):
        live._watch(0.01)
    assert "has not joined group app-deliver" in capsys.readouterr().err
