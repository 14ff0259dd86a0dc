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


def test_a_final_track_is_prunable_once_its_retention_has_passed_after_its_validity_and_last_change() -> None:
    index = ExpiryIndex(retention_ms=10_000)
    index.rebuild(0, [])
    index.note(0, "early", 5_000, True, 1_000)  # delivered at 1 s, valid until 5 s: kept until 15 s
    index.note(0, "late", 5_000, True, 8_000)  # a receipt at 8 s, after its validity: kept until 18 s
    index.note(0, "open", 5_000, False)  # not final: never pruned (the validity tick makes it final first)
    assert index.prunable(0, 14_999) == []
    assert index.prunable(0, 15_000) == ["early"]
    assert index.prunable(0, 17_999) == []
    assert index.prunable(0, 60_000) == ["late"]
    assert index.prunable(0, 60_000) == []  # once
    assert index.kept(0) == 0 and index.pending(0) == 1


def test_a_final_track_that_changes_again_is_kept_from_its_new_last_change() -> None:
    index = ExpiryIndex(retention_ms=10_000)
    index.rebuild(0, [])
    index.note(0, "m", 5_000, True, 6_000)  # expired at 6 s...
    index.note(0, "m", 5_000, True, 20_000)  # ...then its delivery receipt came at 20 s
    assert index.prunable(0, 16_000) == []  # the first prune time is stale
    assert index.prunable(0, 30_000) == ["m"]


def test_the_rebuild_keeps_final_tracks_for_pruning_and_the_prune_is_bounded_per_call() -> None:
    index = ExpiryIndex(retention_ms=10_000)
    index.rebuild(0, [("a", 1_000, True, 2_000), ("b", 1_000, True), ("c", 1_000, False, 0)])
    assert index.kept(0) == 2 and index.pending(0) == 1
    assert index.prunable(0, 11_000) == ["b"]  # no last change given: its validity counts
    index.rebuild(1, [(f"m{i}", 0, True, 0) for i in range(25)])
    assert len(index.prunable(1, 10_000, limit=10)) == 10
    assert len(index.prunable(1, 10_000, limit=100)) == 15


def test_an_unbuilt_or_revoked_partition_prunes_nothing() -> None:
    index = ExpiryIndex(retention_ms=10)
    index.note(0, "m", 0, True, 0)
    assert index.prunable(0, 1_000_000) == []
    index.rebuild(0, [("m", 0, True, 0)])
    index.forget(0)
    assert index.prunable(0, 1_000_000) == []


def test_a_track_noted_open_again_is_not_pruned() -> None:
    index = ExpiryIndex(retention_ms=10)
    index.rebuild(0, [])
    index.note(0, "m", 0, True, 0)
    index.note(0, "m", 1_000, False)  # the table says it is open after all (see OutboundStage._prune)
    assert index.prunable(0, 1_000_000) == []
    assert index.due(0, 1_000) == ["m"]
