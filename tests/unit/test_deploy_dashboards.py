"""The Grafana dashboards: the committed JSON is what deploy/grafana/build.py generates, every
panel's PromQL names only metrics the worker and the exporter export, and the provisioning files
agree with the dashboards. (tests/integration/test_prometheus.py sends every expression to a real
Prometheus, which proves that they parse.)"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.prom import DASHBOARDS, as_promql, metric_names, panel_queries, variable_queries

REPO = Path(__file__).resolve().parent.parent.parent
GRAFANA = REPO / "deploy/grafana"

WORKER = {
    "lazarus_records_total",
    "lazarus_dead_letters_total",
    "lazarus_produce_failures_total",
    "lazarus_retries_total",
    "lazarus_breaker_opens_total",
    "lazarus_flood_guard_trips_total",
    "lazarus_rewinds_total",
    "lazarus_commits_total",
    "lazarus_transaction_aborts_total",
    "lazarus_breaker_state",
    "lazarus_flood_guard_paused",
    "lazarus_in_flight_records",
    "lazarus_assigned_partitions",
    "lazarus_last_commit_timestamp_seconds",
}
HISTOGRAMS = {"lazarus_batch_duration_seconds", "lazarus_produce_ack_latency_seconds"}
EXPORTER = {
    "lazarus_dlq_unresolved",
    "lazarus_dlq_unresolved_by_cause",
    "lazarus_dlq_oldest_unresolved_timestamp_seconds",
    "lazarus_dlq_unresolved_expiry_timestamp_seconds",
    "lazarus_dlq_retention_bytes",
    "lazarus_dlq_expired_unresolved_total",
    "lazarus_dlq_records_total",
    "lazarus_dlq_replayed_total",
    "lazarus_dlq_discarded_total",
    "lazarus_consumergroup_lag",
    "lazarus_consumergroup_lag_seconds",
    "lazarus_consumergroup_stalled",
    "lazarus_slo_objective_ratio",
    "lazarus_exporter_up",
}
EXPORTED = (
    WORKER
    | EXPORTER
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    | {"up"}
)
STANDARD_PREFIXES = ("process_", "python_")


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_metric_names_finds_metrics_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(lazarus_batch_duration_seconds_bucket{pipeline=~"a"}[$__rate_interval])))'
        " / on (pipeline) group_left () (1 - max by (pipeline) (lazarus_x))"
        " + process_resident_memory_bytes / 1e9 and time() - up offset 5m"
    )
    assert metric_names(expr) == {
        "lazarus_batch_duration_seconds_bucket",
        "lazarus_x",
        "process_resident_memory_bytes",
        "up",
    }
    assert metric_names('topk(10, sum by (topic, fingerprint) (m{fingerprint!="other"}))') == {"m"}


def test_committed_dashboards_are_what_build_py_generates() -> None:
    generated = load_build().render()
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert set(committed) == set(generated) == {"lazarus-oncall.json", "lazarus-overview.json"}
    for name, text in generated.items():
        assert committed[name] == text, f"{name} is stale: python deploy/grafana/build.py"


QUERIES = panel_queries()


@pytest.mark.parametrize(("board", "title", "expr"), QUERIES, ids=[q[1] for q in QUERIES])
def test_every_panel_names_only_exported_metrics(board: str, title: str, expr: str) -> None:
    names = metric_names(as_promql(expr))
    assert names, f"{board}: {title}: no metric in {expr}"
    unknown = {n for n in names if n not in EXPORTED and not n.startswith(STANDARD_PREFIXES)}
    assert unknown == set(), f"{board}: {title}: {expr}"


def test_every_variable_reads_an_exported_metric() -> None:
    """`$cluster` and `$pipeline` come from `label_values(metric, label)`: a renamed metric would
    leave every panel filtered on an empty list. (test_prometheus.py asks a real Prometheus
    for the label on the real series.)"""
    found = variable_queries()
    assert {(board, name) for board, name, _, _ in found} == {
        (board, name) for board in ("lazarus-oncall.json", "lazarus-overview.json")
        for name in ("cluster", "pipeline")
    }  # fmt: skip
    for board, name, metric, _ in found:
        assert metric in EXPORTED, f"{board}: ${name} reads {metric}"


def test_the_oncall_dashboard_covers_what_on_call_needs() -> None:
    used = set().union(*(metric_names(e) for b, _, e in QUERIES if b == "lazarus-oncall.json"))
    needed = {
        "lazarus_dlq_unresolved",  # depth and growth by topic and category
        "lazarus_dlq_unresolved_by_cause",  # top causes
        "lazarus_dlq_oldest_unresolved_timestamp_seconds",  # oldest age
        "lazarus_dlq_unresolved_expiry_timestamp_seconds",  # expiry risk
        "lazarus_consumergroup_lag",
        "lazarus_consumergroup_lag_seconds",
        "lazarus_breaker_state",
        "lazarus_records_total",  # throughput
        "lazarus_batch_duration_seconds_bucket",  # latency
        "lazarus_produce_ack_latency_seconds_bucket",
        "lazarus_produce_failures_total",
    }
    assert needed - used == set()


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource() -> None:
    datasource = (GRAFANA / "provisioning/datasources/prometheus.yml").read_text()
    assert re.search(r"^\s+uid: prometheus$", datasource, re.M)
    provider = (GRAFANA / "provisioning/dashboards/lazarus.yml").read_text()
    assert re.search(r"^\s+path: /var/lib/grafana/dashboards$", provider, re.M)
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        assert board["uid"] == path.stem
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (path.name, panel["title"])
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
                assert panel["targets"], panel["title"]
