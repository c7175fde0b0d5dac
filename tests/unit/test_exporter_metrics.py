"""`dlq exporter`'s series from snapshots, without Kafka: the bounded top-N of causes with the rest
under `other`, no age or expiry series while nothing is unresolved, every contract category with a
series, retention.bytes only when set, and the exposition parses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.errors import Category
from reprocessor.exporter_metrics import (
    DlqSnapshot,
    ExporterCollector,
    PipelineSnapshot,
    Snapshots,
    top_causes,
)
from reprocessor.index_query import Depth
from reprocessor.lag import PartitionLag


def depth(unresolved: dict[str, int], causes: list[tuple[str, int]], oldest: int | None) -> Depth:
    return Depth(
        records=20,
        unresolved=sum(unresolved.values()),
        replayed=3,
        discarded=2,
        expired_unresolved=1,
        unresolved_by_category=unresolved,
        by_cause=causes,
        oldest_unresolved_ms=oldest,
        oldest_unresolved_ts_ms=None if oldest is None else oldest + 5,
    )


def scrape(snapshots: Snapshots) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(snapshots))
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_top_causes_are_bounded_and_the_rest_is_other() -> None:
    causes = [("a", 9), ("b", 5), ("c", 2), ("d", 1)]
    assert top_causes(causes, 2) == [("a", 9), ("b", 5), ("other", 3)]
    assert top_causes(causes[:1], 10) == [("a", 9), ("other", 0)]
    assert top_causes([], 10) == [("other", 0)]


def test_series_of_a_dlq_with_and_without_unresolved_dead_letters() -> None:
    snapshots = Snapshots(top_n=1)
    busy = depth({"validation": 4, "held": 1}, [("f" * 16, 4), ("e" * 16, 1)], 1_000_000)
    snapshots.put_dlq(DlqSnapshot("c", "p", "busy.dlq", busy, 86_400_000, 1 << 30))
    snapshots.put_dlq(DlqSnapshot("c", "p", "empty.dlq", depth({}, [], None), 86_400_000, None))
    snapshots.put_pipeline(
        PipelineSnapshot("c", "p", [PartitionLag("p", "orders", 0, 7, 12.5, True)], 0.999)
    )
    snapshots.replace_up({"c": True})
    got = scrape(snapshots)
    unresolved = {(ls["topic"], ls["category"]): v for ls, v in got["lazarus_dlq_unresolved"]}
    assert unresolved[("busy.dlq", "validation")] == 4 and unresolved[("busy.dlq", "held")] == 1
    assert {c for t, c in unresolved if t == "empty.dlq"} == {c.value for c in Category}
    causes = {ls["fingerprint"]: v for ls, v in got["lazarus_dlq_unresolved_by_cause"]
              if ls["topic"] == "busy.dlq"}  # fmt: skip
    assert causes == {"f" * 16: 4, "other": 1}
    for name in ("oldest_unresolved_timestamp_seconds", "unresolved_expiry_timestamp_seconds"):
        assert [ls["topic"] for ls, _ in got[f"lazarus_dlq_{name}"]] == ["busy.dlq"]
    assert got["lazarus_dlq_oldest_unresolved_timestamp_seconds"][0][1] == 1_000
    assert got["lazarus_dlq_unresolved_expiry_timestamp_seconds"][0][1] == 1_000.005 + 86_400
    assert [ls["topic"] for ls, _ in got["lazarus_dlq_retention_bytes"]] == ["busy.dlq"]
    assert {v for _, v in got["lazarus_dlq_records_total"]} == {20}
    assert {v for _, v in got["lazarus_dlq_expired_unresolved_total"]} == {1}
    (lag_labels, lag), = got["lazarus_consumergroup_lag"]  # fmt: skip
    assert lag == 7 and lag_labels == {
        "cluster": "c", "pipeline": "p", "group": "p", "topic": "orders", "partition": "0"
    }  # fmt: skip
    assert got["lazarus_consumergroup_stalled"][0][1] == 1
    assert got["lazarus_slo_objective_ratio"] == [({"cluster": "c", "pipeline": "p"}, 0.999)]
    assert got["lazarus_exporter_up"] == [({"cluster": "c"}, 1.0)]
