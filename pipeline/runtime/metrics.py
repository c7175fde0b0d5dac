"""Every `lazarus_*` series the worker exports, built on an injected registry.

Labels come from small fixed sets, initialised up front so dashboards see zeros, not gaps; never a
key, an offset or a fingerprint as a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.errors import Category

OUTCOMES = ("forwarded", "processed", "dropped", "dead_lettered")
BREAKER_STATES = ("closed", "half_open", "open")


class WorkerMetrics:
    """The worker's series. One instance per process, on the registry the caller provides."""

    def __init__(self, registry: CollectorRegistry, pipeline: str) -> None:
        self.pipeline = pipeline
        labels = ["pipeline"]
        self.records = Counter(
            "lazarus_records_total",
            "Records finished by the worker, by outcome.",
            [*labels, "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "lazarus_dead_letters_total",
            "Records routed to the dead-letter topic, by contract category.",
            [*labels, "category"],
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
        self._by_outcome = {o: self.records.labels(pipeline, o) for o in OUTCOMES}
        for category in Category:
            self.dead_letters.labels(pipeline, category.value)
        for metric in (self.retries, self.breaker_opens, self.flood_trips, self.rewinds):
            metric.labels(pipeline)
        for metric in (self.commits, self.aborts):
            metric.labels(pipeline)
        self.set_breaker("closed")
        self.flood_paused.labels(pipeline).set(0)
        self.in_flight.labels(pipeline).set(0)

    def record(self, outcome: str, category: str | None = None) -> None:
        """Count one finished record (the labelled children are looked up once, then cached:
        this runs for every record)."""
        counter = self._by_outcome.get(outcome)
        if counter is None:
            counter = self._by_outcome[outcome] = self.records.labels(self.pipeline, outcome)
        counter.inc()
        if category is not None:
            self.dead_letters.labels(self.pipeline, category).inc()

    def set_breaker(self, state: str) -> None:
        for name in BREAKER_STATES:
            self.breaker_state.labels(self.pipeline, name).set(1 if name == state else 0)
