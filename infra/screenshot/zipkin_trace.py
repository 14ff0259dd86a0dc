"""Screenshot of one SMS's trace in Zipkin's UI, for docs/tracing.md (headless Chromium, Debian's package).

    .venv/bin/python infra/screenshot/zipkin_trace.py                    # Zipkin + a short `smsflow run`
    .venv/bin/python infra/screenshot/zipkin_trace.py --zipkin http://127.0.0.1:9411  # one with traces

Without ``--zipkin`` it starts a Zipkin of its own and runs ``smsflow run`` for ``--duration`` seconds with
that Zipkin as the tracing endpoint (a local broker, registry, connector, worker, simulated carrier and
webhook, as ``make run`` does; ``--run`` does that against a given Zipkin too). Then it picks a delivered
multipart SMS's trace (one with an ``assemble`` span) unless ``--trace`` names one, opens it in headless
Chromium, selects the ``--select`` span through the DevTools protocol (so the details panel shows its tags,
such as the linked segment traces), and saves the page to ``--out``. It needs ``chromium``
(``apt-get install chromium``); the tests do not.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from devkit.local.zipkin import LocalZipkin  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,900",
]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def pick_trace(zipkin: str, timeout: float = 30.0) -> str:
    """A trace of a multipart SMS that reached the webhook: it has an assemble span and a webhook POST."""
    query = "serviceName=smsflow-worker&spanName=assemble&limit=50&lookback=3600000"
    deadline = time.monotonic() + timeout
    while True:
        traces = get_json(f"{zipkin}/api/v2/traces?{query}")
        complete = [
            t for t in traces if {"assemble", "webhook post", "smpp deliver_sm"} <= {s.get("name") for s in t}
        ]
        if complete:
            # the one with the most segments linked makes the richest picture
            def linked(t: list[dict[str, Any]]) -> int:
                tags = next(s for s in t if s.get("name") == "assemble").get("tags", {})
                return len(json.loads(tags.get("smsflow.linked_trace_ids", "[]")))

            return str(max(complete, key=linked)[0]["traceId"])
        if time.monotonic() > deadline:
            raise SystemExit(
                f"no complete multipart trace in {zipkin} (services: {get_json(zipkin + '/api/v2/services')})"
            )
        time.sleep(1)


def run_pipeline(zipkin: str, workdir: Path, duration: float) -> None:
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text(encoding="utf-8"))
    cfg["tracing"] = {"zipkin_url": f"{zipkin}/api/v2/spans"}
    cfg["data_dir"] = str(workdir / "data")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    cmd = [
        sys.executable, "-m", "smsflow", "run", "--config", str(config), "--no-zipkin",
        "--workdir", str(workdir / "run"), "--duration", str(duration), "--rate", "4", "--multipart", "0.5",
    ]  # fmt: skip
    print("running:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=REPO, check=True, stdin=subprocess.DEVNULL)


# Clicks the trace-timeline row whose label ends with ": <span name>" (Zipkin Lens renders "service: name").
_SELECT_JS = """
(() => {
  const want = %s;
  const rows = [...document.querySelectorAll('div, span')].filter(
    (e) => e.children.length === 0 && e.textContent.trim().toLowerCase().endsWith(': ' + want));
  if (!rows.length) return false;
  rows[0].click();
  return true;
})()
"""


def screenshot(url: str, out: Path, select: str | None) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    out.parent.mkdir(parents=True, exist_ok=True)
    # chromium's helper processes may still be writing to the profile while they exit
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        if not select:
            cmd = [
                chromium, *CHROMIUM_FLAGS, "--virtual-time-budget=10000", f"--user-data-dir={profile}",
                f"--screenshot={out.resolve()}", url,
            ]  # fmt: skip
            subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        else:
            cmd = [chromium, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", url]
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: the browser and its helpers stop together
            )
            try:
                out.write_bytes(asyncio.run(_capture_selected(proc, select)))
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
    if not out.exists() or out.stat().st_size < 10_000:
        raise SystemExit(f"{out}: no picture or a blank one")


async def _capture_selected(proc: subprocess.Popen[bytes], select: str, timeout: float = 60.0) -> bytes:
    """Through the DevTools protocol: wait for the span row, click it, let the page settle, capture."""
    import aiohttp

    assert proc.stderr is not None
    endpoint = None
    deadline = time.monotonic() + timeout
    while endpoint is None and time.monotonic() < deadline:
        line = (await asyncio.to_thread(proc.stderr.readline)).decode(errors="replace")
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        endpoint = found.group(1) if found else None
        if not line and proc.poll() is not None:
            raise SystemExit(f"chromium exited with {proc.returncode}")
    if endpoint is None:
        raise SystemExit("chromium did not open its DevTools endpoint")
    http_base = "http://" + endpoint.split("/")[2]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{http_base}/json/list") as resp:
            pages = [t for t in await resp.json() if t.get("type") == "page"]
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params: Any) -> dict[str, Any]:
                mid = next(ids)
                await ws.send_json({"id": mid, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json(timeout=30)
                    if msg.get("id") == mid:
                        if "error" in msg:
                            raise SystemExit(f"{method}: {msg['error']}")
                        return dict(msg.get("result", {}))

            # the whole 1400x900 for the page (the window size includes the headless window's frame)
            await call(
                "Emulation.setDeviceMetricsOverride",
                width=1400,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            js = _SELECT_JS % json.dumps(select.lower())
            while True:
                res = await call("Runtime.evaluate", expression=js, returnByValue=True)
                if res.get("result", {}).get("value") is True:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"no span {select!r} shown on the page")
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # the details panel re-renders
            shot = await call("Page.captureScreenshot", format="png")
            return base64.b64decode(shot["data"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zipkin", help="base URL of a Zipkin that already has smsflow traces")
    parser.add_argument("--trace", help="trace id to show (default: a delivered multipart SMS)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "zipkin-trace.png")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of traffic when running")
    parser.add_argument("--run", action="store_true", help="run the pipeline against --zipkin first")
    parser.add_argument("--select", default="assemble", help="span to show the details of ('' = the root)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="smsflow-screenshot-") as tmp:
        work = Path(tmp)
        server: LocalZipkin | None = None
        zipkin = (args.zipkin or "").rstrip("/")
        try:
            if not zipkin:
                server = LocalZipkin(work / "zipkin")
                server.start()
                server.wait_ready()
                zipkin = server.url
            if server is not None or args.run:
                run_pipeline(zipkin, work, args.duration)
            trace_id = args.trace or pick_trace(zipkin)
            url = f"{zipkin}/zipkin/traces/{trace_id}"
            screenshot(url, args.out, args.select)
            print(f"{args.out}: {url}")
        finally:
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
