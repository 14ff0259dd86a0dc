"""Issue 9 on the real broker: a carrier mixes hostile PDUs into a steady stream of normal SMS.

What must hold, seen from outside (the customer's webhook and the topics):
- every normal SMS arrives once, intact, and its latency (carrier -> webhook) stays near that of a run
  without hostile PDUs (p99 within 2x, with a small absolute floor for a loaded 2-core machine);
- every hostile PDU ends somewhere a user can see: delivered correctly, a receipt on sms.receipts.v1, or a
  record on sms.quarantine.v1 with a reason; none is silently lost, none takes a neighbour with it;
- the worker logs no agent crash and no traceback.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from devkit.simulator.smsc import deliver_sm_params
from devkit.simulator.traffic import LogicalSms, TrafficMix
from smsflow.smpp.constants import TlvTag
from smsflow.smpp.pdu import PduError, Tlv, decode_pdu
from smsflow.sms.gsm0338 import encode_unpacked
from smsflow.sms.segmentation import split_for_smpp
from tests.kafka_read import avro_values

pytestmark = pytest.mark.e2e

DEST = "85230001000"
RATE = 25  # normal SMS per second
PHASE_S = 16


@dataclass
class Hostile:
    """One hostile case: the PDUs that carry it and what a correct pipeline makes of it."""

    name: str
    source: str  # unique per case: how its outcome is found again
    pdus: list[tuple[dict[str, Any], list[object], bytes]]  # params, TLVs, raw octets appended unchecked
    # "deliver": must arrive with exactly `text`; "receipt": must be on sms.receipts.v1;
    # "deliver|quarantine": either arrives intact or is quarantined with a reason; "quarantine": must be.
    expect: str
    text: str = ""
    payloads: list[bytes] = field(default_factory=list)  # user data sent, to recognise quarantine records
    # "volume" cases are legal but big (a 255-part SMS, 64 KB payloads): they run in a phase of their own
    # (so a slow one is told apart from the light cases), under the same 2x bound
    volume: bool = False


def _dlr_text(msg_id: str, sub: str = "001", dlvrd: str = "001") -> bytes:
    return (
        f"id:{msg_id} sub:{sub} dlvrd:{dlvrd} submit date:2611260101 done date:2611260102 "
        "stat:DELIVRD err:000 text:"
    ).encode()


def _tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def hostile_cases() -> list[Hostile]:
    cases: list[Hostile] = []
    n = iter(range(10, 100))

    def src() -> str:
        return f"8529{next(n):07d}"

    def single(
        name: str,
        sm: bytes,
        dc: int,
        esm: int,
        expect: str,
        tlvs: list[object] | None = None,
        text: str = "",
        source: str | None = None,
        dest: str = DEST,
        tail: bytes = b"",
    ) -> Hostile:
        s = source or src()
        return Hostile(
            name, s, [(deliver_sm_params(s, dest, sm, dc, esm), tlvs or [], tail)], expect, text, [sm]
        )

    # receipts whose fields do not fit the schema: a counter above 2^31, an id of 4,000 hex digits
    cases.append(
        single("dlr-huge-counters", _dlr_text("0A1B2C", "99999999999", "4294967296"), 0, 0x04, "receipt")
    )
    cases.append(single("dlr-4000-hex-id", _dlr_text("F" * 4000)[:254], 0, 0x04, "receipt"))
    cases.append(
        single(
            "dlr-4000-hex-id-payload",
            b"",
            0,
            0x04,
            "receipt",
            [Tlv(TlvTag.message_payload, _dlr_text("A" * 4000))],
        )
    )
    cases.append(
        single(
            "dlr-tlv-long-id",
            b"",
            0,
            0x04,
            "receipt",
            [Tlv(TlvTag.receipted_message_id, b"9" * 64 + b"\x00"), Tlv(TlvTag.message_state, bytes([2]))],
        )
    )
    # a 64 KB message_payload built to make backtracking patterns quadratic (GSM 03.38, unpacked: "@" is 0x00)
    evil = "x" * 30000 + "@" + "y" * 30000 + " 123456"
    cases.append(
        single(
            "payload-64k",
            b"",
            0,
            0,
            "deliver|quarantine",
            [Tlv(TlvTag.message_payload, encode_unpacked(evil))],
            text=evil,
        )
    )
    cases[-1].volume = True
    evil2 = "a." * 20000
    cases.append(
        single(
            "payload-dots",
            b"",
            0,
            0,
            "deliver|quarantine",
            [Tlv(TlvTag.message_payload, encode_unpacked(evil2))],
            text=evil2,
        )
    )
    cases[-1].volume = True
    # a legal 255-part SMS (UDH 8-bit reference), GSM 7-bit
    s = src()
    long_text = "".join(f"part{i:03d} " + "z" * 144 + "." for i in range(255))[: 255 * 153]
    segs = split_for_smpp(long_text, 0, "udh8", ref=77)
    assert len(segs) == 255
    cases.append(
        Hostile(
            "255-parts",
            s,
            [(deliver_sm_params(s, DEST, g.short_message, 0, g.esm_class), [], b"") for g in segs],
            "deliver|quarantine",
            long_text,
            [g.short_message for g in segs],
            volume=True,
        )
    )
    # broken user data: UDH longer than the message, UCS-2 of odd length, an unpaired surrogate
    cases.append(single("udh-overrun", b"\x0b\x00\x03\x01\x02\x01", 0, 0x40, "quarantine"))
    cases.append(single("udh-bad-ie", b"\x05\x00\x03\x07\x00\x01udh-bad-ie", 0, 0x40, "quarantine"))
    cases.append(single("ucs2-odd", "驗證碼".encode("utf-16-be") + b"\x41", 8, 0, "deliver|quarantine"))
    cases.append(single("ucs2-lone-surrogate", b"\xd8\x3d\x00\x41", 8, 0, "deliver|quarantine"))
    # broken TLVs: SAR with a sequence out of range, SAR fields of the wrong size, both payload fields set
    cases.append(
        single(
            "sar-seq-out-of-range",
            b"sar-seq-out-of-range",
            0,
            0,
            "quarantine",
            [Tlv(0x020C, b"\x00\x07"), Tlv(0x020E, b"\x03"), Tlv(0x020F, b"\x05")],
        )
    )
    cases.append(
        single(
            "sar-wrong-sizes",
            b"sar-wrong-sizes",
            0,
            0,
            "quarantine",
            tail=_tlv(0x020C, b"\x00\x00\x07") + _tlv(0x020E, b"\x03\x00") + _tlv(0x020F, b""),
        )
    )
    # TLV streams that break the framing inside the PDU: a length past the end, a header cut short
    cases.append(single("tlv-overrun", b"tlv-overrun", 0, 0, "quarantine", tail=b"\x04\x24\x01\xf4short"))
    cases.append(single("tlv-cut-header", b"tlv-cut-header", 0, 0, "quarantine", tail=b"\x04"))
    cases.append(
        single("payload-and-short-message", b"abc", 0, 0, "quarantine", [Tlv(TlvTag.message_payload, b"def")])
    )
    # garbage addresses and odd data codings
    cases.append(
        single(
            "alnum-dest", b"Code 111222", 0, 0, "deliver|quarantine", text="Code 111222", dest="NOT#A$NUMBER"
        )
    )
    cases.append(
        single("empty-dest", b"Code 333444", 0, 0, "deliver|quarantine", text="Code 333444", dest="")
    )
    cases.append(
        single("huge-number", b"Code 555666", 0, 0, "deliver|quarantine", text="Code 555666", source="9" * 20)
    )
    cases.append(single("dc-vendor-0xF7", b"\x00\x01\x02\xff", 0xF7, 0, "deliver|quarantine"))
    cases.append(single("dc-reserved-0x0F", b"reserved-dc-0x0F", 0x0F, 0, "deliver|quarantine"))
    return cases


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _steady(
    p: Any, mix: TrafficMix, seconds: float, sent: dict[str, LogicalSms], hostile: list[Hostile] | None = None
) -> list[tuple[float, str]]:
    """Enqueue RATE normal SMS per second for `seconds`, hostile cases spread evenly in between; returns when
    (seconds into the phase) each hostile case was queued."""
    injected: list[tuple[float, str]] = []
    total = int(RATE * seconds)
    every = max(1, total // (len(hostile) + 1)) if hostile else 0
    queue = list(hostile or [])
    start = time.monotonic()
    for i in range(total):
        sms = mix.next()
        sent[sms.text] = sms
        p.smsc.enqueue(sms)
        if queue and every and i % every == every - 1:
            case = queue.pop(0)
            injected.append((time.monotonic() - start, case.name))
            logical = LogicalSms(case.source, DEST, case.text or case.name, 0, tag=case.name)
            for params, tlvs, tail in case.pdus:
                p.smsc.enqueue_pdu(params, tlvs, logical, raw_tail=tail)
        delay = start + (i + 1) / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    for case in queue:  # any left over (rounding)
        injected.append((time.monotonic() - start, case.name))
        logical = LogicalSms(case.source, DEST, case.text or case.name, 0, tag=case.name)
        for params, tlvs, tail in case.pdus:
            p.smsc.enqueue_pdu(params, tlvs, logical, raw_tail=tail)
    return injected


def _quarantine_source(record: dict[str, Any]) -> str | None:
    try:
        return str(decode_pdu(record["pdu"]).params.get("source_addr", ""))
    except (PduError, Exception):
        return None


async def test_hostile_pdus_among_steady_traffic(pipeline) -> None:
    p = await pipeline(sessions=2, pipeline_cfg={"reassembly_timeout_s": 20})
    p.start()
    await p.smsc.wait_bound(90)
    mix = TrafficMix(seed=9, multipart_ratio=0.2)
    warm = mix.next()
    p.smsc.enqueue(warm)
    await p.wait_delivered(1, 120)  # the pipeline is up end to end before anything is measured

    latency: dict[str, float] = {}  # body -> carrier-to-webhook ms, for normal traffic only

    delivered_at: dict[str, float] = {}

    def on_message(msg: dict[str, Any], arrived: float) -> None:
        now = time.time() * 1000
        latency.setdefault(msg["body"], now - msg["received_at"])
        delivered_at.setdefault(msg["body"], now)

    p.receiver.on_message = on_message

    sent_a: dict[str, LogicalSms] = {}
    await _steady(p, mix, PHASE_S, sent_a)
    await p.wait_delivered(1 + len(sent_a), 120)
    base = [latency[t] for t in sent_a]

    cases = hostile_cases()
    light = [c for c in cases if not c.volume]
    heavy = [c for c in cases if c.volume]
    sent_b: dict[str, LogicalSms] = {}
    before_b = len(p.receiver.log.messages)
    phase_b = time.time() * 1000
    injected = await _steady(p, mix, PHASE_S, sent_b, light)
    sent_c: dict[str, LogicalSms] = {}
    phase_c = time.time() * 1000
    injected_c = await _steady(p, mix, PHASE_S / 2, sent_c, heavy)
    normal_b = len(sent_b)
    deadline = time.monotonic() + 180
    bodies = lambda: {m["body"] for m in p.receiver.log.messages.values()}  # noqa: E731
    while time.monotonic() < deadline and not (set(sent_b) | set(sent_c)) <= bodies():
        await asyncio.sleep(0.5)
    await p.smsc.drain(60)
    await asyncio.sleep(3)  # let the hostile ones settle (quarantine/receipt topics)

    msgs = list(p.receiver.log.messages.values())
    by_body: dict[str, int] = {}
    for m in msgs:
        by_body[m["body"]] = by_body.get(m["body"], 0) + 1
    problems: list[str] = []

    # every normal SMS once and intact
    normal = {**sent_a, **sent_b, **sent_c, warm.text: warm}
    missing = [t for t in normal if t not in by_body]
    twice = [t for t in normal if by_body.get(t, 0) > 1]
    broken = [m["body"][:40] for m in msgs if m["body"] in normal and m["incomplete"]]
    if missing:
        problems.append(f"{len(missing)} normal SMS never arrived, e.g. {missing[:2]}")
    if twice:
        problems.append(f"{len(twice)} normal SMS arrived under two ids, e.g. {twice[:2]}")
    if broken:
        problems.append(f"{len(broken)} normal SMS delivered not intact, e.g. {broken[:2]}")

    # every hostile case ends somewhere visible
    quarantined = avro_values(p.stack.bootstrap, p.stack.registry_url, "sms.quarantine.v1")
    receipts = avro_values(p.stack.bootstrap, p.stack.registry_url, "sms.receipts.v1")
    delivered_from = {m["from_original"]: m for m in msgs}
    q_sources = {_quarantine_source(q): q for q in quarantined}
    outcomes: dict[str, str] = {}
    for case in cases:
        got = delivered_from.get(case.source)
        q = q_sources.get(case.source) or next(
            (q for q in quarantined if any(pl and pl in q["pdu"] for pl in case.payloads)), None
        )
        r = next((r for r in receipts if r["from_number"] == case.source), None)
        if case.expect == "receipt" and r is not None and got is None:
            outcomes[case.name] = f"receipt id={str(r['message_id'])[:16]}… sub={r['submitted']}"
        elif case.expect == "receipt":
            problems.append(f"{case.name}: no receipt (delivered={got is not None}, quarantine={q})")
        elif got is not None and case.expect != "quarantine":
            if case.text and (got["body"] != case.text or got["incomplete"]):
                problems.append(f"{case.name}: delivered not intact")
            outcomes[case.name] = f"delivered ({len(got['body'])} chars)"
        elif q is not None and q["reason"]:
            outcomes[case.name] = f"quarantined ({q['stage']}): {q['reason'][:70]}"
        else:
            problems.append(f"{case.name}: expected {case.expect}, found neither (delivered={got})")
    # the carrier got an answer for every PDU (nothing left waiting on a stuck session)
    if p.smsc.backlog:
        problems.append(f"{p.smsc.backlog} PDUs still unanswered")

    # latency of normal traffic alongside the hostile PDUs
    def slowest(sent: dict[str, LogicalSms], since: float) -> str:
        worst = sorted(((latency[t], t) for t in sent if t in latency), reverse=True)[:5]
        return ", ".join(f"{ms:.0f} ms at {(delivered_at[t] - ms - since) / 1000:.1f} s" for ms, t in worst)

    def queued(injected: list[tuple[float, str]]) -> str:
        return ", ".join(f"{n} {t:.1f} s" for t, n in injected)

    during = [latency[t] for t in sent_b if t in latency]
    during_c = [latency[t] for t in sent_c if t in latency]
    p99_a = _pct(base, 0.99)
    p99_b = _pct(during, 0.99) if during else float("inf")
    p99_c = _pct(during_c, 0.99) if during_c else float("inf")
    heavy_records = sum(len(c.pdus) for c in heavy)
    report = (
        f"\nnormal SMS p50/p99 (ms): {len(sent_a)} alone {statistics.median(base):.1f}/{p99_a:.1f}; "
        f"{normal_b} with {len(light)} hostile cases {statistics.median(during or [0]):.1f}/{p99_b:.1f}; "
        f"{len(sent_c)} with {len(heavy)} volume cases ({heavy_records} PDUs) "
        f"{statistics.median(during_c or [0]):.1f}/{p99_c:.1f}; delivered after A: {len(msgs) - before_b}"
        f"\nslowest beside hostile cases (latency, sent at): {slowest(sent_b, phase_b)}"
        f"\nslowest beside volume cases: {slowest(sent_c, phase_c)}"
        f"\nqueued at: {queued(injected)}; {queued(injected_c)}\n"
        + "\n".join(f"  {k}: {v}" for k, v in outcomes.items())
    )
    print(report)
    bound = max(2 * p99_a, p99_a + 150)  # issue 9: within 2x, with a floor for a loaded 2-core machine
    if p99_b > bound:
        problems.append(f"hostile PDUs slowed normal traffic: p99 {p99_a:.0f} -> {p99_b:.0f} ms")
    # A 255-part SMS is 255 records for the worker; each must cost what a normal SMS's record costs (it was
    # 130,000 table reads for the whole message, ~0.5 s of the event loop: 2.7x the clean p99).
    if p99_c > bound:
        problems.append(f"volume cases slowed normal traffic: p99 {p99_a:.0f} -> {p99_c:.0f} ms")

    # no agent crashed, nothing raised out of a handler
    logs = "\n".join(f.read_text(errors="replace") for f in (p.workdir / "logs").glob("worker-*.log"))
    crashes = re.findall(r".*(?:Crashed reason|Traceback|Task exception was never retrieved).*", logs)
    if crashes:
        problems.append(f"worker log shows {len(crashes)} crashes, e.g. {crashes[:3]}")
    assert not problems, "\n".join(problems) + report
