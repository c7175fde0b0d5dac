"""What a dead letter costs the Kafka client itself, apart from any Lazarus code: producing the
same value with and without the contract's dead-letter headers, and with and without a delivery
report per record, on the worker's own producer settings (`pipeline.kafka.clients`: idempotent,
lz4, `linger.ms=5`).

This is the floor under the worker's dead-letter path (issue 9): every at-least-once dead letter
is produced with the headers of `contract.dead_letter` (16 or 17 for a truncated or invalid
order) and a delivery report, since its offset may be committed only once the broker has
acknowledged it. The `ceiling` contender of `bench_peers` produces its dead letters with two
headers and no report.

CPU time of this process (the Python caller and librdkafka's threads, from
`time.process_time`) per record, up to `flush()`, for `--count` records per run; modes
interleaved within each of `--reps` repetitions, medians printed. (Wall time is not shown: it is
mostly `linger.ms` and the broker's round trips, not the client's work.)

    python -m bench.bench_produce [--bootstrap HOST:PORT] [--count 100000] [--reps 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from bench.bench_deadletter import REPO, handler_for, sample_records
from bench.bench_replay import broker
from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.catalog import LocalCatalog
from pipeline.core.handler import Routed
from pipeline.kafka.clients import producer_config
from schemas.orders import Order
from tests.conftest import create_topics

RESULTS = Path(__file__).resolve().parent / "results"
VALUE = bytes(range(256))[:58]  # an Avro order's size


@dataclass(frozen=True)
class Mode:
    name: str
    headers: bool
    reports: bool


MODES = (
    Mode("bare (a ceiling record)", headers=False, reports=False),
    Mode("+ report (a Lazarus record)", headers=False, reports=True),
    Mode("+ headers", headers=True, reports=False),
    Mode("+ headers + report (a dead letter)", headers=True, reports=True),
)


def contract_headers() -> list[tuple[str, bytes]]:
    """The headers the worker's handler gives an invalid Avro order (an item of quantity 0),
    with a worker id as a running worker sets it: 17 headers, 526 bytes of names and values."""
    codec = AvroCodec(source=LocalCatalog(REPO / "schemas/avro"), model=Order)
    handler = dataclasses.replace(handler_for(codec), worker_id="host-1:4242")
    _, _, invalid = sample_records("avro")
    routed = handler.handle(invalid[0], 1, 0.0, 1.0)
    if not isinstance(routed, Routed):
        raise SystemExit(f"bench_produce: the invalid order was not dead-lettered: {routed}")
    out = routed.outputs[0]
    return [(name, value) for name, value in out.headers if value is not None]


def run(bootstrap: str, topic: str, mode: Mode, count: int) -> float:
    """CPU µs per record to produce `count` records and flush."""
    producer = Producer(producer_config({"bootstrap.servers": bootstrap}))
    headers = contract_headers() if mode.headers else None
    acked = [0]

    def report(_err: object, _msg: object) -> None:
        acked[0] += 1

    send: Callable[..., None] = producer.produce
    started = time.process_time()
    for i in range(count):
        if mode.reports:
            send(topic, VALUE, b"k-1", headers=headers, on_delivery=report)
        else:
            send(topic, VALUE, b"k-1", headers=headers)
        if i % 500 == 499:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise SystemExit(f"bench_produce: {mode.name}: not every record was delivered")
    cpu = (time.process_time() - started) / count * 1e6
    if mode.reports and acked[0] != count:
        raise SystemExit(f"bench_produce: {acked[0]} delivery reports for {count} records")
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/produce-*)")
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {m.name: [] for m in MODES}
    with broker(args.bootstrap) as bootstrap:
        topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
        create_topics(bootstrap, [topic], partitions=4)
        for rep in range(args.reps):
            for mode in MODES:
                runs[mode.name].append(run(bootstrap, topic, mode, args.count))
                print(f"rep {rep + 1}/{args.reps} {mode.name}", file=sys.stderr)
    base = statistics.median(runs[MODES[0].name])
    table = Table(title=f"{args.count:,} records per run, median of {args.reps}")
    for column in ("mode", "CPU µs/record", "min-max", "over bare"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    rows = []
    for mode in MODES:
        cpus = runs[mode.name]
        cpu = statistics.median(cpus)
        rows.append({"mode": mode.name, "cpu_us": cpu, "cpu_us_all": cpus})
        spread = f"{min(cpus):.2f}-{max(cpus):.2f}"
        table.add_row(mode.name, f"{cpu:.2f}", spread, f"{cpu - base:+.2f}")
    Console().print(table)
    print(f"{len(contract_headers())} contract headers, {len(VALUE)}-byte value")
    out = args.out or RESULTS / f"produce-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"count": args.count, "reps": args.reps, "rows": rows}, indent=1))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
