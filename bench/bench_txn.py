"""What one exactly-once transaction waits for, by the transactional producer's retry backoff.

    python -m bench.bench_txn                                # a broker of its own
    python -m bench.bench_txn --bootstrap 127.0.0.1:9092 --backoffs 100,10 --transactions 50

A consume-transform-produce transaction as the worker makes one: begin, 500 produces over 4
partitions, `send_offsets_to_transaction`, `commit_transaction`, back to back. A transaction
begun right after a commit meets CONCURRENT_TRANSACTIONS while the coordinator still writes the
previous one's markers, and librdkafka retries after `retry.backoff.ms` (100 ms by default;
Lazarus' transactional producers use 10 ms, `pipeline/kafka/clients.py`). Prints the median and
90th percentile of each step per backoff, interleaved; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.bench_replay import broker
from tests.conftest import create_topics

STEPS = ("produce", "send_offsets", "commit")


def transactions(bootstrap: str, backoff_ms: int, count: int) -> dict[str, list[float]]:
    """`count` back-to-back transactions; each step's milliseconds."""
    topic = f"bench-txn-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic], partitions=4)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "retry.backoff.ms": backoff_ms,
            "transactional.id": topic,
        }
    )
    producer.init_transactions(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic})
    group = consumer.consumer_group_metadata()
    took: dict[str, list[float]] = {step: [] for step in STEPS}
    for i in range(count):
        started = time.perf_counter()
        producer.begin_transaction()
        for j in range(500):
            producer.produce(topic, b"x" * 200, partition=j % 4)
        producer.poll(0)
        produced = time.perf_counter()
        offsets = [TopicPartition(topic, p, i) for p in range(4)]
        producer.send_offsets_to_transaction(offsets, group, 30)
        sent = time.perf_counter()
        producer.commit_transaction(30)
        committed = time.perf_counter()
        steps = (produced - started, sent - produced, committed - sent)
        for step, ms in zip(STEPS, steps, strict=True):
            took[step].append(ms * 1000)
    consumer.close()
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_txn", description=__doc__)
    ap.add_argument("--bootstrap", help="a running broker (default: start one)")
    ap.add_argument("--backoffs", default="100,20,10", help="retry.backoff.ms values, ms")
    ap.add_argument("--transactions", type=int, default=30, help="per backoff and round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    args = ap.parse_args(argv)
    backoffs = [int(b) for b in args.backoffs.split(",")]
    with broker(args.bootstrap) as bootstrap:
        runs: dict[int, dict[str, list[float]]] = {b: {s: [] for s in STEPS} for b in backoffs}
        for _ in range(args.rounds):
            for backoff in backoffs:
                for step, ms in transactions(bootstrap, backoff, args.transactions).items():
                    runs[backoff][step].extend(ms)
    print("retry.backoff.ms  " + "  ".join(f"{s} p50/p90 ms".rjust(24) for s in STEPS))
    for backoff, took in runs.items():
        cells = []
        for step in STEPS:
            ms = sorted(took[step])
            cells.append(f"{statistics.median(ms):.1f} / {ms[int(len(ms) * 0.9)]:.1f}".rjust(24))
        print(f"{backoff:>16}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
