"""The ingest stage's rules (reassembly, dedup, receipts, quarantine, expiry), without a broker."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from tests.factories import deliver_sm_bytes, raw_record, segment_records

T0 = 1_700_000_000_000


class Clock:
    def __init__(self, t: float = T0 / 1000) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(window_ms: int = 600_000, timeout_ms: int = 60_000, policy: str = "emit"):
    clock = Clock()
    partials: dict = {}
    seen: dict = {}
    proc = IngestProcessor(
        partials,
        seen,
        IngestSettings(
            reassembly_timeout_ms=timeout_ms,
            dedup_window_ms=window_ms,
            incomplete_policy=policy,
            default_regions={"cn": "CN"},
        ),
        clock=clock,
    )
    return proc, partials, seen, clock


class Feeder:
    """Feeds records as if from one partition of sms.raw.v1, with increasing offsets, stamped with the clock
    as a connector stamps ``received_at``; state changes deferred until outputs are durable run at once."""

    def __init__(self, proc: IngestProcessor, partition: int = 0, clock: Clock | None = None) -> None:
        self.proc, self.partition, self.offset, self.clock = proc, partition, 0, clock

    def __call__(self, rec: dict, offset: int | None = None, received_at: int | None = None) -> list:
        off = self.offset if offset is None else offset
        if offset is None:
            self.offset += 1
        if received_at is not None:
            rec = {**rec, "received_at": received_at}
        elif self.clock is not None:
            rec = {**rec, "received_at": int(self.clock.t * 1000)}
        outs = self.proc.on_raw(rec, RecordOrigin("sms.raw.v1", self.partition, off), None)
        outs.apply_deferred()
        return list(outs)

    def tick(self, caught_up: bool = True) -> list:
        outs = self.proc.on_tick(self.partition, caught_up=caught_up)
        outs.apply_deferred()
        return list(outs)

    def commit(self) -> None:
        self.proc.on_commit(self.partition, self.offset)


def open_partials(partials: dict) -> list[str]:
    """Messages still being reassembled (finished ones keep their parts for the dedup window)."""
    return [k for k, v in partials.items() if k.startswith("h|") and v["st"] == "open"]


def inbound(outs: list) -> list[dict]:
    return [o.record for o in outs if o.kind == "inbound"]


def test_single_part_gsm_message_is_decoded_and_enriched():
    proc, partials, _, _ = make()
    feed = Feeder(proc)
    text = "【京东】您的验证码是 825959。如非本人操作,请忽略本短信。"
    recs = segment_records(text, 8, "single", 0, source="8613812345678", dest="85230001000")
    msgs = inbound(feed(recs[0]))
    assert len(msgs) == 1
    m = msgs[0]
    assert m["body"] == text and m["encoding"] == "ucs2"
    assert m["from_number"] == "+8613812345678" and m["to_number"] == "+85230001000"
    assert m["otp"] == "825959" and m["sender_signature"] == "京东" and m["country_code"] == "CN"
    assert m["segment_count"] == 1 and not m["incomplete"]
    assert open_partials(partials) == []


def test_gsm7_extension_characters_decode_exactly():
    proc, _, _, _ = make()
    text = "Code 1234 {ok} [x] ~ ^ | \\ € end"
    m = inbound(Feeder(proc)(segment_records(text, 0, "single", 0)[0]))[0]
    assert m["body"] == text and m["encoding"] == "gsm7"


def test_multipart_any_order_with_duplicate_parts_is_one_whole_message():
    proc, partials, _, _ = make()
    feed = Feeder(proc)
    text = "Your one-time passcode is 482913. " * 12
    recs = segment_records(text, 0, "udh8", 42)
    assert len(recs) > 2
    order = [*recs[::-1], recs[1]]
    outs = []
    for r in order:
        outs += feed(r)
    msgs = inbound(outs)
    assert [m["body"] for m in msgs] == [text]
    assert msgs[0]["segment_count"] == len(recs)
    assert open_partials(partials) == []
    assert proc.stats.duplicate_parts == 1


def test_surrogate_pair_and_gsm_escape_split_across_segments():
    proc, _, _, _ = make()
    feed = Feeder(proc)
    ucs = "验证码" * 22 + "😀𠀀" * 20
    gsm = "x" * 152 + "€" + "{}" * 40
    for text, dc, ref in ((ucs, 8, 7), (gsm, 0, 8)):
        outs = []
        for r in segment_records(text, dc, "udh16", ref, split_anywhere=True):
            outs += feed(r)
        assert [m["body"] for m in inbound(outs)] == [text]


def test_same_ref_from_different_senders_never_mix():
    proc, _, _, _ = make()
    feed = Feeder(proc)
    a = segment_records("A" * 300, 0, "udh8", 5, source="85261111111")
    b = segment_records("B" * 300, 0, "udh8", 5, source="85262222222")
    outs = []
    for ra, rb in zip(a, b, strict=True):
        outs += feed(ra) + feed(rb)
    assert sorted(m["body"] for m in inbound(outs)) == ["A" * 300, "B" * 300]


def test_same_sms_over_a_second_route_is_dropped():
    proc, _, _, _ = make()
    feed = Feeder(proc)
    text = "Your verification code is 839080. " * 6
    first = segment_records(text, 0, "udh8", 1, carrier="hk-a", route="primary")
    second = segment_records(text, 0, "sar", 99, carrier="hk-b", route="secondary")
    outs = []
    for r in first + second:
        outs += feed(r)
    assert len(inbound(outs)) == 1
    assert proc.stats.duplicates == 1


def test_number_forms_of_one_sender_are_one_sender():
    proc, _, _, _ = make()
    feed = Feeder(proc)
    text = "Your verification code is 111222"
    r1 = segment_records(text, 0, "single", 0, source="85261234567")[0]
    pdu = deliver_sm_bytes("0085261234567", "85230001000", text.encode(), 0, source_ton=0)
    r2 = raw_record(pdu, "0085261234567", "85230001000", 0, source_ton=0, carrier="other")
    assert len(inbound(feed(r1))) == 1
    assert inbound(feed(r2)) == []


def test_repeat_outside_window_is_delivered_inside_is_dropped():
    proc, _, _, clock = make(window_ms=10_000)
    feed = Feeder(proc, clock=clock)
    rec = segment_records("Code 5555", 0, "single", 0)[0]
    assert len(inbound(feed(rec))) == 1
    clock.t += 5
    assert inbound(feed(rec)) == []  # carrier retransmission inside the window
    clock.t += 6
    again = inbound(feed(rec))
    assert len(again) == 1  # same text later: a new message, new id


def test_different_senders_same_template_are_different_messages():
    proc, _, _, _ = make()
    feed = Feeder(proc)
    text = "【南方航空】您的验证码是4518,在15分钟内有效。"
    outs = feed(segment_records(text, 8, "single", 0, source="8613800000001")[0])
    outs += feed(segment_records(text, 8, "single", 0, source="8613800000002")[0])
    assert len(inbound(outs)) == 2


def test_replay_after_crash_keeps_the_message_id():
    proc, _, _, _ = make()
    feed = Feeder(proc)
    recs = segment_records("Z" * 400, 0, "udh8", 3)
    first = []
    for r in recs:
        first += inbound(feed(r))
    assert len(first) == 1
    # a crash before the offsets were committed: the same records are processed again
    again = []
    for i, r in enumerate(recs):
        again += inbound(feed(r, offset=i))
    assert [m["message_id"] for m in again] == [first[0]["message_id"]]
    assert proc.stats.replays == 1


def test_late_retransmitted_segment_does_not_start_a_phantom_message():
    proc, partials, _, clock = make(timeout_ms=1_000)
    feed = Feeder(proc, clock=clock)
    recs = segment_records("Q" * 400, 0, "udh8", 9)
    outs = []
    for r in recs:
        outs += feed(r)
    clock.t += 3
    outs += feed(recs[1])  # carrier resends part 2 after we acknowledged everything, past the timeout
    clock.t += 10
    outs += feed.tick()
    assert len(inbound(outs)) == 1 and open_partials(partials) == []


def test_timeout_emits_incomplete_with_missing_parts_and_table_empties():
    proc, partials, _, clock = make(timeout_ms=30_000)
    feed = Feeder(proc, clock=clock)
    recs = segment_records("R" * 500, 0, "udh8", 11)
    for r in recs[:1] + recs[2:]:
        assert feed(r) == []
    assert len(open_partials(partials)) == 1
    clock.t += 10
    assert feed.tick() == []
    clock.t += 30
    msgs = inbound(feed.tick())
    assert len(msgs) == 1 and msgs[0]["incomplete"] and msgs[0]["missing_segments"] == [2]
    assert partials == {}


def test_timeout_runs_on_stream_time_not_on_the_wall_clock():
    """After a restart the backlog is read long after its records were received: a tick must not time out
    a partial whose remaining parts still wait in the backlog (Kafka Streams' stream-time punctuation)."""
    proc, partials, _, clock = make(timeout_ms=30_000)
    feed = Feeder(proc, clock=clock)
    recs = segment_records("S" * 500, 0, "udh8", 13)
    feed(recs[0])
    clock.t += 600  # the worker was down; the wall clock moved on, the records did not
    assert feed.tick(caught_up=False) == []
    outs = []
    for r in recs[1:]:
        outs += feed(r, received_at=T0 + 1_000)
    msgs = inbound(outs)
    assert len(msgs) == 1 and not msgs[0]["incomplete"] and open_partials(partials) == []


def test_a_part_later_than_the_timeout_closes_the_held_message_first():
    proc, _, _, clock = make(timeout_ms=1_000)
    feed = Feeder(proc, clock=clock)
    recs = segment_records("L" * 500, 0, "udh8", 14)
    feed(recs[0])
    clock.t += 5
    outs = feed(recs[1])  # by carrier time the first part's message timed out before this one came
    msgs = inbound(outs)
    assert len(msgs) == 1 and msgs[0]["missing_segments"] == [2, 3, 4]


def test_timeout_dead_letter_policy_quarantines():
    proc, partials, _, clock = make(timeout_ms=1_000, policy="dead_letter")
    feed = Feeder(proc, clock=clock)
    recs = segment_records("R" * 500, 0, "udh8", 12)
    feed(recs[0])
    clock.t += 7
    outs = feed.tick()
    assert [o.kind for o in outs] == ["quarantine"] and "missing parts [2, 3, 4]" in outs[0].record["reason"]
    assert partials == {}


def test_expired_state_leaves_the_store_only_after_the_commit_passed_it():
    proc, partials, seen, clock = make(window_ms=5_000, timeout_ms=1_000)
    feed = Feeder(proc, clock=clock)
    for i in range(20):
        feed(segment_records(f"Code {i:04d} " * 30, 0, "udh8", i)[0])  # first parts only: they time out
    for i in range(10):
        for r in segment_records(f"Msg {i} " * 40, 0, "udh16", 100 + i):
            feed(r)
    assert seen
    clock.t += 20
    feed(segment_records("later", 0, "single", 0)[0])  # stream time moves past the window
    feed.tick()
    assert len(seen) > 1 and partials  # not committed yet: a replay could still need them
    feed.commit()
    feed.tick()
    assert list(seen) == [k for k, v in seen.items() if v["at"] == int(clock.t * 1000)]
    assert partials == {}


def test_expiry_index_is_rebuilt_from_the_table_after_restart():
    proc, partials, seen, clock = make(window_ms=5_000)
    feed = Feeder(proc, clock=clock)
    for i in range(5):
        feed(segment_records(f"Code {i}", 0, "single", 0)[0])
    # a new worker process: same (recovered) tables, fresh processor, reading on from the committed offset
    proc2 = IngestProcessor(partials, seen, proc.settings, clock=clock)
    feed2 = Feeder(proc2, clock=clock)
    feed2.offset = feed.offset
    feed2.tick()
    assert len(seen) == 5
    clock.t += 12
    feed2(segment_records("Code later", 0, "single", 0)[0])
    feed2.commit()
    feed2.tick()
    assert len(seen) == 1


def test_receipt_goes_to_receipts_not_to_customers():
    proc, _, _, _ = make()
    fields = "id:1A2B3C4D sub:001 dlvrd:001 submit date:2603031234 done date:2603031235"
    text = (fields + " stat:DELIVRD err:000 text:hi").encode()
    pdu = deliver_sm_bytes("85261234567", "85230001000", text, 0, esm_class=0x04)
    outs = Feeder(proc)(raw_record(pdu, "85261234567", "85230001000", 0, esm_class=0x04))
    assert [o.kind for o in outs] == ["receipt"]
    r = outs[0].record
    assert (
        r["message_id"] == "1A2B3C4D"
        and r["state"] == "DELIVRD"
        and r["message_id_decimal"] == str(0x1A2B3C4D)
    )


def test_receipt_by_tlvs_with_intermediate_esm_class():
    proc, _, _, _ = make()
    tlvs = [(0x001E, b"12345\x00"), (0x0427, bytes([2]))]
    pdu = deliver_sm_bytes("85261234567", "85230001000", b"", 0, esm_class=0x20, tlvs=tlvs)
    outs = Feeder(proc)(raw_record(pdu, "85261234567", "85230001000", 0, esm_class=0x20))
    assert [o.kind for o in outs] == ["receipt"] and outs[0].record["state"] == "DELIVRD"


def test_malformed_pdus_are_quarantined_with_a_reason():
    proc, _, _, _ = make()
    feed = Feeder(proc)
    bad_udh = deliver_sm_bytes("85261234567", "85230001000", b"\x09\x00\x03\x01", 0, esm_class=0x40)
    out = feed(raw_record(bad_udh, "85261234567", "85230001000", 0, esm_class=0x40))
    assert [o.kind for o in out] == ["quarantine"] and "user data header" in out[0].record["reason"]
    out = feed(raw_record(b"\x00\x00\x00\x10garbage!", "x", "y", 0))
    assert [o.kind for o in out] == ["quarantine"] and "does not decode" in out[0].record["reason"]
    odd = deliver_sm_bytes("85261234567", "85230001000", b"\x00\x41\x00", 8)
    out = feed(raw_record(odd, "85261234567", "85230001000", 8))
    assert [o.kind for o in out] == ["quarantine"] and "data_coding 0x08" in out[0].record["reason"]


def test_binary_message_is_kept_as_base64():
    proc, _, _, _ = make()
    data = bytes(range(0, 200, 7))
    pdu = deliver_sm_bytes("85261234567", "85230001000", data, 4)
    m = inbound(Feeder(proc)(raw_record(pdu, "85261234567", "85230001000", 4)))[0]
    import base64

    assert m["encoding"] == "binary" and base64.b64decode(m["body"]) == data


# ---- property: any texts, any segmentation, order, duplication, interleaving -> each text once -------
ALPHABETS = {
    0: st.text(
        alphabet=st.sampled_from(list("abcXYZ 0123@$_!?\n") + list("{}[]~^|\\€")), min_size=1, max_size=400
    ),
    3: st.text(alphabet=st.sampled_from(list("abcdeé ñ¿ü0123")), min_size=1, max_size=400),
    8: st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFFF), min_size=1, max_size=300
    ),
}


@st.composite
def sms_batch(draw):
    n = draw(st.integers(1, 8))
    items = []
    for i in range(n):
        dc = draw(st.sampled_from([0, 3, 8]))
        method = draw(st.sampled_from(["udh8", "udh16", "sar", "payload", "single"]))
        base = draw(ALPHABETS[dc])
        # a single part carries at most 254 octets: 100 characters fit in every alphabet drawn here
        text = (base[:100] if method == "single" else base) + f" #{i}"
        anywhere = draw(st.booleans())
        items.append((text, dc, method, anywhere, draw(st.integers(0, 255))))
    return items, draw(st.randoms(use_true_random=False)), draw(st.integers(0, 3))


@given(sms_batch())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_every_message_once_whole(batch):
    items, rnd, dup_factor = batch
    proc, partials, _, _ = make()
    feed = Feeder(proc)
    records = []
    for i, (text, dc, method, anywhere, ref) in enumerate(items):
        records += segment_records(text, dc, method, ref, source=f"8526100{i:04d}", split_anywhere=anywhere)
    for _ in range(dup_factor):
        records.append(rnd.choice(records))
    random.Random(rnd.random()).shuffle(records)
    outs = []
    for r in records:
        outs += feed(r)
    bodies = sorted(m["body"] for m in inbound(outs))
    assert bodies == sorted(t for t, *_ in items)
    assert open_partials(partials) == []


# ---- property: a crash at any point, with the tables flushed to any point at or past the commit ---------
class LoggedTable(dict):
    """A dict that logs its writes, as a Faust table's changelog does."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, object]] = []

    def __setitem__(self, k, v):
        super().__setitem__(k, v)
        self.log.append((k, v))

    def __delitem__(self, k):
        super().__delitem__(k)
        self.log.append((k, None))


def restore(log: list, upto: int) -> dict:
    out: dict = {}
    for k, v in log[:upto]:
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


@st.composite
def crash_run(draw):
    n = draw(st.integers(2, 6))
    items = []
    for i in range(n):
        dc = draw(st.sampled_from([0, 8]))
        method = draw(st.sampled_from(["udh8", "sar", "payload", "single"]))
        base = draw(ALPHABETS[dc])
        if method == "single":
            text = base[:60] + f" #{i}"
        else:  # long enough for 2-4 segments
            text = (base * (1 + 400 // len(base)))[: draw(st.integers(200, 400))] + f" #{i}"
        items.append((text, dc, method, draw(st.integers(0, 255))))
    return items, draw(st.randoms(use_true_random=False))


@given(crash_run())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_a_replay_from_any_commit_with_tables_ahead_rederives_the_same_ids(run):
    """Issue 10. The agent drains its producer before each commit, so after a crash the tables hold every
    write of the records before the committed offset and, per table, any prefix of the later ones; the output
    topic holds every output before the commit and any subset of the later ones. Whatever the cut, replaying
    from the commit delivers every SMS, whole, under one id."""
    items, rnd = run
    records = crash_records(items, rnd)
    settings_ = IngestSettings(reassembly_timeout_ms=60_000, dedup_window_ms=600_000)
    partials, seen = LoggedTable(), LoggedTable()
    proc = IngestProcessor(partials, seen, settings_, clock=Clock())
    writes_before: list[tuple[int, int]] = []  # per record: table log lengths before it
    outputs: list[list] = []
    for off in range(len(records)):
        writes_before.append((len(partials.log), len(seen.log)))
        outputs.append(handle_at(proc, records, off))
    commit = rnd.randint(0, len(records))
    floor = writes_before[commit] if commit < len(records) else (len(partials.log), len(seen.log))
    cut_p = rnd.randint(floor[0], len(partials.log))
    cut_s = rnd.randint(floor[1], len(seen.log))
    delivered = [m for outs in outputs[:commit] for m in outs]
    delivered += [m for outs in outputs[commit:] for m in outs if rnd.random() < 0.5]
    proc2 = IngestProcessor(restore(partials.log, cut_p), restore(seen.log, cut_s), settings_, clock=Clock())
    delivered += [m for off in range(commit, len(records)) for m in handle_at(proc2, records, off)]
    assert_each_sms_whole_under_one_id(delivered, items)


def crash_records(items: list, rnd: random.Random) -> list[dict]:
    """The raw records of ``items`` (a crash_run), with carrier retransmissions of single PDUs, parts of
    multipart SMS included, after their originals."""
    records: list[dict] = []
    for i, (text, dc, method, ref) in enumerate(items):
        records += segment_records(text, dc, method, ref, source=f"8526100{i:04d}")
    for _ in range(rnd.randint(0, 4)):
        j = rnd.randrange(len(records))
        records.insert(rnd.randint(j + 1, len(records)), records[j])
    return records


def handle_at(proc: IngestProcessor, records: list[dict], off: int) -> list[dict]:
    """Record ``off`` of partition 0 through the processor (its deferred steps run): the messages out."""
    outs = proc.on_raw({**records[off], "received_at": T0 + off}, RecordOrigin("sms.raw.v1", 0, off), None)
    outs.apply_deferred()
    return inbound(outs)


def assert_each_sms_whole_under_one_id(delivered: list[dict], items: list) -> None:
    """Every SMS of ``items`` delivered, none incomplete, each under one message id (however often)."""
    ids_by_body: dict[str, set[str]] = {}
    for m in delivered:
        assert not m["incomplete"], m
        ids_by_body.setdefault(m["body"], set()).add(m["message_id"])
    assert sorted(ids_by_body) == sorted(t for t, *_ in items)
    assert all(len(ids) == 1 for ids in ids_by_body.values()), ids_by_body


# ---- bounded work and state per record (issue 9) ---------------------------------------------------------
def test_a_255_part_sms_writes_one_small_key_per_part_not_the_whole_message_each_time():
    partials, seen = LoggedTable(), LoggedTable()
    proc = IngestProcessor(partials, seen, IngestSettings(), clock=Clock())
    text = "x" * (153 * 255)
    recs = segment_records(text, 0, "udh8", 77)
    assert len(recs) == 255
    outs = []
    for off, r in enumerate(recs):
        outs += proc.on_raw(r, RecordOrigin("sms.raw.v1", 0, off), None)
    assert [m["body"] for m in inbound(outs)] == [text]
    import json

    sizes = [len(k) + len(json.dumps(v)) for k, v in partials.log]
    # one write per part plus the header's open and close: was 255 rewrites of everything held (7 MB)
    assert len(partials.log) == 255 + 2
    assert max(sizes) < 2_000 and sum(sizes) < 150_000


def test_segment_count_and_reassembled_size_beyond_the_caps_are_quarantined_with_a_reason():
    proc = IngestProcessor({}, {}, IngestSettings(max_segments=3, max_message_bytes=400), clock=Clock())
    feed = Feeder(proc)
    outs = feed(segment_records("y" * 700, 0, "udh8", 1)[0])  # announces 5 parts
    assert [o.kind for o in outs] == ["quarantine"] and "segment count 5 exceeds the cap of 3" in outs[
        0
    ].record["reason"]
    recs = segment_records("z" * 450, 0, "udh8", 2)  # 3 parts, 450 octets
    outs = []
    for r in recs:
        outs += feed(r)
    assert [o.kind for o in outs] == ["quarantine"]
    assert "exceed the cap of 400 octets" in outs[0].record["reason"]
    assert outs[0].record["source_offset"] == feed.offset - 1


def test_an_idle_settled_partition_expires_by_the_wall_clock():
    proc, partials, seen, clock = make(window_ms=5_000, timeout_ms=1_000)
    feed = Feeder(proc, clock=clock)
    for r in segment_records("W" * 400, 0, "udh8", 3):
        feed(r)
    assert seen and partials
    clock.t += 12
    feed.tick(caught_up=True)  # caught up but not yet committed: a replay could still need the state
    assert seen and partials
    proc.on_tick(0, caught_up=True, settled=True).apply_deferred()
    assert seen == {} and partials == {}
