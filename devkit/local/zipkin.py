"""A Zipkin server (the tracing UI) from its Maven Central exec jar: in-memory storage, loopback only.

    zipkin = LocalZipkin(Path(".work/zipkin"))
    zipkin.fetch(); zipkin.start(); zipkin.wait_ready()
    ... zipkin.url ...   # http://127.0.0.1:PORT — UI at /zipkin/, spans in at /api/v2/spans
    zipkin.stop()

The server gets a clean environment: Zipkin switches collectors and storage on from environment variables,
and one we use ourselves (KAFKA_BOOTSTRAP_SERVERS) would make it start a Kafka span collector.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from devkit.local.jvm import (
    INFRA_DIR,
    LocalServiceError,
    cache_root,
    free_port,
    java_executable,
    maven_fetch,
    pid_alive,
    pid_cmdline,
    port_open,
    spawn,
    tail,
    terminate,
)

ZIPKIN_VERSION = "3.6.1"
_PID_FILE = "zipkin.pid"
# Variables passed through to the JVM; everything else (KAFKA_*, STORAGE_*, ES_*, …) is left out on purpose.
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME", "TZ")


def zipkin_jars_dir() -> Path:
    return cache_root() / "jars" / f"zipkin-{ZIPKIN_VERSION}"


class LocalZipkin:
    """One Zipkin server; ``home`` holds its log and pid file (storage is in memory)."""

    def __init__(
        self, home: Path, port: int | None = None, *, heap: str = "256m", die_with_parent: bool = True
    ) -> None:
        self.home = Path(home).resolve()
        self.port = port or free_port()
        self.heap = heap
        self.die_with_parent = die_with_parent
        self.jars_dir = zipkin_jars_dir()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "zipkin.log"

    @property
    def jar(self) -> Path:
        return self.jars_dir / f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"

    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int((self.home / _PID_FILE).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) and "zipkin-server" in pid_cmdline(pid) else None

    def fetch(self) -> Path:
        """Download the exec jar once (Maven, into the cache)."""
        maven_fetch(
            INFRA_DIR / "zipkin" / "pom.xml",
            self.jars_dir,
            what=f"Zipkin {ZIPKIN_VERSION}",
            extra_args=["-DexcludeTransitive=true"],
        )
        return self.jar

    def start(self) -> None:
        if self.pid is not None:
            raise LocalServiceError(f"zipkin already runs from {self.home} (pid {self.pid})")
        self.fetch()
        if port_open("127.0.0.1", self.port):
            raise LocalServiceError(f"port {self.port} is already taken")
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
        env.update({"STORAGE_TYPE": "mem", "QUERY_PORT": str(self.port), "SELF_TRACING_ENABLED": "false"})
        cmd = [
            java_executable(),
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",  # small heap, two shared cores: fewer GC threads
            "-XX:+ExitOnOutOfMemoryError",
            "-jar",
            str(self.jar),
            # Armeria's listener, bound to loopback only (QUERY_PORT alone would listen on every address).
            f"--armeria.ports[0].port={self.port}",
            "--armeria.ports[0].ip=127.0.0.1",
            "--armeria.ports[0].protocols[0]=http",
            "--logging.level.root=WARN",
            "--logging.level.zipkin2=INFO",
        ]
        self.home.mkdir(parents=True, exist_ok=True)
        self._proc = spawn(cmd, log_file=self.log_file, env=env, die_with_parent=self.die_with_parent)
        (self.home / _PID_FILE).write_text(f"{self._proc.pid}\n")

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until GET /health answers UP."""
        deadline = time.monotonic() + timeout
        last: object = "no answer"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise LocalServiceError(f"zipkin exited with {self._proc.returncode}\n{tail(self.log_file)}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200 and b'"UP"' in resp.read():
                        return
                    last = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.3)
        raise LocalServiceError(
            f"zipkin not ready on {self.url} in {timeout:.0f}s ({last})\n{tail(self.log_file)}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        pid = self.pid
        if pid is not None:
            terminate(pid, proc=self._proc, timeout=timeout)
        self._proc = None
        (self.home / _PID_FILE).unlink(missing_ok=True)

    def __enter__(self) -> LocalZipkin:
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


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.local.zipkin", description="Run a local Zipkin.")
    parser.add_argument("command", choices=["fetch", "start", "stop"])
    parser.add_argument("--home", type=Path, default=cache_root() / "zipkin")
    parser.add_argument("--port", type=int, default=9411)
    args = parser.parse_args(argv)
    zipkin = LocalZipkin(args.home, args.port, die_with_parent=False)
    if args.command == "fetch":
        print(zipkin.fetch())
    elif args.command == "start":
        zipkin.start()
        zipkin.wait_ready()
        print(f"Zipkin {ZIPKIN_VERSION} ready: {zipkin.url}/zipkin/ (pid {zipkin.pid})")
    else:
        was = zipkin.pid
        zipkin.stop()
        print(f"stopped pid {was}" if was else "not running")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
