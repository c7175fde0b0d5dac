"""A plan made from index rows (`replay_run._plan_row`, no `DeadLetter` per row) writes what the
plan made from each row's letter wrote: the same lines, refusals, targets and homeless count."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.errors import Category
from reprocessor import plans
from reprocessor.deadletters import DeadLetter
from reprocessor.index_rows import RowView, dead_letter_row
from reprocessor.ledger import Plan
from reprocessor.replay import Recipe, Target, TargetMode, refusal_of
from reprocessor.replay_run import _plan_row

TOPIC = "orders.dlq"


def rows() -> list[RowView]:
    """Rows of every kind planning meets: Lazarus dead letters of two pipelines, replayed up to
    four times, one with a policy rule, and foreign ones (Kafka Connect, arroyo)."""
    out = []
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
        row = dead_letter_row(TOPIC, offset % 2, offset, 6_000 + offset, b"{}", headers)
        out.append(RowView(TOPIC, row))
    return out


def by_letter(writer: plans.PlanWriter, dl: DeadLetter, recipe: Recipe) -> None:
    """How a plan was made from the index before: the row's letter, its target and refusal."""
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
    with plans.PlanWriter(tmp_path / "before", plan) as before:
        for view in rows():
            by_letter(before, view.letter(), recipe)
    with plans.PlanWriter(tmp_path / "after", plan) as after:
        for view in rows():
            _plan_row(after, view, recipe)
    assert written(tmp_path / "after" / "r-1") == written(tmp_path / "before" / "r-1")
    assert after.summary == before.summary
    assert before.summary.refused_count > 0 and before.summary.selected == 40
