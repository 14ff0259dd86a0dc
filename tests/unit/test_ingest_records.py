"""Record origins and dedup entries are typed in Python and keep the encoding the tables have always stored,
so a worker restarted on this code reads the state an older worker wrote."""

from __future__ import annotations

from smsflow.ingest.dedup import SeenEntry, message_id
from smsflow.ingest.origin import RecordOrigin, is_replay


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
