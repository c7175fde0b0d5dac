"""`dlq` hygiene without Kafka: the index of a topic that does not exist is never made (no file,
no folder); an index damaged in the middle of its file, which SQLite opens without a word, is
found at open when the file is not as a `dlq` sealed it, and rebuilt; a query that finds damage
past the open is answered once more from the rebuilt index; a stored plan is read whole before
a replay reads any of it, and its first damaged line named."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.app.settings import load_settings
from pipeline.errors import ConfigError
from reprocessor import index as index_module
from reprocessor import indexed, plans
from reprocessor.exporter import Exporter, Options
from reprocessor.index import SEAL, DlqIndex, sealed
from reprocessor.index_query import depth
from reprocessor.ledger import Plan
from tests.unit.test_index import fetched, lazarus_headers
from tests.unit.test_plans import letter

ROWS = 3000
REPO = Path(__file__).resolve().parent.parent.parent


class NoTopics:
    """A cluster on which no topic exists."""

    def __init__(self) -> None:
        self.conf = {"bootstrap.servers": "broker:9092"}

    def topics(self, names: object) -> dict[str, object]:
        return {}

    def cluster_id(self) -> str:
        return "c1"


def test_the_index_of_a_topic_that_does_not_exist_is_never_made(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with pytest.raises(ConfigError, match=r"^topic nosuchtopic does not exist on broker:9092$"):
        DlqIndex.open(NoTopics(), "nosuchtopic", state)  # type: ignore[arg-type]
    assert not state.exists()


def built(path: Path) -> None:
    with DlqIndex(path, "orders.dlq", "c1") as index:
        index.store_letters(
            [fetched(o, lazarus_headers(failed_at=100 + o, offset=o)) for o in range(ROWS)]
        )


def zero_pages_past_the_first(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(bytes(size - 4096))


def test_an_index_damaged_mid_file_is_checked_and_rebuilt_at_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "orders.dlq.v2.sqlite3"
    built(path)
    assert sealed(path)
    zero_pages_past_the_first(path)  # the header and schema intact: SQLite opens it
    assert not sealed(path)  # its modification time moved
    with caplog.at_level(logging.WARNING), DlqIndex(path, "orders.dlq", "c1") as index:
        assert depth(index).records == 0  # rebuilt empty: the catch-up reads the topic again
    (said,) = caplog.messages
    assert said.startswith(f"the DLQ index {path} is rebuilt: it is damaged (quick_check: ")
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_an_index_as_dlq_left_it_is_trusted_and_one_touched_since_is_checked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.dlq.v2.sqlite3"
    built(path)
    seal = path.parent / f"{path.name}{SEAL}"
    assert sealed(path)
    with DlqIndex(path, "orders.dlq", "c1") as index:
        assert not seal.exists()  # open: written from now on, sealed again when closed
        assert depth(index).records == ROWS
    assert sealed(path)
    os.utime(path, ns=(0, 0))  # another tool wrote it since
    assert not sealed(path)
    with DlqIndex(path, "orders.dlq", "c1") as index:  # checked, intact: kept
        assert depth(index).records == ROWS
    assert sealed(path)


def test_damage_a_query_finds_is_answered_again_once_from_the_rebuilt_index() -> None:
    calls: list[int] = []

    def answer() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise indexed.IndexDamaged("damaged")
        return 7

    assert indexed.once_more(answer) == 7 and len(calls) == 2

    def always() -> int:
        calls.append(1)
        raise indexed.IndexDamaged("damaged")

    calls.clear()
    with pytest.raises(indexed.IndexDamaged):  # damaged again: not a third time
        indexed.once_more(always)
    assert len(calls) == 2

    def rows(fail_after: int | None) -> Iterator[int]:
        calls.append(1)
        for row in range(3):
            if len(calls) == 1 and row == fail_after:
                raise indexed.IndexDamaged("damaged")
            yield row

    calls.clear()
    assert list(indexed.rows_once_more(lambda: rows(0))) == [0, 1, 2] and len(calls) == 2
    calls.clear()
    given = indexed.rows_once_more(lambda: rows(2))
    assert [next(given), next(given)] == [0, 1]
    with pytest.raises(indexed.IndexDamaged):  # rows already used: never given twice
        next(given)
    assert len(calls) == 1


def stored_plan(folder: Path, lines: int) -> plans.StoredPlan:
    """A plan of `lines` dead letters in partition 1 (more than a block) and one in partition 0,
    one refused."""
    with plans.PlanWriter(folder, Plan("r-1", "orders.dlq", 1, "ops", "to", "out", ())) as writer:
        writer.add_line(0, 3, "", "f" * 16, 100, "out")
        for offset in range(lines):
            digest = plans.value_hash(b"%d" % offset) if offset % 2 else "null"
            writer.add_line(1, offset, digest, "f" * 16, 100 + offset, "out")
        writer.add_line(1, lines, "", "f" * 16, 100, "out")
        writer.refuse(letter(0, 9), "invalid after fix")
    return plans.load(folder, "r-1")


@pytest.mark.parametrize(
    ("line", "damage", "what"),
    [
        (plans.BLOCK + 7, lambda text: text[: len(text) // 2], "JSONDecodeError"),
        (plans.BLOCK + 8, lambda text: text.replace('"o":', '"o":-', 1), "no Kafka offset"),
        (plans.BLOCK + 9, lambda text: text.replace('"o":', '"o":92233720368547758', 1), "Kafka"),
        (3, lambda text: text.replace('"h":"', '"h":"Z', 1), "is no value sha256"),
        (plans.BLOCK + 1, lambda text: text.replace('"t":', '"t":"x', 1), "Error"),
        (plans.BLOCK + 2, lambda text: "\n", "JSONDecodeError"),
    ],
)
def test_a_damaged_plan_line_is_named_before_the_replay_reads_any(
    tmp_path: Path, line: int, damage: Callable[[str], str], what: str
) -> None:
    stored = stored_plan(tmp_path, plans.BLOCK + 20)
    stored.check()  # as written: fine
    path = stored.folder / "p1.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = damage(lines[line - 1].rstrip("\n")) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(ConfigError) as refused:
        stored.check()
    said = str(refused.value)
    assert said.startswith(f"the plan file {path} is damaged at line {line} ("), said
    assert what in said and said.endswith("): make a new plan") and "\n" not in said


def test_a_damaged_refusal_line_is_named_too(tmp_path: Path) -> None:
    stored = stored_plan(tmp_path, 3)
    path = stored.folder / "refused.jsonl"
    path.write_text(path.read_text() + '{"c": 1\n')
    with pytest.raises(ConfigError, match=r"refused\.jsonl is damaged at line 2 "):
        stored.check()


def test_the_exporter_on_a_dlq_that_does_not_exist_says_so_and_makes_no_file(
    tmp_path: Path,
) -> None:
    settings = load_settings(REPO / "examples/orders.toml", bootstrap="broker:9092")
    state = tmp_path / "state"
    exporter = Exporter([settings], Options(port=0, state=state))
    try:
        (target,) = exporter.targets
        target.cluster = NoTopics()  # type: ignore[assignment]
        exporter.round()
        assert exporter.health.get() == (
            f"{settings.pipeline}: topic {settings.dlq.topic} does not exist on broker:9092"
        )
        assert not state.exists()
    finally:
        exporter.server.server.server_close()


def test_an_index_the_exporter_holds_open_is_trusted_as_its_last_round_sealed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exporter keeps its connection (and so a WAL) open: without its seal after each
    round, every `dlq` command meanwhile checked the whole file first."""
    checked: list[Path] = []

    def damage(db: sqlite3.Connection) -> str | None:
        checked.append(tmp_path)
        return None

    monkeypatch.setattr(index_module, "damage", damage)
    path = tmp_path / "orders.dlq.v2.sqlite3"
    built(path)
    checked.clear()
    with DlqIndex(path, "orders.dlq", "c1") as exporter:
        assert checked == []  # sealed by the build's close
        exporter.store_letters([fetched(ROWS, lazarus_headers(offset=ROWS))])  # a round
        exporter.seal()
        assert (path.parent / f"{path.name}-wal").exists()
        with DlqIndex(path, "orders.dlq", "c1") as command:
            assert checked == [] and depth(command).records == ROWS + 1
        exporter.store_letters([fetched(ROWS + 1, lazarus_headers(offset=ROWS + 1))])
        with DlqIndex(path, "orders.dlq", "c1") as command:  # written since its seal
            assert checked == [tmp_path] and depth(command).records == ROWS + 2
