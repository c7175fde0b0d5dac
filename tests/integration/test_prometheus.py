"""The alert rules and dashboards against a real Prometheus server (tests/prom.py) scraping a real
worker on the real test broker.

`observed` starts the pieces and hands back a `Stack`; each test adds the scrape jobs it needs.
The exporter half of issue 10 plugs in here once `dlq exporter` exists: start it as a process on a
free port next to the worker, add `scrape_job("lazarus-dlq-exporter", ...)` to the stack's jobs,
dead-letter records, assert through `prom.value(...)` that the depth query returns their number and
through `prom.alerts()` that LazarusDLQGrowing goes pending, replay them with `dlq replay`, and wait
for the depth to return to 0. (Firing after `for:` is what deploy/prometheus/tests prove.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.kit import (
    Pipeline,
    WorkerProcess,
    avro_framed,
    committed_offsets,
    good_order,
    produce,
    wait_until,
)
from tests.prom import Prometheus, PromQLError, as_promql, free_port, panel_queries, scrape_job


@dataclass
class Stack:
    """A pipeline with its worker (metrics on `worker_port`) and the Prometheus scraping it."""

    pipe: Pipeline
    worker: WorkerProcess
    worker_port: int
    prom: Prometheus
    started: list[Callable[[], object]] = field(default_factory=list)  # stoppers, in order


@pytest.fixture
def observed(bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    """A real worker with a metrics port on the shared broker, scraped every second by a real
    Prometheus with the project's rules (job lazarus-worker, as in deploy/prometheus)."""
    port = free_port()
    pipe = Pipeline(bootstrap, tmp_path, top=f"metrics_port = {port}").create()
    worker = WorkerProcess(pipe.config, tmp_path / "worker.log")
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    prom = Prometheus(prom_dir, [scrape_job("lazarus-worker", f"127.0.0.1:{port}")])
    stack = Stack(pipe, worker, port, prom, [worker.stop])
    try:
        prom.start()
        stack.started.append(prom.stop)
        yield stack
    finally:
        for stop in reversed(stack.started):
            stop()


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
    throughput = as_promql(dict(panel_queries_by_title())["Throughput by outcome"])

    def rates() -> dict[str, float]:
        return {s["metric"]["outcome"]: float(s["value"][1]) for s in prom.query(throughput)}

    by_outcome = prom.wait_for(lambda: rates().get("forwarded"), 30, "a forwarded rate") and rates()
    assert by_outcome["forwarded"] > 0 and by_outcome["dead_lettered"] > 0

    groups = prom.wait_for(
        lambda: [g for g in prom.rule_groups() if g.get("lastEvaluation", "").startswith("2")],
        30,
        "every rule group evaluated",
    )
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]]
    assert [b for b in broken if b[1]] == []
    assert [a for a in prom.alerts() if a["labels"]["alertname"].startswith("Lazarus")] == []


def panel_queries_by_title() -> list[tuple[str, str]]:
    return [(title, expr) for _, title, expr in panel_queries()]
