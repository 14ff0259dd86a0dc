from smsflow.delivery.batching import BatchAssembler
from smsflow.subscriptions.model import BatchConfig, Subscription


class Clock:
    t = 100.0

    def __call__(self):
        return self.t


def m(i):
    return {"message_id": f"m{i}"}


def test_unbatched_subscription_passes_messages_through():
    asm = BatchAssembler()
    sub = Subscription(owner="a", url="https://x.example")
    assert asm.add(sub, m(1)) == [m(1)]
    assert asm.next_deadline() is None


def test_full_batch_is_released_by_size_and_partial_by_time():
    clock = Clock()
    asm = BatchAssembler(clock)
    a = Subscription(owner="a", url="https://a.example", batch=BatchConfig(max_batch_size=3, max_wait_ms=500))
    b = Subscription(
        owner="b", url="https://b.example", batch=BatchConfig(max_batch_size=10, max_wait_ms=200)
    )
    assert asm.add(a, m(1)) is None
    assert asm.add(b, m(2)) is None
    assert asm.add(a, m(3)) is None
    assert asm.add(a, m(4)) == [m(1), m(3), m(4)]
    assert asm.next_deadline() == 100.2
    clock.t = 100.1
    assert asm.due() == []
    clock.t = 100.25
    assert asm.due() == [(b.id, [m(2)])]
    assert asm.add(a, m(5)) is None
    assert asm.drain() == [(a.id, [m(5)])]
    assert asm.next_deadline() is None
