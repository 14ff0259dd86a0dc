"""A real Apache Kafka broker (KRaft, broker and controller in one JVM) run from Maven Central jars.

    kafka = LocalKafka(Path(".work/kafka"))
    kafka.fetch(); kafka.format(); kafka.start(); kafka.wait_ready()
    ... kafka.bootstrap ...          # "127.0.0.1:PORT"
    kafka.stop()

or ``with LocalKafka(path) as kafka: ...``. ``python -m devkit.local.kafka {fetch,start,stop,status}`` does
the same from a shell. The broker listens on loopback only. Ports are free ones unless given; they are kept in
``<home>/local-kafka.json`` so a later start on the same home (another process, ``stop`` from a shell)
finds the same broker again.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import string
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from devkit.local.jvm import (
    INFRA_DIR,
    LocalService,
    LocalServiceError,
    cache_root,
    free_port,
    java_executable,
    maven_fetch,
    port_open,
    tail,
)

KAFKA_VERSION = "4.1.1"
KAFKA_INFRA = INFRA_DIR / "kafka"
_STATE_FILE = "local-kafka.json"


def kafka_jars_dir() -> Path:
    """``<cache>/jars/kafka-4.1.1`` (see devkit.local.jvm.cache_root)."""
    return cache_root() / "jars" / f"kafka-{KAFKA_VERSION}"


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what `kafka-storage random-uuid`
    prints). Like Kafka's Uuid.randomUuid, never one starting with '-': the storage tool would read it as an
    option (1 run in 64 would fail to format)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


@dataclass
class _State:
    port: int
    controller_port: int
    cluster_id: str
    pid: int | None = None


class LocalKafka(LocalService):
    """One single-node Kafka broker with its data and logs under ``home``."""

    what = "broker"

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        heap: str = "512m",
        jars_dir: Path | None = None,
        die_with_parent: bool = True,
        quick_jit: bool = False,
        request_log: bool = False,
    ) -> None:
        """``quick_jit``: compile with the JVM's C1 compiler only (``-XX:TieredStopAtLevel=1``). For brokers
        that live for one test: a fresh JVM's C2 compiler otherwise spends ~0.4 of a core for the first
        minute or two compiling the broker's hot paths, on a 2-core machine the CPU the pipeline under test
        needed (it was 41% of a core over a 20 s window of the hostile-input test; p50 latency of normal
        traffic 45-70 ms against 25-35 ms with C1 only). A long-lived broker (the demo, benchmarks, a real
        cluster) wants the default: C2 code is faster once compiled.

        ``request_log``: the broker logs every request it completes (client, API, topics, sizes) to
        ``<logs>/request.log`` (``request_log_path``), for counting them (bench/e2e.py ``--request-log``);
        the logging costs the broker CPU of its own, so a run with it is not one for CPU figures."""
        super().__init__(home, die_with_parent=die_with_parent)
        self.request_log = request_log
        self.jars_dir = jars_dir or kafka_jars_dir()
        self.heap = heap
        self.quick_jit = quick_jit
        saved = self._load_state()
        self.port = port or (saved.port if saved else free_port())
        self.controller_port = controller_port or (saved.controller_port if saved else free_port())
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.cluster_id = saved.cluster_id if saved else random_cluster_id()

    # -- paths -------------------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def console_log(self) -> Path:
        """The JVM's stdout and stderr (warnings and crashes); the full broker log is logs/server.log."""
        return self.logs_dir / "kafka.out"

    @property
    def cmdline_mark(self) -> str:
        return str(self.properties_file)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def fetch(self) -> Path:
        """Download the broker's jars once (Maven, into the cache); return the jar folder."""
        return maven_fetch(KAFKA_INFRA / "pom.xml", self.jars_dir, what=f"Kafka {KAFKA_VERSION}")

    def format(self) -> None:
        """Write server.properties and format the storage with this broker's cluster id.

        Idempotent: an already formatted data folder is left as it is (its cluster id wins).
        """
        self._write_properties()
        meta = self.data_dir / "meta.properties"
        if meta.is_file():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    self.cluster_id = line.split("=", 1)[1].strip()
            self._save_state(pid=None)
            return
        cmd = [
            java_executable(),
            "-Xmx256m",
            *self._log_opts(),
            "-cp",
            f"{self.jars_dir}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(self.properties_file),
            "--ignore-formatted",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LocalServiceError(
                f"kafka storage format failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        self._save_state(pid=None)

    def start(self) -> None:
        """Start the broker JVM (returns at once; call wait_ready). Fetches and formats first if needed."""
        self._refuse_if_running()
        self.fetch()
        if not (self.data_dir / "meta.properties").is_file():
            self.format()
        else:
            self._write_properties()
        cmd = [
            java_executable(),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *(["-XX:TieredStopAtLevel=1"] if self.quick_jit else []),
            *self._log_opts(),
            "-cp",
            f"{self.jars_dir}/*",
            "kafka.Kafka",
            str(self.properties_file),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_OPTS", "KAFKA_HEAP_OPTS")}
        self._launch(cmd, log_file=self.console_log, env=env, ports=(self.port, self.controller_port))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the broker answers a metadata request and lists itself; raise if it died or hung."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            self._raise_if_dead()
            if time.monotonic() > deadline:
                raise LocalServiceError(
                    f"broker did not listen on {self.bootstrap} in {timeout:.0f}s\n{self._logs()}"
                )
            time.sleep(0.2)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.connection.setup.timeout.ms": 2000})
        while True:
            self._raise_if_dead()
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception as exc:
                last = exc
            else:
                last = RuntimeError("no broker registered yet")
            if time.monotonic() > deadline:
                raise LocalServiceError(
                    f"broker at {self.bootstrap} not ready in {timeout:.0f}s: {last}\n{self._logs()}"
                )
            time.sleep(0.2)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (cleanly) and start again on the same data, ports and cluster id; waits until ready."""
        self.stop()
        self.start()
        self.wait_ready(timeout)

    # -- internals ---------------------------------------------------------------------------------------
    def _saved_pid(self) -> int | None:
        saved = self._load_state()
        return saved.pid if saved else None

    def _save_pid(self, pid: int | None) -> None:
        if pid is not None or (self.home / _STATE_FILE).is_file():
            self._save_state(pid=pid)

    def _logs(self) -> str:
        return (
            f"--- {self.console_log} ---\n{tail(self.console_log)}\n"
            f"--- {self.logs_dir / 'server.log'} ---\n{tail(self.logs_dir / 'server.log', 30)}"
        )

    @property
    def request_log_path(self) -> Path:
        return self.logs_dir / "request.log"

    def _log_opts(self) -> list[str]:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        config = KAFKA_INFRA / "log4j2.yaml"
        if self.request_log:
            config = self.home / "log4j2-requests.yaml"
            config.write_text(_with_request_log((KAFKA_INFRA / "log4j2.yaml").read_text()))
        return [
            f"-Dlog4j2.configurationFile={config}",
            f"-Dkafka.logs.dir={self.logs_dir}",
        ]

    def _write_properties(self) -> None:
        template = string.Template((KAFKA_INFRA / "server.properties.tmpl").read_text())
        text = template.substitute(
            port=self.port, controller_port=self.controller_port, data_dir=self.data_dir
        )
        self.home.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(text)

    def _load_state(self) -> _State | None:
        try:
            return _State(**json.loads((self.home / _STATE_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save_state(self, *, pid: int | None) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        state = _State(self.port, self.controller_port, self.cluster_id, pid)
        (self.home / _STATE_FILE).write_text(json.dumps(asdict(state)) + "\n")


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.local.kafka", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument(
        "--home", type=Path, default=cache_root() / "kafka", help="data and logs (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=None, help="client port (default: free, then remembered)")
    parser.add_argument("--controller-port", type=int, default=None)
    args = parser.parse_args(argv)
    kafka = LocalKafka(args.home, args.port, args.controller_port, die_with_parent=False)
    if args.command == "fetch":
        kafka.fetch()
    elif args.command == "start":
        if kafka.is_running():
            print(f"already running: pid {kafka.pid}, bootstrap {kafka.bootstrap}")
            return 0
        kafka.fetch()
        kafka.format()
        kafka.start()
        kafka.wait_ready()
        print(
            f"Kafka {KAFKA_VERSION} ready: bootstrap {kafka.bootstrap} (pid {kafka.pid}, data {kafka.home})"
        )
    elif args.command == "stop":
        was = kafka.pid
        kafka.stop()
        print(f"stopped pid {was}" if was else "not running")
    else:
        print(
            f"running: pid {kafka.pid}, bootstrap {kafka.bootstrap}" if kafka.is_running() else "not running"
        )
        return 0 if kafka.is_running() else 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())


_MUTED_REQUEST_LOGGER = """      - name: kafka.request.logger
        level: WARN
        additivity: false
        AppenderRef:
          ref: ServerAppender
"""
_REQUEST_LOGGER = """      - name: kafka.request.logger
        level: DEBUG
        additivity: false
        AppenderRef:
          ref: RequestAppender
"""
_REQUEST_APPENDER = """    File:
      name: RequestAppender
      fileName: "${logs.dir}/request.log"
      PatternLayout:
        pattern: "%m%n"
  Loggers:
"""


def _with_request_log(config: str) -> str:
    """infra/kafka/log4j2.yaml with the per-request logger on, to its own file: one line per completed request
    ("Completed request:{...json...}")."""
    if _MUTED_REQUEST_LOGGER not in config or "  Loggers:\n" not in config:
        raise LocalServiceError("infra/kafka/log4j2.yaml changed: cannot switch its request logger on")
    config = config.replace(_MUTED_REQUEST_LOGGER, _REQUEST_LOGGER, 1)
    return config.replace("  Loggers:\n", _REQUEST_APPENDER, 1)
