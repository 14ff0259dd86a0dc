"""The validity tick's index: due messages per partition, final tracks never due, a restart's rebuild."""

from __future__ import annotations

from smsflow.outbound.expiry import ExpiryIndex


def built(partition: int = 0, tracks: list[tuple[str, int, bool]] | None = None) -> ExpiryIndex:
    index = ExpiryIndex()
    index.rebuild(partition, tracks or [])
    return index


def test_only_tracks_whose_validity_passed_are_due_and_only_once() -> None:
    index = built(0, [("a", 1_000, False), ("b", 2_000, False), ("c", 3_000, False)])
    assert index.due(0, 999) == []
    assert sorted(index.due(0, 2_000)) == ["a", "b"]  # validity passed at expires_at_ms itself, as before
    assert index.due(0, 2_500) == []
    assert index.pending(0) == 1


def test_a_final_track_is_never_due() -> None:
    index = built(0, [("done", 1_000, True)])
    index.note(0, "fresh", 1_000, False)
    index.note(0, "fresh", 1_000, True)  # delivered before its validity passed
    assert index.due(0, 10_000) == []
    assert index.pending(0) == 0


def test_partitions_are_independent() -> None:
    index = built(0, [("a", 1_000, False)])
    index.rebuild(1, [("b", 1_000, False)])
    assert index.due(1, 5_000) == ["b"]
    assert index.due(0, 5_000) == ["a"]


def test_a_renoted_deadline_replaces_the_old_one() -> None:
    index = built(0)
    index.note(0, "a", 1_000, False)
    index.note(0, "a", 1_000, False)  # a replayed entry: one heap entry is enough
    index.note(0, "a", 5_000, False)
    assert index.due(0, 2_000) == []
    assert index.due(0, 5_000) == ["a"]


def test_notes_before_the_partition_is_built_are_left_to_the_rebuild() -> None:
    index = ExpiryIndex()
    index.note(3, "a", 1_000, False)
    assert not index.built(3)
    assert index.due(3, 10_000) == []
    index.rebuild(3, [("a", 1_000, False)])  # the table holds what was noted
    assert index.due(3, 10_000) == ["a"]


def test_a_restart_rebuild_expires_what_came_due_during_the_downtime_and_no_final_track() -> None:
    before = built(0)
    before.note(0, "due-in-downtime", 2_000, False)
    before.note(0, "delivered", 2_000, False)
    before.note(0, "delivered", 2_000, True)
    before.note(0, "later", 90_000, False)
    # the process dies; the table (recovered from its changelog) is what the new process reads
    table = [("due-in-downtime", 2_000, False), ("delivered", 2_000, True), ("later", 90_000, False)]
    after = ExpiryIndex()
    after.rebuild(0, table)
    assert after.due(0, 60_000) == ["due-in-downtime"]
    assert after.pending(0) == 1


def test_a_revoked_partition_is_forgotten_and_rebuilt_from_the_table_when_it_comes_back() -> None:
    index = built(0, [("a", 1_000, False)])
    index.forget(0)
    assert not index.built(0)
    index.note(0, "a", 1_000, True)  # written by another worker meanwhile: not ours to track
    index.rebuild(0, [("a", 1_000, True), ("b", 1_500, False)])
    assert index.due(0, 5_000) == ["b"]
