"""Issue 9/13: the work of one multipart SMS is linear in its parts. Each part asked the table for every part
held so far: a legal 255-part SMS cost 130,050 table reads (~0.5 s of the worker's event loop, which the
SMS of every other partition waited for; tests/e2e/test_hostile_input.py's volume phase)."""

from __future__ import annotations

from typing import Any

from smsflow.ingest.origin import RecordOrigin
from smsflow.ingest.processor import IngestProcessor, IngestSettings
from smsflow.ingest.reassembly import PartStore, part_key
from tests.factories import CountingTable, segment_records


def test_a_255_part_sms_reads_the_table_a_bounded_number_of_times_per_part() -> None:
    partials, seen = CountingTable(), CountingTable()
    proc = IngestProcessor(partials, seen, IngestSettings())
    text = "x" * (153 * 255)
    records = segment_records(text, 0, "udh8", 77)
    assert len(records) == 255
    bodies = []
    for off, rec in enumerate(records):
        bodies += [p.record["body"] for p in proc.on_raw(rec, RecordOrigin("sms.raw.v1", 0, off), None)]
    assert bodies == [text]
    # header and own part per record, one scan of the held parts for the message: was 130,050
    assert partials.reads <= 3 * 255 + 255, partials.reads


def test_after_a_rebalance_the_parts_are_read_from_the_table_again() -> None:
    """Another worker may have written the partition's parts while it was away: nothing stale is used."""
    table: dict[str, Any] = {}
    seg = segment_records("y" * 400, 0, "udh8", 5)
    proc = IngestProcessor(table, {}, IngestSettings())
    proc.on_raw(seg[0], RecordOrigin("sms.raw.v1", 0, 0), None)
    rkey = next(k[2:] for k in table if k.startswith("h|"))
    assert sorted(proc.parts.held(rkey, 3)) == [1]
    # the partition goes away and comes back with a part another worker stored meanwhile
    other = PartStore(table)
    proc2 = IngestProcessor(table, {}, IngestSettings())
    proc2.on_raw(seg[1], RecordOrigin("sms.raw.v1", 0, 1), None)
    assert part_key(rkey, 2) in table and sorted(other.held(rkey, 3)) == [1, 2]
    proc.forget_partition(0)
    outs = proc.on_raw(seg[2], RecordOrigin("sms.raw.v1", 0, 2), None)
    # the part stored elsewhere counts: without the fresh read, the message would wait for a timeout
    assert [o.record["body"] for o in outs] == ["y" * 400]
