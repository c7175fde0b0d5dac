"""Every series `dlq exporter` serves, built from the latest snapshot of each followed DLQ and
pipeline by a custom collector on the exporter's own CollectorRegistry.

A scrape never reads Kafka nor rescans anything: the follow loop catches the index up and
measures lag each interval, then replaces the snapshots; `collect()` renders them. Labels are
`cluster`, `pipeline`, `topic` (and `category`, a bounded top-N `fingerprint` with the rest under
`other`, `group` and `partition` for lag); never a key, an offset or a message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.errors import Category
from reprocessor.index_query import Depth
from reprocessor.lag import PartitionLag

DLQ_LABELS = ["cluster", "pipeline", "topic"]
LAG_LABELS = ["cluster", "pipeline", "group", "topic", "partition"]
OTHER = "other"


@dataclass(frozen=True, slots=True)
class DlqSnapshot:
    """One DLQ as last measured. `retention_ms`/`retention_bytes` are None when unlimited."""

    cluster: str
    pipeline: str
    topic: str
    depth: Depth
    retention_ms: int | None
    retention_bytes: int | None


@dataclass(frozen=True, slots=True)
class PipelineSnapshot:
    cluster: str
    pipeline: str
    lag: Sequence[PartitionLag]
    slo_objective: float | None


@dataclass
class Snapshots:
    """The latest measurements, swapped whole under a lock by the follow loop."""

    top_n: int = 10
    dlqs: dict[tuple[str, str], DlqSnapshot] = field(default_factory=dict)
    pipelines: dict[tuple[str, str], PipelineSnapshot] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put_dlq(self, snapshot: DlqSnapshot) -> None:
        with self.lock:
            self.dlqs[(snapshot.cluster, snapshot.topic)] = snapshot

    def put_pipeline(self, snapshot: PipelineSnapshot) -> None:
        with self.lock:
            self.pipelines[(snapshot.cluster, snapshot.pipeline)] = snapshot

    def replace_up(self, up: dict[str, bool]) -> None:
        """Every cluster's state at once: a label no longer in use (a cluster first reported
        as `unknown`, then reached under its id) loses its series."""
        with self.lock:
            self.up = dict(up)

    def copy(self) -> tuple[list[DlqSnapshot], list[PipelineSnapshot], dict[str, bool]]:
        with self.lock:
            return list(self.dlqs.values()), list(self.pipelines.values()), dict(self.up)


class ExporterCollector(Collector):
    """Renders `Snapshots` as Prometheus metric families."""

    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        dlqs, pipelines, up = self.snapshots.copy()
        yield from dlq_families(dlqs, self.snapshots.top_n)
        yield from lag_families(pipelines)
        exporter_up = GaugeMetricFamily(
            "lazarus_exporter_up",
            "1 while the exporter reaches the cluster and follows its DLQs, else 0.",
            labels=["cluster"],
        )
        for cluster, ok in sorted(up.items()):
            exporter_up.add_metric([cluster], 1.0 if ok else 0.0)
        yield exporter_up


def dlq_families(dlqs: Sequence[DlqSnapshot], top_n: int) -> Iterator[Metric]:
    unresolved = _gauge(
        "lazarus_dlq_unresolved",
        "Dead letters not decided in the ledger, by category (held included as its own).",
        ["category"],
    )
    by_cause = _gauge(
        "lazarus_dlq_unresolved_by_cause",
        "Unresolved dead letters by cause: the top-N fingerprints, the rest as 'other'.",
        ["fingerprint"],
    )
    oldest = _gauge(
        "lazarus_dlq_oldest_unresolved_timestamp_seconds",
        "When the oldest unresolved dead letter failed (Unix time); absent when none.",
    )
    expiry = _gauge(
        "lazarus_dlq_unresolved_expiry_timestamp_seconds",
        "Earliest time retention.ms may delete the oldest unresolved dead letter (Unix time).",
    )
    retention_bytes = _gauge(
        "lazarus_dlq_retention_bytes",
        "The DLQ topic's retention.bytes per partition, when set (it can delete sooner).",
    )
    counters = {
        name: CounterMetricFamily(name, text, labels=DLQ_LABELS)
        for name, text in (
            ("lazarus_dlq_expired_unresolved", "Unresolved dead letters deleted by retention."),
            ("lazarus_dlq_records", "Dead letters a read_committed reader received."),
            ("lazarus_dlq_replayed", "Dead letters decided 'replayed' in the ledger."),
            ("lazarus_dlq_discarded", "Dead letters decided 'discarded' in the ledger."),
        )
    }
    for s in dlqs:
        labels, d = [s.cluster, s.pipeline, s.topic], s.depth
        categories = {c.value: 0 for c in Category} | d.unresolved_by_category
        for category, count in sorted(categories.items()):
            unresolved.add_metric([*labels, category], count)
        for fingerprint, count in top_causes(d.by_cause, top_n):
            by_cause.add_metric([*labels, fingerprint], count)
        if d.oldest_unresolved_ms is not None:
            oldest.add_metric(labels, d.oldest_unresolved_ms / 1000)
        if d.oldest_unresolved_ts_ms is not None and s.retention_ms is not None:
            expiry.add_metric(labels, (d.oldest_unresolved_ts_ms + s.retention_ms) / 1000)
        if s.retention_bytes is not None:
            retention_bytes.add_metric(labels, s.retention_bytes)
        counters["lazarus_dlq_expired_unresolved"].add_metric(labels, d.expired_unresolved)
        counters["lazarus_dlq_records"].add_metric(labels, d.records)
        counters["lazarus_dlq_replayed"].add_metric(labels, d.replayed)
        counters["lazarus_dlq_discarded"].add_metric(labels, d.discarded)
    yield from (unresolved, by_cause, oldest, expiry, retention_bytes, *counters.values())


def top_causes(by_cause: Sequence[tuple[str, int]], top_n: int) -> list[tuple[str, int]]:
    """The `top_n` largest causes (already sorted, largest first) and `other`, the sum of the
    rest (0 when there is none): a fixed number of series whatever the DLQ holds."""
    top = list(by_cause[:top_n])
    return [*top, (OTHER, sum(count for _, count in by_cause[top_n:]))]


def lag_families(pipelines: Sequence[PipelineSnapshot]) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "lazarus_consumergroup_lag",
        "Records the pipeline's group has yet to consume (to the last stable offset).",
        labels=LAG_LABELS,
    )
    seconds = GaugeMetricFamily(
        "lazarus_consumergroup_lag_seconds",
        "Age of the next record the group has yet to consume; 0 when caught up.",
        labels=LAG_LABELS,
    )
    stalled = GaugeMetricFamily(
        "lazarus_consumergroup_stalled",
        "1 when the committed offset has not moved over the stall window while lag > 0.",
        labels=LAG_LABELS,
    )
    objective = GaugeMetricFamily(
        "lazarus_slo_objective_ratio",
        "The pipeline's objective: the share of records that should not be dead-lettered.",
        labels=["cluster", "pipeline"],
    )
    for s in pipelines:
        for p in s.lag:
            labels = [s.cluster, s.pipeline, p.group, p.topic, str(p.partition)]
            lag.add_metric(labels, p.records)
            seconds.add_metric(labels, p.seconds)
            stalled.add_metric(labels, 1.0 if p.stalled else 0.0)
        if s.slo_objective is not None:
            objective.add_metric([s.cluster, s.pipeline], s.slo_objective)
    yield from (lag, seconds, stalled, objective)


def _gauge(name: str, text: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=[*DLQ_LABELS, *extra])
