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
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devkit.local.jvm import (
    INFRA_DIR,
    LocalService,
    LocalServiceError,
    cache_root,
    free_port,
    java_executable,
    maven_fetch,
    tail,
)

ZIPKIN_VERSION = "3.6.1"
_PID_FILE = "zipkin.pid"
# Variables passed through to the JVM; everything else (KAFKA_*, STORAGE_*, ES_*, …) is left out on purpose.
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME", "TZ")


def zipkin_jars_dir() -> Path:
    return cache_root() / "jars" / f"zipkin-{ZIPKIN_VERSION}"


class LocalZipkin(LocalService):
    """One Zipkin server; ``home`` holds its log and pid file (storage is in memory)."""

    what = "zipkin"
    stop_timeout_s = 20.0

    def __init__(
        self, home: Path, port: int | None = None, *, heap: str = "256m", die_with_parent: bool = True
    ) -> None:
        super().__init__(home, die_with_parent=die_with_parent)
        self.port = port or free_port()
        self.heap = heap
        self.jars_dir = zipkin_jars_dir()

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
    def cmdline_mark(self) -> str:
        return "zipkin-server"

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
        self._refuse_if_running()
        self.fetch()
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
        self._launch(cmd, log_file=self.log_file, env=env, ports=(self.port,))

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until GET /health answers UP."""
        deadline = time.monotonic() + timeout
        last: object = "no answer"
        while time.monotonic() < deadline:
            self._raise_if_dead()
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

    def _saved_pid(self) -> int | None:
        try:
            return int((self.home / _PID_FILE).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _save_pid(self, pid: int | None) -> None:
        if pid is None:
            (self.home / _PID_FILE).unlink(missing_ok=True)
        else:
            (self.home / _PID_FILE).write_text(f"{pid}\n")

    def _logs(self) -> str:
        return tail(self.log_file)


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
