"""From runs to the summary table, the issue-9 targets and the printed tables.

`summarize` and `targets` are pure (lists of run dicts in, dicts out); `render` prints with rich.
Every ratio is "contender ÷ Lazarus at-least-once" on the same workload: above 1 for a rate
means faster than Lazarus, above 1 for CPU or memory means more expensive.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.contenders import BASELINE, CONTENDERS
from bench.measure import Spread, fmt_ratio, ratios

Row = dict[str, Any]


def summarize(runs: Sequence[Row], lat: Sequence[Row]) -> dict[str, dict[str, Row]]:
    """workload -> contender -> row: rate spread, median CPU µs/record, largest peak RSS,
    latency percentiles, and the ratios to Lazarus at-least-once."""
    out: dict[str, dict[str, Row]] = {}
    for run in runs:
        row = out.setdefault(run["workload"], {}).setdefault(run["contender"], {"runs": []})
        row["runs"].append(run)
    for rows in out.values():
        for row in rows.values():
            rs = row.pop("runs")
            timed = [r for r in rs if r["rate"] is not None]
            spread = Spread.of([r["rate"] for r in timed]) if timed else None
            row.update(
                rate=spread.median if spread else None,
                rate_min=spread.low if spread else None,
                rate_max=spread.high if spread else None,
                reps=len(rs),
                cpu_us=statistics.median(r["cpu_us"] for r in timed) if timed else None,
                peak_rss_mb=max(r["peak_rss_mb"] for r in rs),
                startup_s=statistics.median(r["startup_s"] for r in rs),
            )
        for key in ("rate", "cpu_us", "peak_rss_mb"):
            for name, value in ratios({n: r[key] for n, r in rows.items()}, BASELINE).items():
                rows[name][f"{key}_vs_alos"] = value
    for entry in lat:
        row = out.setdefault(entry["workload"], {}).setdefault(entry["contender"], {})
        row.update(p50_ms=entry["p50_ms"], p99_ms=entry["p99_ms"], latency_rate=entry["rate"])
    return out


def _get(summary: dict[str, dict[str, Row]], workload: str, name: str, key: str) -> float | None:
    value = summary.get(workload, {}).get(name, {}).get(key)
    return float(value) if value else None


def _quotient(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def targets(summary: dict[str, dict[str, Row]], rss: Sequence[Row] = ()) -> list[Row]:
    """Issue 9's targets, each as {target, workload, value, goal, met}; `met` None when a side
    was not measured. Scaling rows have no goal (reported only)."""
    rows: list[Row] = []

    def add(target: str, workload: str, value: float | None, goal: float | None) -> None:
        met = None if value is None or goal is None else value >= goal
        rows.append(
            {"target": target, "workload": workload, "value": value, "goal": goal, "met": met}
        )

    alos = BASELINE
    for w in summary:

        def g(name: str, key: str, w: str = w) -> float | None:
            return _get(summary, w, name, key)

        add("ALO rate ÷ quix rate ≥ 2", w, _quotient(g(alos, "rate"), g("quix", "rate")), 2.0)
        add("quix CPU ÷ ALO CPU ≥ 2", w, _quotient(g("quix", "cpu_us"), g(alos, "cpu_us")), 2.0)
        add(
            "ALO rate ÷ ceiling rate ≥ 0.6",
            w,
            _quotient(g(alos, "rate"), g("ceiling", "rate")),
            0.6,
        )
        add(
            "ceiling CPU ÷ ALO CPU ≥ 0.6",
            w,
            _quotient(g("ceiling", "cpu_us"), g(alos, "cpu_us")),
            0.6,
        )
        add(
            "EOS rate ÷ ALO rate ≥ 0.8",
            w,
            _quotient(g("lazarus-eos", "rate"), g(alos, "rate")),
            0.8,
        )
        add(
            "ALO 2 processes ÷ 1 process",
            w,
            _quotient(g("lazarus-alos-2p", "rate"), g(alos, "rate")),
            None,
        )
        add(
            "EOS 2 processes ÷ 1 process",
            w,
            _quotient(g("lazarus-eos-2p", "rate"), g("lazarus-eos", "rate")),
            None,
        )
    for fmt in ("avro", "json"):
        for name in (alos, "lazarus-eos"):
            add(
                f"{name} rate at 50% bad ÷ at 0% ≥ 0.5",
                fmt,
                _quotient(
                    _get(summary, f"{fmt}-50", name, "rate"),
                    _get(summary, f"{fmt}-0", name, "rate"),
                ),
                0.5,
            )
    growth = rss_growth(rss)
    if "ceiling" in growth and alos in growth:
        add(
            "ceiling RSS growth ÷ ALO RSS growth ≥ 1",
            "avro-5",
            _quotient(max(growth["ceiling"], 1.0), max(growth[alos], 1.0)),
            1.0,
        )
    return [r for r in rows if r["value"] is not None]


def rss_growth(rss: Sequence[Row]) -> dict[str, float]:
    """contender -> peak RSS at the largest count minus at the smallest (MB)."""
    by: dict[str, list[Row]] = {}
    for r in rss:
        by.setdefault(r["contender"], []).append(r)
    out = {}
    for name, rs in by.items():
        rs = sorted(rs, key=lambda r: r["records"])
        if len(rs) >= 2:
            out[name] = rs[-1]["peak_rss_mb"] - rs[0]["peak_rss_mb"]
    return out


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(
    console: Console,
    summary: dict[str, dict[str, Row]],
    order: Iterable[str],
    tgt: list[Row],
    rss: Sequence[Row],
) -> None:
    names = list(order)
    for workload, rows in summary.items():
        table = Table(title=f"{workload}: {workload.split('-')[1]}% bad", title_justify="left")
        for col in (
            "contender",
            "rec/s",
            "min-max",
            "÷ALO",
            "CPU µs/rec",
            "÷ALO",
            "peak RSS MB",
            "p50 ms",
            "p99 ms",
        ):
            table.add_column(col, justify="left" if col == "contender" else "right")
        for name in [n for n in names if n in rows]:
            r = rows[name]
            table.add_row(
                name,
                _num(r.get("rate"), ",.0f"),
                f"{_num(r.get('rate_min'), ',.0f')}-{_num(r.get('rate_max'), ',.0f')}",
                fmt_ratio(r.get("rate_vs_alos")),
                _num(r.get("cpu_us"), ".1f"),
                fmt_ratio(r.get("cpu_us_vs_alos")),
                _num(r.get("peak_rss_mb"), ".0f"),
                _num(r.get("p50_ms"), ".1f"),
                _num(r.get("p99_ms"), ".1f"),
            )
        console.print(table)
    if rss:
        table = Table(title="peak RSS by backlog size (avro-5)", title_justify="left")
        for col in ("contender", "records", "peak RSS MB", "rec/s"):
            table.add_column(col, justify="right")
        for r in rss:
            table.add_row(
                r["contender"], f"{r['records']:,}", f"{r['peak_rss_mb']:.0f}", f"{r['rate']:,.0f}"
            )
        console.print(table)
    table = Table(title="issue 9 targets", title_justify="left")
    for col in ("target", "workload", "value", "met"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for t in tgt:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "[red]no[/]")
        table.add_row(t["target"], t["workload"], f"{t['value']:.2f}", met)
    console.print(table)


def markdown(result: dict[str, Any]) -> str:
    """The summary and targets of a results file as Markdown tables (for the README)."""
    meta, summary = result["meta"], result["summary"]
    order = list(CONTENDERS)
    lines = [
        f"`{meta['command']}` ({meta['count']:,} records, {meta['reps']} reps; nproc "
        f"{meta['nproc']}, load average {meta['load_average_start'][0]:.1f} → "
        f"{meta['load_average_end'][0]:.1f}; {meta.get('label') or meta.get('lazarus')})",
        "",
    ]
    head = "| contender | rec/s (median) | min-max | ÷ALO | CPU µs/rec | ÷ALO | peak RSS MB |"
    for workload, rows in summary.items():
        lat = any("p50_ms" in r for r in rows.values())
        lines += [f"**{workload}**", "", head + (" p50 ms | p99 ms |" if lat else "")]
        lines.append("| --- " * (9 if lat else 7) + "|")
        for name in [n for n in order if n in rows]:
            r = rows[name]
            cells = [
                name,
                _num(r.get("rate"), ",.0f"),
                f"{_num(r.get('rate_min'), ',.0f')}-{_num(r.get('rate_max'), ',.0f')}",
                fmt_ratio(r.get("rate_vs_alos")),
                _num(r.get("cpu_us"), ".1f"),
                fmt_ratio(r.get("cpu_us_vs_alos")),
                _num(r.get("peak_rss_mb"), ".0f"),
            ]
            if lat:
                cells += [_num(r.get("p50_ms"), ".0f"), _num(r.get("p99_ms"), ".0f")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["| target | workload | value | met |", "| --- | --- | --- | --- |"]
    for t in result["targets"]:
        met = "-" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['workload']} | {t['value']:.2f} | {met} |")
    for r in result.get("rss_growth", []):
        lines.append(
            f"\nRSS growth run: {r['contender']} {r['records']:,} records, peak RSS "
            f"{r['peak_rss_mb']:.0f} MB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json

    from bench.workloads import REPO

    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="A bench_peers results file as the README's markdown table.",
    )
    parser.add_argument(
        "path", nargs="?", default=str(REPO / "bench/results/latest.json"), help="results JSON"
    )
    with open(parser.parse_args().path, encoding="utf-8") as fh:
        print(markdown(json.load(fh)))
