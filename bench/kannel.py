"""Kannel (Debian's ``kannel`` package: bearerbox + smsbox) as a peer for the benchmark and the cross-check.

``KannelGateway`` writes a kannel.conf into its own folder, binds bearerbox to an SMPP SMSC (our simulator)
as a transceiver, and runs one smsbox whose catch-all sms-service POSTs every MO message to a URL (the
receiver's unsigned path). Ports are free loopback ports; everything is stopped on ``stop()``.

``decode_kannel_request`` turns what smsbox sent back into text, reading the charset the way a Kannel user
has to: ``X-Kannel-Coding`` (0 = 7-bit, already recoded by Kannel to the charset of ``Content-Type``,
1 = 8-bit binary, 2 = UCS-2) and the charset parameter of ``Content-Type``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"


def kannel_installed() -> bool:
    return Path(BEARERBOX).is_file() and Path(SMSBOX).is_file()


def kannel_version() -> str:
    """The Debian package version (bearerbox prints its version only into its log)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "kannel"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class KannelOptions:
    smsc_host: str
    smsc_port: int
    username: str
    password: str
    url: str  # where smsbox POSTs each MO message
    system_type: str = ""
    log_level: int = 2  # 0 debug .. 4 panic; debug logging costs Kannel a lot of CPU
    combine_concatenated: bool = True
    concat_timeout_s: int = 1800  # Kannel's default
    store: bool = True  # spool every message to disk before acking, as we do to Kafka
    max_pending_submits: int = 10
    extra_core: dict[str, str] = field(default_factory=dict)
    # the outbound bench: smsbox's sendsms HTTP interface (cgi-bin/sendsms) for this user and password
    sendsms_user: tuple[str, str] | None = None
    # the number bases of the SMSC's message ids (bit 1: submit_sm_resp hex, bit 2: receipt hex); 0x03 = both
    msg_id_type: str = "0x01"


def render_config(
    opts: KannelOptions, home: Path, admin_port: int, smsbox_port: int, sendsms_port: int
) -> str:
    """kannel.conf: core, one SMPP smsc (transceiver), one smsbox, one catch-all POST sms-service."""
    q = '"'
    # smsbox replaces %p %P %c %C %u %t %i ... in post-url; the body is the text, with X-Kannel-* headers
    url = opts.url + ("&" if "?" in opts.url else "?") + "from=%p&to=%P&coding=%c&charset=%C&udh=%u&smsc=%i"
    core = {
        "admin-port": str(admin_port),
        "admin-password": q + "bench" + q,
        "status-password": q + "bench" + q,
        "admin-interface": q + "127.0.0.1" + q,
        "smsbox-port": str(smsbox_port),
        "smsbox-interface": q + "127.0.0.1" + q,
        "box-allow-ip": q + "127.0.0.1" + q,
        "box-deny-ip": q + "*.*.*.*" + q,
        "admin-allow-ip": q + "127.0.0.1" + q,
        "log-file": q + str(home / "bearerbox.log") + q,
        "log-level": str(opts.log_level),
        "access-log": q + str(home / "access.log") + q,
        "sms-combine-concatenated-mo": "true" if opts.combine_concatenated else "false",
        "sms-combine-concatenated-mo-timeout": str(opts.concat_timeout_s),
        "dlr-storage": "internal",
    }
    if opts.store:
        core["store-type"] = "spool"
        core["store-location"] = q + str(home / "spool") + q
    core.update(opts.extra_core)
    smsc = {
        "smsc": "smpp",
        "smsc-id": "sim",
        "host": opts.smsc_host,
        "port": str(opts.smsc_port),
        "transceiver-mode": "true",
        "smsc-username": q + opts.username + q,
        "smsc-password": q + opts.password + q,
        "system-type": q + opts.system_type + q,
        "interface-version": "34",
        "msg-id-type": opts.msg_id_type,
        "enquire-link-interval": "30",
        "reconnect-delay": "1",
        "max-pending-submits": str(opts.max_pending_submits),
        "log-file": q + str(home / "smsc.log") + q,
        "log-level": str(opts.log_level),
    }
    smsbox = {
        "bearerbox-host": q + "127.0.0.1" + q,
        "bearerbox-port": str(smsbox_port),
        "sendsms-port": str(sendsms_port),
        "sendsms-interface": q + "127.0.0.1" + q,
        "log-file": q + str(home / "smsbox.log") + q,
        "log-level": str(opts.log_level),
        "access-log": q + str(home / "smsbox-access.log") + q,
        "mo-recode": "false",
        "http-request-retry": "0",
    }
    service = {
        "name": q + "webhook" + q,
        "keyword": "default",
        "catch-all": "true",
        "max-messages": "0",
        "omit-empty": "true",
        "post-url": q + url + q,
    }
    groups = [("core", core), ("smsc", smsc), ("smsbox", smsbox), ("sms-service", service)]
    if opts.sendsms_user is not None:
        user, password = opts.sendsms_user
        # max-messages: a long text is sent as up to this many concatenated parts
        groups.append(
            ("sendsms-user", {"username": q + user + q, "password": q + password + q, "max-messages": "10"})
        )
    out = []
    for group, values in groups:
        out.append(f"group = {group}")
        out += [f"{k} = {v}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


class KannelGateway:
    def __init__(self, home: Path, opts: KannelOptions) -> None:
        self.home = Path(home).resolve()
        self.opts = opts
        self.admin_port = _free_port()
        self.smsbox_port = _free_port()
        self.sendsms_port = _free_port()
        self.config_path = self.home / "kannel.conf"
        self.bearerbox: subprocess.Popen[bytes] | None = None
        self.smsbox: subprocess.Popen[bytes] | None = None

    @property
    def pids(self) -> dict[str, int]:
        out = {}
        for name, p in (("bearerbox", self.bearerbox), ("smsbox", self.smsbox)):
            if p is not None and p.poll() is None:
                out[name] = p.pid
        return out

    def start(self, timeout: float = 30.0) -> None:
        if not kannel_installed():
            raise RuntimeError(f"{BEARERBOX} not found: install Debian's kannel package")
        if self.home.exists():
            shutil.rmtree(self.home)
        (self.home / "spool").mkdir(parents=True)
        self.config_path.write_text(
            render_config(self.opts, self.home, self.admin_port, self.smsbox_port, self.sendsms_port)
        )
        self.bearerbox = self._spawn(BEARERBOX, "bearerbox.out")
        self._wait_port(self.smsbox_port, timeout, self.bearerbox, "bearerbox")
        self.smsbox = self._spawn(SMSBOX, "smsbox.out")
        self._wait_port(self.sendsms_port, timeout, self.smsbox, "smsbox")

    def _spawn(self, exe: str, out: str) -> subprocess.Popen[bytes]:
        log = open(self.home / out, "wb")
        return subprocess.Popen(
            [exe, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait_port(self, port: int, timeout: float, proc: subprocess.Popen[bytes], name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); see {self.home}/{name}.log")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not listen on {port} in {timeout}s")

    def status(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/status.txt?password=bench"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return str(r.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError) as exc:
            return f"status unavailable: {exc}"

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"

    def smsc_online(self) -> bool:
        return "online" in self.status().split("SMSC connections:", 1)[-1]

    def stop(self, timeout: float = 15.0) -> None:
        # smsbox first, then bearerbox (which unbinds from the SMSC)
        for p in (self.smsbox, self.bearerbox):
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self, limit: int = 3000) -> str:
        out = []
        for f in sorted(self.home.glob("*.log")) + sorted(self.home.glob("*.out")):
            out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-limit:]}")
        return "\n".join(out)


@dataclass
class KannelMessage:
    text: str
    coding: int | None
    charset: str
    udh: bytes
    sender: str
    receiver: str
    raw: bytes
    decode_error: str = ""


def decode_kannel_request(query: dict[str, str], headers: dict[str, str], body: bytes) -> KannelMessage:
    """Text of one post-url request, decoded by the charset smsbox declared."""
    ctype = headers.get("content-type", "")
    charset = ""
    for part in ctype.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.lower() == "charset":
            charset = v.strip().strip('"')
    coding_s = headers.get("x-kannel-coding", query.get("coding", ""))
    coding = int(coding_s) if coding_s.strip().lstrip("-").isdigit() else None
    if not charset:
        charset = query.get("charset", "") or ("UTF-16BE" if coding == 2 else "UTF-8")
    udh_hex = headers.get("x-kannel-udh", "")
    udh = _udh_bytes(udh_hex)
    err = ""
    try:
        text = body.decode(_python_codec(charset))
    except (LookupError, UnicodeDecodeError) as exc:
        err = f"{type(exc).__name__}: {exc}"
        text = body.decode(_python_codec(charset), errors="replace") if _codec_ok(charset) else repr(body)
    return KannelMessage(
        text,
        coding,
        charset,
        udh,
        headers.get("x-kannel-from", query.get("from", "")),
        headers.get("x-kannel-to", query.get("to", "")),
        body,
        err,
    )


def _python_codec(charset: str) -> str:
    c = charset.strip().lower()
    return {"ucs-2": "utf-16-be", "ucs-2be": "utf-16-be", "utf-16be": "utf-16-be"}.get(c, c)


def _codec_ok(charset: str) -> bool:
    import codecs

    try:
        codecs.lookup(_python_codec(charset))
        return True
    except LookupError:
        return False


def _udh_bytes(value: str) -> bytes:
    """X-Kannel-UDH is hex; the %u of a URL is URL-encoded octets. Accept both."""
    if not value:
        return b""
    try:
        return bytes.fromhex(value)
    except ValueError:
        from urllib.parse import unquote_to_bytes

        return unquote_to_bytes(value)
