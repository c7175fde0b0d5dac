"""One contender on one workload: a throughput run on a backlog, or a latency run at a live rate.

Every run gets fresh topics (source, output and DLQ, 4 partitions each) and a fresh group, and
deletes its topics when it ends. A throughput run pre-produces the backlog, starts the contender
and watches: `first` is when its first output or dead letter appears (start-up, imports and the
group join are before it), `done` is when the group's committed offsets reach the end of every
source partition. Rate and CPU per record are taken between the two, CPU from /proc over the
contender's whole process tree; peak RSS (VmHWM, summed over the tree) at `done`.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contenders import Contender
from bench.contenders.job import Job
from bench.contenders.lazarus import topics_argv
from bench.kafka_io import (
    BenchError,
    LatencyReader,
    Watcher,
    create_topics,
    delete_topics,
    produce_at_rate,
    produce_backlog,
)
from bench.measure import cpu_us_per_record, percentile
from bench.procs import CLOCK_TICKS, Child
from bench.workloads import Workload, records, value_pool

# Lazarus' topic check wants room for the largest source record plus its dead-letter headers
DLQ_CONFIG = {"max.message.bytes": str(2 * 1024 * 1024)}


@dataclass(frozen=True, slots=True)
class Context:
    bootstrap: str
    workdir: Path
    timeout_s: float


def new_job(ctx: Context, contender: Contender, workload: Workload) -> Job:
    stem = f"peers-{uuid.uuid4().hex[:8]}-{contender.name}-{workload.name}"
    return Job(ctx.bootstrap, f"{stem}.in", f"{stem}.out", f"{stem}.dlq", stem, workload.fmt)


def prepare(ctx: Context, contender: Contender, job: Job) -> list[str]:
    """Create the run's topics (Lazarus' redrive and ledger topics through its own CLI)."""
    create_topics(ctx.bootstrap, [job.source, job.output])
    create_topics(ctx.bootstrap, [job.dlq], DLQ_CONFIG)
    made = [job.source, job.output, job.dlq]
    if contender.kind == "lazarus":
        argv = contender.argv(job, ctx.workdir)
        config = argv[argv.index("--config") + 1]
        out = subprocess.run(
            topics_argv(Path(config)),
            cwd=contender.cwd(),
            capture_output=True,
            text=True,
            check=False,
        )
        made += [line.split()[-1] for line in out.stdout.splitlines() if line.startswith("created")]
        if out.returncode != 0:
            raise BenchError(f"lazarus topics --create failed: {out.stdout} {out.stderr}"[:500])
    return made


def wait_for(check: Any, child: Child, deadline: float, every: float, what: str) -> float:
    while not check():
        if not child.alive():
            raise BenchError(f"contender exited before {what}: {child.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}: {child.tail()}")
        time.sleep(every)
    return time.monotonic()


def throughput(
    ctx: Context, contender: Contender, workload: Workload, count: int
) -> dict[str, Any]:
    job = new_job(ctx, contender, workload)
    made = prepare(ctx, contender, job)
    watcher = Watcher(ctx.bootstrap, job.group)
    child: Child | None = None
    try:
        produce_backlog(ctx.bootstrap, job.source, records(workload, count))
        ends = watcher.ends(job.source)
        start = time.monotonic()
        deadline = start + ctx.timeout_s
        child = Child(
            contender.argv(job, ctx.workdir), ctx.workdir / f"{job.group}.log", contender.cwd()
        )

        topics, seen = [job.output, job.dlq], [0]

        def progressed() -> bool:
            seen[0] = watcher.produced(topics)
            return seen[0] > 0

        first = wait_for(progressed, child, deadline, 0.02, "the first output")
        at_first, before = child.sample(), seen[0]
        if contender.transactional:  # offsets are committed with every transaction
            finished = lambda: watcher.committed_reached(job.source, ends)  # noqa: E731
        else:  # one output or dead letter per record, offsets committed up to 1 s later
            finished = lambda: watcher.produced(topics) >= count  # noqa: E731
        done = wait_for(finished, child, deadline, 0.025, "the last output")
        at_done = child.sample()
        committed = lambda: watcher.committed_reached(job.source, ends)  # noqa: E731
        wait_for(committed, child, deadline, 0.1, "all offsets committed")
        child.stop()
        out, dlq = watcher.ends(job.output), watcher.ends(job.dlq)
    finally:
        if child is not None:
            child.stop()
        watcher.close()
        delete_topics(ctx.bootstrap, made)
    timed = count - before  # records handled between the first output and the end
    timeable = timed >= count // 2  # else the contender outran the watcher: raise --count
    return {
        "contender": contender.name,
        "workload": workload.name,
        "records": count,
        "timed_records": timed,
        "startup_s": round(first - start, 3),
        "seconds": round(done - first, 3),
        "rate": timed / max(done - first, 1e-9) if timeable else None,
        "cpu_us": cpu_us_per_record(at_done.cpu_ticks - at_first.cpu_ticks, CLOCK_TICKS, timed)
        if timeable
        else None,
        "cpu_us_with_startup": cpu_us_per_record(at_done.cpu_ticks, CLOCK_TICKS, count),
        "peak_rss_mb": at_done.hwm_kb / 1024,
        "processes": at_done.processes,
        "output_end": sum(out.values()),
        "dlq_end": sum(dlq.values()),
        "expected_bad": workload.expected_bad(count),
    }


def latency(
    ctx: Context, contender: Contender, workload: Workload, rate: float, seconds: float
) -> dict[str, Any]:
    """The contender consumes a live stream at `rate` records/s: p50/p99 from produce to the
    output (or DLQ) record's arrival at a read_committed reader, in milliseconds."""
    job = new_job(ctx, contender, workload)
    made = prepare(ctx, contender, job)
    watcher = Watcher(ctx.bootstrap, job.group)
    values = value_pool(workload)
    child: Child | None = None
    reader: LatencyReader | None = None
    try:
        child = Child(
            contender.argv(job, ctx.workdir), ctx.workdir / f"{job.group}.log", contender.cwd()
        )
        deadline = time.monotonic() + ctx.timeout_s
        warm = produce_backlog(ctx.bootstrap, job.source, ((b"warm", v) for v in values[:200]))
        wait_for(lambda: watcher.committed_total(job.source) >= warm, child, deadline, 0.1, "warm")
        starts = {t: watcher.ends(t) for t in (job.output, job.dlq)}
        reader = LatencyReader(ctx.bootstrap, [job.output, job.dlq], starts)
        reader.start()
        total = produce_at_rate(ctx.bootstrap, job.source, values, rate, seconds)
        until = time.monotonic() + 30
        while len(reader.seen) < total and time.monotonic() < until and child.alive():
            time.sleep(0.1)
        reader.done.set()
        reader.join(10)
        got = list(reader.latencies_ms)
    finally:
        if reader is not None:
            reader.done.set()
        if child is not None:
            child.stop()
        watcher.close()
        delete_topics(ctx.bootstrap, made)
    if not got:
        raise BenchError(f"{contender.name}: no record arrived during the latency run")
    return {
        "contender": contender.name,
        "workload": workload.name,
        "rate": rate,
        "seconds": seconds,
        "sent": total,
        "received": len(got),
        "p50_ms": percentile(got, 50),
        "p99_ms": percentile(got, 99),
    }
