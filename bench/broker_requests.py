"""What one produce request costs the broker, against what one record in it costs (issue 13).

    flock /tmp/smsflow-broker.lock .venv/bin/python -m bench.broker_requests [--records 6000] [--repeat 2]

Starts the project's local broker (devkit, as bench/e2e.py does), warms its JIT, then for each shape writes
``--records`` records of 300 bytes with one idempotent acks=all lz4 producer (smsflow's settings) and
``flush()`` after every ``k`` records, and reads the broker's CPU (``/proc``, its JIT compiler threads apart):

- ``k`` records to ONE partition per flush: one ProduceRequest per flush;
- ``k`` records spread over ``--partitions`` partitions per flush (round robin, as records keyed by many
  numbers spread): librdkafka sends one ProduceRequest per partition (confluentinc/librdkafka#1700), so
  ``min(k, partitions)`` requests per flush.

Prints the broker's CPU µs per record and per request for each. What it shows: at a few hundred SMS/s,
every record a stage writes is a request of its own, and the broker's cost is per request, not per record.

``--reader``: every shape again with a consumer of the topic running (as the next stage reads it: from the
end, ``fetch.wait.max.ms`` 500, answered at the first appended record, so about one fetch per produce
request); the difference in the broker's CPU is what the fetches cost it (the "requests" column counts the
produce requests only, with or without the reader).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from bench.procstat import sample


def _read_until(stop: threading.Event, bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-requests-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 500,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
    try:
        while not stop.is_set():
            consumer.consume(1000, timeout=0.1)
    finally:
        consumer.close()


def run(
    records: int,
    repeat: int,
    partitions: int,
    shapes: list[int],
    reader: bool = False,
    overrides: dict[str, str] | None = None,
) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from devkit.local.kafka import LocalKafka
    from smsflow.producer import producer_conf

    with tempfile.TemporaryDirectory(prefix="smsflow-broker-requests-") as tmp:
        kafka = LocalKafka(Path(tmp) / "kafka")
        kafka.start()
        stop = threading.Event()
        reading: threading.Thread | None = None
        try:
            admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
            admin.create_topics([NewTopic("bench.requests", partitions, 1)])["bench.requests"].result()
            producer = Producer(producer_conf(kafka.bootstrap, **{"linger.ms": 0, **(overrides or {})}))
            value = b"x" * 300

            def write(n: int, per_flush: int, spread: bool) -> None:
                for i in range(0, n, per_flush):
                    for j in range(per_flush):
                        part = (i + j) % partitions if spread else 0
                        producer.produce("bench.requests", value, partition=part)
                    producer.flush(30)

            write(20_000, 10, True)  # the JIT and the log segments; not measured
            time.sleep(3)
            head = f"{'reader':>6} {'records/flush':>13} {'requests/flush':>14} {'requests':>9}"
            print(f"{head} {'µs/record':>10} {'µs/request':>11}  records/s")
            runs = [
                (r, k, spread)
                for r in ((False, True) if reader else (False,))
                for k in shapes
                for spread in (False, True)
                if not (spread and k == 1)
            ]
            for with_reader, k, spread in runs:
                if with_reader and reading is None:
                    args = (stop, kafka.bootstrap, "bench.requests", partitions)
                    reading = threading.Thread(target=_read_until, args=args, daemon=True)
                    reading.start()
                    time.sleep(3)  # assigned, its first fetches out
                for _ in range(repeat):
                    n = records - records % k
                    assert kafka.pid is not None
                    before = sample(kafka.pid)
                    t0 = time.perf_counter()
                    write(n, k, spread)
                    t1 = time.perf_counter()
                    after = sample(kafka.pid)
                    time.sleep(1)
                    assert before is not None and after is not None
                    cpu = after.seconds - before.seconds
                    per_flush = min(k, partitions) if spread else 1
                    requests = n // k * per_flush
                    print(
                        f"{'yes' if with_reader else 'no':>6} {k:>13} {per_flush:>14} {requests:>9} "
                        f"{cpu / n * 1e6:>10.1f} "
                        f"{cpu / requests * 1e6:>11.1f}  {n / (t1 - t0):>9.0f}",
                        flush=True,
                    )
        finally:
            stop.set()  # the reader leaves before its broker goes
            if reading is not None:
                reading.join(10)
            kafka.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=6000, help="records per measured shape")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=6, help="of the topic (sms.*.v1 have 6)")
    ap.add_argument("--shapes", default="1,3,10,50", help="records per flush")
    ap.add_argument("--reader", action="store_true", help="every shape again with a consumer of the topic")
    ap.add_argument(
        "--producer-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka producer setting over the product's (e.g. compression.type=none); repeatable",
    )
    args = ap.parse_args()
    bad = [kv for kv in args.producer_set if "=" not in kv]
    if bad:
        ap.error(f"--producer-set {bad[0]!r}: expected KEY=VALUE")
    overrides = dict(kv.split("=", 1) for kv in args.producer_set)
    shapes = [int(s) for s in args.shapes.split(",")]
    run(args.records, args.repeat, args.partitions, shapes, args.reader, overrides)


if __name__ == "__main__":
    main()
