"""Record origins, dedup entries and reassembly entries are typed in Python and keep the encoding the
tables have always stored, so a worker restarted on this code reads the state an older worker wrote."""

from __future__ import annotations

from smsflow.ingest.dedup import DedupWindow, SeenEntry, message_id
from smsflow.ingest.origin import RecordOrigin, is_replay
from smsflow.ingest.reassembly import HeldPart, PartialHeader, PartStore, Segment, part_digest


def test_an_origin_keeps_its_text_form_which_ids_are_derived_from() -> None:
    origin = RecordOrigin("sms.raw.v1", 3, 1042)
    assert str(origin) == "sms.raw.v1:3:1042"
    assert RecordOrigin.parse(str(origin)) == origin
    assert RecordOrigin.parse("timeout|k|1700000000000|t") is None
    # the id of a message completed at this position is what it was before origins had a type
    assert message_id("m:abc", str(origin)) == message_id("m:abc", "sms.raw.v1:3:1042")


def test_replays_are_records_at_or_before_the_one_that_completed_the_copy_on_the_same_partition() -> None:
    seen = "sms.raw.v1:3:1042"
    assert is_replay(seen, "sms.raw.v1:3:1042") and is_replay(seen, "sms.raw.v1:3:1000")
    assert not is_replay(seen, "sms.raw.v1:3:1043")  # a carrier's retransmission, later in the partition
    assert not is_replay(seen, "sms.raw.v1:4:10")  # another partition
    assert is_replay("timeout|k|5|t", "timeout|k|5|t") and not is_replay("timeout|k|5|t", "sms.raw.v1:3:1")


def test_a_seen_entry_reads_and_writes_the_stored_table_value() -> None:
    stored = {"o": "sms.raw.v1:0:5", "at": 1_700_000_000_000, "p": 0}  # as written by every earlier worker
    entry = SeenEntry.from_table(stored)
    assert (entry.origin, entry.at, entry.partition) == ("sms.raw.v1:0:5", 1_700_000_000_000, 0)
    assert entry.to_table() == stored


def test_reassembly_entries_read_and_write_the_stored_table_values() -> None:
    open_header = {
        "p": 2,
        "first": 1_700_000_000_000,
        "total": 3,
        "dc": 8,
        "meta": {"carrier_id": "c1", "src": "85261234567"},
        "ies": [[0x24, "AQ=="]],
        "st": "open",
    }
    hdr = PartialHeader.from_table(open_header)
    assert (hdr.partition, hdr.total, hdr.data_coding, hdr.is_open) == (2, 3, 8, True)
    assert hdr.to_table() == open_header
    done = {**open_header, "st": "done", "xo": "sms.raw.v1:2:99", "at": 1_700_000_000_500}
    closed = PartialHeader.from_table(done)
    assert (closed.completed_by, closed.closed_at, closed.is_open) == (
        "sms.raw.v1:2:99",
        1_700_000_000_500,
        False,
    )
    assert closed.to_table() == done
    part = {"o": 97, "d": "3f2a", "b": "aGVsbG8=", "at": 1_700_000_000_100, "tp": None}
    held = HeldPart.from_table(part)
    assert (held.offset, held.digest, held.traceparent) == (97, "3f2a", None)
    assert held.to_table() == part


def test_a_part_store_writes_what_older_workers_read() -> None:
    table: dict[str, object] = {}
    store = PartStore(table)  # type: ignore[arg-type]
    seg = Segment(
        "c1", "r1", "85261234567", "85230001000", 0, b"hi", 5, ref=9, ref_bits=8, total=2, meta={"m": 1}
    )
    hdr = store.open("k", seg, partition=0)
    store.put_part("k", seg, offset=7, traceparent="tp")
    assert table["h|k"] == {
        "p": 0,
        "first": 5,
        "total": 2,
        "dc": 0,
        "meta": {"m": 1},
        "ies": [],
        "st": "open",
    }
    assert table["s|k|1"] == {"o": 7, "d": part_digest(b"hi"), "b": "aGk=", "at": 5, "tp": "tp"}
    store.close("k", hdr, "done", "sms.raw.v1:0:7", 6)
    assert table["h|k"] == {
        **{"p": 0, "first": 5, "total": 2, "dc": 0, "meta": {"m": 1}, "ies": []},
        **{"st": "done", "xo": "sms.raw.v1:0:7", "at": 6},
    }
    assert store.held("k", 2) == {1: HeldPart(7, part_digest(b"hi"), "aGk=", 5, "tp")}


def test_the_dedup_window_decides_remembers_and_expires() -> None:
    table: dict[str, object] = {}
    window = DedupWindow(table, window_ms=1000)  # type: ignore[arg-type]
    assert window.check("fp", "sms.raw.v1:0:5", t=100) == "new"
    window.remember("fp", SeenEntry("sms.raw.v1:0:5", 100, 0))
    assert window.check("fp", "sms.raw.v1:0:9", t=600) == "duplicate"  # a copy within the window
    assert window.check("fp", "sms.raw.v1:0:5", t=100) == "replay"  # the same record after a crash
    assert window.check("fp", "sms.raw.v1:0:9", t=1100) == "new"  # the window has passed
    assert [k for k, _ in window.entries_of(0)] == ["fp"] and list(window.entries_of(1)) == []
    assert not window.expire("fp", horizon=1099) and window.expire("fp", horizon=1100)
    assert table == {}
