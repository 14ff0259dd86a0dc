"""The references table's entries go once every reference in them has aged out (24 h after its last use):
the index (`RefsIndex`) says when. The stage's side (the table decides, partitions are independent) is in
tests/unit/streams/test_outbound_expiry.py."""

from __future__ import annotations

from typing import Any

from smsflow.outbound.references import DAY_MS, RefsIndex, allocate_in, destination_of, free_at, refs_key

T = 1_000_000_000


def test_an_entry_is_free_a_day_after_its_last_use_and_a_reuse_moves_it() -> None:
    table: dict[str, Any] = {}
    allocate_in(table, "ACME", "+85291000001", T)
    allocate_in(table, "ACME", "+85291000001", T + 5_000)
    (key,) = table
    assert key == refs_key("ACME", "+85291000001") and destination_of(key) == "+85291000001"
    assert free_at(table[key]) == T + 5_000 + DAY_MS
    index = RefsIndex()
    index.rebuild(0, table.items())
    assert index.due(0, T + DAY_MS + 4_999) == []
    assert index.due(0, T + DAY_MS + 5_000) == [key]
    assert index.due(0, T + 10 * DAY_MS) == []  # once
    index.note(0, key, {"cursor": 2, "used_at": [[1, T + 3 * DAY_MS]]})
    assert index.kept(0) == 1 and index.due(0, T + 4 * DAY_MS) == [key]
    index.forget(0)
    assert not index.built(0) and index.due(0, T + 99 * DAY_MS) == []
