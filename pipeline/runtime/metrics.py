"""Every `lazarus_*` series the worker exports, built on an injected registry, and the buffer
that feeds them once a second.

Nothing here runs per record: the worker adds a finished batch's counts to a `Tally` of plain
ints, and `WorkerMetrics.flush` moves them into prometheus-client (whose counters take a lock
per call) at most once a second, as arroyo's `MetricsBuffer` does. Labels come from small fixed
sets, initialised up front so dashboards see zeros, not gaps; never a key, an offset or a
fingerprint as a label.
"""

from __future__ import annotations

from collections import Counter as Counts
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.errors import Category

OUTCOMES = ("forwarded", "processed", "dropped", "dead_lettered", "held")
BREAKER_STATES = ("closed", "half_open", "open")
TARGETS = ("output", "dlq")
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class Tally:
    """Counts of finished work, in plain ints, between two flushes (or for one batch)."""

    outcomes: Counts[str] = field(default_factory=Counts)
    dead_letters: Counts[str] = field(default_factory=Counts)
    produce_failures: Counts[str] = field(default_factory=Counts)
    retries: int = 0
    rewinds: int = 0
    commits: int = 0
    aborts: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    ack_seconds: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.outcomes.update(other.outcomes)
        self.dead_letters.update(other.dead_letters)
        self.produce_failures.update(other.produce_failures)
        self.retries += other.retries
        self.rewinds += other.rewinds
        self.commits += other.commits
        self.aborts += other.aborts
        self.batch_seconds.extend(other.batch_seconds)
        self.ack_seconds.extend(other.ack_seconds)


class WorkerMetrics:
    """The worker's series. One instance per process, on the registry the caller provides."""

    def __init__(self, registry: CollectorRegistry, pipeline: str) -> None:
        self.pipeline = pipeline
        self.pending = Tally()
        labels = ["pipeline"]
        self.records = Counter(
            "lazarus_records_total",
            "Records finished by the worker (their outputs or dead letter acknowledged), by "
            "outcome.",
            [*labels, "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "lazarus_dead_letters_total",
            "Dead letters the broker acknowledged (exactly-once: whose transaction committed), "
            "by contract category.",
            [*labels, "category"],
            registry=registry,
        )
        self.produce_failures = Counter(
            "lazarus_produce_failures_total",
            "Records the broker refused or that timed out, by target (output or dlq).",
            [*labels, "target"],
            registry=registry,
        )
        self.retries = Counter(
            "lazarus_retries_total",
            "In-process retries of retryable processing errors.",
            labels,
            registry=registry,
        )
        self.breaker_state = Gauge(
            "lazarus_breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            [*labels, "state"],
            registry=registry,
        )
        self.breaker_opens = Counter(
            "lazarus_breaker_opens_total",
            "Times the circuit breaker opened (downstream outage, stalled or failed delivery).",
            labels,
            registry=registry,
        )
        self.flood_paused = Gauge(
            "lazarus_flood_guard_paused",
            "1 while the flood guard holds the worker paused, else 0.",
            labels,
            registry=registry,
        )
        self.flood_trips = Counter(
            "lazarus_flood_guard_trips_total",
            "Times the share of dead letters crossed the configured ratio.",
            labels,
            registry=registry,
        )
        self.rewinds = Counter(
            "lazarus_rewinds_total",
            "Seeks back to the first unacknowledged offset after a failed delivery or abort.",
            labels,
            registry=registry,
        )
        self.in_flight = Gauge(
            "lazarus_in_flight_records",
            "Records produced and not yet acknowledged by the broker.",
            labels,
            registry=registry,
        )
        self.commits = Counter(
            "lazarus_commits_total",
            "Offset commits (at-least-once) or committed transactions (exactly-once).",
            labels,
            registry=registry,
        )
        self.aborts = Counter(
            "lazarus_transaction_aborts_total",
            "Aborted transactions (exactly-once mode).",
            labels,
            registry=registry,
        )
        self.assigned = Gauge(
            "lazarus_assigned_partitions",
            "Partitions assigned to this group member.",
            labels,
            registry=registry,
        )
        self.last_commit = Gauge(
            "lazarus_last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit or committed transaction.",
            labels,
            registry=registry,
        )
        self.batch_duration = Histogram(
            "lazarus_batch_duration_seconds",
            "Time to route one consumed batch (decode, validate, process, produce).",
            labels,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.ack_latency = Histogram(
            "lazarus_produce_ack_latency_seconds",
            "From the end of a batch's routing until the broker acknowledged all of it "
            "(exactly-once: until its transaction committed).",
            labels,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._outcome = {o: self.records.labels(pipeline, o) for o in OUTCOMES}
        self._dead = {c.value: self.dead_letters.labels(pipeline, c.value) for c in Category}
        self._failures = {t: self.produce_failures.labels(pipeline, t) for t in TARGETS}
        for metric in (self.retries, self.breaker_opens, self.flood_trips, self.rewinds):
            metric.labels(pipeline)
        for metric in (self.commits, self.aborts):
            metric.labels(pipeline)
        self.set_breaker("closed")
        for gauge in (self.flood_paused, self.in_flight, self.assigned, self.last_commit):
            gauge.labels(pipeline).set(0)
        self.batch_duration.labels(pipeline)
        self.ack_latency.labels(pipeline)

    def set_breaker(self, state: str) -> None:
        for name in BREAKER_STATES:
            self.breaker_state.labels(self.pipeline, name).set(1 if name == state else 0)

    def flush(self) -> None:
        """Move the pending counts into prometheus-client (about once a second)."""
        tally, self.pending = self.pending, Tally()
        p = self.pipeline
        for outcome, n in tally.outcomes.items():
            child = self._outcome.get(outcome) or self.records.labels(p, outcome)
            child.inc(n)
        for category, n in tally.dead_letters.items():
            (self._dead.get(category) or self.dead_letters.labels(p, category)).inc(n)
        for target, n in tally.produce_failures.items():
            self._failures[target].inc(n)
        for counter, n in (
            (self.retries, tally.retries),
            (self.rewinds, tally.rewinds),
            (self.commits, tally.commits),
            (self.aborts, tally.aborts),
        ):
            if n:
                counter.labels(p).inc(n)
        batch, ack = self.batch_duration.labels(p), self.ack_latency.labels(p)
        for seconds in tally.batch_seconds:
            batch.observe(seconds)
        for seconds in tally.ack_seconds:
            ack.observe(seconds)
