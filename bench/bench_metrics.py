"""What the worker's metrics cost: the same worker loop over the same records, with the real
`WorkerMetrics` (prometheus-client, per-batch tallies flushed once a second) and with a registry
whose series are never flushed (counting stays: it is a few plain-int additions per record).

No broker: the worker runs on the in-memory fake (pipeline.kafka.fake), so the figure is the
Python cost per record on this machine, interleaved repetitions, CPU time of this process.

    python -m bench.bench_metrics [--count 100000] [--reps 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.catalog import LocalCatalog
from pipeline.core.handler import Handler
from pipeline.core.policy import CircuitBreaker, RetryPolicy
from pipeline.kafka.fake import FakeCluster, FakeSink, FakeSource
from pipeline.runtime.delivery import AtLeastOnce
from pipeline.runtime.metrics import WorkerMetrics
from pipeline.runtime.worker import Worker, WorkerOptions
from schemas.orders import Order
from tests.kit import avro_framed, good_order

REPO = Path(__file__).resolve().parent.parent


class UnflushedMetrics(WorkerMetrics):
    """The worker's series, never handed to prometheus-client."""

    def flush(self) -> None:
        self.pending.__init__()  # type: ignore[misc]


def run(count: int, metrics_kind: type[WorkerMetrics]) -> float:
    """CPU seconds for one worker to route `count` Avro orders (5% truncated)."""
    cluster = FakeCluster(partitions=4)
    good = [avro_framed(good_order(i)) for i in range(200)]
    for i in range(count):
        value = good[i % 200]
        cluster.append("orders", value[:-7] if i % 20 == 0 else value, partition=i % 4)
    source, sink = FakeSource(cluster), FakeSink(cluster)
    metrics = metrics_kind(CollectorRegistry(), "bench")
    handler = Handler(
        pipeline="bench",
        output_topic="out",
        dlq_topic="dlq",
        redrive_topic="bench.redrive",
        codecs={"orders": AvroCodec(source=LocalCatalog(REPO / "schemas/avro"), model=Order)},
        output_codec=None,
        processor=None,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=1, budget_s=30),
        retryable=(),
        redact=lambda text: text,
    )
    delivery = AtLeastOnce(
        sink, source, metrics, time.monotonic, time.time, "dlq", commit_interval_s=1, stall_s=30
    )
    options = WorkerOptions("bench", ("orders",), batch_size=500)
    worker = Worker(options, source, delivery, handler, metrics, CircuitBreaker(5, 1, 8), None)
    source.subscribe(options.topics, worker)
    started = time.process_time()
    while sum(source.positions.values()) < count:
        worker.step()
        worker._last_tick = 0.0  # flush on every batch: the worst case, not once a second
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    times: dict[str, list[float]] = {"with metrics": [], "without": []}
    for _ in range(args.reps):
        times["with metrics"].append(run(args.count, WorkerMetrics))
        times["without"].append(run(args.count, UnflushedMetrics))
    print(f"{args.count:,} Avro orders (5% bad), {args.reps} interleaved reps, CPU µs/record:")
    for name, seconds in times.items():
        per = [s / args.count * 1e6 for s in seconds]
        print(f"  {name:13} median {statistics.median(per):6.1f}  min {min(per):6.1f}")
    for pick in (statistics.median, min):
        cost = pick(times["with metrics"]) - pick(times["without"])
        print(f"  cost by {pick.__name__}: {cost / args.count * 1e6:+.2f} µs/record")


if __name__ == "__main__":
    main()
