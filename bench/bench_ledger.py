"""The DLQ index's ledger catch-up, timed: what the last `dlq --json stats` of the operator story
pays after a replay of N dead letters (issue 12, bench_story's step 4).

    python -m bench.bench_ledger [--bootstrap HOST:PORT] [--count N] [--reps R]

Without --bootstrap a broker is started with `scripts/kafka_broker.py` (and stopped after). Fills
a DLQ with N Lazarus dead letters (`bench.bench_replay.fill_dlq`), creates its (empty, compacted)
ledger and indexes the DLQ into a template state folder; then writes one `replayed` entry per
dead letter to the ledger, with the ledger codec, in transactions of 2,000 as `dlq replay` does
(so the ledger holds transaction markers too), each naming its own copy as its target (as a
replay's do: the target's coordinates are checked once per distinct target). Each repetition
then times, on a fresh copy of the template (the DLQ indexed, the ledger not):

- `raw`: a raw confluent-kafka consume of the ledger topic (`bench.bench_group.raw_consume`);
- `catch-up`: `DlqIndex.catch_up` in this process (the ledger entries, nothing new in the DLQ);
- `stats`: `dlq --json stats` as a child process, as the operator types it (its depth must be 0).

Prints one line per measurement with the 1-minute load average before it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from bench.bench_group import raw_consume
from bench.bench_replay import broker, fill_dlq
from pipeline.core.contract import format_coordinates, ledger_topic
from pipeline.core.ledger_codec import LedgerEntry, encode_ledger_entry, ledger_key
from pipeline.kafka.dlqio import ensure_compacted
from pipeline.kafka.follow import Cluster
from reprocessor.index import DlqIndex
from tests.conftest import create_topics

PER_TRANSACTION = 2000


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def dlq_stats(state: Path, bootstrap: str, topic: str) -> tuple[float, int]:
    """`dlq --json stats` as a child process on `state`; (seconds, unresolved depth)."""
    env = {**os.environ, "LAZARUS_STATE_DIR": str(state)}
    started = time.monotonic()
    argv = [sys.executable, "-m", "reprocessor.cli", "-b", bootstrap, "-t", topic]
    argv += ["--json", "stats"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.monotonic() - started, int(json.loads(done.stdout)["unresolved"])


def fill_ledger(bootstrap: str, topic: str, state: Path) -> float:
    """One `replayed` entry per dead letter indexed in `state`, 2,000 per transaction."""
    started = time.monotonic()
    conf = {"bootstrap.servers": bootstrap}
    with DlqIndex.open(Cluster(conf), topic, state) as index:
        rows = list(index.rows("SELECT partition, offset, seen_ms, fingerprint FROM dl"))
    producer = Producer({**conf, "transactional.id": f"bench-ledger-{uuid.uuid4().hex[:6]}"})
    producer.init_transactions()
    fixed = topic.replace(".dlq", ".fixed")
    for start in range(0, len(rows), PER_TRANSACTION):
        producer.begin_transaction()
        for copy, (partition, offset, seen_ms, fingerprint) in enumerate(
            rows[start : start + PER_TRANSACTION], start=start
        ):
            target = format_coordinates(fixed, copy % 4, copy // 4)  # each copy its own, as replays
            entry = LedgerEntry(
                action="replayed",
                at=int(time.time() * 1000),
                operator="bench",
                run="bench-ledger",
                failed_at=int(str(seen_ms)),
                fingerprint=str(fingerprint),
                fix=("set fixed=true",),
                target=target,
            )
            key = ledger_key(topic, int(str(partition)), int(str(offset)))
            producer.produce(ledger_topic(topic), encode_ledger_entry(entry), key)
        producer.commit_transaction()
    return time.monotonic() - started


def prepare(bootstrap: str, count: int, partitions: int) -> tuple[str, Path]:
    """A filled DLQ, its filled ledger, and a state folder with the DLQ indexed, not the ledger."""
    topic = f"bench-ledger-{uuid.uuid4().hex[:6]}.dlq"
    create_topics(bootstrap, [topic], partitions)
    print(f"fill {topic}: {fill_dlq(bootstrap, topic, count):.1f}s", file=sys.stderr)
    ensure_compacted({"bootstrap.servers": bootstrap}, ledger_topic(topic))
    template = Path(tempfile.mkdtemp(prefix="lazarus-ledger-"))
    cluster = Cluster({"bootstrap.servers": bootstrap})
    with DlqIndex.open(cluster, topic, template) as index:
        index.catch_up(cluster)
    print(f"ledger: {fill_ledger(bootstrap, topic, template):.1f}s", file=sys.stderr)
    return topic, template


def measure(bootstrap: str, topic: str, template: Path, rep: int) -> None:
    with tempfile.TemporaryDirectory(prefix="lazarus-ledger-run-") as folder:
        load = load1()
        records, raw_s = raw_consume(bootstrap, ledger_topic(topic))
        print(f"rep {rep} raw      {raw_s:6.2f}s  {records:,} records  load {load:.2f}")
        inproc = Path(folder) / "inproc"
        shutil.copytree(template, inproc)
        cluster = Cluster({"bootstrap.servers": bootstrap})
        load = load1()
        started = time.monotonic()
        with DlqIndex.open(cluster, topic, inproc) as index:
            done = index.catch_up(cluster)
        catch_s = time.monotonic() - started
        entries = done.ledger_records
        print(f"rep {rep} catch-up {catch_s:6.2f}s  {entries:,} entries  load {load:.2f}")
        child = Path(folder) / "child"
        shutil.copytree(template, child)
        load = load1()
        seconds, depth = dlq_stats(child, bootstrap, topic)
        print(f"rep {rep} stats    {seconds:6.2f}s  depth {depth}  load {load:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="print and keep the template")
    parser.add_argument("--topic", help="re-use a DLQ prepared with --keep (with --template)")
    parser.add_argument("--template", type=Path, help="its template state folder")
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap:
        if args.topic and args.template:
            topic, template, args.keep = args.topic, args.template, True
        else:
            topic, template = prepare(bootstrap, args.count, args.partitions)
        try:
            for rep in range(1, args.reps + 1):
                measure(bootstrap, topic, template, rep)
        finally:
            if args.keep:
                print(f"template: {template} (topic {topic})", file=sys.stderr)
            else:
                shutil.rmtree(template)
    return 0


if __name__ == "__main__":
    sys.exit(main())
