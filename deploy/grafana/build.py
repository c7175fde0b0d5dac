"""Generate the Grafana dashboards in deploy/grafana/dashboards/ from this file.

    python deploy/grafana/build.py          # rewrite the JSON
    python deploy/grafana/build.py --check  # exit 1 when the committed JSON is stale

Two dashboards: `lazarus-oncall` (one pipeline at a time: DLQ depth and growth by topic, category
and top causes, oldest age, expiry risk, lag, breaker, throughput, latency) and `lazarus-overview`
(every pipeline side by side). Panels name only the metrics the worker and `dlq exporter` export
(tests/unit/test_deploy_dashboards.py checks it, and tests/integration/test_prometheus.py sends
every expression to a real Prometheus). Grafana variables in expressions: `$cluster`,
`$pipeline` (regex matchers, "All" = `.*`) and `$__rate_interval`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WORKER = 'pipeline=~"$pipeline"'
DLQ = 'cluster=~"$cluster", pipeline=~"$pipeline"'
RATE = "$__rate_interval"


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries, stat or table
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)


@dataclass(slots=True)
class Layout:
    """Places panels left to right, wrapping at Grafana's 24 columns; rows span the width."""

    panels: list[dict[str, Any]] = field(default_factory=list)
    x: int = 0
    y: int = 0
    row_height: int = 0

    def row(self, title: str) -> None:
        self._wrap()
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: Panel) -> None:
        if self.x + panel.width > 24:
            self._wrap()
        self.panels.append(render_panel(panel, len(self.panels) + 1, self.x, self.y))
        self.x += panel.width
        self.row_height = max(self.row_height, panel.height)

    def _wrap(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x, self.row_height = 0, 0


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "refId": chr(ord("A") + i),
            "datasource": DATASOURCE,
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "instant": q.instant or panel.kind == "table",
            "range": not (q.instant or panel.kind == "table"),
            **({"format": "table"} if panel.kind == "table" else {}),
        }
        for i, q in enumerate(panel.queries)
    ]
    steps = [{"color": color, "value": value} for value, color in panel.thresholds]
    options: dict[str, Any] = {}
    if panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    elif panel.kind == "timeseries":
        options = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["last"]}}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": options,
    }


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(uid: str, title: str, description: str, layout: Layout) -> dict[str, Any]:
    datasource = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {"text": "Prometheus", "value": "prometheus"},
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["lazarus", "kafka", "dlq"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [
            {
                "title": "Runbooks",
                "type": "link",
                "url": "https://github.com/lazarus-dlq/lazarus/blob/main/README.md#runbooks",
            }
        ],
        "templating": {
            "list": [
                datasource,
                variable("cluster", "Cluster", "label_values(lazarus_dlq_unresolved, cluster)"),
                variable("pipeline", "Pipeline", "label_values(lazarus_records_total, pipeline)"),
            ]
        },
        "panels": layout.panels,
    }


def quantiles(metric: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{WORKER}}}[{RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    )


def burn_rate(window: str, by: str = "pipeline") -> str:
    """Dead-letter ratio over `window` (held left out) as a multiple of the error budget."""
    return (
        f'(sum by ({by}) (rate(lazarus_dead_letters_total{{{WORKER}, category!="held"}}[{window}]))'
        f" / sum by ({by}) (rate(lazarus_records_total{{{WORKER}}}[{window}])))"
        f" / on ({by}) (1 - max by ({by}) (lazarus_slo_objective_ratio{{{DLQ}}}))"
    )


def oncall() -> dict[str, Any]:
    grid = Layout()
    grid.row("Dead-letter queue")
    for panel in (
        Panel(
            "Unresolved (held left out)",
            (Query(f'sum(lazarus_dlq_unresolved{{{DLQ}, category!="held"}})'),),
            "stat",
            width=4,
            height=5,
            thresholds=((None, "green"), (1, "orange")),
        ),
        Panel(
            "Held",
            (Query(f'sum(lazarus_dlq_unresolved{{{DLQ}, category="held"}})'),),
            "stat",
            width=4,
            height=5,
        ),
        Panel(
            "Oldest unresolved",
            (Query(f"time() - min(lazarus_dlq_oldest_unresolved_timestamp_seconds{{{DLQ}}})"),),
            "stat",
            unit="s",
            width=4,
            height=5,
            thresholds=((None, "green"), (86400, "orange"), (172800, "red")),
        ),
        Panel(
            "First expiry of an unresolved dead letter",
            (Query(f"min(lazarus_dlq_unresolved_expiry_timestamp_seconds{{{DLQ}}}) - time()"),),
            "stat",
            unit="s",
            width=4,
            height=5,
            thresholds=((None, "red"), (86400, "orange"), (259200, "green")),
        ),
        Panel(
            "Expired unresolved (24h)",
            (Query(f"sum(increase(lazarus_dlq_expired_unresolved_total{{{DLQ}}}[1d]))"),),
            "stat",
            width=4,
            height=5,
            thresholds=((None, "green"), (1, "red")),
            description="Dead letters retention deleted before anyone decided them: lost.",
        ),
        Panel(
            "Error budget burn (1h)",
            (Query(burn_rate("1h", "pipeline")),),
            "stat",
            unit="suffix:x",
            width=4,
            height=5,
            thresholds=((None, "green"), (1, "orange"), (14.4, "red")),
        ),
        Panel(
            "Unresolved by topic",
            (Query(f"sum by (topic) (lazarus_dlq_unresolved{{{DLQ}}})", "{{topic}}"),),
        ),
        Panel(
            "DLQ growth by topic (per hour, held left out)",
            (
                Query(
                    "sum by (topic) "
                    f'(delta(lazarus_dlq_unresolved{{{DLQ}, category!="held"}}[1h]))',
                    "{{topic}}",
                ),
            ),
        ),
        Panel(
            "Unresolved by category",
            (Query(f"sum by (category) (lazarus_dlq_unresolved{{{DLQ}}})", "{{category}}"),),
        ),
        Panel(
            "Top causes (unresolved by fingerprint)",
            (
                Query(
                    "topk(10, sum by (topic, fingerprint) "
                    f'(lazarus_dlq_unresolved_by_cause{{{DLQ}, fingerprint!="other"}}))'
                ),
                Query(
                    "sum by (topic, fingerprint) "
                    f'(lazarus_dlq_unresolved_by_cause{{{DLQ}, fingerprint="other"}})'
                ),
            ),
            "table",
            description="Look closer: dlq --config <config> inspect --where fingerprint=<fp>",
        ),
        Panel(
            "Time left before unresolved dead letters expire",
            (
                Query(
                    f"lazarus_dlq_unresolved_expiry_timestamp_seconds{{{DLQ}}} - time()",
                    "{{topic}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Oldest unresolved age by topic",
            (
                Query(
                    f"time() - lazarus_dlq_oldest_unresolved_timestamp_seconds{{{DLQ}}}",
                    "{{topic}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "DLQ flow: written, replayed, discarded",
            (
                Query(f"sum(rate(lazarus_dlq_records_total{{{DLQ}}}[{RATE}]))", "written"),
                Query(f"sum(rate(lazarus_dlq_replayed_total{{{DLQ}}}[{RATE}]))", "replayed"),
                Query(f"sum(rate(lazarus_dlq_discarded_total{{{DLQ}}}[{RATE}]))", "discarded"),
            ),
            unit="ops",
        ),
        Panel(
            "DLQ retention.bytes",
            (Query(f"lazarus_dlq_retention_bytes{{{DLQ}}}", "{{topic}}"),),
            unit="bytes",
            description="Only when set: size-based retention can delete before retention.ms.",
        ),
    ):
        grid.add(panel)

    grid.row("Consumer lag")
    for panel in (
        Panel(
            "Lag (records) by topic",
            (Query(f"sum by (group, topic) (lazarus_consumergroup_lag{{{DLQ}}})", "{{topic}}"),),
            width=8,
        ),
        Panel(
            "Lag (seconds) by topic",
            (
                Query(
                    f"max by (group, topic) (lazarus_consumergroup_lag_seconds{{{DLQ}}})",
                    "{{topic}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        Panel(
            "Stalled partitions",
            (
                Query(
                    f"sum by (group, topic) (lazarus_consumergroup_stalled{{{DLQ}}})", "{{topic}}"
                ),
            ),
            width=8,
        ),
    ):
        grid.add(panel)

    grid.row("Workers")
    for panel in (
        Panel(
            "Throughput by outcome",
            (
                Query(
                    f"sum by (outcome) (rate(lazarus_records_total{{{WORKER}}}[{RATE}]))",
                    "{{outcome}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Dead letters by category",
            (
                Query(
                    f"sum by (category) (rate(lazarus_dead_letters_total{{{WORKER}}}[{RATE}]))",
                    "{{category}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Circuit breaker and flood guard",
            (
                Query(
                    f'max by (instance) (lazarus_breaker_state{{{WORKER}, state="open"}})',
                    "open {{instance}}",
                ),
                Query(
                    f'max by (instance) (lazarus_breaker_state{{{WORKER}, state="half_open"}})',
                    "half-open {{instance}}",
                ),
                Query(
                    f"max by (instance) (lazarus_flood_guard_paused{{{WORKER}}})",
                    "flood guard {{instance}}",
                ),
            ),
        ),
        Panel(
            "Produce failures (the loss path)",
            (
                Query(
                    f"sum by (target) (rate(lazarus_produce_failures_total{{{WORKER}}}[{RATE}]))",
                    "{{target}}",
                ),
            ),
            unit="ops",
        ),
        Panel("Batch duration", quantiles("lazarus_batch_duration_seconds"), unit="s"),
        Panel("Produce-to-ack latency", quantiles("lazarus_produce_ack_latency_seconds"), unit="s"),
        Panel(
            "Retries, rewinds, aborts, trips",
            tuple(
                Query(f"sum(rate({name}{{{WORKER}}}[{RATE}]))", legend)
                for name, legend in (
                    ("lazarus_retries_total", "retries"),
                    ("lazarus_rewinds_total", "rewinds"),
                    ("lazarus_transaction_aborts_total", "aborts"),
                    ("lazarus_breaker_opens_total", "breaker opens"),
                    ("lazarus_flood_guard_trips_total", "flood guard trips"),
                    ("lazarus_commits_total", "commits"),
                )
            ),
            unit="ops",
        ),
        Panel(
            "Since the last commit",
            (
                Query(
                    "time() - max by (instance) "
                    f"(lazarus_last_commit_timestamp_seconds{{{WORKER}}})",
                    "{{instance}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "In flight and assigned partitions",
            (
                Query(f"sum by (instance) (lazarus_in_flight_records{{{WORKER}}})", "in flight"),
                Query(
                    f"sum by (instance) (lazarus_assigned_partitions{{{WORKER}}})",
                    "partitions {{instance}}",
                ),
            ),
        ),
        Panel(
            "Worker processes: CPU and memory",
            (
                Query(
                    f'rate(process_cpu_seconds_total{{job="lazarus-worker"}}[{RATE}])',
                    "cpu {{instance}}",
                ),
                Query(
                    'process_resident_memory_bytes{job="lazarus-worker"} / 1e9',
                    "RSS GB {{instance}}",
                ),
            ),
        ),
        Panel(
            "Scrape targets up",
            (
                Query('up{job=~"lazarus-worker|lazarus-dlq-exporter"}', "{{job}} {{instance}}"),
                Query('lazarus_exporter_up{cluster=~"$cluster"}', "exporter {{cluster}}"),
            ),
        ),
    ):
        grid.add(panel)
    return dashboard(
        "lazarus-oncall",
        "Lazarus / on-call",
        "One pipeline when paged: DLQ depth and causes, age and expiry, lag, worker health.",
        grid,
    )


def overview() -> dict[str, Any]:
    grid = Layout()
    grid.row("Every pipeline")
    for panel in (
        Panel(
            "Unresolved dead letters by pipeline (held left out)",
            (
                Query(
                    "sum by (cluster, pipeline) "
                    f'(lazarus_dlq_unresolved{{{DLQ}, category!="held"}})',
                    "{{cluster}}/{{pipeline}}",
                ),
            ),
        ),
        Panel(
            "Held by pipeline",
            (
                Query(
                    "sum by (cluster, pipeline) "
                    f'(lazarus_dlq_unresolved{{{DLQ}, category="held"}})',
                    "{{cluster}}/{{pipeline}}",
                ),
            ),
        ),
        Panel(
            "Oldest unresolved by pipeline",
            (
                Query(
                    "time() - min by (cluster, pipeline) "
                    f"(lazarus_dlq_oldest_unresolved_timestamp_seconds{{{DLQ}}})",
                    "{{cluster}}/{{pipeline}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Error budget burn by pipeline (1h)",
            (Query(burn_rate("1h"), "{{pipeline}}"),),
            unit="suffix:x",
        ),
        Panel(
            "Throughput by pipeline",
            (
                Query(
                    f"sum by (pipeline) (rate(lazarus_records_total{{{WORKER}}}[{RATE}]))",
                    "{{pipeline}}",
                ),
            ),
            unit="ops",
        ),
        Panel(
            "Worst lag by pipeline",
            (
                Query(
                    f"max by (cluster, pipeline) (lazarus_consumergroup_lag_seconds{{{DLQ}}})",
                    "{{cluster}}/{{pipeline}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Breakers not closed",
            (
                Query(
                    f'sum by (pipeline) (lazarus_breaker_state{{{WORKER}, state!="closed"}})',
                    "{{pipeline}}",
                ),
            ),
        ),
        Panel(
            "Pipelines at a glance",
            (
                Query(f"sum by (cluster, pipeline) (lazarus_dlq_unresolved{{{DLQ}}})"),
                Query(f"sum by (cluster, pipeline) (lazarus_consumergroup_stalled{{{DLQ}}})"),
                Query(
                    "sum by (cluster, pipeline) "
                    f"(increase(lazarus_dlq_expired_unresolved_total{{{DLQ}}}[1d]))"
                ),
            ),
            "table",
        ),
    ):
        grid.add(panel)
    return dashboard(
        "lazarus-overview",
        "Lazarus / overview",
        "Every pipeline side by side: depth, age, burn rate, throughput, lag, breakers.",
        grid,
    )


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {
        f"{board['uid']}.json": json.dumps(board, indent=2, sort_keys=True) + "\n"
        for board in (oncall(), overview())
    }


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = OUT / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}: run python deploy/grafana/build.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
