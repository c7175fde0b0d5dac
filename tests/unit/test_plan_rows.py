"""A plan made from index rows (`replay_run._plan_row`, no `DeadLetter` per row) writes what the
plan made from each dead letter read from the topic writes: the same lines, refusals, targets and
homeless count (a foreign dead letter's pipeline, Spring's consumer group, has no redrive topic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.core.ledger_codec import LedgerEntry, encode_ledger_entry, ledger_key
from pipeline.errors import Category
from pipeline.kafka.follow import Fetched
from reprocessor import index_query, plans
from reprocessor.deadletters import DeadLetter, ReplayState, from_record
from reprocessor.index import DlqIndex
from reprocessor.index_rows import RowView, dead_letter_row
from reprocessor.ledger import Plan
from reprocessor.replay import Recipe, Target, TargetMode, refusal_of
from reprocessor.replay_run import TARGET_READS, _plan_row, _plan_rows
from reprocessor.selection import parse
from reprocessor.stats import Window
from tests.dlq_kit import spring_headers

TOPIC = "orders.dlq"


def rows() -> list[RowView]:
    """Rows of every kind planning meets: Lazarus dead letters of two pipelines, replayed up to
    four times, one with a policy rule, and foreign ones (Kafka Connect, arroyo, Spring)."""
    return [
        RowView(TOPIC, dead_letter_row(TOPIC, p, o, ts, value, headers))
        for p, o, ts, _, value, headers in records()
    ]


def records() -> list[Fetched]:
    """The DLQ records of `rows`: (partition, offset, timestamp, key, value, headers)."""
    out: list[Fetched] = []
    for offset in range(40):
        record = SourceRecord("orders", offset % 3, offset, 1_000, b"k", b"{}", ())
        why = Failure(
            Category.VALIDATION,
            "E",
            f"bad {offset % 4}",
            5_000 + offset,
            "orders-app" if offset % 5 else "other-app",
            policy_rule="hold-eu" if offset % 7 == 0 else None,
        )
        headers = [
            (n, str(offset % 5).encode() if n == "dlq.replay.count" else v)
            for n, v in build_dead_letter(record, why)
        ]
        if offset % 11 == 1:
            headers = [("__connect.errors.topic", b"orders"), ("__connect.errors.offset", b"3")]
        if offset % 11 == 2:
            headers = [("original_partition", b"0"), ("original_offset", b"9")]
        if offset % 11 == 3:  # its consumer group is its pipeline, which has no redrive topic
            headers = spring_headers("orders")
        out.append((offset % 2, offset, 6_000 + offset, b"k", b"{}", headers))
    return out


def by_letter(writer: plans.PlanWriter, dl: DeadLetter, recipe: Recipe) -> None:
    """How a plan is made from a dead letter read from the topic: its target and refusal."""
    topic = recipe.target.topic_for(dl)
    reason = refusal_of(dl.replay_count, recipe, topic)
    if reason is None:
        writer.add(dl, None, topic, hashed=False)
    else:
        writer.refuse(dl, reason, homeless=topic is None)


def written(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "target",
    [
        Target(TargetMode.TO, "out"),
        Target(TargetMode.REDRIVE, None, frozenset({"orders-app.redrive"})),
        Target(TargetMode.REDRIVE),
        Target(TargetMode.SOURCE),
    ],
)
def test_a_plan_from_rows_is_the_plan_from_their_letters(tmp_path: Path, target: Target) -> None:
    recipe = Recipe(run="r-1", target=target, max_replays=3)
    plan = Plan("r-1", TOPIC, 1, "ops", target.mode.value, target.topic, ())
    with plans.PlanWriter(tmp_path / "before", plan) as before:  # letters read from the topic
        for record in records():
            by_letter(before, from_record(TOPIC, *record), recipe)
    with plans.PlanWriter(tmp_path / "after", plan) as after:
        for view in rows():
            _plan_row(after, view, recipe)
    assert written(tmp_path / "after" / "r-1") == written(tmp_path / "before" / "r-1")
    assert after.summary == before.summary
    assert before.summary.refused_count > 0 and before.summary.selected == 40


@pytest.mark.parametrize(
    ("window", "limit"),
    [(Window(), None), (Window(), 7), (Window(since_ms=6_010, until_ms=6_030), None)],
)
@pytest.mark.parametrize(
    "target", [Target(TargetMode.TO, "out"), Target(TargetMode.REDRIVE), Target(TargetMode.SOURCE)]
)
def test_a_plan_from_the_unresolved_columns_is_the_plan_from_selected_rows(
    tmp_path: Path, target: Target, window: Window, limit: int | None
) -> None:
    """`_plan_rows` over `index_query.unresolved` (a few columns, the state filtered in SQL)
    writes the plan `_plan_row` writes over the unresolved rows `selected` yields: decided rows
    left out, the window's time bounds and the limit applied, refusals and homeless the same."""
    index = DlqIndex(tmp_path / "i.sqlite3", TOPIC, "c1")
    index.store_letters(records())
    decided: list[Fetched] = []
    for view in rows()[3:12]:  # decided by entries that are not stale
        entry = LedgerEntry(
            "replayed", 9, "me", "r-0", view.seen_ms, view.fingerprint, target="out/0/1"
        )
        key = ledger_key(TOPIC, view.partition, view.offset)
        decided.append((0, len(decided), 0, key, encode_ledger_entry(entry), None))
    index.store_decisions(decided)
    recipe = Recipe(run="r-1", target=target, max_replays=3)
    plan = Plan("r-1", TOPIC, 1, "ops", target.mode.value, target.topic, ())
    with plans.PlanWriter(tmp_path / "before", plan) as before:
        found = 0
        for view, state in index_query.selected(index, window):
            if state is ReplayState.UNRESOLVED and (limit is None or found < limit):
                _plan_row(before, view, recipe)
                found += 1
    assert index_query.selects_by_time_only(window)
    with plans.PlanWriter(tmp_path / "after", plan) as after:
        wanted = TARGET_READS[target.mode]
        _plan_rows(after, index_query.unresolved(index, window, limit, wanted), recipe)
    index.close()
    assert written(tmp_path / "after" / "r-1") == written(tmp_path / "before" / "r-1")
    assert after.summary == before.summary
    assert 0 < before.summary.selected < 40 - 9 + 1


def test_only_a_window_without_a_where_or_coordinates_is_planned_from_columns() -> None:
    assert index_query.selects_by_time_only(Window(selection=parse("  "), since_ms=1))
    assert not index_query.selects_by_time_only(Window(selection=parse("category=validation")))
    assert not index_query.selects_by_time_only(Window(selection=parse("not state=replayed")))
    assert not index_query.selects_by_time_only(Window(only=frozenset({f"{TOPIC}/0/0"})))
    assert not index_query.selects_by_time_only(Window(tail=5))  # the index cannot answer it
