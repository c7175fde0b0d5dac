"""The README's Metrics section lists every series the worker and `dlq exporter` export, each
with its type and labels, and nothing they do not export: the tables are read from README.md and
compared with the real registries (WorkerMetrics; the exporter's collector over a snapshot in
which every family has a sample)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.runtime.metrics import WorkerMetrics
from reprocessor.exporter_metrics import (
    DlqSnapshot,
    ExporterCollector,
    PipelineSnapshot,
    Snapshots,
)
from reprocessor.index_query import Depth
from reprocessor.lag import PartitionLag

README = Path(__file__).resolve().parent.parent.parent / "README.md"
WORKER_LABELS = {"pipeline"}
DLQ_LABELS = {"cluster", "pipeline", "topic"}

Table = dict[str, tuple[str, set[str]]]
"""metric name -> (type, every label)"""


def readme_table(heading: str, implied: set[str]) -> Table:
    """The metric table under `heading`: labels are `implied` plus the extra ones named in
    backticks, or exactly the ones in a parenthesised cell such as "(`cluster` only)"."""
    section = README.read_text().split(heading, 1)[1].split("\n#", 1)[0]
    table: Table = {}
    for row in re.findall(r"^\| `([a-z_:*]+)`[^|]*\| *([a-z]*) *\|([^|]*)\|", section, re.M):
        name, kind, labels = row
        if "*" in name:
            continue  # process_*, python_*: prometheus-client's own
        named = set(re.findall(r"`(\w+)`(?! =)", labels.split(" (")[0]))
        labels = labels.strip()
        if labels.startswith("("):
            named = set(re.findall(r"`(\w+)`", labels))
        else:
            named |= implied
        table[name] = (kind, named)
    return table


def exported(registry: CollectorRegistry) -> Table:
    table: Table = {}
    for family in registry.collect():
        if not family.name.startswith("lazarus_"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        table[name] = (family.type, labels)
    return table


def test_the_worker_table_is_what_the_worker_exports() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry, "p")
    assert readme_table("### Worker", WORKER_LABELS) == exported(registry)


def test_the_exporter_table_is_what_the_exporter_exports() -> None:
    snapshots = Snapshots(top_n=1)
    depth = Depth(
        records=3,
        unresolved=2,
        replayed=1,
        discarded=0,
        expired_unresolved=0,
        unresolved_by_category={"validation": 2},
        by_cause=[("f" * 16, 2)],
        oldest_unresolved_ms=1_000,
        oldest_unresolved_ts_ms=1_000,
    )
    snapshots.put_dlq(DlqSnapshot("c", "p", "p.dlq", depth, 86_400_000, 1 << 30))
    lag = [PartitionLag("p", "orders", 0, 7, 12.5, False)]
    snapshots.put_pipeline(PipelineSnapshot("c", "p", lag, 0.999))
    snapshots.replace_up({"c": True})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(snapshots))
    table = readme_table("### `dlq exporter`", DLQ_LABELS)
    assert table == exported(registry)
