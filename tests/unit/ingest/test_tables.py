"""ADR 0007 step 1: ingest tables as plain dicts whose changelogs a Faust worker can read and vice versa.

The Faust side is Faust itself: the worker's table declarations (``app.Table(name, default=None,
partitions=...)`` as streams/topology.py makes them) and the changelog topic's own serializers
(``Topic.prepare_key`` / ``prepare_value``, what ``Table.send_changelog`` sends; ``app.serializers.loads_*``,
what Faust's recovery reads). No broker: nothing is sent.
"""

from __future__ import annotations

import random
from collections import UserDict
from typing import Any

import faust
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from smsflow.ingest.tables import (
    INGEST_TABLES,
    ChangelogError,
    ChangelogTable,
    changelog_topic,
    decode_key,
    encode_key,
    encode_value,
)
from tests.factories import segment_records
from tests.unit.ingest.test_processor import (
    assert_each_sms_whole_under_one_id,
    crash_records,
    crash_run,
    handle_at,
)

T0 = 1_700_000_000_000
PARTITIONS = 6
CHINESE = "您的验证码是 482913，五分钟内有效。请勿向任何人透露此验证码。" * 3


class Clock:
    def __init__(self, t: float = T0 / 1000) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FaustSide:
    """The worker's two ingest tables as Faust declares them, and Faust's changelog encoding of them."""

    def __init__(self) -> None:
        self.app = faust.App("e2e-tables", broker="kafka://127.0.0.1:1", store="memory://")
        self.tables = {
            name: self.app.Table(name, default=None, partitions=PARTITIONS) for name in INGEST_TABLES
        }

    def record(self, table: str, key: str, value: Any) -> tuple[bytes, bytes | None]:
        """The changelog record Faust's ``Table.send_changelog`` would send (a tombstone for None)."""
        t = self.tables[table]
        raw_key, _ = t.changelog_topic.prepare_key(key, t.key_serializer)
        raw_value = None if value is None else t.changelog_topic.prepare_value(value, t.value_serializer)[0]
        return raw_key, raw_value

    def read(self, table: str, raw_key: bytes, raw_value: bytes | None) -> tuple[Any, Any]:
        """What Faust's recovery makes of a changelog record."""
        t = self.tables[table]
        key = self.app.serializers.loads_key(None, raw_key, serializer=t.key_serializer)
        value = (
            None
            if raw_value is None
            else self.app.serializers.loads_value(None, raw_value, serializer=t.value_serializer)
        )
        return key, value


def traffic(seed: int = 7) -> list[tuple[int, dict[str, Any]]]:
    """(partition, raw record): single and multipart SMS, GSM and UCS-2, with carrier retransmissions."""
    rnd = random.Random(seed)
    out: list[tuple[int, dict[str, Any]]] = []
    for i in range(60):
        text = rnd.choice(["Your code is 1234", "x" * 400, CHINESE, "Hi " * 90])
        dc = 8 if text == CHINESE else 0
        recs = segment_records(
            text, dc, rnd.choice(["udh8", "udh16", "sar"]), i % 250, source=f"8526100{i:04d}"
        )
        part = i % PARTITIONS  # keyed by conversation, as sms.raw.v1 is: a sender stays in one partition
        out += [(part, r) for r in recs]
        if rnd.random() < 0.2:
            out.append((part, rnd.choice(recs)))  # a retransmission
    return out


def run(
    records: list[tuple[int, dict[str, Any]]],
    partials: Any,
    seen: Any,
    batch: int = 16,
    settle_at_ms: int | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, int, bytes, bytes | None]]]:
    """Feed records through IngestProcessor over the tables; per batch, drain both tables' writes as the
    loop would produce them. Returns the inbound messages and the changelog records (table, partition,
    key, value) in produce order. ``settle_at_ms``: then expire, every partition settled at that time
    (dedup entries and finished messages deleted: tombstones)."""
    proc = IngestProcessor(partials, seen, IngestSettings(reassembly_timeout_ms=60_000), clock=Clock())
    offsets = [0] * PARTITIONS
    inbound: list[dict[str, Any]] = []
    log: list[tuple[str, int, bytes, bytes | None]] = []
    for i, (part, rec) in enumerate(records):
        partials.partition = seen.partition = part
        outs = proc.on_raw(rec, RecordOrigin("sms.raw.v1", part, offsets[part]), None)
        outs.apply_deferred()
        offsets[part] += 1
        inbound += [o.record for o in outs if o.kind == "inbound"]
        if (i + 1) % batch == 0 or i + 1 == len(records):
            log += drained(partials, seen)
    if settle_at_ms is not None:
        for part in range(PARTITIONS):
            partials.partition = seen.partition = part
            proc.on_tick(part, settled=True, now_ms=settle_at_ms).apply_deferred()
        log += drained(partials, seen)
    return inbound, log


def drained(partials: Any, seen: Any) -> list[tuple[str, int, bytes, bytes | None]]:
    if not isinstance(partials, ChangelogTable):
        return []  # a Faust-like table logs its own writes
    tables = zip(INGEST_TABLES, (partials, seen), strict=True)
    return [(name, p, k, v) for name, t in tables for p, k, v in t.drain_records()]


def test_the_changelog_topic_is_the_one_faust_declares() -> None:
    faust_side = FaustSide()
    for name, table in faust_side.tables.items():
        assert changelog_topic("e2e-tables", name) == table.changelog_topic.get_topic_name()


def test_what_the_processor_writes_is_encoded_byte_for_byte_as_faust_encodes_it() -> None:
    faust_side = FaustSide()
    partials, seen = ChangelogTable(), ChangelogTable()
    _inbound, log = run(traffic(), partials, seen, settle_at_ms=T0 + 10**9)
    assert {name for name, *_ in log} == set(INGEST_TABLES)
    assert any(v is None for *_, v in log), "the traffic should delete keys (closed messages' parts)"
    for name, _p, raw_key, raw_value in log:
        key, value = faust_side.read(name, raw_key, raw_value)
        assert (raw_key, raw_value) == faust_side.record(name, key, value)


def test_a_changelog_faust_wrote_restores_the_same_tables() -> None:
    """The migration direction: a Faust worker's changelog, read back by the loop's tables."""
    faust_side = FaustSide()
    faust_tables: dict[str, dict[str, Any]] = {name: {} for name in INGEST_TABLES}
    log: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}

    class FaustLike(UserDict):  # logs each write as Faust's table sends it (pop, update: through these)
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name, self.partition = name, 0

        def __setitem__(self, k: str, v: Any) -> None:
            super().__setitem__(k, v)
            log.setdefault((self.name, self.partition), []).append(faust_side.record(self.name, k, v))

        def __delitem__(self, k: str) -> None:
            super().__delitem__(k)
            log.setdefault((self.name, self.partition), []).append(faust_side.record(self.name, k, None))

    partials, seen = FaustLike(INGEST_TABLES[0]), FaustLike(INGEST_TABLES[1])
    run(traffic(seed=11), partials, seen, settle_at_ms=T0 + 10**9)  # written, then expired: tombstones
    run(traffic(seed=12), partials, seen)  # written, kept
    assert any(v is None for records in log.values() for _k, v in records)
    faust_tables = {INGEST_TABLES[0]: dict(partials), INGEST_TABLES[1]: dict(seen)}
    assert faust_tables[INGEST_TABLES[0]] and faust_tables[INGEST_TABLES[1]]
    for name in INGEST_TABLES:
        restored = ChangelogTable()
        for part in range(PARTITIONS):
            restored.restore(part, log.get((name, part), []))
        assert restored.data == faust_tables[name]
        assert restored.pending == 0  # restored state is already in the changelog


def test_a_batch_writes_every_change_in_order_and_merges_only_a_keys_consecutive_writes() -> None:
    t = ChangelogTable()
    t.partition = 2
    t["a"] = {"v": 1}
    t["b"] = {"v": 1}
    t["a"] = {"v": 2}
    del t["b"]
    t["c"] = {"v": 3}
    t["c"] = {"v": 4}  # at once after the last: one write
    assert t.drain() == [
        (2, "a", {"v": 1}),
        (2, "b", {"v": 1}),
        (2, "a", {"v": 2}),
        (2, "b", None),
        (2, "c", {"v": 4}),
    ]
    assert t.drain() == []  # drained: the next batch starts empty
    v = {"v": 5}
    t["a"] = v
    v["v"] = 6  # a later change to the object is not a write: the changelog has what was written
    assert t.drain_records() == [(2, b'"a"', b'{"v":5}')]


def test_restoring_its_own_drained_writes_gives_a_processor_that_carries_on_identically() -> None:
    """Restore is the whole recovery: tables rebuilt from the drained changelog, cut anywhere between
    batches, make a processor that emits exactly what the uninterrupted one emits for the rest."""
    records = traffic(seed=3)
    partials, seen = ChangelogTable(), ChangelogTable()
    full, _ = run(records, partials, seen)
    for cut in (0, 17, len(records) // 2, len(records) - 5):
        p1, s1 = ChangelogTable(), ChangelogTable()
        first, log = run(records[:cut], p1, s1)
        p2, s2 = ChangelogTable(), ChangelogTable()
        for name, table in zip(INGEST_TABLES, (p2, s2), strict=True):
            for part in range(PARTITIONS):
                table.restore(part, [(k, v) for n, p, k, v in log if n == name and p == part])
        assert (p2.data, s2.data) == (p1.data, s1.data)
        rest = _continue(records, cut, p2, s2)
        assert [m["message_id"] for m in first + rest] == [m["message_id"] for m in full]
        assert [m["body"] for m in first + rest] == [m["body"] for m in full]


def _continue(
    records: list[tuple[int, dict[str, Any]]], cut: int, partials: Any, seen: Any
) -> list[dict[str, Any]]:
    proc = IngestProcessor(partials, seen, IngestSettings(reassembly_timeout_ms=60_000), clock=Clock())
    offsets = [0] * PARTITIONS
    for part, _rec in records[:cut]:
        offsets[part] += 1
    inbound: list[dict[str, Any]] = []
    for part, rec in records[cut:]:
        partials.partition = seen.partition = part
        outs = proc.on_raw(rec, RecordOrigin("sms.raw.v1", part, offsets[part]), None)
        outs.apply_deferred()
        offsets[part] += 1
        inbound += [o.record for o in outs if o.kind == "inbound"]
    return inbound


def test_forgetting_a_partition_drops_its_keys_and_pending_writes_only() -> None:
    t = ChangelogTable()
    t.restore(1, [(b'"a"', b"1"), (b'"b"', b"2")])
    t.restore(4, [(b'"c"', b"3")])
    t.partition = 1
    t["d"] = 4
    t.partition = 4
    t["e"] = 5
    assert t.forget_partition(1) == 3
    assert t.data == {"c": 3, "e": 5}
    assert t.drain() == [(4, "e", 5)]


def test_a_tombstone_deletes_and_the_last_record_of_a_key_wins() -> None:
    t = ChangelogTable()
    assert t.restore(0, [(b'"a"', b"1"), (b'"b"', b"2"), (b'"a"', None), (b'"b"', b"3"), (b'"x"', None)]) == 5
    assert t.data == {"b": 3}


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        (None, b"1", "without a key"),
        (b"not json", b"1", "key is not JSON"),
        (b"42", b"1", "not a JSON string"),
        (b'"k"', b"{broken", "value is not JSON"),
    ],
)
def test_an_unreadable_changelog_record_is_refused_with_the_reason(key: Any, value: Any, error: str) -> None:
    with pytest.raises(ChangelogError, match=error):
        ChangelogTable().restore(0, [(key, value)])


def test_keys_are_strings_and_none_is_not_a_value() -> None:
    with pytest.raises(TypeError, match="strings"):
        encode_key(42)  # type: ignore[arg-type]
    t = ChangelogTable()
    with pytest.raises(ValueError, match="cannot be None"):
        t["k"] = None
    assert encode_value(None) is None
    assert decode_key(encode_key("h|中文|1")) == "h|中文|1"


# ---- the loop's crash cut: anywhere inside a batch's changelog writes ------------------------------------


@given(crash_run(), st.integers(1, 8))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_a_crash_inside_a_batchs_changelog_writes_rederives_the_same_ids(
    run: Any, batch: int
) -> None:
    """The direct loop (ADR 0007) writes a batch's table changes after its records and commits only after the
    flush; a crash can leave, per changelog partition, any prefix of what the batch wrote (idempotent
    production keeps a partition's order and leaves no gaps). Whatever that prefix and whatever subset of the
    batch's outputs landed, replaying from the committed offset delivers every SMS, whole, under one id: the
    same property the Faust agent has (tests/unit/ingest/test_processor.py), for the loop's drained writes."""
    items, rnd = run
    records = crash_records(items, rnd)
    settings_ = IngestSettings(reassembly_timeout_ms=60_000, dedup_window_ms=600_000)
    partials, seen = ChangelogTable(), ChangelogTable()
    proc = IngestProcessor(partials, seen, settings_, clock=Clock())
    logs: dict[str, list[tuple[bytes, bytes | None]]] = {"p": [], "s": []}
    committed_at: list[tuple[int, int, int]] = [(0, 0, 0)]  # (next offset, log lengths) at each commit
    outputs: list[list[dict[str, Any]]] = []
    for start in range(0, len(records), batch):
        outputs += [handle_at(proc, records, off) for off in range(start, min(start + batch, len(records)))]
        logs["p"] += [(k, v) for _, k, v in partials.drain_records()]
        logs["s"] += [(k, v) for _, k, v in seen.drain_records()]
        committed_at.append((min(start + batch, len(records)), len(logs["p"]), len(logs["s"])))
    commit, floor_p, floor_s = committed_at[rnd.randrange(len(committed_at))]
    cut_p = rnd.randint(floor_p, len(logs["p"]))
    cut_s = rnd.randint(floor_s, len(logs["s"]))
    delivered = [m for outs in outputs[:commit] for m in outs]
    delivered += [m for outs in outputs[commit:] for m in outs if rnd.random() < 0.5]
    p2, s2 = ChangelogTable(), ChangelogTable()
    p2.restore(0, logs["p"][:cut_p])
    s2.restore(0, logs["s"][:cut_s])
    proc2 = IngestProcessor(p2, s2, settings_, clock=Clock())
    delivered += [m for off in range(commit, len(records)) for m in handle_at(proc2, records, off)]
    assert_each_sms_whole_under_one_id(delivered, items)
