"""`dlq fix`'s own paths: its summary counted as the preview streams, its cheaper dead letters,
and the copy `fixes.apply` shares with the event it fixes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.errors import Category
from reprocessor import fixes
from reprocessor.deadletters import from_record, jsonable
from reprocessor.fix_preview import letter
from reprocessor.fix_tally import FIRST, FixTally
from reprocessor.payloads import Fixed


def record(offset: int, rule: str | None = None) -> SourceRecord:
    source = SourceRecord("orders", 0, offset, 1_000, b"k", b"{}", ())
    why = Failure(Category.VALIDATION, "E", "bad", 5_000, "orders-app", policy_rule=rule)
    headers = tuple(build_dead_letter(source, why))
    return SourceRecord("orders.dlq", 1, offset, 6_000, b"k", b'{"a":1}', headers)


def test_the_tally_counts_what_the_summary_printed_and_keeps_only_the_first_records() -> None:
    tally = FixTally()
    dl = letter(record(0))
    ok = Fixed({"a": 1}, {"a": 2}, b"v", ["~ a: 1 -> 2", "+ b: true"], None, True)
    unchecked = replace(ok, diff=["~ a: 1 -> 3"], checked=False)
    failed = Fixed({"a": 1}, None, None, [], "fix failed: x", False)
    for fixed in [ok, unchecked, failed] * 20:
        tally.add(dl, fixed)
    assert (tally.records, tally.passed, tally.unchecked, tally.failed) == (60, 20, 20, 20)
    assert tally.changes == {"~ a": 40, "+ b": 20}
    assert tally.examples == {"~ a": ["1 -> 2", "1 -> 3"], "+ b": ["true"]}
    assert tally.reasons == {"fix failed: x": 20}
    assert len(tally.first) == FIRST + 1
    assert all(f.value is None and d.value is None for d, f in tally.first)


@pytest.mark.parametrize("rule", [None, "hold-eu"])
def test_a_fast_letter_is_the_full_reading_without_what_a_fix_does_not_read(
    rule: str | None,
) -> None:
    r = record(4, rule)
    full = from_record(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
    fast = letter(r)
    assert fast == replace(
        full, stacktrace=None, problems=(), meta=fast.meta, source_timestamp_ms=None
    )
    assert fast.rule == full.rule


def test_apply_copies_only_what_its_operations_touch_and_diff_skips_the_rest() -> None:
    event: dict[str, object] = {"a": {"b": [1, 2]}, "c": {"d": 1}, "e": float("nan")}
    ops = fixes.parse_ordered([("set", "c.d=2"), ("rename", "a=z")])
    after = fixes.apply(ops, event)
    assert event == {"a": {"b": [1, 2]}, "c": {"d": 1}, "e": event["e"]}
    assert after["c"] is not event["c"]
    lines = ["- a", "~ c.d: 1 -> 2", "~ e: nan -> nan", '+ z: {"b":[1,2]}']
    assert fixes.diff(event, after) == lines  # NaN differs from itself, shared or not


def test_jsonable_of_plain_values_is_the_same_json() -> None:
    value = {"a": [1, True, None, "x", 1.5, float("inf")], 2: {"b": b"\x00"}}
    assert jsonable(value) == {
        "a": [1, True, None, "x", 1.5, "inf"],
        "2": {"b": {"base64": "AA=="}},
    }
