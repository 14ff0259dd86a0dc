"""The simulator's HTTP control endpoint (loopback only): read its state, put faults on and off per account.

    GET    /state                           every account: binds, queue, faults in force, submit/probe counts
    GET    /accounts/{account}/faults       the faults in force on one account
    POST   /accounts/{account}/faults       body: one fault, e.g. {"kind": "silent", "duration_s": 30}
    DELETE /accounts/{account}/faults       lift every fault of the account
    DELETE /accounts/{account}/faults/{kind}

Errors are JSON ``{"error": "<field path>: <why>"}`` with 400 (bad fault) or 404 (unknown account/kind).
``ControlClient`` is the same thing from the other side, for ``smsflow simulator fault``; it is synchronous
(urllib) because the CLI does one request and exits.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from devkit.simulator.faults import FaultError, FaultKind, parse_fault

if TYPE_CHECKING:
    from devkit.simulator.smsc import SimulatedSmsc


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class SimulatorControl:
    def __init__(self, smsc: SimulatedSmsc, host: str = "127.0.0.1", port: int = 0) -> None:
        self.smsc = smsc
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/state", self.state)
        app.router.add_get("/accounts/{account}/faults", self.list_faults)
        app.router.add_post("/accounts/{account}/faults", self.set_fault)
        app.router.add_delete("/accounts/{account}/faults", self.clear_faults)
        app.router.add_delete("/accounts/{account}/faults/{kind}", self.clear_faults)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the port the OS gave when asked for 0
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def state(self, request: web.Request) -> web.Response:
        stats = self.smsc.stats
        return web.json_response(
            {
                "accounts": {a: self.smsc.account_state(a) for a in sorted(self.smsc.accounts)},
                "stats": {
                    "binds": stats.binds,
                    "bind_failures": stats.bind_failures,
                    "drops": stats.drops,
                    "deliver_sm_sent": stats.sent,
                    "deliver_sm_acked": stats.acked,
                },
            }
        )

    def _account(self, request: web.Request) -> str | None:
        account = request.match_info["account"]
        return account if account in self.smsc.accounts else None

    async def list_faults(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return _error(404, f"account: no such account {request.match_info['account']!r}")
        return web.json_response({"account": account, "faults": self.smsc.account_state(account)["faults"]})

    async def set_fault(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return _error(404, f"account: no such account {request.match_info['account']!r}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "fault: body is not JSON")
        try:
            fault = self.smsc.set_fault(account, parse_fault(body))
        except FaultError as exc:
            return _error(400, str(exc))
        if fault is None:  # a one-off drop: done, nothing kept
            return web.json_response({"account": account, "dropped": True, "faults": []}, status=200)
        listed = self.smsc.account_state(account)["faults"]
        return web.json_response(
            {"account": account, "fault": fault.to_dict(self.smsc.faults.clock()), "faults": listed},
            status=201,
        )

    async def clear_faults(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return _error(404, f"account: no such account {request.match_info['account']!r}")
        kind: FaultKind | None = None
        if "kind" in request.match_info:
            try:
                kind = FaultKind(request.match_info["kind"])
            except ValueError:
                return _error(404, f"kind: unknown fault {request.match_info['kind']!r}")
        lifted = self.smsc.clear_fault(account, kind)
        return web.json_response({"account": account, "cleared": [str(f.kind) for f in lifted]})


class ControlCallError(RuntimeError):
    """A control request that failed: the HTTP status (0 when unreachable) and the server's reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlClient:
    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                out: dict[str, object] = json.loads(resp.read() or b"{}")
                return out
        except urllib.error.HTTPError as exc:
            try:
                reason = str(json.loads(exc.read()).get("error", exc.reason))
            except ValueError:
                reason = str(exc.reason)
            raise ControlCallError(exc.code, f"{method} {path}: {exc.code} {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ControlCallError(
                0, f"{method} {self.base_url}{path}: cannot reach the simulator: {exc}"
            ) from None

    def state(self) -> dict[str, object]:
        return self._call("GET", "/state")

    def faults(self, account: str) -> dict[str, object]:
        return self._call("GET", f"/accounts/{quote(account)}/faults")

    def set_fault(self, account: str, fault: dict[str, object]) -> dict[str, object]:
        return self._call("POST", f"/accounts/{quote(account)}/faults", fault)

    def clear(self, account: str, kind: str | None = None) -> dict[str, object]:
        path = f"/accounts/{quote(account)}/faults"
        if kind:
            path += f"/{quote(kind)}"
        return self._call("DELETE", path)
