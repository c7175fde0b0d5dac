"""What the worker's metrics cost: the same worker loop over the same records, its counts handed
to prometheus-client once a second (as shipped), after every batch (the worst case), or never.

No broker: the worker runs on the in-memory fake (pipeline.kafka.fake), so the figure is the
Python cost per record on this machine: CPU time of this process, variants interleaved within
each repetition. "never" still counts in plain ints per batch (the worker's own `Tally`, which
nothing can switch off); what it leaves out is everything prometheus-client does, so
"once a second" minus "never" is the cost of exporting metrics.

    python -m bench.bench_metrics [--count 100000] [--reps 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.catalog import LocalCatalog
from pipeline.core.handler import Handler
from pipeline.core.policy import CircuitBreaker, RetryPolicy
from pipeline.kafka.fake import FakeCluster, FakeSink, FakeSource
from pipeline.runtime.delivery import AtLeastOnce
from pipeline.runtime.metrics import Tally, WorkerMetrics
from pipeline.runtime.worker import Worker, WorkerOptions
from schemas.orders import Order
from tests.kit import avro_framed, good_order

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("once a second", "every batch", "never")


class UnflushedMetrics(WorkerMetrics):
    """The worker's series, never handed to prometheus-client: a flush drops the counts."""

    def flush(self) -> None:
        self.pending = Tally()


def run(count: int, variant: str, registry: CollectorRegistry | None = None) -> float:
    """CPU seconds for one worker to route `count` Avro orders (5% truncated), with its metrics
    flushed as `variant` says, on `registry` (a fresh one when None)."""
    cluster = FakeCluster(partitions=4)
    good = [avro_framed(good_order(i)) for i in range(200)]
    for i in range(count):
        value = good[i % 200]
        cluster.append("orders", value[:-7] if i % 20 == 0 else value, partition=i % 4)
    source, sink = FakeSource(cluster), FakeSink(cluster)
    kind = UnflushedMetrics if variant == "never" else WorkerMetrics
    metrics = kind(registry or CollectorRegistry(), "bench")
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
    after_batch: Callable[[], None] = metrics.flush if variant == "every batch" else _nothing
    started = time.process_time()
    while sum(source.positions.values()) < count:
        worker.step()
        after_batch()
    worker.step()  # acknowledgements of the last batch
    elapsed = time.process_time() - started
    metrics.flush()
    return elapsed


def _nothing() -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"nproc {os.cpu_count()}, load average {' '.join(map(str, os.getloadavg()))}")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for rep in range(args.reps):
        for variant in VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]:  # rotate the order
            times[variant].append(run(args.count, variant))
    print(f"{args.count:,} Avro orders (5% bad), {args.reps} interleaved reps, CPU µs/record:")
    for name, seconds in times.items():
        per = sorted(s / args.count * 1e6 for s in seconds)
        listed = " ".join(f"{p:.1f}" for p in per)
        print(f"  flushed {name:13} median {statistics.median(per):6.1f}  all {listed}")
    never = statistics.median(times["never"])
    for name in VARIANTS[:2]:
        cost = statistics.median(times[name]) - never
        print(
            f"  cost of metrics flushed {name}: {cost / args.count * 1e6:+.2f} µs/record "
            f"({cost / never:+.1%} CPU per record, medians)"
        )
    print(f"load average after: {' '.join(map(str, os.getloadavg()))}")


if __name__ == "__main__":
    main()
