"""Every path that decides a dead letter's target decides it the same way (`Target.topic_of`,
given the dialect): a replay of letters read from the topic (`replay.prepare`), a plan from
index rows (`replay_run._plan_row`), a plan from the index's unresolved columns
(`replay_run._plan_rows`) and a replay's fast rows. A foreign dialect's pipeline (Spring's
consumer group) is no Lazarus pipeline: even named like one, it has no redrive topic."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.errors import Category
from pipeline.kafka.follow import Fetched
from reprocessor import index_query, plans
from reprocessor.deadletters import from_record
from reprocessor.index import DlqIndex
from reprocessor.index_rows import RowView, dead_letter_row, fast_row
from reprocessor.ledger import Plan
from reprocessor.replay import Copy, Recipe, Target, TargetMode, prepare
from reprocessor.replay_run import TARGET_READS, _plan_row, _plan_rows
from reprocessor.stats import Window
from tests.dlq_kit import spring_headers

TOPIC = "billing.dlq"
Headers = list[tuple[str, bytes | None]]
Decided = dict[str, tuple[str | None, str | None, bool]]
"""coordinates -> (target, refusal, homeless)"""


def lazarus(offset: int, pipeline: str, replays: int = 0) -> Headers:
    record = SourceRecord("orders", 0, offset, 1_000, b"k", b"{}", ())
    why = Failure(Category.VALIDATION, "E", "bad", 5_000, pipeline)
    return [
        (n, str(replays).encode() if n == "dlq.replay.count" else v)
        for n, v in build_dead_letter(record, why)
    ]


RECORDS: list[Headers] = [
    lazarus(0, "billing"),
    spring_headers("orders"),  # its consumer group, its pipeline, is `billing` too
    lazarus(2, "payroll"),
    [("__connect.errors.topic", b"orders"), ("__connect.errors.offset", b"3")],
    [("original_partition", b"0"), ("original_offset", b"9")],  # arroyo: no topic
    [("x-other", b"1")],  # no dialect at all
    lazarus(6, "billing", replays=3),  # loop protection
]
OWN = frozenset({"billing.redrive", "orders"})
TARGETS = [
    Target(TargetMode.REDRIVE, None, OWN),
    Target(TargetMode.REDRIVE),
    Target(TargetMode.SOURCE, None, OWN),
    Target(TargetMode.SOURCE),
    Target(TargetMode.TO, "out"),
]


def records() -> list[tuple[int, int, int, bytes, bytes, Headers]]:
    return [(0, offset, 6_000 + offset, b"k", b"{}", h) for offset, h in enumerate(RECORDS)]


def fetched(rows: list[tuple[int, int, int, bytes, bytes, Headers]]) -> list[Fetched]:
    """`rows` as the index stores them (its key, value and headers may be None)."""
    return list(rows)


class Recorder:
    """What a `plans.PlanWriter` is told, by coordinates."""

    def __init__(self) -> None:
        self.plan = Plan("r-1", TOPIC, 1, "ops", "", None, ())
        self.decided: Decided = {}

    def add(self, dl: plans.Subject, value: bytes | None, target: str | None, **_: bool) -> None:
        self.decided[dl.coordinates] = (target, None, False)

    def add_line(self, partition: int, offset: int, *fields: object) -> None:
        target = cast(str | None, fields[-1])
        self.decided[f"{TOPIC}/{partition}/{offset}"] = (target, None, False)

    def refuse(self, dl: plans.Subject, reason: str, *, homeless: bool = False) -> None:
        self.decided[dl.coordinates] = (None, reason, homeless)


def by_letters(recipe: Recipe) -> Decided:
    decided: Decided = {}
    for record in records():
        dl = from_record(TOPIC, *record)
        found = prepare(dl, recipe)
        if isinstance(found, Copy):
            decided[dl.coordinates] = (found.topic, None, False)
        else:
            homeless = recipe.target.topic_for(dl) is None
            decided[dl.coordinates] = (None, found.reason, homeless)
    return decided


def by_rows(recipe: Recipe) -> Decided:
    recorder = Recorder()
    for p, o, ts, _, value, headers in records():
        view = RowView(TOPIC, dead_letter_row(TOPIC, p, o, ts, value, headers))
        _plan_row(cast(plans.PlanWriter, recorder), view, recipe)
    return recorder.decided


def by_columns(recipe: Recipe, tmp_path: Path) -> Decided:
    index = DlqIndex(tmp_path / "i.sqlite3", TOPIC, "c1")
    index.store_letters(fetched(records()))
    recorder = Recorder()
    wanted = TARGET_READS[recipe.target.mode]
    rows = index_query.unresolved(index, Window(), None, wanted)
    _plan_rows(cast(plans.PlanWriter, recorder), rows, recipe)
    index.close()
    return recorder.decided


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.mode.value}-{bool(t.allowed)}")
def test_letters_rows_and_columns_get_the_same_targets(tmp_path: Path, target: Target) -> None:
    recipe = Recipe(run="r-1", target=target, max_replays=3)
    expected = by_letters(recipe)
    assert by_rows(recipe) == expected
    assert by_columns(recipe, tmp_path) == expected
    assert len(expected) == len(RECORDS)


def test_a_spring_consumer_group_named_like_a_pipeline_has_no_redrive_topic(
    tmp_path: Path,
) -> None:
    recipe = Recipe(run="r-1", target=Target(TargetMode.REDRIVE, None, OWN), max_replays=3)
    for decided in (by_letters(recipe), by_rows(recipe), by_columns(recipe, tmp_path)):
        assert decided[f"{TOPIC}/0/0"] == ("billing.redrive", None, False)
        spring = decided[f"{TOPIC}/0/1"]
        assert spring[0] is None and spring[2], spring  # homeless, not billing.redrive
        assert decided[f"{TOPIC}/0/5"][2]  # no dialect: homeless too
        payroll = decided[f"{TOPIC}/0/2"][1]
        assert payroll is not None and "outside the configured pipeline" in payroll
        loop = decided[f"{TOPIC}/0/6"][1]
        assert loop is not None and loop.startswith("loop protection")


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.mode.value}-{bool(t.allowed)}")
def test_a_fast_row_and_its_letter_get_the_same_target(target: Target) -> None:
    """The replay's fast path (`replay_batches`) reads the target from `fast_row`'s tuple."""
    for p, o, ts, key, value, headers in records():
        row = fast_row(p, o, ts, value, [(n, v or b"") for n, v in headers])
        if row is None:
            continue  # not a well-formed Lazarus dead letter: the slow path's `DeadLetter`
        dl = from_record(TOPIC, p, o, ts, key, value, headers)
        assert target.topic_of(row[20], row[14], row[13], row[10]) == target.topic_for(dl)
