"""The launcher every local JVM service shares (``devkit.local.jvm.LocalService``), on a small Python child
instead of a JVM: found again from its saved pid, refused twice or on a taken port, and a child that dies
while starting is reported with its log, never left behind."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from devkit.local.jvm import LocalService, LocalServiceError, pid_alive, tail


class Sleeper(LocalService):
    """A service whose process says it starts and sleeps, or says why not and exits with ``exit_code``."""

    what = "sleeper"
    stop_timeout_s = 5.0

    def __init__(self, home: Path, port: int = 0, exit_code: int | None = None) -> None:
        super().__init__(home)
        self.port = port
        self.exit_code = exit_code

    @property
    def cmdline_mark(self) -> str:
        return str(self.home)

    @property
    def log_file(self) -> Path:
        return self.home / "sleeper.log"

    def start(self) -> None:
        self._refuse_if_running()
        if self.exit_code is None:
            script = "import time; print('sleeper starting', flush=True); time.sleep(60)"
        else:
            script = f"import sys; print('sleeper: no config', flush=True); sys.exit({self.exit_code})"
        cmd = [sys.executable, "-c", script, str(self.home)]
        self._launch(cmd, log_file=self.log_file, env={}, ports=(self.port,) if self.port else ())

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while "starting" not in tail(self.log_file):
            self._raise_if_dead()
            if time.monotonic() > deadline:
                raise LocalServiceError("sleeper not ready")
            time.sleep(0.05)
        self._raise_if_dead()

    def _saved_pid(self) -> int | None:
        try:
            return int((self.home / "pid").read_text())
        except (OSError, ValueError):
            return None

    def _save_pid(self, pid: int | None) -> None:
        if pid is None:
            (self.home / "pid").unlink(missing_ok=True)
        else:
            (self.home / "pid").write_text(str(pid))

    def _logs(self) -> str:
        return tail(self.log_file)


def test_a_running_service_is_found_again_from_another_handle_and_stopped_from_it(tmp_path: Path) -> None:
    first = Sleeper(tmp_path)
    first.start()
    try:
        pid = first.pid
        assert pid is not None and pid_alive(pid)
        other = Sleeper(tmp_path)  # e.g. `stop` from a shell, another process
        assert other.pid == pid
        with pytest.raises(LocalServiceError, match=rf"sleeper already runs from {tmp_path} \(pid {pid}\)"):
            other.start()
        other.stop()
        assert not pid_alive(pid) and other.pid is None and first.pid is None
        assert not (tmp_path / "pid").exists()
    finally:
        first.stop()


def test_a_saved_pid_of_some_other_process_is_not_taken_for_the_service(tmp_path: Path) -> None:
    (tmp_path / "pid").write_text(str(os.getpid()))  # alive, but its command line is not the service's
    assert Sleeper(tmp_path).pid is None


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        service = Sleeper(tmp_path, port=port)
        with pytest.raises(LocalServiceError, match=rf"port {port} is already taken"):
            service.start()
    assert service.pid is None and not (tmp_path / "pid").exists()


def test_a_service_that_dies_while_starting_is_reported_with_its_log_and_cleaned_up(tmp_path: Path) -> None:
    with pytest.raises(LocalServiceError, match=r"sleeper exited with code 3\nsleeper: no config"):
        with Sleeper(tmp_path, exit_code=3):
            raise AssertionError("never ready")
    assert not (tmp_path / "pid").exists()


def test_the_with_block_stops_the_service_on_the_way_out(tmp_path: Path) -> None:
    with Sleeper(tmp_path) as service:
        pid = service.pid
        assert pid is not None
    assert not pid_alive(pid) and service.pid is None


def test_a_chosen_port_is_never_one_an_outgoing_connection_could_take() -> None:
    """An OS-chosen port (bind to 0) is in the ephemeral range, where any outgoing connection may take it
    before the process it was chosen for has bound it (an e2e test's API failed with EADDRINUSE in a loaded
    CI run). free_port chooses below that range, and the port can be bound."""
    import socket

    from devkit.local.jvm import LOWEST_CHOSEN_PORT, ephemeral_port_range, free_port

    low, high = ephemeral_port_range()
    assert LOWEST_CHOSEN_PORT < low <= high
    ports = {free_port() for _ in range(50)}
    assert all(LOWEST_CHOSEN_PORT <= p < low for p in ports)
    assert len(ports) > 40  # chosen at random, not one after another
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
