"""Replay throughput: `dlq replay` (every chunk's copies and ledger entries in one Kafka
transaction, after fencing and reading the ledger) against a raw transactional copy of the same
records (confluent-kafka consume -> produce, `read_committed`, one producer transaction per
`reprocessor.replay.CHUNK` records), in the same run, on the same broker. CPU per dead letter is
printed for each `dlq` process (its user + system time) and for the raw transactional copy (this
process's, around the copy).

    python -m bench.bench_replay [--bootstrap HOST:PORT] [--count N] [--partitions P] [--reps R]

Without --bootstrap a broker is started with `scripts/kafka_broker.py` (and stopped after).
Every `dlq` command runs as its own process, so its peak RSS (the child's VmHWM) is its own:
`dlq stats` (the cold index), the whole `dlq replay --yes` (index catch-up, plan written to
disk, fence, ledger read, the plan replayed as it is read back), and, on a second DLQ of the
same records, the replay phase alone: `dlq replay --dry-run` stores the plan, then `dlq replay
--plan ID --yes` (fence, ledger, stream the plan) is timed. Repetitions are interleaved: each
fills fresh DLQs and runs every mode once, so a load spike hits one repetition of each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.core import contract
from pipeline.errors import Category
from pipeline.kafka.clients import take_ready
from reprocessor.replay import CHUNK
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


KafkaHeaders = list[tuple[str, str | bytes | None]]
"""Headers as `Producer.produce` takes them (a list of the contract's `Header`s is one)."""


def dead_letter_headers(i: int, source: str) -> KafkaHeaders:
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
    return cast(KafkaHeaders, contract.build_dead_letter(record, failure, include_stacktrace=False))


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
        for msg in take_ready(consumer, 1000, 1.0):  # as the replay's reader polls
            if msg.error():
                continue
            while True:
                try:
                    producer.produce(target, msg.value(), msg.key(), headers=msg.headers())
                    break
                except BufferError:
                    producer.poll(0.05)
            copied += 1
            offset = msg.offset()  # a record's (not an error's): never None
            if offset is not None and offset + 1 >= ends[msg.partition()]:
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
            "retry.backoff.ms": 10,  # as Lazarus' transactional producers (clients.py)
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
        for msg in take_ready(consumer, 1000, 1.0):  # as the replay's reader polls
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


def dlq_process(state: str, *args: str) -> tuple[float, float, float]:
    """`dlq ARGS` as a child process: (seconds, its peak RSS in MB, its CPU seconds). The peak
    is the child's own `VmHWM` (its address space after exec), polled until it exits: getrusage's
    ru_maxrss would also count the pages the child shared with this (large) process before its
    exec. The CPU time (user + system) is the children's rusage after less before: one child
    at a time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if child.returncode != 0:
        raise RuntimeError(f"dlq {' '.join(args)} exited with {child.returncode}")
    return seconds, peak_kb / 1024, cpu


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def stored_plan_id(state: str) -> str:
    """The run id of the newest plan in the state folder (`runs/<cluster>/<run>/plan.json`)."""
    newest = max(Path(state).glob("runs/*/*/plan.json"), key=lambda path: path.stat().st_mtime)
    return newest.parent.name


@dataclass
class Rep:
    """One repetition's figures: (records, seconds) per mode, peak RSS and CPU seconds per `dlq`
    command."""

    rows: list[tuple[str, int, float]] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def seconds(self, name: str) -> float:
        return next(s for n, _, s in self.rows if n.startswith(name))


def one_rep(bootstrap: str, count: int, partitions: int, phase: bool) -> Rep:
    """Fill fresh DLQs, then time every mode once; the `dlq` state folder (its index and
    plans, hundreds of MB at 1,000,000) is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="lazarus-bench-state-") as state:
        return _timed_rep(bootstrap, count, partitions, phase, state)


def _timed_rep(bootstrap: str, count: int, partitions: int, phase: bool, state: str) -> Rep:
    stem = f"bench-replay-{uuid.uuid4().hex[:6]}"
    names = [f"{stem}.{n}" for n in ("dlq", "replayed", "raw", "rawtxn", "dlq2", "replayed2")]
    create_topics(bootstrap, names, partitions)
    for dlq_topic in (names[0], names[4]) if phase else (names[0],):
        filled = fill_dlq(bootstrap, dlq_topic, count)
        print(f"filled {dlq_topic}: {count:,} dead letters, {filled:.1f}s", file=sys.stderr)
    rep = Rep()
    copied, raw_s = raw_copy(bootstrap, names[0], names[2])
    rep.rows.append(("raw consume -> produce (idempotent)", copied, raw_s))
    cpu_before = time.process_time()
    txn_copied, txn_s = raw_txn_copy(bootstrap, names[0], names[3])
    rep.cpu["raw txn copy (in process)"] = time.process_time() - cpu_before
    rep.rows.append((f"raw transactional copy ({CHUNK:,}/txn)", txn_copied, txn_s))
    where = ("-q", "-b", bootstrap, "-t", names[0])
    stats_s, rep.rss["stats"], rep.cpu["stats"] = dlq_process(state, *where, "stats")  # cold
    rep.rows.append(("dlq stats, cold index (the first scan)", count, stats_s))
    replay = ("replay", "--to", names[1], "--yes")
    replay_s, rep.rss["replay"], rep.cpu["replay"] = dlq_process(state, *where, *replay)
    rep.rows.append(("dlq replay, whole command", count, replay_s))
    if phase:
        where = ("-q", "-b", bootstrap, "-t", names[4])
        dlq_process(state, *where, "stats")
        plan_s, _, _ = dlq_process(state, *where, "replay", "--to", names[5], "--dry-run")
        run = stored_plan_id(state)
        replay_plan = ("replay", "--plan", run, "--yes")
        phase_s, rep.rss["phase"], rep.cpu["phase"] = dlq_process(state, *where, *replay_plan)
        rep.rows.append(("dlq replay --dry-run (plan only)", count, plan_s))
        rep.rows.append(("dlq replay --plan (replay phase alone)", count, phase_s))
    return rep


def table(rows: list[tuple[str, int, float]]) -> None:
    print(f"{'mode':<44} {'records':>10} {'seconds':>9} {'records/s':>11}")
    for name, count, seconds in rows:
        print(f"{name:<44} {count:>10,} {seconds:>9.2f} {count / seconds:>11,.0f}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument(
        "--no-phase", action="store_true", help="Skip the replay-phase-alone run (a second DLQ)."
    )
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap:
        ratios: list[float] = []
        for number in range(1, args.reps + 1):
            print(f"repetition {number}, load average {load()}", file=sys.stderr)
            rep = one_rep(bootstrap, args.count, args.partitions, not args.no_phase)
            txn_s = rep.seconds("raw transactional")
            print(f"\nrepetition {number} of {args.reps} (load average at its end: {load()})")
            table(rep.rows)
            rss = ", ".join(f"{name} {mb:,.0f} MB" for name, mb in rep.rss.items())
            print(f"peak RSS of each dlq process: {rss}")
            cpu = ", ".join(f"{name} {s * 1e6 / args.count:,.0f}" for name, s in rep.cpu.items())
            print(f"CPU (user + system) per dead letter, µs: {cpu}")
            ratios.append(txn_s / rep.seconds("dlq replay, whole"))
            print(f"dlq replay, whole command: {ratios[-1]:.2f} x the raw transactional copy")
            if not args.no_phase:
                alone = txn_s / rep.seconds("dlq replay --plan")
                print(f"dlq replay, replay phase alone: {alone:.2f} x the raw transactional copy")
        print(
            f"\nwhole command / raw transactional copy, median of {args.reps}: "
            f"{statistics.median(ratios):.2f} (all: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
