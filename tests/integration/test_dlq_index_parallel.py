"""A first scan shared with helper processes (`reprocessor.index_scan`) against the real broker:
it stores exactly the rows, states and read positions a scan in one process stores, reports
every record to the progress bar, and leaves an index that later catch-ups extend."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from pipeline.core.contract import Failure, ledger_topic
from pipeline.errors import Category
from pipeline.kafka.follow import Cluster
from reprocessor import index as index_module
from reprocessor import index_scan
from reprocessor.index import DlqIndex
from reprocessor.index_query import depth
from tests.conftest import TopicFactory, create_topics
from tests.dlq_kit import Letter, connect_headers, dlq, failure, fill, lazarus_letter
from tests.integration.test_dlq_index import Recorder

SCHEMA = failure(Category.SCHEMA, "pipeline.errors.SchemaError", "schema id 42 is unknown", ())


def letters(count: int, start: int = 0, why: Failure | None = None) -> list[Letter]:
    return [
        lazarus_letter("orders", start + i, f"k{start + i}".encode(), b"v" * i, why or failure())
        for i in range(count)
    ]


def snapshot(
    folder: Path, bootstrap: str, topic: str
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    cluster = Cluster({"bootstrap.servers": bootstrap})
    with DlqIndex.open(cluster, topic, folder) as index:
        rows = list(index.rows("SELECT * FROM dl ORDER BY id"))
        positions = list(index.rows("SELECT * FROM positions ORDER BY kind, partition"))
        names = list(index.rows("SELECT name FROM sqlite_master ORDER BY name"))
    return rows, positions, names


def test_a_first_scan_shared_with_helpers_stores_what_one_process_stores(
    bootstrap: str,
    topic_factory: TopicFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = topic_factory(partitions=4, suffix="dlq-")
    create_topics(bootstrap, [ledger_topic(topic)], 1, {"cleanup.policy": "compact"})
    foreign = [Letter(b"c", b"x", connect_headers("orders", 1, i)) for i in range(5)]
    fill(bootstrap, topic, [*letters(60), *letters(20, 100, SCHEMA), *foreign])
    result = dlq("-b", bootstrap, "-t", topic, "discard", "--where", "category=schema",
                 "--limit", "7", "--reason", "known", "-y",
                 env={"LAZARUS_STATE_DIR": str(tmp_path / "cli")})  # fmt: skip
    assert result.code == 0, result.output
    monkeypatch.setattr(index_module, "BULK_ROWS", 10)
    monkeypatch.setattr(index_scan, "workers", lambda: 3)
    started: list[Mapping[str, object]] = []

    class Counted(index_scan._Helper):
        def __init__(self, job: Mapping[str, object]) -> None:
            started.append(job)
            super().__init__(job)

    monkeypatch.setattr(index_scan, "_Helper", Counted)
    counts = {}
    for name, parallel_rows in (("one", 10**9), ("shared", 10)):
        monkeypatch.setattr(index_scan, "PARALLEL_ROWS", parallel_rows)
        cluster = Cluster({"bootstrap.servers": bootstrap})
        bar = Recorder()
        with DlqIndex.open(cluster, topic, tmp_path / name) as index:
            counts[name] = index.catch_up(cluster, bar).records
            assert depth(index).discarded == 7
        assert sum(bar.counts) == counts[name] == 85
    assert len(started) == 2  # the shared scan ran two helpers, beside its own process
    one, shared = (
        snapshot(tmp_path / "one", bootstrap, topic),
        snapshot(tmp_path / "shared", bootstrap, topic),
    )
    assert len(one[0]) == 85 and one == shared
    # a later catch-up of the shared index reads only what is new
    fill(bootstrap, topic, letters(3, 500))
    cluster = Cluster({"bootstrap.servers": bootstrap})
    with DlqIndex.open(cluster, topic, tmp_path / "shared") as index:
        assert index.catch_up(cluster).records == 3
        assert depth(index).records == 88


def test_a_helper_whose_catch_up_died_stops_quietly(
    bootstrap: str,
    topic_factory: TopicFactory,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A helper whose catch-up is gone (its stdout closed) stops at its next report, status 1,
    without a traceback."""
    topic = topic_factory(partitions=1, suffix="dlq-")
    fill(bootstrap, topic, letters(50))
    index = DlqIndex(tmp_path / "i.sqlite3", topic, "c")
    with index, index_scan.Helpers(index, {"bootstrap.servers": bootstrap}, [{0: (0, 50)}]) as h:
        (helper,) = h.helpers
        helper.out.close()
        assert helper.proc.wait(60) == 1
    assert "Traceback" not in capfd.readouterr().err
