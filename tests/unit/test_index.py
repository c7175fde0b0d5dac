"""The DLQ index's pure parts and its SQLite store, without Kafka: rows built on the fast path say
exactly what `from_record` says; ledger records become decisions (stale ones decide nothing); the
rebuild verdict answers a new cluster, a recreated topic, retention and an old ledger index; the
store counts expired unresolved dead letters and keeps its counters monotonic."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import contract
from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.core.ledger_codec import LedgerAction, LedgerEntry, encode_ledger_entry, ledger_key
from pipeline.errors import Category
from reprocessor.deadletters import ReplayState, from_record
from reprocessor.index import DlqIndex
from reprocessor.index_ledger import _written_batch, ledger_row, ledger_rows
from reprocessor.index_query import depth, group_rows, letters, topic_stats
from reprocessor.index_rows import (
    COLUMNS,
    Observed,
    Row,
    RowView,
    Seen,
    Verdict,
    dead_letter_row,
    letter_of,
    row_id,
    row_of,
    verdict,
)
from reprocessor.selection import parse
from reprocessor.stats import Window

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "foreign"
Headers = list[tuple[str, bytes | None]]


def lazarus_headers(
    category: Category = Category.VALIDATION,
    message: str = "1 validation error for Order: items.0.qty (greater_than)",
    *,
    failed_at: int = 1_760_000_000_500,
    offset: int = 7,
    policy_rule: str | None = None,
    schema: str | None = "orders-value/1",
    extra: Headers | None = None,
) -> Headers:
    record = SourceRecord("orders", 1, offset, 1_760_000_000_000, b"k", b"v", tuple(extra or ()))
    failure = Failure(
        category=category,
        error_type="pydantic_core.ValidationError",
        message=message,
        failed_at_ms=failed_at,
        pipeline="orders-pipeline",
        details=({"loc": "items.0.qty", "msg": "bad", "type": "greater_than"},),
        schema=schema,
        policy_rule=policy_rule,
    )
    return build_dead_letter(record, failure)


def slow_row(headers: Headers | None, value: bytes | None = b"payload") -> Row:
    dl = from_record("orders.dlq", 2, 40, 1_760_000_001_000, b"k", value, headers)
    return row_of(dl, len(value or b""))


def fast_row(headers: Headers | None, value: bytes | None = b"payload") -> Row:
    return dead_letter_row("orders.dlq", 2, 40, 1_760_000_001_000, value, headers)


def replace_header(headers: Headers, name: str, value: bytes | None) -> Headers:
    return [(n, value if n == name else v) for n, v in headers]


ODD_LETTERS: dict[str, Headers | None] = {
    "plain": lazarus_headers(),
    "held by a rule": lazarus_headers(
        Category.HELD, "held by rule fraud", policy_rule="hold:fraud"
    ),
    "bad fingerprint": replace_header(lazarus_headers(), contract.ERROR_FINGERPRINT, b"XYZ"),
    "unknown category": replace_header(lazarus_headers(), contract.ERROR_CATEGORY, b"weird"),
    "negative failed_at": replace_header(lazarus_headers(), contract.FAILED_AT, b"-5"),
    "missing failed_at": [h for h in lazarus_headers() if h[0] != contract.FAILED_AT],
    "message not UTF-8": replace_header(lazarus_headers(), contract.ERROR_MESSAGE, b"\xff\xfe"),
    "version 2": replace_header(lazarus_headers(), contract.VERSION, b"2"),
    "huge replay count": replace_header(lazarus_headers(), contract.REPLAY_COUNT, b"9" * 5000),
    "foreign header last": [*lazarus_headers(), ("kafka_dlt-original-topic", b"x")],
    "no headers": None,
    "empty headers": [],
}


@pytest.mark.parametrize("name", sorted(ODD_LETTERS))
def test_fast_rows_say_what_from_record_says(name: str) -> None:
    headers = ODD_LETTERS[name]
    assert fast_row(headers) == slow_row(headers)


Fetched = tuple[int, int, int, bytes | None, bytes | None, Headers | None]


def stored(folder: Path, batch: list[Fetched]) -> list[tuple[object, ...]]:
    """A batch's rows as a fresh index stores them and reads them back: `rows_of` then
    `store_rows` (a row to store holds 0 for an absent schema or rule, stored as NULL)."""
    path = folder / f"{len(list(folder.iterdir()))}.sqlite3"
    with DlqIndex(path, "orders.dlq", "c1") as index:
        index.store_rows(index.rows_of(batch))
        return list(index.rows(f"SELECT {', '.join(COLUMNS)} FROM dl ORDER BY id"))


@pytest.mark.parametrize("name", sorted(ODD_LETTERS))
def test_a_batch_says_what_its_records_say(tmp_path: Path, name: str) -> None:
    """`rows_of` reads a batch column by column unless one record needs the slow path; either
    way each stored row is the record's own."""
    good = [
        lazarus_headers(offset=i, policy_rule="hold:x" if i % 2 else None, schema=None)
        for i in range(3)
    ]
    batch: list[Fetched] = [
        (2, 40 + i, 1_760_000_001_000, b"k", b"payload", headers)
        for i, headers in enumerate([*good, ODD_LETTERS[name], *good])
    ]
    expected = [dead_letter_row("orders.dlq", *record[:3], *record[4:]) for record in batch]
    assert stored(tmp_path, batch) == expected
    assert stored(tmp_path, batch[:3]) == expected[:3]
    assert [row[15:17] for row in expected[:3]] == [(None, None), (None, "hold:x"), (None, None)]


def test_a_batch_of_one_header_layout_is_read_by_position(tmp_path: Path) -> None:
    """Records with the same header names in the same order are read a position at a time; a
    repeated name's last value wins there too, and a batch whose names differ in order (same
    count) is read a dict per record: every row is the record's own either way."""
    same = [lazarus_headers(offset=i) for i in range(4)]
    repeated = [[*h, (contract.ERROR_CATEGORY, b"schema")] for h in same]
    swapped = [*same[:3], [same[3][1], same[3][0], *same[3][2:]]]
    index = DlqIndex(tmp_path / "i.sqlite3", "orders.dlq", "c1")
    for layout in (same, repeated, swapped):
        batch: list[Fetched] = [
            (2, 40 + i, 1_760_000_001_000, b"k", b"payload", h) for i, h in enumerate(layout)
        ]
        expected = [dead_letter_row("orders.dlq", *record[:3], *record[4:]) for record in batch]
        assert stored(tmp_path, batch) == expected
    assert {row[6] for row in index.rows_of(
        [(2, i, 1, b"k", b"v", h) for i, h in enumerate(repeated)]
    )} == {"schema"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_foreign_fixture_rows_say_what_from_record_says(name: str) -> None:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    headers = [(n, None if v is None else bytes.fromhex(v)) for n, v in data["headers"]]
    value = None if data["value_hex"] is None else bytes.fromhex(data["value_hex"])
    assert fast_row(headers, value) == slow_row(headers, value)


@given(
    message=st.text(max_size=200),
    failed_at=st.integers(min_value=0, max_value=2**62),
    offset=st.integers(min_value=0, max_value=2**62),
    category=st.sampled_from(list(Category)),
)
def test_fast_rows_match_for_any_lazarus_dead_letter(
    message: str, failed_at: int, offset: int, category: Category
) -> None:
    headers = lazarus_headers(category, message, failed_at=failed_at, offset=offset)
    assert fast_row(headers) == slow_row(headers)


def test_an_oversize_dead_letter_has_size_zero_and_no_payload() -> None:
    row = fast_row(lazarus_headers(), value=None)
    assert row[19] == 0 and row[6] == "validation"


def test_rows_rebuild_the_fields_selection_reads() -> None:
    headers = lazarus_headers(Category.HELD, "held by rule fraud", policy_rule="hold:fraud")
    original = from_record("orders.dlq", 2, 40, 1_760_000_001_000, b"k", b"payload", headers)
    rebuilt = letter_of("orders.dlq", fast_row(headers))
    names = ["coordinates", "category", "fingerprint", "error_type", "message", "origin"]
    names += ["source_topic", "source_partition", "source_offset", "pipeline", "dialect"]
    names += ["attempts", "replay_count", "failed_at_ms", "timestamp_ms", "seen_ms", "rule"]
    for name in names:
        assert getattr(rebuilt, name) == getattr(original, name), name


def test_a_row_view_selects_as_its_dead_letter_does_and_makes_the_same_one() -> None:
    """The index selects on `RowView`s of its rows, then makes DeadLetters of the selected
    ones: the view matches every selection the letter matches, and makes that letter."""
    rows = [
        fast_row(lazarus_headers(Category.HELD, "held by rule fraud", policy_rule="hold:fraud@3")),
        fast_row(lazarus_headers(Category.SCHEMA, "schema id 42", offset=9)),
        fast_row(lazarus_headers(failed_at=1_760_000_009_000, offset=3)),
        row_of(from_record("orders.dlq", 0, 5, 1_760_000_002_000, b"k", b"v", [("x", b"y")]), 1),
    ]
    exprs = ["", "category=held", "rule=fraud", "rule=null", "fingerprint=0|1|2|3|4|5|6|7",
             "not (category=schema or offset<4)", "source.offset>=7 and dialect=lazarus",
             "failed_at>2020-01-01T00:00:00Z", "age<1d or message~qty", "topic=orders.dlq",
             "type=null", "pipeline=orders-pipeline and attempts=1 and replay_count=0"]  # fmt: skip
    for row in rows:
        view, letter = RowView("orders.dlq", row), letter_of("orders.dlq", row)
        assert view.letter() == letter
        assert view.letter(b"k", b"v") == replace(letter, key=b"k", value=b"v")
        assert (view.coordinates, view.seen_ms, view.rule) == (
            letter.coordinates, letter.seen_ms, letter.rule
        )  # fmt: skip
        for expr in exprs:
            for state in ReplayState:
                chosen = parse(expr)
                assert chosen.matches(view, state) == chosen.matches(letter, state), expr


def entry(
    action: LedgerAction = "replayed", failed_at: int = 1, fingerprint: str = "f" * 16
) -> bytes:
    target = "orders.redrive/0/1" if action == "replayed" else None
    reason = "bad" if action == "discarded" else None
    found = LedgerEntry(action, 9, "me", "r-1", failed_at, fingerprint, reason, (), target)
    return encode_ledger_entry(found)


def test_ledger_rows() -> None:
    key = ledger_key("orders.dlq", 3, 14)
    found = (row_id(3, 14), 3, 14, 1, 1, "f" * 16, entry())
    assert ledger_row("orders.dlq", key, entry()) == (3, 14, found)
    assert ledger_row("orders.dlq", key, None) == (3, 14, None)
    assert ledger_row("other.dlq", key, entry()) is None
    assert ledger_row("orders.dlq", key, b"{not json") is None
    assert ledger_row("orders.dlq", b"\xff", entry()) is None


def reference(topic: str, records: list[tuple[bytes | None, bytes | None]]) -> list[Any]:
    """What `ledger_rows` must say: `ledger_row` record by record."""
    found = (ledger_row(topic, key, value) for key, value in records)
    return [(row_id(f[0], f[1]), f[2]) for f in found if f is not None]


def doc(**changes: object) -> bytes:
    base: dict[str, object] = json.loads(entry())
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


ODD_KEYS = [
    None, b"", b"\xff", b"orders.dlq", b"orders.dlq/1", b"orders.dlq/1/2/3", b"orders.dlq//2",
    b"orders.dlq/1/", b"orders.dlq/+1/2", b"orders.dlq/ 1/2", b"orders.dlq/1/2\n",
    b"orders.dlq/0001/002", "orders.dlq/\u0663/1".encode(), b"orders.dlq/1/" + b"9" * 20,
    b"orders.dlq/1/" + b"9" * 21, b"other.dlq/1/2", b"x/orders.dlq/1/2", b"orders.dlqx/1/2",
]  # fmt: skip
ODD_VALUES = [
    None, b"", b"{not json", b"[]", b"null", b"1", b'"s"', b"\xff\xfe", "\ufeff{}".encode(),
    json.dumps(json.loads(entry())).encode("utf-16"), b"[" * 100_000, entry() + b" ",
    doc(failed_at=True), doc(failed_at=1.5), doc(failed_at=...), doc(at="9"), doc(at=...),
    doc(fingerprint=7), doc(operator=None), doc(run=...), doc(fix="x"), doc(fix=[1]),
    doc(fix=...), doc(fix=["set a=1"]), doc(action="kept"), doc(action=None), doc(action=1),
    doc(target=""), doc(target=...), doc(target="no coordinates"), doc(target=3),
    doc(target="other.topic/0/7"), doc(reason=5), doc(reason="why"), doc(extra={"a": [1]}),
    doc(action="discarded", target=..., reason="bad"), doc(action="discarded", reason=""),
    doc(action="discarded", reason=...), doc(action="discarded", reason=None, target=...),
    doc(action="discarded", target=5, reason="x"), doc(action="discarded", target="t/0/1"),
    *(entry().replace(b'"at":9', b'"at":' + n) for n in (b"01", b"-0", b"9" * 30, b"1.0")),
    *(entry().replace(b'"me"', m) for m in (b'"m\\u00e9"', b'"m\x7f\xc3\xa9"', b'"m\x01"')),
    *(entry().replace(b'"me"', m) for m in (b'"m\xff"', b'"a\\"b"', b' "me"', b'"me" ')),
    entry().replace(b"[]", b'["a","b"]'), entry().replace(b"[]", b'["a",]'),
    entry().replace(b'"target"', b'"reason":"why","target"'), entry().replace(b"}", b",}"),
    entry("discarded").replace(b'"reason":"bad"', b'"reason":""'),
    b'{"action":"replayed","action":"discarded","reason":"r","at":1,"operator":"o",'
    b'"run":"r","failed_at":1,"fingerprint":"f"}',
]  # fmt: skip


def test_the_batch_ledger_parser_says_what_ledger_row_says() -> None:
    key = ledger_key("orders.dlq", 3, 14)
    records = [(k, v) for k in [key, *ODD_KEYS] for v in [entry(), None]]
    records += [(key, v) for v in ODD_VALUES] + [(k, v) for k in ODD_KEYS for v in ODD_VALUES]
    records += [(ledger_key("orders.dlq", 0, 1), entry("discarded", 5, "a" * 16))]
    assert ledger_rows("orders.dlq", *zip(*records, strict=True)) == reference(
        "orders.dlq", records
    )
    assert len(reference("orders.dlq", records)) > 20  # the corpus holds accepted records too
    assert ledger_rows("bad/topic", [b"bad/topic/0/1"], [entry()]) == []
    assert ledger_rows("orders.dlq", [], []) == []


def written_batch(size: int) -> list[tuple[bytes | None, bytes | None]]:
    """A batch as a replay writes it: one entry per dead letter, each its own target."""
    records: list[tuple[bytes | None, bytes | None]] = []
    for offset in range(size):
        found = LedgerEntry(
            "replayed", 9, "me", "r-1", offset, f"{offset:016x}", None, ("set a=1",),
            f"orders.fixed/{offset % 3}/{offset}",
        )  # fmt: skip
        records.append((ledger_key("orders.dlq", offset % 4, offset), encode_ledger_entry(found)))
    records.append((ledger_key("orders.dlq", 1, 99), entry("discarded", 5, "a" * 16)))
    return records


def test_a_batch_as_the_codec_writes_it_is_read_in_one_pass() -> None:
    records = written_batch(50)
    keys, values = [k for k, _ in records], [v for _, v in records]
    assert _written_batch(b"orders.dlq/", keys, values) is not None  # the one-pass path
    assert ledger_rows("orders.dlq", keys, values) == reference("orders.dlq", records)
    assert len(reference("orders.dlq", records)) == 51


@pytest.mark.parametrize("where", [0, 7, 50])
@pytest.mark.parametrize("odd", [*ODD_KEYS, *(("value", v) for v in ODD_VALUES)], ids=repr)
def test_one_odd_record_in_a_written_batch_reads_as_ledger_row_says(
    where: int, odd: bytes | tuple[str, bytes | None] | None
) -> None:
    records = written_batch(50)
    key, value = records[where]
    records[where] = (key, odd[1]) if isinstance(odd, tuple) else (odd, value)
    keys, values = [k for k, _ in records], [v for _, v in records]
    assert ledger_rows("orders.dlq", keys, values) == reference("orders.dlq", records)


def test_a_written_batch_with_an_odd_target_or_a_line_break_reads_as_ledger_row_says() -> None:
    odd_targets = (b"orders.fixed/0/1", b"", b"a/b/0/1", b"t/1/" + b"9" * 21, b"t/x/1", b"t/-1/1")
    for odd in (*odd_targets, b"orders.fixed/2/2\\n"):
        records = written_batch(5)
        key, value = records[2]
        assert value is not None
        records[2] = (key, value.replace(b"orders.fixed/2/2", odd))
        keys, values = [k for k, _ in records], [v for _, v in records]
        assert ledger_rows("orders.dlq", keys, values) == reference("orders.dlq", records)
    records = written_batch(5)
    records[3] = (records[3][0], (records[3][1] or b"") + b"\n" + (records[4][1] or b""))
    keys, values = [k for k, _ in records], [v for _, v in records]
    assert ledger_rows("orders.dlq", keys, values) == reference("orders.dlq", records)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)
FIELDS = st.sampled_from(
    ["action", "at", "operator", "run", "failed_at", "fingerprint", "reason", "fix", "target"]
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([ledger_key("orders.dlq", 0, 1), ledger_key("orders.dlq", 2, 9)])
            | st.sampled_from(ODD_KEYS)
            | st.binary(max_size=20),
            st.dictionaries(FIELDS, JSONISH | st.sampled_from(["replayed", "discarded"])),
            st.sampled_from(["replayed", "discarded"]),
            st.integers(0, 3),
        ),
        max_size=12,
    )
)
def test_the_batch_ledger_parser_holds_on_any_entry(
    cases: list[tuple[bytes | None, dict[str, Any], LedgerAction, int]],
) -> None:
    records: list[tuple[bytes | None, bytes | None]] = []
    for key, changes, action, how in cases:
        base: dict[str, object] = json.loads(entry(action))
        if how == 0:
            value: bytes | None = None
        elif how == 1:
            value = json.dumps(changes).encode()
        else:
            compact = json.dumps({**base, **changes}, ensure_ascii=False, separators=(",", ":"))
            value = compact.encode()[: None if how == 2 else -1]
        records.append((key, value))
    keys, values = [k for k, _ in records], [v for _, v in records]
    assert ledger_rows("orders.dlq", keys, values) == reference("orders.dlq", records)


NOW = Observed("c1", "t1", {0: 0, 1: 0}, "l1", 86_400_000, now_ms=1_000_000)


def test_an_index_in_line_with_the_broker_reads_on() -> None:
    seen = Seen("c1", "t1", {0: 0, 1: 0}, {0: 10, 1: 5}, "l1", 999_000)
    assert verdict(seen, NOW) == Verdict()


def test_a_new_cluster_or_a_recreated_topic_resets() -> None:
    seen = Seen("c0", "t1", {0: 0}, {0: 10}, "l1", 999_000)
    assert "cluster id" in (verdict(seen, NOW).reset or "")
    seen = Seen("c1", "t0", {0: 3}, {0: 10}, "l1", 999_000)
    found = verdict(seen, NOW)
    assert "recreated" in (found.reset or "") and found.reset_ledger
    recreated_lower = Observed("c1", "t9", {0: 4}, "l1", None, now_ms=1)
    assert verdict(seen, recreated_lower).skip_to == {0: 4}  # positions start afresh


def test_retention_expires_rows_and_skips_what_was_never_seen() -> None:
    seen = Seen("c1", "t1", {0: 0, 1: 0}, {0: 10, 1: 5}, "l1", 999_000)
    now = Observed("c1", "t1", {0: 4, 1: 8}, "l1", None, now_ms=1)
    found = verdict(seen, now)
    assert found.expire == {0: 4, 1: 8}
    assert found.skip_to == {1: 8}  # partition 0 already read past 4
    assert found.reset is None and found.reset_ledger is None


def test_an_old_or_recreated_ledger_index_is_read_again() -> None:
    old = Seen("c1", "t1", {}, {}, "l1", 1_000_000 - 86_400_001)
    assert "delete.retention.ms" in (verdict(old, NOW).reset_ledger or "")
    assert verdict(Seen("c1", "t1", {}, {}, "l1", 1_000_000 - 86_400_000), NOW) == Verdict()
    moved = Seen("c1", "t1", {}, {}, "l0", 999_000)
    assert "recreated" in (verdict(moved, NOW).reset_ledger or "")
    gone = Observed("c1", "t1", {}, None, None, now_ms=1)
    assert verdict(Seen("c1", "t1", {}, {}, "l1", 1), gone).reset_ledger


def fetched(offset: int, headers: Headers, partition: int = 0) -> tuple[Any, ...]:
    return (partition, offset, 1_760_000_000_000 + offset, b"k", b"v", headers)


def test_the_store_decides_counts_and_expires(tmp_path: Path) -> None:
    index = DlqIndex(tmp_path / "i.sqlite3", "orders.dlq", "c1")
    schema = lazarus_headers(Category.SCHEMA, "schema id 42 is not in the local catalog")
    letters_in = [fetched(o, lazarus_headers(failed_at=100 + o)) for o in range(6)]
    letters_in += [fetched(6, schema)]
    index.store_letters(letters_in)
    index.store_letters(letters_in[:2])  # a second reader of the same range counts nothing twice
    fp = letter_of("orders.dlq", fast_row(lazarus_headers())).fingerprint
    index.store_decisions(
        [
            (0, 0, 0, ledger_key("orders.dlq", 0, 0), entry("replayed", 100, fp), None),
            (0, 1, 0, ledger_key("orders.dlq", 0, 1), entry("discarded", 101, fp), None),
            (0, 2, 0, ledger_key("orders.dlq", 0, 2), entry("replayed", 5, fp), None),  # stale
        ]
    )
    got = depth(index)
    assert (got.records, got.unresolved, got.replayed, got.discarded) == (7, 5, 1, 1)
    assert got.unresolved_by_category == {"validation": 4, "schema": 1}
    assert got.by_cause[0] == (fp, 4)
    assert got.oldest_unresolved_ms == 102
    # retention deleted offsets 0..2: one replayed, one discarded, one unresolved
    now = Observed("c1", "t1", {0: 3}, None, None, now_ms=1)
    plan = verdict(Seen(), now)
    index.reset(plan)
    assert index.expire(plan, now) == (3, 1)
    got = depth(index)
    assert (got.records, got.unresolved, got.replayed, got.discarded) == (7, 4, 1, 1)
    assert got.expired_unresolved == 1
    # a tombstone withdraws nothing that is gone; a late decision on a live row counts
    index.store_decisions(
        [(0, 9, 0, ledger_key("orders.dlq", 0, 3), entry("replayed", 103, fp), None)]
    )
    assert depth(index).unresolved == 3
    stats = topic_stats(index, Window(), None)
    assert (stats.total, stats.unresolved, stats.replayed) == (4, 3, 1)
    rows = group_rows(index, "fingerprint", Window())
    assert rows is not None and [(r.key, r.count, r.unresolved) for r in rows] == [
        (fp, 3, 2),
        (rows[1].key, 1, 1),
    ]
    assert rows[0].example_coordinates == "orders.dlq/0/3" and rows[0].category == "validation"
    assert [dl.offset for dl, _ in letters(index, Window(), limit=2)] == [3, 4]
    index.close()
