"""What must hold for any input, checked on one input at a time (the fuzz targets).

- The PDU decoder returns a Pdu or raises PduError, nothing else.
- Enrichment of any text never raises; a code it finds is 4-8 ASCII letters/digits, a validity fits
  an Avro int, a signature is at most 30 characters.
- The receipt parser never raises, and its counters fit an Avro int and its id SMPP's 64 characters.
- The ingest processor never raises; every record it publishes encodes against its topic's Avro schema;
  every raw record is accounted for (published, quarantined, held for reassembly, or counted as a
  duplicate), and once time passes nothing stays held.

Only public behaviour is used: ``on_raw``/``on_tick``, their ``Publish`` results, the stores we hand
the processor, and its ``stats``.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from smsflow.enrich import enrich
from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from smsflow.ingest.receipts import parse_receipt
from smsflow.smpp.pdu import PduError, decode_pdu
from tests.avro_check import encode
from tests.fuzz.inputs import CARRIERS, raw_record

# Avro int, written out rather than imported so the targets also run against older code.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
SCHEMA_OF_KIND = {
    "inbound": "inbound_message.avsc",
    "receipt": "delivery_receipt.avsc",
    "quarantine": "quarantined_pdu.avsc",
}
T0_MS = 1_795_000_000_000
WINDOW_MS = 600_000
TIMEOUT_MS = 60_000


@dataclass
class Tally:
    """What a fuzz run saw, for its report."""

    inputs: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)


TALLY = Tally()
# How many byte-level variants of each generated input are checked too. Generating a structured input
# costs milliseconds, mutating its bytes microseconds: the long run (``python -m tests.fuzz``) sets
# this to multiply its inputs; the variants of an input are derived from it, so a failure replays.
VARIANTS = 0


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, cut, grow or splice bytes; sometimes make command_length agree again, to get past framing."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(5)
        if how == 0 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif how == 1 and out:
            del out[rng.randrange(len(out)) :]
        elif how == 2:
            at = rng.randint(0, len(out))
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif how == 3 and len(out) > 2:
            a, b = sorted(rng.sample(range(len(out)), 2))
            out[a:a] = out[a:b]
        if len(out) >= 16 and rng.random() < 0.7:
            out[0:4] = struct.pack(">I", len(out))
    return bytes(out)


def _variants(data: bytes) -> list[bytes]:
    rng = random.Random(zlib.crc32(data))
    return [mutate(data, rng) for _ in range(VARIANTS)]


def check_pdu(data: bytes) -> None:
    for pdu in [data, *_variants(data)]:
        TALLY.inputs["pdu"] += 1
        try:
            decode_pdu(pdu)
        except PduError:
            TALLY.outcomes["pdu rejected"] += 1
        else:
            TALLY.outcomes["pdu decoded"] += 1


def check_receipt(text: str, receipted: str | None, state: int | None, error: bytes | None) -> None:
    texts = [text, *(v.decode("latin-1") for v in _variants(text.encode("utf-8", "surrogatepass")))]
    for one in texts:
        TALLY.inputs["receipt"] += 1
        info = parse_receipt(one, receipted, state, error)
        for count in (info["submitted"], info["delivered"]):
            assert count is None or INT_MIN <= count <= INT_MAX
        assert len(info["message_id"]) <= 64


def check_traffic(traffic: list[tuple[bytes, str, int]]) -> None:
    """check_ingest on the traffic and on its variants: one PDU mutated, or one record sent twice."""
    check_ingest(traffic)
    rng = random.Random(zlib.crc32(b"".join(pdu for pdu, _, _ in traffic)))
    for _ in range(VARIANTS):
        variant = list(traffic)
        i = rng.randrange(len(variant))
        pdu, carrier, delay = variant[i]
        if rng.random() < 0.8:
            variant[i] = (mutate(pdu, rng), carrier, delay)
        else:  # a carrier retransmission, or a copy over another route
            variant.insert(rng.randint(i, len(variant)), (pdu, rng.choice(sorted(CARRIERS)), delay))
        check_ingest(variant)


def check_enrich(text: str, source: str, dest: str, ton: int, region: str | None) -> None:
    """Enrichment of any text (longer than ingest's texts, past the scan window) never raises, and
    what it finds is what the webhook may publish."""
    for one in [
        text,
        *(v.decode("utf-8", "replace") for v in _variants(text.encode("utf-8", "surrogatepass"))),
    ]:
        TALLY.inputs["enrich"] += 1
        info = enrich(one, source, ton, 1, dest, ton, 1, region)
        if info.otp is not None:
            assert 4 <= len(info.otp.code) <= 8 and info.otp.code.isascii() and info.otp.code.isalnum()
            validity = info.otp.validity_seconds
            assert validity is None or 0 < validity <= INT_MAX
            TALLY.outcomes["otp"] += 1
        assert info.signature is None or 0 < len(info.signature) <= 30


class _Clock:
    def __init__(self) -> None:
        self.ms = T0_MS

    def __call__(self) -> float:
        return self.ms / 1000


def check_ingest(traffic: list[tuple[bytes, str, int]]) -> None:
    """Feed one partition's records in offset order, then let time run out."""
    partials: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    clock = _Clock()
    proc = IngestProcessor(
        partials,
        seen,
        IngestSettings(
            reassembly_timeout_ms=TIMEOUT_MS,
            dedup_window_ms=WINDOW_MS,
            default_regions=dict(CARRIERS),
        ),
        clock=clock,
    )
    for offset, (pdu, carrier, delay_ms) in enumerate(traffic):
        TALLY.inputs["raw record"] += 1
        clock.ms += delay_ms
        held_before = repr(sorted(partials.items()))
        dropped_before = proc.stats.duplicates + proc.stats.duplicate_parts
        outs = proc.on_raw(raw_record(pdu, carrier, clock.ms), RecordOrigin("sms.raw.v1", 0, offset), None)
        _check_published(outs)
        if not outs:
            held = repr(sorted(partials.items())) != held_before
            dropped = proc.stats.duplicates + proc.stats.duplicate_parts > dropped_before
            assert held or dropped, (
                f"record {offset} vanished: not published, quarantined, held or a duplicate"
            )
            TALLY.outcomes["held" if held else "duplicate"] += 1
        if delay_ms % 7 == 0:  # ticks arrive between records too
            _check_published(proc.on_tick(0))
    # Traffic stops and everything read is committed ("settled"): time may now follow the wall clock.
    # Clock skew between connectors is allowed for on top of each period (IngestSettings.clock_skew_ms).
    skew = proc.settings.clock_skew_ms
    clock.ms += TIMEOUT_MS + skew + 1
    _check_published(proc.on_tick(0, settled=True))
    assert not partials, f"still held after the reassembly timeout: {list(partials)}"
    clock.ms += WINDOW_MS + skew + 1  # what the last tick completed is remembered for one more window
    _check_published(proc.on_tick(0, settled=True))
    assert not seen, "dedup entries outlived their window"


def _check_published(outs: Any) -> None:
    """Play the agent: check every record would be written, then (the broker having acked them) run the
    state changes that wait for durability."""
    for out in outs:
        assert out.kind in SCHEMA_OF_KIND, out.kind
        assert isinstance(out.key, str)
        encode(out.record, SCHEMA_OF_KIND[out.kind])
        TALLY.outcomes[out.kind] += 1
    outs.apply_deferred()
