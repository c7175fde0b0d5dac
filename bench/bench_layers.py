"""Where one record's CPU goes, layer by layer: a good record against a dead letter (issue 9).

`bench_peers` shows the whole process; this splits it. For Avro and JSON orders and each kind
of record of the bench's own workloads (`bench.workloads`: good, truncated, invalid, and the 50%
bad workload's own interleaving of them, `mixed`), CPU µs per record of each layer, the same
records in every layer:

  check     the peers' whole per-record work (`bench.workloads.checker`; for a bad record also
            the two headers `ceiling` writes): fastavro and pydantic, an exception when bad
  handler   Lazarus's pure core, `Handler.handle`: decode, validate, and for a bad record
            classify it and build the contract's dead letter (15-16 headers, fingerprint)
  seam      the worker loop (`Worker.step`, at-least-once) on the in-memory seam, with a sink
            that acknowledges every record at its next poll: handler + offsets, acks, metrics
  broker    the same loop producing to the real broker (`KafkaSink`): + confluent-kafka and
            librdkafka on the main thread (the headers converted, a delivery report a record)
  process   the same run's CPU of the whole process: + librdkafka's own threads

`seam` and `broker` read from the in-memory source in both (the consumer's cost is the same
for every kind: it is in `bench_peers`, not here). Layers are measured in turn within each of
`--reps` repetitions; the medians are printed, with the extra cost of a dead letter over a good
record per layer and what interleaving costs (`mixed` against the mean of its parts: half good,
a quarter of each bad kind), and written as JSON. Nothing here asserts a timing.

    python -m bench.bench_layers [--bootstrap HOST:PORT] [--count 20000] [--reps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from bench.bench_deadletter import REPO, handler_for
from bench.bench_replay import broker
from bench.contenders.job import headers_for
from bench.workloads import Workload, checker, is_bad, truncated, value_pool
from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.base import Codec
from pipeline.codecs.catalog import LocalCatalog
from pipeline.codecs.json import JsonCodec
from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Handler, Output
from pipeline.core.policy import CircuitBreaker
from pipeline.kafka.confluent import KafkaSink
from pipeline.kafka.fake import FakeCluster, FakeSink, FakeSource
from pipeline.kafka.seam import Ack, Sink
from pipeline.runtime.delivery import AtLeastOnce
from pipeline.runtime.metrics import WorkerMetrics
from pipeline.runtime.worker import Worker, WorkerOptions
from schemas.orders import Order
from tests.conftest import create_topics

RESULTS = Path(__file__).resolve().parent / "results"
FORMATS = ("avro", "json")
KINDS = ("good", "truncated", "invalid", "mixed")
BAD = ("truncated", "invalid")
MIXED_SHARES = {"good": 0.5, "truncated": 0.25, "invalid": 0.25}
"""What `mixed`, the 50%-bad workload's values in their order, is made of."""
LAYERS = ("check", "handler", "seam", "broker", "process")
SOURCE = "orders"
BATCH = 500


def kind_of(i: int) -> str:
    """The kind of value i of a 50%-bad pool (`bench.workloads`)."""
    if not is_bad(i, 50):
        return "good"
    return "truncated" if truncated(i, 50) else "invalid"


def values_by_kind(fmt: str) -> dict[str, list[bytes]]:
    """The bench's own values of `fmt`, by kind (5,000 to 10,000 distinct values each), and
    `mixed`: all 20,000 in the workload's order."""
    pool = value_pool(Workload(fmt, 50))
    found: dict[str, list[bytes]] = {kind: [] for kind in KINDS}
    for i, value in enumerate(pool):
        found[kind_of(i)].append(value)
    found["mixed"] = pool
    return found


def codec_for(fmt: str) -> Codec:
    if fmt == "avro":
        return AvroCodec(source=LocalCatalog(REPO / "schemas/avro"), model=Order)
    return JsonCodec(Order)


def records(values: list[bytes], count: int) -> list[SourceRecord]:
    """`count` records cycling through `values`, spread over four partitions."""
    return [
        SourceRecord(SOURCE, i % 4, i // 4, 1_760_000_000_000 + i, b"k-%d" % i, value, ())
        for i, value in enumerate(_cycle(values, count))
    ]


def _cycle(values: list[bytes], count: int) -> Iterable[bytes]:
    return (values[i % len(values)] for i in range(count))


@contextlib.contextmanager
def settled() -> Iterator[None]:
    """What was built before the timed loop is out of the collector's sight, as the worker
    freezes what its start-up built (`Worker.run`): a collection of the setup's garbage or a
    walk of the bench's own values never lands in one layer's time."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def check_us(fmt: str, values: list[bytes], count: int) -> float:
    """The peers' work per record: check, and for a bad record its two dead-letter headers."""
    check = checker(fmt)
    with settled():
        started = time.thread_time()
        for value in _cycle(values, count):
            try:
                check(value)
            except Exception as exc:
                headers_for(exc)
        return (time.thread_time() - started) / count * 1e6


def handler_us(handler: Handler, recs: list[SourceRecord]) -> float:
    handle = handler.handle
    with settled():
        started = time.thread_time()
        for rec in recs:
            handle(rec, 1, 0.0, 1.0)
        return (time.thread_time() - started) / len(recs) * 1e6


class AckingSink(FakeSink):
    """A sink that keeps nothing and acknowledges every record at the next poll: the seam's
    own cost, without the fake's bookkeeping of what was produced."""

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster)
        self.counts: dict[int, int] = {}

    def produce(self, out: Output, batch: int) -> None:
        self.counts[batch] = self.counts.get(batch, 0) + 1

    def poll(self, timeout_s: float) -> list[Ack]:
        acks = [Ack(batch, n, 0, None) for batch, n in self.counts.items()]
        self.counts.clear()
        return acks

    def flush(self, timeout_s: float) -> list[Ack]:
        return self.poll(timeout_s)

    def pending(self) -> int:
        return sum(self.counts.values())


def loop_us(
    handler: Handler, recs: list[SourceRecord], make_sink: Callable[[FakeCluster], Sink]
) -> tuple[float, float]:
    """µs per record of the main thread and of the whole process for the worker loop to route
    `recs` (read from the in-memory source) through the sink `make_sink` builds, up to the
    last acknowledgement."""
    cluster = FakeCluster(partitions=4)
    log = cluster.topics.setdefault(SOURCE, {})
    for rec in recs:
        log.setdefault(rec.partition, []).append(rec)
    sink = make_sink(cluster)
    source = FakeSource(cluster)
    now = [1000.0]

    def clock() -> float:
        return now[0]

    metrics = WorkerMetrics(CollectorRegistry(), "bench")
    delivery = AtLeastOnce(
        sink,
        source,
        metrics,
        clock,
        time.time,
        handler.dlq_topic,
        commit_interval_s=1.0,
        stall_s=60,
    )
    options = WorkerOptions(pipeline="bench", topics=(SOURCE,), batch_size=BATCH)
    breaker = CircuitBreaker(3, 1.0, 8.0)
    worker = Worker(options, source, delivery, handler, metrics, breaker, None, clock, time.time)
    source.subscribe(options.topics, worker)
    worker.step()  # the assignment
    with settled():
        main, process = time.thread_time(), time.process_time()
        for _ in range(len(recs) // BATCH + 2):
            worker.step()
            now[0] += 0.01
        if delivery.settle(clock() + 60).failure is not None or sink.pending():
            raise SystemExit("bench_layers: not every record was acknowledged")
        main, process = time.thread_time() - main, time.process_time() - process
    return main / len(recs) * 1e6, process / len(recs) * 1e6


def measure_once(bootstrap: str, topics: tuple[str, str], count: int) -> dict[str, float]:
    """One repetition: every format, kind and layer once. Keys `<fmt> <kind> <layer>`."""
    out: dict[str, float] = {}

    def real_sink(_cluster: FakeCluster) -> Sink:
        return KafkaSink({"bootstrap.servers": bootstrap})

    for fmt in FORMATS:
        handler = handler_for(codec_for(fmt))
        handler.output_topic, handler.dlq_topic = topics
        values = values_by_kind(fmt)
        recs = {kind: records(values[kind], count) for kind in KINDS}
        for kind in KINDS:  # warm the per-cause caches, as a running worker has them
            for rec in recs[kind][:200]:
                handler.handle(rec, 1, 0.0, 1.0)
        # each layer measures the kinds back to back: a dead letter's extra cost is taken
        # against a good record measured moments before (the machine's speed drifts)
        for kind in KINDS:
            out[f"{fmt} {kind} check"] = check_us(fmt, values[kind], count)
        for kind in KINDS:
            out[f"{fmt} {kind} handler"] = handler_us(handler, recs[kind])
        for kind in KINDS:
            out[f"{fmt} {kind} seam"], _ = loop_us(handler, recs[kind], AckingSink)
        for kind in KINDS:
            out[f"{fmt} {kind} broker"], out[f"{fmt} {kind} process"] = loop_us(
                handler, recs[kind], real_sink
            )
        print(f"  {fmt}", file=sys.stderr)
    return out


def over_good(run: dict[str, float]) -> dict[str, float]:
    """A repetition's extra cost of each bad kind over a good record, and of `mixed` over the
    mean of its parts, per format and layer."""
    extra: dict[str, float] = {}
    for fmt in FORMATS:
        for layer in LAYERS:
            cost = {kind: run[f"{fmt} {kind} {layer}"] for kind in KINDS}
            for kind in BAD:
                extra[f"{fmt} {kind} {layer}"] = cost[kind] - cost["good"]
            parts = sum(share * cost[kind] for kind, share in MIXED_SHARES.items())
            extra[f"{fmt} mixed {layer}"] = cost["mixed"] - parts
    return extra


def table(medians: dict[str, float], extra: dict[str, float], title: str) -> Table:
    t = Table(title=title)
    t.add_column("record", justify="left")
    for layer in LAYERS:
        t.add_column(f"{layer} µs", justify="right")
    for fmt in FORMATS:
        for kind in KINDS:
            cells = [
                f"{medians[f'{fmt} {kind} {layer}']:.2f}"
                + ("" if kind == "good" else f" ({extra[f'{fmt} {kind} {layer}']:+.1f})")
                for layer in LAYERS
            ]
            t.add_row(f"{fmt} {kind}", *cells)
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--count", type=int, default=20_000, help="records per layer and kind")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/layers-*)")
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {}
    extras: dict[str, list[float]] = {}
    with broker(args.bootstrap) as bootstrap:
        tag = uuid.uuid4().hex[:8]
        topics = (f"bench-layers-out-{tag}", f"bench-layers-dlq-{tag}")
        create_topics(bootstrap, list(topics), partitions=4)
        for rep in range(args.reps):
            print(f"rep {rep + 1}/{args.reps}", file=sys.stderr)
            run = measure_once(bootstrap, topics, args.count)
            for key, value in run.items():
                runs.setdefault(key, []).append(value)
            for key, value in over_good(run).items():
                extras.setdefault(key, []).append(value)
    medians = {key: statistics.median(values) for key, values in runs.items()}
    extra = {key: statistics.median(values) for key, values in extras.items()}
    title = (
        f"CPU µs per record, median of {args.reps} x {args.count:,} records; "
        "(+n): a dead letter over a good record, mixed over the mean of its parts; "
        "each repetition's own difference, median"
    )
    Console().print(table(medians, extra, title))
    out = args.out or RESULTS / f"layers-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(
        json.dumps(
            {
                "count": args.count,
                "reps": args.reps,
                "load_average": os.getloadavg(),
                "medians": medians,
                "over_good": extra,
                "runs": runs,
            },
            indent=1,
        )
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
