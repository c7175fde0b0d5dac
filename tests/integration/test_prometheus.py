"""The alert rules and dashboards against a real Prometheus server (tests/prom.py) scraping a real
worker and a real `dlq exporter` on the real test broker.

`observe()` starts a pipeline's worker (and, when asked, its exporter) with metrics ports and a
Prometheus that scrapes them every second as jobs lazarus-worker and lazarus-dlq-exporter, as in
deploy/prometheus/prometheus.yml; a test that needs another process adds it to `Stack.started`.
Pending is what these tests can see in seconds; firing after `for:` is what
deploy/prometheus/tests proves with promtool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.dlq_kit import DlqProcess, dlq
from tests.kit import (
    Pipeline,
    WorkerProcess,
    avro_framed,
    committed_offsets,
    free_port,
    good_order,
    good_payment,
    produce,
    wait_until,
)
from tests.prom import (
    Prometheus,
    PromQLError,
    as_promql,
    metric_names,
    panel_queries,
    scrape_job,
    variable_queries,
)


@dataclass
class Stack:
    """A pipeline, its worker, its exporter (or None) and the Prometheus scraping them."""

    pipe: Pipeline
    worker: WorkerProcess
    exporter: DlqProcess | None
    prom: Prometheus
    started: list[Callable[[], object]] = field(default_factory=list)  # stoppers, in order


def stop_exporter(exporter: DlqProcess) -> None:
    if exporter.proc.poll() is None:
        exporter.proc.terminate()
    exporter.wait(60)


@contextmanager
def observe(bootstrap: str, tmp_path: Path, exporter: bool = False) -> Iterator[Stack]:
    """Start the pieces; stop every one that started, last first, whatever happens. The
    pipeline has an objective and its DLQ a retention.bytes, so every series can appear."""
    worker_port = free_port(2)  # two consecutive free ports: never the same one twice
    exporter_port = worker_port + 1
    top = f"metrics_port = {worker_port}\nslo_objective = 0.999"
    retention = {"retention.bytes": str(1 << 30)}
    pipe = Pipeline(bootstrap, tmp_path, top=top).create(dlq_config=retention)
    jobs = [scrape_job("lazarus-worker", f"127.0.0.1:{worker_port}")]
    if exporter:
        jobs.append(scrape_job("lazarus-dlq-exporter", f"127.0.0.1:{exporter_port}"))
    (tmp_path / "prometheus").mkdir()
    prom = Prometheus(tmp_path / "prometheus", jobs)
    worker = WorkerProcess(pipe.config, tmp_path / "worker.log")
    stack = Stack(pipe, worker, None, prom, [worker.stop])
    try:
        if exporter:
            stack.exporter = process = DlqProcess(
                tmp_path / "exporter.log",
                "exporter",
                *("--config", str(pipe.config), "--port", str(exporter_port)),
                *("--interval", "1", "--cluster", "test", "--state-dir", str(tmp_path / "state")),
            )
            stack.started.append(lambda: stop_exporter(process))
        prom.start()
        stack.started.append(prom.stop)
        yield stack
    finally:
        for stop in reversed(stack.started):
            stop()


@pytest.fixture
def observed(bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    """A worker on the shared broker, scraped by a real Prometheus with the project's rules."""
    with observe(bootstrap, tmp_path) as stack:
        yield stack


@pytest.fixture
def observed_with_exporter(bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    """The same, plus `dlq exporter` following the pipeline's DLQ and group."""
    with observe(bootstrap, tmp_path, exporter=True) as stack:
        yield stack


def processed(pipe: Pipeline, total: int) -> bool:
    offsets = committed_offsets(pipe.bootstrap, pipe.name, pipe.orders, pipe.partitions)
    return sum(max(o, 0) for o in offsets.values()) >= total


def test_worker_metrics_reach_prometheus_and_every_dashboard_query_runs(observed: Stack) -> None:
    pipe, prom, worker = observed.pipe, observed.prom, observed.worker
    good = [(f"k{i}".encode(), avro_framed(good_order(i))) for i in range(8)]
    bad = [(b"bad", b"\x00\x00\x00\x00\x01x"), (b"bad", b"not avro")]
    prom.wait_for_scrape("lazarus-worker")  # scraped before the records, so rates show them
    total = produce(pipe.bootstrap, pipe.orders, good + bad)
    wait_until(lambda: worker.check_alive() and processed(pipe, total), 60, "records processed")
    selector = f'pipeline="{pipe.name}"'
    forwarded = f'sum(lazarus_records_total{{{selector}, outcome="forwarded"}})'
    prom.wait_for(lambda: prom.value(forwarded) == len(good), 30, f"{forwarded} == {len(good)}")
    dead = f"sum(lazarus_dead_letters_total{{{selector}}})"
    assert prom.value(dead) == len(bad)

    failures = []
    for board, title, expr in panel_queries():
        try:
            prom.query(as_promql(expr))
        except PromQLError as exc:
            failures.append(f"{board}: {title}: {exc}")
    assert failures == [], "\n".join(failures)

    # A panel shows the worker's data, not just parses: the records went through while scraped.
    throughput = panel_expr("Throughput by outcome")

    def rates() -> dict[str, float]:
        return {s["metric"]["outcome"]: float(s["value"][1]) for s in prom.query(throughput)}

    prom.wait_for(lambda: rates().get("forwarded"), 30, "a forwarded rate")
    assert rates()["dead_lettered"] > 0

    def evaluated() -> list[dict[str, Any]]:  # "0001-01-01T00:00:00Z" until the first round
        groups = prom.rule_groups()
        return groups if all(not g["lastEvaluation"].startswith("0001") for g in groups) else []

    groups = prom.wait_for(evaluated, 30, "every rule group evaluated")
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]]
    assert [b for b in broken if b[1]] == []
    assert [a for a in prom.alerts() if a["labels"]["alertname"].startswith("Lazarus")] == []


def panel_expr(title: str) -> str:
    """The first query of the panel titled `title`, as Grafana sends it with every variable at
    All."""
    return as_promql(next(expr for _, t, expr in panel_queries() if t == title))


def test_dead_letters_show_as_depth_raise_the_growth_alert_and_replay_empties_it(
    observed_with_exporter: Stack,
) -> None:
    stack = observed_with_exporter
    pipe, prom, worker = stack.pipe, stack.prom, stack.worker
    prom.wait_for_scrape("lazarus-worker")
    prom.wait_for_scrape("lazarus-dlq-exporter")
    recorded = f'lazarus:dlq_unresolved_excluding_held:sum{{pipeline="{pipe.name}"}}'
    prom.wait_for(lambda: prom.value(recorded) == 0, 60, "an empty DLQ recorded as depth 0")

    # Payments without a currency: validation errors, fixable on replay.
    bad = [(f"p{i}".encode(), payment_without_currency(i)) for i in range(5)]
    produce(pipe.bootstrap, pipe.payments, bad)
    depth = panel_expr("Unresolved (held left out)").replace(
        'pipeline=~".*"', f'pipeline="{pipe.name}"'
    )
    worker.check_alive()
    prom.wait_for(lambda: prom.value(depth) == len(bad), 90, f"{depth} == {len(bad)}")

    # With dead letters waiting, every metric a panel or a rule names has a series.
    rules = [r["query"] for g in prom.rule_groups() for r in g["rules"]]
    exprs = [as_promql(e) for _, _, e in panel_queries()] + rules
    named = set().union(*map(metric_names, exprs))
    # Recording rules are computed, not exported.
    named = {n for n in named if ":" not in n}
    assert len(named) >= 30

    def missing() -> list[str]:
        return [n for n in sorted(named) if not prom.query(f'count({{__name__="{n}"}})')]

    try:
        prom.wait_for(lambda: not missing(), 15, "a series of every named metric")
    except AssertionError:
        raise AssertionError(f"no series in Prometheus for {missing()}") from None

    for board, name, metric, label in variable_queries():  # what fills `$cluster`, `$pipeline`
        values = {s["metric"].get(label) for s in prom.query(f"count by ({label}) ({metric})")}
        assert values - {None}, f"{board}: ${name}: no {label} on {metric}"

    growing = prom.wait_for(lambda: alerts_named(prom, "LazarusDLQGrowing", pipe.name), 30, "alert")
    assert growing[0]["state"] == "pending"  # for: 10m; firing is proven by promtool
    assert growing[0]["labels"]["topic"] == pipe.dlq
    assert re.search(r"Top unresolved cause: [0-9a-f]{16} \(5 unresolved\)", str(growing))
    assert f"dlq --config <config of {pipe.name}> group" in growing[0]["annotations"]["description"]

    result = dlq("--config", str(pipe.config), "replay", "--where", "state=unresolved",
                 "--default", "currency=EUR", "--yes")  # fmt: skip
    assert result.code == 0, result.output
    prom.wait_for(lambda: (prom.value(depth) or 0) == 0, 90, f"{depth} back to 0")
    forwarded = f'sum(lazarus_records_total{{pipeline="{pipe.name}", outcome="forwarded"}})'
    prom.wait_for(lambda: prom.value(forwarded) == len(bad), 60, "the replayed records forwarded")
    assert stack.exporter is not None and stack.exporter.proc.poll() is None


def payment_without_currency(i: int) -> bytes:
    payment = good_payment(i)
    del payment["currency"]
    return json.dumps(payment).encode()


def alerts_named(prom: Prometheus, name: str, pipeline: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prom.alerts()
        if a["labels"]["alertname"] == name and a["labels"].get("pipeline") == pipeline
    ]
