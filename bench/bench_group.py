"""`dlq group` over a large DLQ against a raw confluent-kafka consume of the same topic, in the
same run, on the same broker.

    python -m bench.bench_group [--bootstrap HOST:PORT] [--count N] [--partitions P]

Without --bootstrap a broker is started with `scripts/kafka_broker.py` (and stopped after). The
DLQ holds N dead letters with distinct keys and values and three causes. `dlq group` runs in this
process through its real entry point (JSON lines, so rendering costs nothing): it reads the
ledger, reads every record, parses its dlq.* headers into a dead letter and groups it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from bench.bench_replay import broker, fill_dlq
from pipeline.kafka.clients import take_ready
from reprocessor.cli import main as dlq_main
from tests.conftest import create_topics


def raw_consume(bootstrap: str, topic: str) -> tuple[int, float]:
    """Read every record of `topic` `read_committed` to its end (assign, no group), touching
    key, value and headers; (records, seconds). A partition is done when the consumer's
    position reaches its end, so a transactional topic (whose last offset is a commit marker,
    never delivered) ends too. A poll takes what the consumer holds (`clients.take_ready`), as
    the index's reads do: `consume(1000, 0.5)` alone sat out the half second on the last, short
    poll."""
    started = time.monotonic()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-raw",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    parts = list(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
    tps = [TopicPartition(topic, p) for p in parts]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=15)[1] for tp in tps}
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    count = 0
    while any(tp.offset < ends[tp.partition] for tp in consumer.position(tps)):
        for msg in take_ready(consumer, 1000, 0.5):  # as the index's reads poll
            if not msg.error():
                msg.key(), msg.value(), msg.headers()
                count += 1
    consumer.close()
    return count, time.monotonic() - started


def run_group(bootstrap: str, topic: str) -> tuple[list[dict[str, object]], float]:
    """`dlq --json group` in this process; its rows and seconds."""
    out = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out):
        try:
            dlq_main(["-b", bootstrap, "-t", topic, "--json", "group"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"dlq group exited with {exc.code}") from None
    seconds = time.monotonic() - started
    return [json.loads(line) for line in out.getvalue().splitlines()], seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap:
        topic = f"bench-group-{uuid.uuid4().hex[:6]}.dlq"
        create_topics(bootstrap, [topic], args.partitions)
        filled = fill_dlq(bootstrap, topic, args.count)
        print(f"filled {topic}: {args.count:,} dead letters, {filled:.1f}s", file=sys.stderr)
        raw_count, raw_s = raw_consume(bootstrap, topic)
        rows, group_s = run_group(bootstrap, topic)
        grouped = sum(int(str(row["count"])) for row in rows)
        print(f"{'mode':<34} {'records':>10} {'seconds':>9} {'records/s':>11}")
        for name, count, seconds in (
            ("raw consume (confluent-kafka)", raw_count, raw_s),
            ("dlq group (by fingerprint)", grouped, group_s),
        ):
            print(f"{name:<34} {count:>10,} {seconds:>9.2f} {count / seconds:>11,.0f}")
        print(f"groups: {len(rows)} ({', '.join(str(row['count']) for row in rows)})")
        print(f"dlq group takes {group_s / raw_s:.1f} x the raw consume's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
