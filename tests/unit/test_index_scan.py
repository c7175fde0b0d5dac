"""How a first scan is split between processes (`reprocessor.index_scan`), and a helper's failure
reaching the catch-up as the error the helper raised."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from reprocessor import index as index_module
from reprocessor import index_scan
from reprocessor.index import DlqIndex


def test_a_large_scan_is_split_into_groups_of_about_equal_records() -> None:
    todo = {0: 400_000, 1: 100_000, 2: 300_000, 3: 200_000, 4: 0}
    groups = index_scan.split(todo, 2)
    assert groups == [{0: 400_000, 1: 100_000, 4: 0}, {2: 300_000, 3: 200_000}]
    assert index_scan.split(todo, 8) == [{0: 400_000}, {2: 300_000}, {3: 200_000},
                                         {1: 100_000}, {4: 0}]  # fmt: skip


def test_a_small_scan_or_one_cpu_stays_in_one_process() -> None:
    small = {0: 100, 1: 100}
    assert index_scan.split(small, 4) == [small]
    large = {0: 300_000, 1: 300_000}
    assert index_scan.split(large, 1) == [large]
    assert index_scan.split({}, 4) == [{}]


def test_the_cgroup_cpu_quota_bounds_the_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert index_scan.cpu_quota(tmp_path) is None  # no cgroup files: unknown
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert index_scan.cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert index_scan.cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert index_scan.cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert index_scan.cpu_quota(tmp_path) == 0.5
    monkeypatch.setattr(index_scan, "cpu_quota", lambda: 0.5)
    assert index_scan.workers() == 1
    monkeypatch.setattr(index_scan, "cpu_quota", lambda: 1.5)
    assert index_scan.workers() == min(2, len(os.sched_getaffinity(0)))
    monkeypatch.setattr(index_scan, "cpu_quota", lambda: None)
    assert index_scan.workers() == len(os.sched_getaffinity(0))


def test_a_helper_failure_is_raised_by_the_catch_up_as_the_helper_raised_it(
    tmp_path: Path,
) -> None:
    index = DlqIndex(tmp_path / "t.sqlite3", "t.dlq", "cluster")
    conf = {"bootstrap.servers": "127.0.0.1:1", "no.such.property": "x"}
    failed = pytest.raises(ConfigError, match=r"librdkafka rejected the configuration")
    with index, index_scan.Helpers(index, conf, [{0: (0, 10)}]) as helpers, failed:
        helpers.wait(None)


def test_a_turn_waits_for_the_writer_holding_the_index_then_writes(tmp_path: Path) -> None:
    """`_Turn` (the shared scan's transaction) retries while another connection writes, gives
    up with SQLite's busy error past its wait, and leaves the busy timeout as it was."""
    with DlqIndex(tmp_path / "t.sqlite3", "t.dlq", "c") as one:
        other = sqlite3.connect(
            tmp_path / "t.sqlite3", isolation_level=None, check_same_thread=False
        )
        other.execute("BEGIN IMMEDIATE")
        turn = index_module._Turn(one.db, wait_s=0.05)
        with pytest.raises(sqlite3.OperationalError) as busy, turn:
            pass
        assert busy.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
        assert one.db.execute("PRAGMA busy_timeout").fetchone() == (60_000,)
        released = threading.Timer(0.05, lambda: other.execute("COMMIT"))
        released.start()
        with index_module._Turn(one.db):
            one.db.execute("INSERT INTO meta VALUES ('k', 1)")
        released.join()
        other.close()
        assert one.meta()["k"] == 1
