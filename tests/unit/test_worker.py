"""The worker loop and both delivery modes against the in-memory fake (pipeline.kafka.fake):
routing, commits only after acknowledgements, outages, rewinds, revocations during a retry wait,
holds and the flood guard, oversize records and the metrics counted per batch."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.codecs.json import JsonCodec
from pipeline.core import contract
from pipeline.core.crashes import CrashGuard, mark, parse_mark
from pipeline.core.handler import Handler
from pipeline.core.holds import parse_rules
from pipeline.core.policy import BreakerState, CircuitBreaker, FloodGuard, RetryPolicy
from pipeline.errors import Retryable, RuntimeFailure
from pipeline.kafka.fake import FakeCluster, FakeSink, FakeSource
from pipeline.kafka.seam import Committed, SinkError
from pipeline.runtime.delivery import AtLeastOnce, Delivery, Transactions
from pipeline.runtime.metrics import WorkerMetrics
from pipeline.runtime.worker import Worker, WorkerOptions
from schemas.orders import Payment
from tests.kit import good_payment

SOURCE = "shop.payments"
OUTPUT = "payments.valid"
DLQ = "payments.dlq"
PIPELINE = "payments"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


@dataclass
class Rig:
    """A worker on the fake cluster, and what a test looks at."""

    cluster: FakeCluster
    source: FakeSource
    sink: FakeSink
    worker: Worker
    registry: CollectorRegistry
    clock: Clock
    calls: list[int] = field(default_factory=list)

    def steps(self, n: int = 1) -> None:
        for _ in range(n):
            self.worker.step()
            self.clock.advance(0.01)

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"pipeline": PIPELINE, **labels})
        return 0.0 if value is None else value

    def flush_metrics(self) -> None:
        self.worker.metrics.flush()


def good(i: int) -> bytes:
    return json.dumps(good_payment(i)).encode()


BAD = b'{"payment_id": "p"}'


def rig(
    *,
    exactly_once: bool = False,
    processor: Callable[[object, Any], object] | None = None,
    holds: str | None = None,
    flood: FloodGuard | None = None,
    partitions: int = 1,
    dlq_max_bytes: int = 1_048_588,
    cluster: FakeCluster | None = None,
    crash_limit: int = 0,
    linger_s: float = 0.0,
) -> Rig:
    clock = Clock()
    cluster = cluster or FakeCluster(partitions=partitions)
    source = FakeSource(cluster, on_wait=clock.advance)
    sink = FakeSink(cluster, transactional=exactly_once)
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, PIPELINE)
    handler = Handler(
        pipeline=PIPELINE,
        output_topic=OUTPUT,
        dlq_topic=DLQ,
        redrive_topic=f"{PIPELINE}.redrive",
        codecs={SOURCE: JsonCodec(Payment)},
        output_codec=None,
        processor=processor,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=1.0, budget_s=30),
        retryable=(TimeoutError,),
        redact=None,  # the default policy: user exception text withheld
        worker_id="test:1",
        dlq_max_bytes=dlq_max_bytes,
        rng=random.Random(1),
    )
    if holds is not None:
        handler.holds = parse_rules(holds.encode(), Path("holds.toml"))
    delivery: Delivery
    if exactly_once:
        delivery = Transactions(
            sink, source, metrics, clock, clock, DLQ, timeout_s=5, linger_s=linger_s
        )
    else:
        delivery = AtLeastOnce(
            sink, source, metrics, clock, clock, DLQ, commit_interval_s=0.0, stall_s=30
        )
    breaker = CircuitBreaker(3, 1.0, 8.0)
    options = WorkerOptions(pipeline=PIPELINE, topics=(SOURCE,), batch_size=100)
    crashes = CrashGuard(crash_limit, careful_records=20) if crash_limit else None
    worker = Worker(
        options, source, delivery, handler, metrics, breaker, flood, clock, clock, crashes
    )
    source.subscribe(options.topics, worker)
    return Rig(cluster, source, sink, worker, registry, clock)


def breaker_state(r: Rig) -> BreakerState:
    """The breaker's state now (read through a call: mypy keeps an earlier assert's narrowing
    of the attribute across the steps that change it)."""
    return r.worker.breaker.state


def values(r: Rig, topic: str) -> list[bytes | None]:
    return [rec.value for rec in r.cluster.records(topic)]


@pytest.mark.parametrize("exactly_once", [False, True])
def test_good_records_are_forwarded_and_bad_ones_dead_lettered_with_the_contract(
    exactly_once: bool,
) -> None:
    r = rig(exactly_once=exactly_once)
    r.cluster.append(SOURCE, good(1))
    r.cluster.append(SOURCE, BAD, key=b"k")
    r.cluster.append(SOURCE, good(2))
    r.steps(2)
    assert values(r, OUTPUT) == [good(1), good(2)]
    (dead,) = r.cluster.records(DLQ)
    assert dead.value == BAD and dead.key == b"k"
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.problems == ()
    assert (meta.source_topic, meta.source_offset) == (SOURCE, 1)
    assert r.cluster.committed[(SOURCE, 0)] == Committed(3)


def test_at_least_once_commits_only_what_the_broker_acknowledged() -> None:
    r = rig()
    r.sink.stalled = True
    for i in range(5):
        r.cluster.append(SOURCE, good(i))
    r.steps(3)
    assert (SOURCE, 0) not in r.cluster.committed
    r.flush_metrics()
    assert r.sample("lazarus_records_total", outcome="forwarded") == 0
    r.sink.stalled = False
    r.steps(2)
    assert r.cluster.committed[(SOURCE, 0)] == Committed(5)
    r.flush_metrics()
    assert r.sample("lazarus_records_total", outcome="forwarded") == 5
    assert r.sample("lazarus_commits_total") >= 1
    assert 1000 < r.sample("lazarus_last_commit_timestamp_seconds") <= r.clock.now


def test_a_refused_dead_letter_opens_the_breaker_and_nothing_is_lost() -> None:
    r = rig()
    for i in range(3):
        r.cluster.append(SOURCE, good(i))
    r.cluster.append(SOURCE, BAD)
    r.cluster.append(SOURCE, good(9))
    r.sink.refuse[DLQ] = SinkError("broker says no", DLQ, retriable=True)
    r.steps(2)
    assert r.worker.breaker.state is BreakerState.OPEN
    assert r.cluster.committed.get((SOURCE, 0), Committed(0)).offset == 0  # the batch failed
    r.flush_metrics()
    assert r.sample("lazarus_produce_failures_total", target="dlq") == 1
    assert r.sample("lazarus_dead_letters_total", category="validation") == 0
    del r.sink.refuse[DLQ]
    r.clock.advance(2.0)
    r.steps(4)
    assert breaker_state(r) is BreakerState.CLOSED
    assert values(r, DLQ) == [BAD]
    assert set(values(r, OUTPUT)) == {good(0), good(1), good(2), good(9)}  # duplicates allowed
    assert r.cluster.committed[(SOURCE, 0)] == Committed(5)
    r.flush_metrics()
    assert r.sample("lazarus_dead_letters_total", category="validation") == 1
    assert r.sample("lazarus_rewinds_total") == 1


def test_exactly_once_aborts_and_rewinds_a_failed_transaction() -> None:
    r = rig(exactly_once=True)
    for i in range(4):
        r.cluster.append(SOURCE, good(i))
    r.sink.fail_commit = SinkError("coordinator moved", abortable=True)
    r.steps(1)
    assert r.sink.aborts == 1
    assert values(r, OUTPUT) == []
    r.sink.fail_commit = None
    r.clock.advance(2.0)
    r.steps(4)
    assert values(r, OUTPUT) == [good(i) for i in range(4)]  # exactly once
    assert r.cluster.committed[(SOURCE, 0)] == Committed(4)
    r.flush_metrics()
    assert r.sample("lazarus_transaction_aborts_total") == 1
    assert r.sample("lazarus_records_total", outcome="forwarded") == 4


def test_a_partition_not_seekable_yet_stays_paused_until_its_rewind_lands() -> None:
    """librdkafka refuses to seek a partition whose fetch has not started (just assigned after
    a broker restart, its committed offset still being fetched). The worker must neither crash
    nor resume past the aborted records: it stays paused and seeks again on the next loop."""
    r = rig(exactly_once=True)
    for i in range(4):
        r.cluster.append(SOURCE, good(i))
    r.sink.fail_commit = SinkError("coordinator moved", abortable=True)
    r.steps(1)
    r.sink.fail_commit = None
    r.source.refused_seeks[(SOURCE, 0)] = 2
    r.clock.advance(2.0)
    r.steps(2)
    assert r.worker.gate.paused and r.source.refused_seeks[(SOURCE, 0)] == 0
    assert values(r, OUTPUT) == []
    r.steps(3)
    assert values(r, OUTPUT) == [good(i) for i in range(4)]  # none skipped, none twice
    assert r.cluster.committed[(SOURCE, 0)] == Committed(4)
    r.flush_metrics()
    assert r.sample("lazarus_rewinds_total") == 1


def test_exactly_once_counts_dead_letters_only_when_their_transaction_commits() -> None:
    r = rig(exactly_once=True)
    r.cluster.append(SOURCE, BAD)
    r.sink.fail_commit = SinkError("no", abortable=True)
    r.steps(1)
    r.flush_metrics()
    assert r.sample("lazarus_dead_letters_total", category="validation") == 0
    r.sink.fail_commit = None
    r.clock.advance(2.0)
    r.steps(3)
    r.flush_metrics()
    assert r.sample("lazarus_dead_letters_total", category="validation") == 1


def test_a_fatal_transactional_error_renews_the_producer_then_stops_the_worker() -> None:
    """Fenced after a transaction outlived its timeout (the broker was away): a new producer
    and a rewind recover, exactly once; a producer that keeps failing fatally stops the worker."""
    r = rig(exactly_once=True)
    for i in range(3):
        r.cluster.append(SOURCE, good(i))
    r.sink.fail_commit = SinkError("fenced", fatal=True)
    r.steps(1)
    assert r.sink.resets == 1 and values(r, OUTPUT) == []
    r.clock.advance(2.0)
    r.steps(4)
    assert values(r, OUTPUT) == [good(i) for i in range(3)]
    assert r.cluster.committed[(SOURCE, 0)] == Committed(3)
    with pytest.raises(RuntimeFailure, match="fenced"):
        for i in range(10):
            r.cluster.append(SOURCE, good(10 + i))
            r.sink.fail_commit = SinkError("fenced", fatal=True)
            r.clock.advance(2.0)
            r.steps(2)


def test_an_abort_that_never_comes_back_is_ended_by_a_new_producer() -> None:
    """After a broker restart librdkafka once timed out every abort for minutes; the gate stayed
    closed all along. Past ABORT_PATIENCE timeouts a new producer ends the transaction (and,
    while the cluster refuses one too, the worker keeps trying without consuming)."""
    r = rig(exactly_once=True)  # timeout_s=5: patience 15 s
    for i in range(3):
        r.cluster.append(SOURCE, good(i))
    r.sink.fail_commit = SinkError("coordinator moved", abortable=True)
    r.sink.fail_abort = SinkError("timed out", retriable=True)
    r.steps(1)
    r.sink.fail_commit = None
    for _ in range(3):
        r.clock.advance(4.0)
        r.steps(1)
    assert r.sink.resets == 0 and values(r, OUTPUT) == []  # still waiting for the abort
    r.sink.fail_reset = SinkError("coordinator not available", retriable=True)
    r.clock.advance(4.0)
    r.steps(2)
    assert r.sink.resets == 0 and values(r, OUTPUT) == []  # nothing consumed meanwhile
    r.sink.fail_reset = None
    r.clock.advance(2.0)
    r.steps(4)
    assert r.sink.resets == 1
    assert values(r, OUTPUT) == [good(i) for i in range(3)]  # exactly once
    assert r.cluster.committed[(SOURCE, 0)] == Committed(3)


@pytest.mark.parametrize("exactly_once", [False, True])
def test_records_of_a_partition_revoked_during_a_retry_wait_are_never_routed(
    exactly_once: bool,
) -> None:
    """Defect 3 of the reliability issue: the rest of the batch of a revoked partition was
    routed, and in exactly-once mode its offsets went into the transaction."""
    attempts: list[int] = []

    def flaky(event: object, ctx: Any) -> object:
        if ctx.partition == 0 and ctx.offset == 0 and ctx.attempt == 1:
            attempts.append(ctx.attempt)
            r.source.revoke_on_next_consume([(SOURCE, 1)])
            raise TimeoutError("backend slow")
        return event

    r = rig(exactly_once=exactly_once, processor=flaky, partitions=2)
    r.cluster.append(SOURCE, good(0), partition=0)
    for i in range(3):
        r.cluster.append(SOURCE, good(10 + i), partition=1)
    r.steps(3)
    assert attempts == [1]
    assert (SOURCE, 1) not in r.worker.assigned
    routed = [rec for rec in r.cluster.records(OUTPUT)]
    assert len(routed) == 1  # only partition 0's record
    assert (SOURCE, 1) not in r.cluster.committed


def test_held_records_never_trip_the_flood_guard() -> None:
    """Defect 6: 120 of 170 records held by one rule tripped the flood guard twice."""
    holds = """
[[hold]]
name = "park-held"
reason = "maintenance"
expires = 2030-01-01T00:00:00Z
key = "held"
"""
    flood = FloodGuard(ratio=0.5, window=100, min_records=10, pause_s=60)
    r = rig(holds=holds, flood=flood)
    for i in range(60):
        r.cluster.append(SOURCE, good(i), key=b"held" if i % 4 else b"free")
    r.steps(2)
    assert flood.tripped_count == 0
    assert len(r.cluster.records(DLQ)) == 45
    assert len(values(r, OUTPUT)) == 15
    r.flush_metrics()
    assert r.sample("lazarus_records_total", outcome="held") == 45
    assert r.sample("lazarus_dead_letters_total", category="held") == 45


def test_the_flood_guard_still_pauses_on_real_failures() -> None:
    flood = FloodGuard(ratio=0.5, window=100, min_records=10, pause_s=60)
    r = rig(flood=flood)
    for _ in range(30):
        r.cluster.append(SOURCE, BAD)
    r.steps(2)
    assert flood.tripped_count == 1
    assert len(r.cluster.records(DLQ)) < 10


def test_a_dead_letter_refused_as_too_large_goes_without_its_value() -> None:
    """Defect 2: "Message size too large" was treated as an outage, forever."""
    r = rig()
    big = BAD + b" " * 5000
    r.cluster.append(SOURCE, big, key=b"big")
    r.cluster.append(SOURCE, good(1))
    r.sink.refuse_at_once[DLQ] = SinkError("too large", DLQ, too_large=True)
    original_produce = r.sink.produce

    def produce(out: Any, batch: int) -> None:
        if out.topic == DLQ and out.value is None:
            r.sink.refuse_at_once.pop(DLQ, None)
        original_produce(out, batch)

    r.sink.produce = produce  # type: ignore[method-assign]
    r.steps(2)
    assert r.worker.breaker.state is BreakerState.CLOSED
    (dead,) = r.cluster.records(DLQ)
    assert dead.value is None and dead.key == b"big"
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.value_omitted is not None
    assert meta.value_omitted.matches(big)
    assert values(r, OUTPUT) == [good(1)]
    assert r.cluster.committed[(SOURCE, 0)] == Committed(2)


def test_an_oversize_dead_letter_is_fitted_before_it_is_produced() -> None:
    r = rig(dlq_max_bytes=2000)
    big = BAD + b" " * 5000
    r.cluster.append(SOURCE, big)
    r.steps(2)
    (dead,) = r.cluster.records(DLQ)
    assert dead.value is None
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.value_omitted is not None
    assert meta.value_omitted.size == len(big)


def test_dead_letter_log_lines_are_one_per_cause(caplog: pytest.LogCaptureFixture) -> None:
    r = rig()
    for _ in range(50):
        r.cluster.append(SOURCE, BAD)
    with caplog.at_level(logging.WARNING, logger="lazarus.worker"):
        r.steps(2)
        r.worker.dead_log.flush(r.clock.now, force=True)
    lines = [rec.getMessage() for rec in caplog.records if "dead-lettered" in rec.getMessage()]
    assert len(lines) == 2, lines
    assert "dead-lettered 49 more like shop.payments/0/0" in lines[1]


def test_the_in_flight_gauge_and_assignment_are_exported() -> None:
    r = rig(partitions=3)
    r.sink.stalled = True
    r.cluster.append(SOURCE, good(1))
    r.steps(1)
    r.clock.advance(1.5)
    r.steps(1)
    assert r.sample("lazarus_in_flight_records") == 1
    assert r.sample("lazarus_assigned_partitions") == 3


def test_shutdown_drains_commits_and_closes() -> None:
    r = rig()
    r.cluster.append(SOURCE, good(1))
    r.worker.step()
    r.worker.stop()
    r.worker.run()  # stops at once: drains, commits, closes
    assert r.source.closed
    assert r.cluster.committed[(SOURCE, 0)] == Committed(1)


class Crash(BaseException):
    """Stands for the process dying inside a processor (os._exit, a segfault): nothing of the
    worker runs after it, no shutdown, no commit."""


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_record_that_keeps_killing_the_worker_is_dead_lettered_as_crashed(
    exactly_once: bool,
) -> None:
    """Defect 4 of the reliability issue: a poison pill that kills the process crash-loops the
    group. Each "process" here is a new worker on the same cluster; the processor dies on o-7."""

    def deadly(event: object, ctx: Any) -> object:
        if getattr(event, "payment_id", "") == "p-7":
            raise Crash()
        return event

    cluster = FakeCluster()
    for i in range(12):
        cluster.append(SOURCE, good(i), key=f"k{i}".encode())
    deaths = 0
    for _ in range(10):
        r = rig(exactly_once=exactly_once, processor=deadly, cluster=cluster, crash_limit=3)
        try:
            r.steps(30)
        except Crash:
            deaths += 1
            continue
        break
    # the first death (offset unknown), then three on the offset the marks pinned
    assert deaths == 4
    (dead,) = cluster.records(DLQ)
    assert dead.value == good(7) and dead.key == b"k7"
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.category is not None
    assert meta.category.value == "crashed" and meta.attempts == 3
    forwarded = {json.loads(v or b"{}")["payment_id"] for v in values(r, OUTPUT)}
    assert forwarded == {f"p-{i}" for i in range(12) if i != 7}
    r.worker.stop()
    r.worker.run()
    position = cluster.committed[(SOURCE, 0)]
    assert position.offset == 12 and parse_mark(position.metadata) is None


def test_a_clean_stop_leaves_no_mark() -> None:
    cluster = FakeCluster()
    cluster.append(SOURCE, good(1))
    r = rig(cluster=cluster, crash_limit=3)
    r.steps(2)
    assert r.cluster.committed[(SOURCE, 0)] == Committed(1)
    r.worker.stop()
    r.worker.run()
    again = rig(cluster=cluster, crash_limit=3)
    again.steps(1)
    assert not again.worker.crashes or not again.worker.crashes.suspects


def suspect(records: int, exactly_once: bool) -> tuple[FakeCluster, Rig]:
    """`records` good inputs on a partition whose committed offset carries another process's
    mark (so it is suspect), and a worker with crash protection (careful for 20 records)."""
    cluster = FakeCluster()
    for i in range(records):
        cluster.append(SOURCE, good(i))
    cluster.committed[(SOURCE, 0)] = Committed(0, mark(0, 1, "0123456789abcdef"))
    return cluster, rig(exactly_once=exactly_once, cluster=cluster, crash_limit=3)


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_suspect_partition_is_worked_through_in_one_batch(exactly_once: bool) -> None:
    """Another process's mark on the committed offset: each record is marked, routed and made
    durable before the next, within one poll (a seek and re-read per record held a suspect
    partition to about 2 records/s on a real broker)."""
    cluster, r = suspect(12, exactly_once)
    r.steps(1)
    assert len(values(r, OUTPUT)) == 12
    assert cluster.committed[(SOURCE, 0)] == Committed(12)
    guard = r.worker.crashes
    assert guard is not None
    if not exactly_once:  # (exactly-once sends its marks inside transactions)
        marked = [c.metadata for c in (x for commit in r.source.commits for x in commit.values())]
        pinned = [mark(0, 2, guard.process)] + [mark(o, 1, guard.process) for o in range(1, 12)]
        assert [m for m in marked if m] == pinned


@pytest.mark.parametrize("exactly_once", [False, True])
def test_the_end_of_careful_mode_mid_batch_duplicates_nothing(exactly_once: bool) -> None:
    """Careful mode ends after `careful_records` (20 here) inside a batch of 50: the rest of the
    batch is routed once. (It used to be routed, then read again after a seek back to the last
    careful record: 99 duplicates per suspect partition in the fault suite, at every batch size
    of 100, in exactly-once mode too.)"""
    cluster, r = suspect(50, exactly_once)
    r.steps(30)
    forwarded = [json.loads(v or b"{}")["payment_id"] for v in values(r, OUTPUT)]
    assert forwarded == [f"p-{i}" for i in range(50)]
    assert cluster.committed[(SOURCE, 0)] == Committed(50)


def test_its_own_mark_on_a_regained_partition_is_no_death() -> None:
    """A partition lost while the broker was unreachable (no commit landed) and given back to
    the same living process: the mark there is its own, so nothing is suspect; another process's
    mark is, and this process's own mark of a later attempt keeps the earlier deaths."""
    tp = (SOURCE, 0)
    guard = CrashGuard(3, careful_records=20)
    assert guard.assigned(tp, 5, mark(5, 1, guard.process)) == mark(5, 1, guard.process)
    assert not guard.is_suspect(tp)
    assert guard.assigned(tp, 5, mark(5, 1, "fedcba9876543210")) is None
    assert guard.suspects[tp].attempts == 1
    assert guard.assigned(tp, 5, mark(5, 1)) is None  # a mark of an older version: no owner
    assert guard.assigned(tp, 5, mark(5, 3, guard.process)) is None
    assert guard.suspects[tp].attempts == 2

    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    r = rig(cluster=cluster, crash_limit=3)
    r.steps(1)
    assert r.worker.crashes is not None
    cluster.committed[tp] = Committed(4, mark(4, 1, r.worker.crashes.process))
    r.worker.on_lost([tp])
    for i in range(4, 8):
        cluster.append(SOURCE, good(i))
    r.source.pending_assign = [tp]
    r.steps(1)
    assert not r.worker.crashes.suspects
    assert len(values(r, OUTPUT)) == 8


def test_an_exactly_once_transaction_spans_batches_until_its_time_is_up() -> None:
    """`transaction_ms`: three batches in one transaction, committed by the idle loop once the
    time is up (nothing visible or committed before); a retry wait still commits at once."""
    r = rig(exactly_once=True, linger_s=1.0)
    for i in range(250):
        r.cluster.append(SOURCE, good(i))
    r.steps(3)  # batches of 100, 100, 50 within 0.03 s
    assert r.sink.transactions == 0 and values(r, OUTPUT) == []
    assert (SOURCE, 0) not in r.cluster.committed
    r.clock.advance(1.0)
    r.steps(1)  # nothing new to read: the open transaction commits
    assert r.sink.transactions == 1 and len(values(r, OUTPUT)) == 250
    assert r.cluster.committed[(SOURCE, 0)] == Committed(250)


def test_a_lingering_transaction_commits_before_a_retry_wait() -> None:
    calls: list[object] = []

    def flaky(event: object, ctx: Any) -> object:
        calls.append(event)
        if len(calls) == 2:
            raise TimeoutError("dependency slow")
        return event

    r = rig(exactly_once=True, linger_s=60.0, processor=flaky)
    for i in range(3):
        r.cluster.append(SOURCE, good(i))
    r.steps(1)
    # the record before the wait is committed at once, 60 s of linger notwithstanding
    assert r.sink.transactions == 1 and r.cluster.committed[(SOURCE, 0)] == Committed(1)


def test_dead_letter_log_lines_carry_the_correlation_id(caplog: pytest.LogCaptureFixture) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = rig()
    r.cluster.append(
        SOURCE, BAD, headers=(("traceparent", f"00-{trace}-00f067aa0ba902b7-01".encode()),)
    )
    r.cluster.append(SOURCE, BAD)
    with caplog.at_level(logging.WARNING, logger="lazarus.worker"):
        r.steps(2)
        r.worker.dead_log.flush(r.clock.now, force=True)
    first, more = [rec for rec in caplog.records if "dead-lettered" in rec.getMessage()]
    assert f"(correlation {trace})" in first.getMessage()
    assert getattr(first, "correlation_id", None) == trace
    assert f"1 more like shop.payments/0/0 (correlation {trace})" in more.getMessage()


def test_retry_breaker_and_pause_log_lines_withhold_the_exception_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The default policy: a processor's exception text reaches no log line (it may quote the
    record): the dead-letter line and the pause lines (the breaker's reason) name only its type."""
    secret = "alice@example.com"

    def down(event: object, ctx: Any) -> object:
        raise Retryable(f"pricing down for {secret}")

    r = rig(processor=down)
    for i in range(5):
        r.cluster.append(SOURCE, good(i))
    with caplog.at_level(logging.DEBUG):
        for _ in range(40):
            r.steps(1)
            r.clock.advance(0.5)
        r.worker.dead_log.flush(r.clock.now, force=True)
    messages = [rec.getMessage() for rec in caplog.records]
    assert any("dependency failing" in m and "message redacted" in m for m in messages), messages
    assert all(secret not in m for m in messages)
