"""What finding a message's subscriptions costs per message as the number of customers grows.

    .venv/bin/python -m bench.bench_targets [--owners 1000] [--per-owner 2] [--n 200] [--changes 20]

Each owner holds one number and has ``--per-owner`` subscriptions with empty filters (all of its numbers);
an operator archive subscription receives everything. The message goes to one owner's number. Times
``KafkaDelivery.targets`` (the deliver stage's call for every inbound message) through
``InMemorySubscriptionStore`` — the topic-backed store answers from the same index — and checks the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from smsflow.subscriptions.holdings import Holding
from smsflow.subscriptions.model import Subscription
from smsflow.subscriptions.store import InMemorySubscriptionStore
from streams.deliver import KafkaDelivery


async def run(owners: int, per_owner: int, n: int) -> float:
    store = InMemorySubscriptionStore(
        holdings=[Holding(owner=f"t{i}", numbers=[f"+8523{i:07d}"]) for i in range(owners)]
    )
    for i in range(owners):
        for j in range(per_owner):
            await store.put(Subscription(owner=f"t{i}", url=f"https://t{i}.example/{j}"))
    await store.put(Subscription(owner="operator", url="https://archive.example/"))
    delivery = KafkaDelivery(None, None, store)  # type: ignore[arg-type] # targets() reads the store only
    msg = {"to_number": f"+8523{owners // 2:07d}", "country_code": "HK"}
    got = await delivery.targets(msg)
    assert len(got) == per_owner + 1, got
    started = time.perf_counter()
    for _ in range(n):
        await delivery.targets(msg)
    return (time.perf_counter() - started) / n


async def change_cost(owners: int, per_owner: int, n: int) -> float:
    """Seconds to answer the first message after one owner changed a subscription (the deliver stage's
    ``match_index()`` then builds the subscriptions' side again), per change."""
    store = InMemorySubscriptionStore(
        holdings=[Holding(owner=f"t{i}", numbers=[f"+8523{i:07d}"]) for i in range(owners)]
    )
    for i in range(owners):
        for j in range(per_owner):
            await store.put(Subscription(owner=f"t{i}", url=f"https://t{i}.example/{j}"))
    mine = await store.list("t0")
    msg = {"to_number": f"+8523{owners // 2:07d}", "country_code": "HK"}
    store.match_index().targets(msg)
    took = 0.0
    for k in range(n):
        await store.put(mine[0].model_copy(update={"description": f"change {k}"}))
        started = time.perf_counter()
        assert len(store.match_index().targets(msg)) == per_owner
        took += time.perf_counter() - started
    return took / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--owners", type=int, default=1000)
    ap.add_argument("--per-owner", type=int, default=2)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--changes", type=int, default=0, help="also time this many subscription changes")
    args = ap.parse_args()
    per_message = asyncio.run(run(args.owners, args.per_owner, args.n))
    subs = args.owners * args.per_owner + 1
    print(f"{args.owners} owners, {subs} subscriptions: {per_message * 1e6:.1f} µs per message")
    if args.changes:
        per_change = asyncio.run(change_cost(args.owners, args.per_owner, args.changes))
        print(f"  the first message after one owner's change: {per_change * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
