"""What every locally run JVM service shares: jars fetched from Maven Central into a cache, free ports,
and ``LocalService``, the launcher of a child process that is found again by its saved pid and stopped
politely, then firmly.

The cache lives in ``<repo>/.work`` (git-ignored) unless ``SMSFLOW_CACHE`` names another folder; jars go to
``<cache>/jars/<name>-<version>/``. A fetch is idempotent: a folder is complete once it holds a marker
with the hash of the pom that produced it, and it is filled in a temporary folder and renamed into place,
so an interrupted fetch never leaves a half-filled cache behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
_MARKER = ".fetched"


class LocalServiceError(RuntimeError):
    """A local service could not be fetched, started or reached; the message says which and why."""


def cache_root() -> Path:
    """Where fetched jars and default data folders live: ``$SMSFLOW_CACHE`` or ``<repo>/.work``."""
    env = os.environ.get("SMSFLOW_CACHE")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".work"


_PORT_CHOICE = random.Random()  # seeded from the OS per process: two test processes rarely pick alike
LOWEST_CHOSEN_PORT = 10000


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the OS hands out as the local end of outgoing connections (Linux's default if unreadable)."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now, for a process started next to listen on.

    Not one the OS would pick (``bind(0)``): those come from the ephemeral range, and until the process it
    is meant for has bound it — seconds, for a Python process starting on a busy machine — any outgoing
    connection on the machine (every Kafka client of a test makes several) may take it as its local port.
    An e2e test's API then failed to start with EADDRINUSE in a loaded CI run. Below the ephemeral range
    only another chooser like this one can collide with it."""
    low, _high = ephemeral_port_range()
    if low - LOWEST_CHOSEN_PORT >= 1000:
        for _ in range(100):
            port = _PORT_CHOICE.randrange(LOWEST_CHOSEN_PORT, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def maven_fetch(
    pom: Path, target: Path, *, what: str, extra_args: Sequence[str] = (), console: Console | None = None
) -> Path:
    """Copy the dependencies declared in ``pom`` into ``target`` with Maven, once.

    Shows a spinner while Maven works (it prints nothing with ``-q``); raises LocalServiceError with
    Maven's output when it fails.
    """
    digest = hashlib.sha256(pom.read_bytes() + " ".join(extra_args).encode()).hexdigest()
    marker = target / _MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalServiceError(
            f"fetching {what}: Maven (mvn) is not on PATH; install maven (apt-get install maven)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        *extra_args,
    ]
    console = console or Console(stderr=True)
    started = time.monotonic()
    with console.status(f"Fetching {what} from Maven Central (first run only)…"):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise LocalServiceError(
            f"fetching {what}: mvn exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    (staging / _MARKER).write_text(digest + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    jars = len(list(target.glob("*.jar")))
    console.print(f"[green]✓[/] {what}: {jars} jars in {target} ({time.monotonic() - started:.0f}s)")
    return target


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the thread that started it dies, so a
    test run killed with SIGKILL leaves no broker behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn(
    cmd: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with stdout and stderr appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate(
    pid: int, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0, force: bool = False
) -> None:
    """SIGTERM (or SIGKILL when ``force``), wait up to ``timeout``, then SIGKILL. Reaps ``proc`` if given."""
    sig = signal.SIGKILL if force else signal.SIGTERM
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else ``java`` from PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise LocalServiceError(
            "java is not on PATH; Java 17+ is needed (apt-get install openjdk-17-jre-headless)"
        )
    return java


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


class LocalService(ABC):
    """One service run as a child process with its files under ``home``: started, found again from another
    process by the pid it saved (and the mark in that process's command line, so a recycled pid is not
    taken for it), waited for, stopped.

    A service says what it is (``what``), how it starts (``start``, ending in ``_launch``), when it is ready
    (``wait_ready``), where its pid is kept (``_saved_pid``/``_save_pid``) and what its logs say (``_logs``).
    """

    what = "service"
    stop_timeout_s = 30.0

    def __init__(self, home: Path, *, die_with_parent: bool = True) -> None:
        self.home = Path(home).resolve()
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what each service says ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def cmdline_mark(self) -> str:
        """A string in the command line of this service's process, and of no other."""

    @abstractmethod
    def _saved_pid(self) -> int | None: ...

    @abstractmethod
    def _save_pid(self, pid: int | None) -> None:
        """Keep ``pid`` where another process finds it (None: the service is stopped)."""

    @abstractmethod
    def _logs(self) -> str:
        """The end of the service's logs, for an error message."""

    @abstractmethod
    def start(self) -> None:
        """Start the service (returns at once, ends in ``_launch``); refuse if it runs already."""

    @abstractmethod
    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the service answers; raise LocalServiceError if it died (_raise_if_dead) or hung."""

    # -- the launcher --------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        saved = self._saved_pid()
        if saved and pid_alive(saved) and self.cmdline_mark in pid_cmdline(saved):
            return saved
        return None

    def is_running(self) -> bool:
        return self.pid is not None

    def _refuse_if_running(self) -> None:
        if self.is_running():
            raise LocalServiceError(f"{self.what} already runs from {self.home} (pid {self.pid})")

    def _launch(
        self, cmd: Sequence[str], *, log_file: Path, env: Mapping[str, str], ports: Sequence[int]
    ) -> None:
        """Start ``cmd`` (returns at once) once no other process holds one of ``ports``."""
        for port in ports:
            if port_open("127.0.0.1", port):
                raise LocalServiceError(
                    f"port {port} is already taken; pick other ports or stop what uses it"
                )
        self.home.mkdir(parents=True, exist_ok=True)
        self._proc = spawn(cmd, log_file=log_file, env=env, die_with_parent=self.die_with_parent)
        self._save_pid(self._proc.pid)

    def _raise_if_dead(self) -> None:
        """While waiting for readiness: a service that exited will never be ready; say why."""
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            self._proc = None
            raise LocalServiceError(f"{self.what} exited with code {code}\n{self._logs()}")

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after ``timeout``. No-op when not running."""
        self._end(force=False, timeout=self.stop_timeout_s if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed or closed cleanly."""
        self._end(force=True, timeout=10.0)

    def _end(self, *, force: bool, timeout: float) -> None:
        pid = self.pid
        if pid is not None:
            terminate(pid, proc=self._proc, timeout=timeout, force=force)
        self._proc = None
        self._save_pid(None)

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
