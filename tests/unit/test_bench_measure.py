"""The pure helpers of bench/bench_peers.py: no Kafka, no bench extra."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.measure import (
    Spread,
    cpu_us_per_record,
    descendants,
    fmt_ratio,
    parse_proc_stat,
    parse_vm_hwm_kb,
    percentile,
    ratios,
)
from bench.report import summarize, targets
from bench.workloads import Workload, is_bad

STAT = (
    "4242 (python -m bench) (x)) S 4200 4242 4200 0 -1 4194560 9000 0 0 0 "
    "1234 56 0 0 20 0 3 0 1000 200000000 12000 18446744073709551615"
)


def test_percentile_interpolates_between_ranks() -> None:
    values = [10.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 10.0
    assert percentile(values, 87.5) == pytest.approx(7.0)
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_no_values_and_bad_q() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_spread_is_median_min_max() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
    assert Spread.of([4.0, 1.0]) == Spread(2.5, 1.0, 4.0)


def test_proc_stat_counts_fields_after_the_last_parenthesis() -> None:
    stat = parse_proc_stat(STAT)
    assert (stat.pid, stat.ppid, stat.cpu_ticks) == (4242, 4200, 1234 + 56)


def test_proc_stat_rejects_other_text() -> None:
    with pytest.raises(ValueError):
        parse_proc_stat("no parentheses here")


def test_vm_hwm_from_status() -> None:
    status = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\n"
    assert parse_vm_hwm_kb(status) == 123456
    assert parse_vm_hwm_kb("Name:\tzombie\n") == 0


def test_descendants_walks_the_tree() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1}
    assert descendants(parents, 10) == [10, 11, 12, 13]
    assert descendants(parents, 99) == [99]


def test_cpu_per_record() -> None:
    assert cpu_us_per_record(100, 100, 1_000_000) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        cpu_us_per_record(1, 100, 0)


def test_ratios_to_the_baseline() -> None:
    rates = {"lazarus-alos": 5000.0, "quix": 7500.0, "arroyo": None}
    assert ratios(rates, "lazarus-alos") == {"lazarus-alos": 1.0, "quix": 1.5, "arroyo": None}
    assert ratios(rates, "lazarus-alos", higher_is_better=False)["quix"] == pytest.approx(2 / 3)
    assert ratios({"quix": 1.0}, "lazarus-alos") == {"quix": None}
    assert (fmt_ratio(1.5), fmt_ratio(None)) == ("1.50x", "-")


@pytest.mark.parametrize("pct", [0, 5, 50, 100])
def test_bad_records_are_spread_as_the_workload_says(pct: int) -> None:
    workload = Workload.parse(f"json-{pct}")
    assert sum(is_bad(i, pct) for i in range(1000)) == workload.expected_bad(1000) == pct * 10


def run(contender: str, workload: str, rate: float | None, cpu: float | None) -> dict[str, object]:
    return {
        "contender": contender,
        "workload": workload,
        "rate": rate,
        "cpu_us": cpu,
        "peak_rss_mb": 100.0,
        "startup_s": 1.0,
    }


def test_ratio_table_and_targets() -> None:
    runs = [
        run("lazarus-alos", "avro-5", 5000.0, 100.0),
        run("lazarus-alos", "avro-5", 7000.0, 80.0),
        run("lazarus-alos", "avro-5", 6000.0, 90.0),
        run("quix", "avro-5", 7500.0, 70.0),
        run("ceiling", "avro-5", 20000.0, 30.0),
        run("raw", "avro-5", None, None),  # outran the watcher: no rate
        run("lazarus-alos", "avro-50", 2000.0, 300.0),
        run("lazarus-alos", "avro-0", 8000.0, 70.0),
    ]
    summary = summarize(runs, [])
    alos, quix = summary["avro-5"]["lazarus-alos"], summary["avro-5"]["quix"]
    assert (alos["rate"], alos["rate_min"], alos["rate_max"], alos["reps"]) == (
        6000.0,
        5000.0,
        7000.0,
        3,
    )
    assert quix["rate_vs_alos"] == pytest.approx(1.25)
    assert quix["cpu_us_vs_alos"] == pytest.approx(70 / 90)
    assert summary["avro-5"]["raw"]["rate"] is None
    found = {(t["target"], t["workload"]): t for t in targets(summary)}
    assert found[("ALO rate ÷ quix rate ≥ 2", "avro-5")]["met"] is False
    assert found[("ALO rate ÷ ceiling rate ≥ 0.6", "avro-5")]["value"] == pytest.approx(0.3)
    assert found[("lazarus-alos rate at 50% bad ÷ at 0% ≥ 0.5", "avro")]["value"] == 0.25


def test_base_contenders_run_the_other_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`base-alos`/`base-eos` run `--lazarus-base`'s executable in its own checkout, with its
    schemas; the other Lazarus contenders keep this checkout's build."""
    from bench.contenders import CONTENDERS
    from bench.contenders.job import Job
    from bench.workloads import REPO

    root = tmp_path / "old"
    for folder in ("schemas", "pipeline", ".venv/bin"):
        (root / folder).mkdir(parents=True)
    monkeypatch.setenv("LAZARUS_BENCH_BASE_BIN", str(root / ".venv/bin/lazarus"))
    monkeypatch.delenv("LAZARUS_BENCH_BIN", raising=False)
    monkeypatch.delenv("LAZARUS_BENCH_PROFILE", raising=False)
    job = Job("b:1", "in", "out", "dlq", "g", "avro")
    base, new = CONTENDERS["base-eos"], CONTENDERS["lazarus-eos"]
    assert base.cwd() == root and new.cwd() == REPO
    argv = base.argv(job, tmp_path)
    assert argv[0] == str(root / ".venv/bin/lazarus")
    config = Path(argv[argv.index("--config") + 1]).read_text()
    assert f'schema_dir = "{root / "schemas/avro"}"' in config
    assert 'delivery = "exactly-once"' in config
    assert new.argv(job, tmp_path)[0] == str(REPO / ".venv/bin/lazarus")
