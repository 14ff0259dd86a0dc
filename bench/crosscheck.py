"""Kannel cross-check: one corpus of deliver_sm PDUs, fed by the simulated SMSC to Kannel and to smsflow.

    flock /tmp/smsflow-broker.lock .venv/bin/python -m bench.crosscheck [--markdown out.md] [--json out.json]

Each logical SMS of the corpus has its own sender number, so whatever reaches the receiver (smsflow's
signed webhook, Kannel's post-url) is attributed to its case by sender, even when a system garbles the text
or delivers a fragment. The corpus: GSM 03.38 with extension characters, Latin-1, UCS-2 Chinese with
non-BMP characters; single part, UDH 8-bit and 16-bit references, SAR TLVs, message_payload; a UDH with
another information element before the concatenation one; segments shuffled; a segment duplicated before
the message completes; carrier retransmissions (a PDU sent again after it was acknowledged, as an SMSC
does when it lost our deliver_sm_resp) of single-part messages and of one part of a completed long one;
segments cut mid-character (a GSM escape or a UTF-16 surrogate pair across the boundary), as some carriers
do. ``build_corpus`` is deterministic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.kannel import decode_kannel_request, kannel_installed, kannel_version
from devkit.demo.receiver import WebhookReceiver
from devkit.simulator.smsc import SimulatedSmsc, deliver_sm_params
from devkit.simulator.traffic import LogicalSms, TrafficMix
from smsflow.sms.segmentation import ESM_UDHI, Segment, split_for_smpp
from smsflow.sms.udh import InformationElement, build_udh, parse_udh

Params = dict[str, int | str | bytes]

# the hand-made edge cases: (key, what it exercises, text, data_coding, method, options)
GSM_EXT = "Price ^5 {ok} [x] ~y \\z |w €9"
LONG_GSM = (
    "Acme: your one-time code is 482913. It is valid for 15 minutes and can be used once. Never share it, "
    "not even with our staff [ref ^~|{}] and € 5 credit. If you did not request this code call us at once."
)
LONG_CN = (
    "【招商银行】尊敬的客户,您本次交易的动态验证码为736120,请在10分钟内完成验证。为保障资金安全,切勿将验证码"
    "告知他人,我行工作人员不会以任何理由向您索取。如有疑问请致电客服热线,感谢您的支持与信任!😀𠀀"
)


@dataclass
class Case:
    key: str
    what: str
    source: str
    dest: str
    text: str  # what the handset sent: the one right answer
    data_coding: int
    method: str
    pdus: list[tuple[Params, list[tuple[int, bytes]]]] = field(default_factory=list)
    retransmit: list[int] = field(default_factory=list)  # PDUs sent again after everything was acked


def _params(source: str, dest: str, seg: Segment, data_coding: int) -> Params:
    return deliver_sm_params(source, dest, seg.short_message, data_coding, seg.esm_class)


def _with_extra_ie(seg: Segment) -> Segment:
    """Put an EMS text-formatting IE (0x0A) before the concatenation IE: the UDH is a list, not a prefix."""
    ies, text = parse_udh(seg.short_message)
    udh = build_udh([InformationElement(0x0A, bytes([0, 4, 0])), *ies])
    return Segment(udh + text, seg.esm_class | ESM_UDHI, seg.tlvs, seg.seq, seg.total)


def make_case(
    idx: int,
    key: str,
    what: str,
    text: str,
    data_coding: int,
    method: str,
    rng: random.Random,
    *,
    shuffle: bool = False,
    dup_part: bool = False,
    retransmit: str = "",  # "" | "single" (whole PDU) | "part" (one part of the completed message)
    split_anywhere: bool = False,
    extra_ie: bool = False,
) -> Case:
    source = f"8529{idx:07d}"  # one sender per case: attribution at the receiver
    dest = "85230001000"
    ref = rng.randrange(1, 256 if method == "udh8" else 65536)
    segs = split_for_smpp(text, data_coding, method, ref=ref, split_anywhere=split_anywhere)  # type: ignore[arg-type]
    if extra_ie:
        segs = [_with_extra_ie(s) for s in segs]
    if shuffle and len(segs) > 1:
        while [s.seq for s in segs] == sorted(s.seq for s in segs):
            rng.shuffle(segs)
    pdus = [(_params(source, dest, s, data_coding), list(s.tlvs)) for s in segs]
    if dup_part and len(pdus) > 1:
        pdus.insert(1, pdus[0])  # the same part twice before the message is complete
    case = Case(key, what, source, dest, text, data_coding, method, pdus)
    if retransmit == "single" or (retransmit == "part" and len(segs) > 1):
        case.retransmit = [0]
    return case


def build_corpus(seed: int = 3, generated: int = 80) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []

    def add(key: str, what: str, text: str, data_coding: int, method: str, **kw: Any) -> None:
        cases.append(make_case(len(cases), key, what, text, data_coding, method, rng, **kw))

    # hand-made edge cases
    add("gsm7-ext-single", "GSM 03.38 extension table, one part", GSM_EXT, 0, "single")
    add("gsm7-udh8", "GSM 7-bit, UDH 8-bit ref, parts in order", LONG_GSM, 0, "udh8")
    add(
        "gsm7-udh16-shuffled", "GSM 7-bit, UDH 16-bit ref, parts shuffled", LONG_GSM, 0, "udh16", shuffle=True
    )
    add("gsm7-sar", "GSM 7-bit, SAR TLVs", LONG_GSM, 0, "sar", shuffle=True)
    add("gsm7-payload", "GSM 7-bit, whole text in message_payload (> 255 octets)", LONG_GSM * 2, 0, "payload")
    esc = "A" * 152 + "€ and {braces} after the cut"
    add(
        "gsm7-escape-cut",
        "GSM escape 0x1B last octet of part 1 (cut mid-character)",
        esc,
        0,
        "udh8",
        split_anywhere=True,
    )
    add("latin1-single", "Latin-1 (data_coding 3)", "Ça coûte 5£, déjà payé. Grüße!", 3, "single")
    add(
        "ucs2-single-nonbmp",
        "UCS-2 Chinese + emoji + CJK Ext. B, one part",
        "验证码 845120 😀𠀀 请勿泄露",
        8,
        "single",
    )
    add("ucs2-udh8", "UCS-2 Chinese, UDH 8-bit, surrogate pairs kept whole", LONG_CN, 8, "udh8")
    add("ucs2-udh16-shuffled", "UCS-2, UDH 16-bit, shuffled", LONG_CN, 8, "udh16", shuffle=True)
    add("ucs2-sar", "UCS-2, SAR TLVs, shuffled", LONG_CN, 8, "sar", shuffle=True)
    add("ucs2-payload", "UCS-2 in message_payload", LONG_CN * 2, 8, "payload")
    cut = "验" * 66 + "😀 surrogate pair across the cut 𠀀"
    add(
        "ucs2-surrogate-cut-udh8",
        "UTF-16 surrogate pair split over two parts (UDH)",
        cut,
        8,
        "udh8",
        split_anywhere=True,
    )
    cut_sar = "码" * 65 + "😀 surrogate pair across the cut (SAR)"
    add(
        "ucs2-surrogate-cut-sar",
        "UTF-16 surrogate pair split over two parts (SAR)",
        cut_sar,
        8,
        "sar",
        split_anywhere=True,
    )
    add("udh-extra-ie", "UDH with an EMS IE before the concatenation IE", LONG_GSM, 0, "udh8", extra_ie=True)
    add(
        "dup-part-pending",
        "a part duplicated before the message completes",
        LONG_CN,
        8,
        "udh8",
        dup_part=True,
    )
    add(
        "retransmit-single",
        "carrier retransmits an acknowledged single-part PDU",
        "Your code is 551203",
        0,
        "single",
        retransmit="single",
    )
    add(
        "retransmit-single-ucs2",
        "carrier retransmits an acknowledged UCS-2 PDU",
        "【京东】验证码 309112",
        8,
        "single",
        retransmit="single",
    )
    add(
        "retransmit-part",
        "carrier retransmits part 1 after the message completed",
        LONG_GSM,
        0,
        "udh8",
        retransmit="part",
    )
    add(
        "retransmit-part-sar",
        "carrier retransmits a SAR part after completion",
        LONG_CN,
        8,
        "sar",
        retransmit="part",
    )
    # generated: the benchmark's traffic mix, with shuffles, duplicates and retransmissions sprinkled in
    mix = TrafficMix(seed=seed, multipart_ratio=0.5, seq_start=9000)
    for _ in range(generated):
        sms: LogicalSms = mix.next()
        r = rng.random()
        add(
            f"mix-{sms.method}",
            "traffic mix",
            sms.text,
            sms.data_coding,
            sms.method,
            shuffle=rng.random() < 0.5,
            dup_part=0.1 < r < 0.2,
            retransmit=("single" if sms.method in ("single", "payload") else "part") if r < 0.1 else "",
        )
    return cases


# ---- feeding ------------------------------------------------------------------------------------------
async def feed_corpus(
    smsc: SimulatedSmsc, cases: list[Case], accounts: list[str], timeout: float = 60
) -> None:
    """Wave 1: every PDU in case order, to each account. Wave 2, once all were acknowledged: the
    retransmissions (the carrier lost our deliver_sm_resp and sends the same PDU again)."""
    for account in accounts:
        for c in cases:
            sms = LogicalSms(c.source, c.dest, c.text, c.data_coding, c.method, tag=c.key)
            for params, tlvs in c.pdus:
                smsc.enqueue_pdu(dict(params), _tlvs(tlvs), sms, account)
    if not await smsc.drain(timeout):
        raise TimeoutError(f"the corpus was not acknowledged in {timeout}s: {smsc.stats}")
    await asyncio.sleep(0.5)
    for account in accounts:
        for c in cases:
            sms = LogicalSms(c.source, c.dest, c.text, c.data_coding, c.method, tag=c.key + "/retransmit")
            for i in c.retransmit:
                params, tlvs = c.pdus[i]
                smsc.enqueue_pdu(dict(params), _tlvs(tlvs), sms, account)
    if not await smsc.drain(timeout):
        raise TimeoutError(f"the retransmissions were not acknowledged in {timeout}s: {smsc.stats}")


def _tlvs(tlvs: list[tuple[int, bytes]]) -> list[object]:
    from smsflow.smpp.pdu import Tlv

    return [Tlv(t, v) for t, v in tlvs]


# ---- what arrived -------------------------------------------------------------------------------------
@dataclass
class Received:
    text: str
    detail: str = ""  # Kannel: coding/charset/UDH as sent by smsbox


def smsflow_received(rx: WebhookReceiver) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = {}
    for msg in rx.log.messages.values():
        out.setdefault(str(msg.get("from_number", "")).lstrip("+"), []).append(Received(str(msg["body"])))
    return out


def kannel_received(rx: WebhookReceiver) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = {}
    for req in rx.plain:
        k = decode_kannel_request(req.query, req.headers, req.body)
        detail = f"coding={k.coding} charset={k.charset}"
        if k.udh:
            detail += f" udh={k.udh.hex()}"
        if k.decode_error:
            detail += f" DECODE ERROR {k.decode_error}"
        out.setdefault(k.sender.lstrip("+"), []).append(Received(k.text, detail))
    return out


@dataclass
class Verdict:
    key: str
    what: str
    expected: str
    outcome: str  # exact | duplicate | wrong text | fragments | missing
    got: list[str]
    details: list[str]

    @property
    def ok(self) -> bool:
        return self.outcome == "exact"


def judge(case: Case, got: list[Received]) -> Verdict:
    texts = [g.text for g in got]
    if texts == [case.text]:
        outcome = "exact"
    elif not texts:
        outcome = "missing"
    elif all(t == case.text for t in texts):
        outcome = f"duplicate (x{len(texts)})"
    elif case.text in texts:
        outcome = "exact + extra fragment(s)"
    elif len(texts) == 1:
        outcome = "wrong text"
    else:
        outcome = "fragments"
    return Verdict(case.key, case.what, case.text, outcome, texts, [g.detail for g in got])


def first_difference(expected: str, got: str) -> str:
    """Where two texts part, shown as code points around the spot."""
    i = next((n for n, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), None)
    if i is None:
        i = min(len(expected), len(got))
    lo = max(0, i - 3)

    def show(s: str) -> str:
        return " ".join(f"U+{ord(c):04X}" for c in s[lo : i + 3])

    return f"at char {i}: expected [{show(expected)}] got [{show(got)}]"


# ---- running both -------------------------------------------------------------------------------------
@dataclass
class CrossResult:
    cases: list[Case]
    smsflow: list[Verdict]
    kannel: list[Verdict]
    kannel_version: str
    smsc_stats: dict[str, Any]


async def run_crosscheck(
    workdir: Path,
    bootstrap: str | None = None,
    registry_url: str | None = None,
    with_kannel: bool = True,
    concat_timeout_s: int = 5,
    settle_s: float = 8.0,
) -> CrossResult:
    from bench.e2e import SIM_PASSWORD, KannelSystem, SmsflowSystem, _wait_account_bound

    cases = build_corpus()
    smsc = SimulatedSmsc(
        {"smsflow": SIM_PASSWORD, "kannel": SIM_PASSWORD}, shuffle=False, retry_delay_s=0.5, window=16
    )
    await smsc.start()
    from smsflow.delivery.signing import generate_secret

    secret = generate_secret()
    rx = WebhookReceiver(secret)
    rx.bench_secret = secret  # type: ignore[attr-defined]
    await rx.start()
    systems: list[Any] = [
        SmsflowSystem(workdir, bootstrap=bootstrap, registry_url=registry_url,
                      pipeline={"tick_interval_s": 0.5}),
    ]  # fmt: skip
    if with_kannel:
        # a short concatenation timeout, so parts Kannel holds (a part retransmitted after its message was
        # complete) come out within the run, as they would after Kannel's default 1800 s
        systems.append(KannelSystem(workdir, store=False, concat_timeout_s=concat_timeout_s, log_level=0))
    try:
        for s in systems:
            await s.start(smsc, rx)
        for s in systems:
            await asyncio.wait_for(_wait_account_bound(smsc, s.account), 120)
        await feed_corpus(smsc, cases, [s.account for s in systems])
        expected = len(cases)
        deadline = time.monotonic() + 60
        while len(rx.log.messages) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(settle_s if with_kannel else 2.0)  # Kannel's held parts time out; late extras
    finally:
        for s in systems:
            await s.stop()
        await smsc.stop()
        await rx.stop()
    ours = smsflow_received(rx)
    theirs = kannel_received(rx)
    return CrossResult(
        cases,
        [judge(c, ours.get(c.source, [])) for c in cases],
        [judge(c, theirs.get(c.source, [])) for c in cases] if with_kannel else [],
        kannel_version() if with_kannel else "",
        asdict(smsc.stats),
    )


def render_markdown(res: CrossResult) -> str:
    lines = [
        f"Corpus: {len(res.cases)} logical SMS, {sum(len(c.pdus) for c in res.cases)} PDUs in wave 1, "
        f"{sum(len(c.retransmit) for c in res.cases)} retransmitted after acknowledgement.",
        "",
        "| case | what | smsflow | Kannel " + res.kannel_version + " | Kannel detail |",
        "|---|---|---|---|---|",
    ]
    for c, ours, theirs in zip(res.cases, res.smsflow, res.kannel, strict=False):
        if ours.ok and theirs.ok and not c.key.startswith("gsm7-escape"):
            continue
        detail = ""
        if theirs.outcome == "wrong text":
            detail = first_difference(c.text, theirs.got[0])
        elif theirs.got:
            detail = "; ".join(sorted(set(theirs.details)))
            frag = [g for g in theirs.got if g != c.text]
            if frag:
                detail += f"; extra: {frag[0][:40]!r}…"
        lines.append(f"| `{c.key}` | {c.what} | {ours.outcome} | {theirs.outcome} | {detail} |")
    same = sum(1 for o, t in zip(res.smsflow, res.kannel, strict=False) if o.ok and t.ok)
    lines += ["", f"Both exact on {same} of {len(res.cases)} cases (not listed above)."]
    return "\n".join(lines)


def summary(verdicts: list[Verdict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in verdicts:
        out[v.outcome] = out.get(v.outcome, 0) + 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.crosscheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=".work/crosscheck")
    ap.add_argument("--markdown", default="", help="write the difference table here")
    ap.add_argument("--json", default="", help="write every verdict here")
    args = ap.parse_args(argv)
    if not kannel_installed():
        print("bearerbox not installed: apt-get install kannel", file=sys.stderr)
        return 2
    res = asyncio.run(run_crosscheck(Path(args.workdir).resolve()))
    md = render_markdown(res)
    print(md)
    print(f"\nsmsflow: {summary(res.smsflow)}\nkannel:  {summary(res.kannel)}\nsimulator: {res.smsc_stats}")
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"smsflow": [asdict(v) for v in res.smsflow], "kannel": [asdict(v) for v in res.kannel]},
                ensure_ascii=False,
                indent=1,
            )
        )
    return 0 if all(v.ok for v in res.smsflow) else 1


if __name__ == "__main__":
    sys.exit(main())
