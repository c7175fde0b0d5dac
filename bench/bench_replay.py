"""Replay throughput: `dlq replay` (every chunk's copies and ledger entries in one Kafka
transaction, after fencing and reading the ledger) against a raw confluent-kafka consume ->
produce of the same records, in the same run, on the same broker.

    python -m bench.bench_replay [--bootstrap HOST:PORT] [--count N] [--partitions P]

Without --bootstrap a broker is started with `scripts/kafka_broker.py` (and stopped after).
`dlq replay` runs as its own process (its time includes indexing the DLQ, writing the plan,
fencing, reading the ledger and replaying the plan read back; `--yes`), so its peak RSS
(the child's VmHWM) is its own. The raw transactional copy consumes and produces the same
records in transactions of the same size (`reprocessor.replay.CHUNK`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.core import contract
from pipeline.errors import Category
from pipeline.kafka import dlqio
from reprocessor.cli import main as dlq_main
from reprocessor.payloads import Payloads
from reprocessor.replay import (
    CHUNK,
    Pacer,
    Recipe,
    Run,
    Target,
    TargetMode,
    prepare_all,
    transactional_id,
)
from reprocessor.stats import Window, read_ledger, unresolved_items
from scripts.kafka_broker import Broker
from tests.conftest import create_topics


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given bootstrap, or a broker of our own for the duration."""
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="lazarus-bench-") as folder:
        own = Broker(Path(folder))
        print(f"starting a broker ({own.start():.1f}s)", file=sys.stderr)
        try:
            yield own.bootstrap
        finally:
            own.stop()


CAUSES = (
    ("items.0.qty", "greater_than"),
    ("customer.email", "string_pattern_mismatch"),
    ("currency", "string_pattern_mismatch"),
)


def dead_letter_headers(i: int, source: str) -> list[tuple[str, bytes | None]]:
    loc, kind = CAUSES[i % len(CAUSES)]
    failure = contract.Failure(
        category=Category.VALIDATION,
        error_type="pydantic_core.ValidationError",
        message=f"1 validation error for Order: {loc} ({kind})",
        failed_at_ms=int(time.time() * 1000),
        pipeline="bench",
        details=({"loc": loc, "msg": "bad", "type": kind},),
    )
    record = contract.SourceRecord(source, i % 8, i, 1_760_000_000_000, None, None, ())
    return contract.build_dead_letter(record, failure, include_stacktrace=False)


def fill_dlq(bootstrap: str, topic: str, count: int, value_size: int = 200) -> float:
    """Produce `count` dead letters (distinct keys and values, three causes); seconds taken."""
    started = time.monotonic()
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 50,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )
    padding = b"x" * value_size
    for i in range(count):
        value = b'{"order_id": "o-%d", "pad": "%s"}' % (i, padding)
        headers = dead_letter_headers(i, "bench.orders")
        while True:
            try:
                producer.produce(topic, value, f"k{i % 10_000}".encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return time.monotonic() - started


def raw_copy(bootstrap: str, source: str, target: str) -> tuple[int, float]:
    """Consume `source` to its end (assign, no group) and produce every record to `target`."""
    started = time.monotonic()
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-raw", "enable.auto.commit": False}
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "enable.idempotence": True,
            "compression.type": "lz4",
        }
    )
    parts = list(consumer.list_topics(source, timeout=15).topics[source].partitions)
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(source, p), timeout=15)[1] for p in parts
    }
    consumer.assign([TopicPartition(source, p, 0) for p in parts])
    todo, copied = {p for p in parts if ends[p] > 0}, 0
    while todo:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error():
                continue
            while True:
                try:
                    producer.produce(target, msg.value(), msg.key(), headers=msg.headers())
                    break
                except BufferError:
                    producer.poll(0.05)
            copied += 1
            if msg.offset() + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
        producer.poll(0)
    assert producer.flush(120) == 0
    consumer.close()
    return copied, time.monotonic() - started


def raw_txn_copy(bootstrap: str, source: str, target: str, chunk: int = CHUNK) -> tuple[int, float]:
    """`raw_copy` in producer transactions of `chunk` records (begin, produce, commit), reading
    `read_committed`: what an exactly-once copy costs without any dead-letter logic."""
    started = time.monotonic()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-raw-txn",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "compression.type": "lz4",
            "transactional.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
        }
    )
    producer.init_transactions(30)
    parts = list(consumer.list_topics(source, timeout=15).topics[source].partitions)
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(source, p), timeout=15)[1] for p in parts
    }
    consumer.assign([TopicPartition(source, p, 0) for p in parts])
    todo, copied, open_ = {p for p in parts if ends[p] > 0}, 0, 0
    producer.begin_transaction()
    while todo:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error():
                continue
            while True:
                try:
                    producer.produce(target, msg.value(), msg.key(), headers=msg.headers())
                    break
                except BufferError:
                    producer.poll(0.05)
            copied, open_ = copied + 1, open_ + 1
            if open_ >= chunk:
                producer.commit_transaction(60)
                producer.begin_transaction()
                open_ = 0
            if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                todo.discard(msg.partition())
        producer.poll(0)
    producer.commit_transaction(60)
    consumer.close()
    return copied, time.monotonic() - started


def dlq_process(state: str, *args: str) -> tuple[float, float]:
    """`dlq ARGS` as a child process: (seconds, its peak RSS in MB). The peak is the child's own
    `VmHWM` (its address space after exec), polled until it exits: getrusage's ru_maxrss would
    also count the pages the child shared with this (large) process before its exec."""
    started = time.monotonic()
    env = {**os.environ, "LAZARUS_STATE_DIR": state}
    child = subprocess.Popen(
        [sys.executable, "-m", "reprocessor.cli", *args], env=env, stdout=subprocess.DEVNULL
    )
    peak_kb = 0
    while child.poll() is None:
        peak_kb = max(peak_kb, _hwm_kb(child.pid))
        time.sleep(0.05)
    seconds = time.monotonic() - started
    if child.returncode != 0:
        raise RuntimeError(f"dlq {' '.join(args)} exited with {child.returncode}")
    return seconds, peak_kb / 1024


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_dlq(*args: str) -> float:
    started = time.monotonic()
    try:
        dlq_main(list(args))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"dlq {' '.join(args)} exited with {exc.code}") from None
    return time.monotonic() - started


def replay_phase(bootstrap: str, dlq_topic: str, target: str) -> tuple[int, float]:
    """Only the exactly-once part of a replay (fence, read the ledger, chunked transactions of
    copies plus ledger entries), on dead letters already read and planned: what the ledger
    transaction costs, apart from `dlq`'s parsing of every record's headers."""
    conf = {"bootstrap.servers": bootstrap}
    dlqio.ensure_compacted(conf, contract.ledger_topic(dlq_topic))
    items = unresolved_items(conf, dlq_topic, Window(), Payloads(None), None)
    recipe = Recipe(run="bench-phase", target=Target(TargetMode.TO, target))
    copies, _ = prepare_all([item.dl for item in items], recipe)
    started = time.monotonic()
    sink = dlqio.TxnProducer(conf, transactional_id(dlq_topic))
    job = Run(sink, contract.ledger_topic(dlq_topic), "bench-phase", "bench")
    ledger = job.start(lambda: read_ledger(conf, dlq_topic))
    tally = job.replay(copies, ledger, Pacer(None), lambda n: None)
    return tally.done, time.monotonic() - started


def table(rows: list[tuple[str, int, float]]) -> None:
    print(f"{'mode':<44} {'records':>10} {'seconds':>9} {'records/s':>11}")
    for name, count, seconds in rows:
        print(f"{name:<44} {count:>10,} {seconds:>9.2f} {count / seconds:>11,.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--no-phase", action="store_true", help="Skip the in-process transactional-phase run."
    )
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap:
        stem = f"bench-replay-{uuid.uuid4().hex[:6]}"
        names = [f"{stem}.{n}" for n in ("dlq", "replayed", "raw", "dlq2", "replayed2")]
        create_topics(bootstrap, names, args.partitions)
        for dlq_topic in (names[0],) if args.no_phase else (names[0], names[3]):
            filled = fill_dlq(bootstrap, dlq_topic, args.count)
            print(
                f"filled {dlq_topic}: {args.count:,} dead letters, {filled:.1f}s", file=sys.stderr
            )
        copied, raw_s = raw_copy(bootstrap, names[0], names[2])
        create_topics(bootstrap, [f"{stem}.rawtxn"], args.partitions)
        txn_copied, txn_s = raw_txn_copy(bootstrap, names[0], f"{stem}.rawtxn")
        state = tempfile.mkdtemp(prefix="lazarus-bench-state-")
        where = ("-q", "-b", bootstrap, "-t", names[0])
        stats_s, stats_rss = dlq_process(state, *where, "stats")  # builds the index (cold)
        replay_s, replay_rss = dlq_process(state, *where, "replay", "--to", names[1], "--yes")
        phased, phase_s = (0, 0.0) if args.no_phase else replay_phase(bootstrap, names[3], names[4])
        table(
            [
                ("raw consume -> produce (confluent-kafka)", copied, raw_s),
                (f"raw transactional copy ({CHUNK:,}/txn)", txn_copied, txn_s),
                ("dlq stats, cold index (the first scan)", args.count, stats_s),
                ("dlq replay, whole command (warm index)", args.count, replay_s),
                *([] if args.no_phase else [("dlq replay, transactional phase", phased, phase_s)]),
            ]
        )
        print(f"dlq replay peak RSS: {replay_rss:,.0f} MB for {args.count:,} dead letters")
        print(f"dlq stats (cold index) peak RSS: {stats_rss:,.0f} MB")
        print(f"dlq replay, whole command: {txn_s / replay_s:.2f} x the raw transactional copy")
        print(f"dlq replay, whole command: {raw_s / replay_s:.2f} x the raw (idempotent) copy")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
