"""Recover waits for the deliver stage before it reads the delivery history (smsflow/delivery/redelivery.py).

Found by CI: a recover right after a burst queued one message the subscription had just been sent — its
"delivered" event still lingered in the worker's outputs producer, so the history did not show it yet. The
scan now ends where the deliver stage's group has committed (every message before a committed offset has its
events stored), waiting for it up to a bound."""

from __future__ import annotations

from smsflow.delivery.redelivery import settled_ends


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += s


def asked(fn):  # type: ignore[no-untyped-def]
    """``committed`` as recover asks it: a coroutine."""

    async def ask(ps: list[int]) -> dict[int, int]:
        return fn(ps)  # type: ignore[no-any-return]

    return ask


async def test_waits_until_the_group_committed_to_the_ends():
    clock = Clock()
    seen: list[list[int]] = []

    # the group commits partition 0 at t=0.4 and partition 1 at t=1.0 (one commit interval later)
    def committed(ps: list[int]) -> dict[int, int]:
        seen.append(list(ps))
        return {0: 10 if clock.now >= 0.4 else 7, 1: 5 if clock.now >= 1.0 else 3}

    out = await settled_ends(
        {0: 2, 1: 0}, {0: 10, 1: 5}, asked(committed), 30, clock=clock, sleep=clock.sleep
    )
    assert out == {0: 10, 1: 5}
    assert 1.0 <= clock.now < 1.3  # no longer than needed
    assert seen[-1] == [1]  # a partition that is done is not asked for again


async def test_partitions_with_nothing_since_then_are_not_waited_for():
    clock = Clock()

    def committed(ps: list[int]) -> dict[int, int]:
        raise AssertionError(f"asked for {ps}")

    # partition 0: nothing since `since` (start == end); partition 1: empty
    out = await settled_ends({0: 4, 1: 0}, {0: 4, 1: 0}, asked(committed), 30, clock=clock, sleep=clock.sleep)
    assert out == {0: 4, 1: 0} and clock.now == 0


async def test_a_stage_that_never_catches_up_leaves_the_rest_to_it():
    clock = Clock()

    def committed(ps: list[int]) -> dict[int, int]:
        # partition 0 behind; 1 never committed (a worker that never ran); 2 caught up
        return {0: 6, 1: -1001, 2: 9}

    out = await settled_ends(
        {0: 2, 1: 3, 2: 0}, {0: 10, 1: 8, 2: 9}, asked(committed), 5, clock=clock, sleep=clock.sleep
    )
    # scan only what the stage finished; where it committed before `since`, nothing
    assert out == {0: 6, 1: 3, 2: 9}
    assert 5.0 <= clock.now < 5.3


async def test_no_wait_configured_takes_what_is_committed_now():
    clock = Clock()
    out = await settled_ends({0: 0}, {0: 10}, asked(lambda ps: {0: 4}), 0, clock=clock, sleep=clock.sleep)
    assert out == {0: 4} and clock.now == 0


async def test_a_group_that_cannot_be_asked_counts_as_not_committed():
    # the committed offsets cannot be read (a coordinator moving): waited for, then left to the stage
    clock = Clock()
    answers = iter([{}, {}, {0: 10}])
    out = await settled_ends(
        {0: 2}, {0: 10}, asked(lambda ps: next(answers)), 30, clock=clock, sleep=clock.sleep
    )
    assert out == {0: 10}
    clock = Clock()
    out = await settled_ends({0: 2}, {0: 10}, asked(lambda ps: {}), 1, clock=clock, sleep=clock.sleep)
    assert out == {0: 2}  # nothing scanned, all 8 left
