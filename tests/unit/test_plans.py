"""Stored plans (reprocessor/plans.py) and the progress bar (reprocessor/render.Bar)."""

from __future__ import annotations

import io
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.errors import Category, ConfigError
from reprocessor import plans, render
from reprocessor.deadletters import DeadLetter, from_record
from reprocessor.ledger import Plan, ReplayedRecords, ledger_record, replayed_entry


def letter(partition: int, offset: int, value: bytes = b"{}") -> DeadLetter:
    record = SourceRecord("orders", 0, 1, 1_000, b"k", value, ())
    why = Failure(Category.VALIDATION, "E", "bad", 5_000, "orders-app")
    return from_record(
        "orders.dlq", partition, offset, 6_000, b"k", value, build_dead_letter(record, why)
    )


def header(run: str = "r-1") -> Plan:
    return Plan(run, "orders.dlq", 1, "ops", "to", "out", ())


def test_a_plan_is_written_per_partition_and_read_back_in_order(tmp_path: Path) -> None:
    with plans.PlanWriter(tmp_path, header()) as writer:
        writer.add(letter(1, 5), b"fixed-5", "out")
        writer.add(letter(0, 7), b"fixed-7", "out")
        writer.add(letter(1, 9), None, "out", hashed=False)
        writer.refuse(letter(0, 8), "invalid after fix")
    assert writer.summary.selected == 4 and writer.summary.planned == {"out": 3}
    stored = plans.load(tmp_path, "r-1")
    assert stored.partitions() == [0, 1]
    assert [e.offset for e in stored.entries(1)] == [5, 9]
    (first, unhashed) = stored.entries(1)
    assert first.same(letter(1, 5), b"fixed-5") and not first.same(letter(1, 5), b"other")
    assert unhashed.same(letter(1, 9), b"anything")  # read from the index: identity only
    assert [(r.coordinates, r.reason) for r in stored.refused()] == [
        ("orders.dlq/0/8", "invalid after fix")
    ]


def test_a_changed_failure_is_not_the_planned_dead_letter(tmp_path: Path) -> None:
    with plans.PlanWriter(tmp_path, header()) as writer:
        writer.add(letter(0, 1), b"v", None)
    (entry,) = plans.load(tmp_path, "r-1").entries(0)
    record = SourceRecord("orders", 0, 1, 1_000, b"k", b"{}", ())
    other = Failure(Category.SCHEMA, "E", "other cause", 5_000, "orders-app")
    changed = from_record("orders.dlq", 0, 1, 6_000, b"k", b"{}", build_dead_letter(record, other))
    assert not entry.same(changed, b"v")


def test_a_plan_line_reads_back_what_was_written(tmp_path: Path) -> None:
    dl = replace(letter(2, 11), fingerprint='odd "fp" \\ é')  # a formatted line: JSON-escaped
    with plans.PlanWriter(tmp_path, header()) as writer:
        writer.add(dl, b"v", "out")
    (entry,) = plans.load(tmp_path, "r-1").entries(2)
    assert (entry.offset, entry.fingerprint, entry.failed_at_ms) == (11, dl.fingerprint, 5_000)
    assert entry.same(dl, b"v")


@given(
    operator=st.text(max_size=30) | st.just("lazarus-sentinel-fingerprint"),
    run=st.text(min_size=1, max_size=20),
    fix=st.lists(st.text(max_size=10), max_size=3).map(tuple),
    fingerprint=st.text(max_size=20) | st.just("lazarus-sentinel-target/0/0"),
    failed_at=st.integers(min_value=0, max_value=2**63),
    target=st.from_regex(r"[A-Za-z0-9._-]{1,20}/[0-9]{1,5}/[0-9]{1,12}", fullmatch=True),
)
def test_a_chunks_ledger_records_are_the_codecs_bytes(
    operator: str, run: str, fix: tuple[str, ...], fingerprint: str, failed_at: int, target: str
) -> None:
    """Encoding the common fields once per chunk must give exactly what encoding each entry
    gives, whatever the operator, run, fix, fingerprint (placeholder look-alikes included)."""
    dl = replace(letter(3, 42), fingerprint=fingerprint, failed_at_ms=failed_at)
    batch = ReplayedRecords(run, operator, 1, fix)
    expected = ledger_record(
        dl,
        replayed_entry(dl, run=run, operator=operator, target=target, at_ms=batch.at_ms, fix=fix),
    )
    assert batch.records([dl, dl], [target, target]) == [expected, expected]


def test_a_failed_plan_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError), plans.PlanWriter(tmp_path, header()) as writer:
        writer.add(letter(0, 1), b"v", None)
        raise ConfigError("no target")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="no stored plan"):
        plans.load(tmp_path, "r-1")
    with pytest.raises(ConfigError, match="not a plan id"):
        plans.load(tmp_path, "../etc")


def test_plans_live_per_cluster(tmp_path: Path) -> None:
    assert plans.runs_folder(tmp_path, "Ab-1/x") == tmp_path / "runs" / "Ab-1_x"


def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(
        render, "console", lambda *, err=False: Console(file=out, force_terminal=True, width=100)
    )
    return out


def test_the_bar_shows_records_rate_and_eta_after_its_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = terminal(monkeypatch)
    bar = render.Bar("replay r-1", 10, quiet=False, delay_s=0)
    bar(2)
    time.sleep(0.05)  # a rate needs two samples apart in time
    bar(2)
    bar.close()
    text = out.getvalue()
    assert "replay r-1" in text and "4/10" in text and "/s" in text and "ETA" in text


@pytest.mark.parametrize(("quiet", "delay"), [(True, 0.0), (False, 60.0)])
def test_the_bar_stays_silent_when_quiet_or_quick(
    monkeypatch: pytest.MonkeyPatch, quiet: bool, delay: float
) -> None:
    out = terminal(monkeypatch)
    bar = render.Bar("scan", None, quiet=quiet, delay_s=delay)
    bar(1000)
    bar.expect(5000)
    bar.close()
    assert out.getvalue() == ""


def test_the_bar_is_off_when_not_a_terminal() -> None:
    bar = render.Bar("scan", 3, quiet=False, delay_s=0)
    bar(3)
    bar.close()  # CliRunner-less pytest: stderr is captured, not a terminal; nothing raised


@pytest.mark.parametrize("size", [1, 2, 5, 2048])
def test_plan_blocks_read_what_entries_read(tmp_path: Path, size: int) -> None:
    """`StoredPlan.blocks` (a regex over a block of lines) gives `entries`' values, also for a
    block holding a line that needs `json.loads` (an escaped fingerprint)."""
    with plans.PlanWriter(tmp_path, header()) as writer:
        for offset in range(7):
            dl = letter(0, offset)
            if offset == 4:
                dl = replace(dl, fingerprint='odd"print\\é')
            writer.add(dl, b"v%d" % offset, "out", hashed=offset % 3 != 0)
    stored = plans.load(tmp_path, "r-1")
    columns = [
        (offset, digest, fingerprint, failed_at)
        for block in stored.blocks(0, size)
        for offset, digest, fingerprint, failed_at in zip(
            block.offsets, block.digests, block.fingerprints, block.failed_at, strict=True
        )
    ]
    expected = [
        (e.offset, e.value_sha256, e.fingerprint, e.failed_at_ms) for e in stored.entries(0)
    ]
    assert columns == expected and len(columns) == 7
