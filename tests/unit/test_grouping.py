"""reprocessor/grouping.py: "three causes, not 40,000 errors"."""

from __future__ import annotations

import random
import time

import pytest

from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.core.dialects import ARROYO_OFFSET, ARROYO_PARTITION, SPRING_EXCEPTION, SPRING_TOPIC
from pipeline.errors import Category
from reprocessor.deadletters import DeadLetter, ReplayState, from_record
from reprocessor.grouping import GROUP_KEYS, MISSING_KEY, NONE_KEY, Grouper, GroupRow, group

U, R, D = ReplayState.UNRESOLVED, ReplayState.REPLAYED, ReplayState.DISCARDED


def dead_letter(
    offset: int,
    *,
    category: Category = Category.PROCESSING,
    error_type: str = "builtins.KeyError",
    message: str = "missing key",
    failed_at_ms: int = 1_000,
    topic: str = "orders",
    pipeline: str = "orders-app",
    details: tuple[dict[str, str], ...] = (),
) -> DeadLetter:
    record = SourceRecord(topic, 0, offset, 500, b"k", b"v", ())
    failure = Failure(category, error_type, message, failed_at_ms, pipeline, details=details)
    return from_record(
        "orders.dlq", 0, offset, failed_at_ms, b"k", b"v", build_dead_letter(record, failure)
    )


def validation_failure(i: int, rng: random.Random) -> DeadLetter:
    """One of three causes, with values, indices and numbers varying from record to record."""
    cause = i % 3
    if cause == 0:
        index = rng.randrange(50)
        loc = f"items.{index}.qty"
        message = f"1 validation error for Order\n{loc}\n  Input should be greater than 0"
        details = ({"loc": loc, "msg": "Input should be greater than 0", "type": "greater_than"},)
    elif cause == 1:
        message = (
            "1 validation error for Order\ncustomer.email\n  value is not a valid email address"
        )
        details = ({"loc": "customer.email", "msg": "not a valid email", "type": "value_error"},)
    else:
        message = (
            f"amount {rng.uniform(-1e6, 1e6):.2f} is outside [0, {rng.randrange(10**6)}] "
            f"for order '{rng.randrange(10**9):x}-{i}'"
        )
        details = ({"loc": "amount", "msg": "out of range", "type": "range"},)
    return dead_letter(
        i,
        category=Category.VALIDATION,
        error_type="pydantic_core.ValidationError",
        message=message,
        failed_at_ms=1_000 + i,
        details=details,
    )


def test_a_thousand_validation_failures_with_three_causes_give_three_groups() -> None:
    rng = random.Random(5)
    letters = [validation_failure(i, rng) for i in range(1_000)]
    assert len({dl.fingerprint for dl in letters}) == 3
    rows = group(((dl, U, None) for dl in letters), "fingerprint")
    assert sorted(row.count for row in rows) == [333, 333, 334]
    assert all(row.category == "validation" for row in rows)
    assert all(row.error_type == "pydantic_core.ValidationError" for row in rows)
    assert {row.first_seen_ms for row in rows} == {1_000, 1_001, 1_002}
    assert group(((dl, U, None) for dl in letters), "category")[0].count == 1_000


def test_rows_are_sorted_by_count_then_key_and_count_states() -> None:
    items = [
        (dead_letter(0, error_type="B", failed_at_ms=50), U, None),
        (dead_letter(1, error_type="A", failed_at_ms=40), R, None),
        (dead_letter(2, error_type="C", failed_at_ms=30), U, None),
        (dead_letter(3, error_type="C", failed_at_ms=90), D, None),
        (dead_letter(4, error_type="C", failed_at_ms=10), R, None),
    ]
    rows = group(items, "type")
    assert [row.key for row in rows] == ["C", "A", "B"]
    assert rows[0] == GroupRow(
        key="C",
        count=3,
        first_seen_ms=10,
        last_seen_ms=90,
        example="missing key",
        example_coordinates="orders.dlq/0/2",
        category="processing",
        error_type="C",
        replayed=1,
        discarded=1,
        unresolved=1,
    )


def test_group_values_that_differ_within_a_group_are_none() -> None:
    items = [
        (dead_letter(0, category=Category.PROCESSING, error_type="X"), U, None),
        (dead_letter(1, category=Category.SCHEMA, error_type="X"), U, None),
    ]
    (row,) = group(items, "pipeline")
    assert row.key == "orders-app" and row.category is None and row.error_type == "X"


def test_foreign_dead_letters_group_by_placeholders_and_missing_fields() -> None:
    spring = [(SPRING_EXCEPTION, b"a.Timeout"), (SPRING_TOPIC, b"payments")]
    arroyo = [(ARROYO_PARTITION, b"1"), (ARROYO_OFFSET, b"2")]
    items = [
        (from_record("dlt", 0, 0, 7, None, None, spring), U, None),
        (from_record("dlt", 0, 1, 8, None, None, spring), U, None),
        (from_record("dlq", 0, 2, 9, None, None, arroyo), U, None),
        (dead_letter(3), U, None),
    ]
    by_category = {row.key: row.count for row in group(items, "category")}
    assert by_category == {NONE_KEY: 3, "processing": 1}
    by_dialect = {row.key: row.count for row in group(items, "dialect")}
    assert by_dialect == {"spring": 2, "arroyo": 1, "lazarus": 1}
    assert {row.key: row.count for row in group(items, "source.topic")} == {
        "payments": 2,
        NONE_KEY: 1,
        "orders": 1,
    }
    spring_row = group(items, "fingerprint")[0]
    assert spring_row.count == 2 and spring_row.first_seen_ms == 7 and spring_row.last_seen_ms == 8
    assert spring_row.example == "" and spring_row.error_type == "a.Timeout"


def test_group_by_a_payload_field() -> None:
    payloads = [{"customer": {"country": "DE"}}, {"customer": {"country": "FR"}}, {"customer": {}}]
    payloads += [{"customer": {"country": "DE"}}, {"customer": {"country": None}}]
    items = [(dead_letter(i), U, payload) for i, payload in enumerate(payloads)]
    items.append((dead_letter(9), U, None))
    grouper = Grouper("value.customer.country")
    assert grouper.needs_payload and grouper.by == "value.customer.country"
    for item in items:
        grouper.add(*item)
    assert [(row.key, row.count) for row in grouper.rows()] == [
        (MISSING_KEY, 2),
        ("DE", 2),
        ("FR", 1),
        ("null", 1),
    ]


@pytest.mark.parametrize("by", ["colour", "value", "value.", "value.a..b", "Fingerprint"])
def test_unknown_keys_are_value_errors(by: str) -> None:
    with pytest.raises(ValueError, match="cannot group by"):
        Grouper(by)
    with pytest.raises(ValueError, match="one of fingerprint, category"):
        group([], by)


@pytest.mark.parametrize("by", GROUP_KEYS)
def test_every_key_groups(by: str) -> None:
    items = [(dead_letter(i, error_type=f"E{i % 2}"), U, None) for i in range(4)]
    rows = group(items, by)
    assert sum(row.count for row in rows) == 4
    assert not Grouper(by).needs_payload


def test_streaming_equals_batch_and_is_fast_enough() -> None:
    rng = random.Random(1)
    letters = [validation_failure(i, rng) for i in range(300)]
    grouper = Grouper()
    started = time.perf_counter()
    for _ in range(100):
        for dl in letters:
            grouper.add(dl, U)
    elapsed = time.perf_counter() - started
    rows = grouper.rows()
    assert [row.count for row in rows] == [10_000, 10_000, 10_000]
    assert [(r.key, r.first_seen_ms) for r in rows] == [
        (r.key, r.first_seen_ms) for r in group(((dl, U, None) for dl in letters), "fingerprint")
    ]
    assert elapsed < 3.0, f"30,000 adds took {elapsed:.2f}s"
