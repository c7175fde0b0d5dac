"""The compiled walk (pipeline.codecs.avro_walk) answers what fastavro's pure-Python re-read
answers, field and exception type, on every kind of broken body; it only makes it cheaper."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import linecache
import re
import uuid
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.types import Schema
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.codecs import avro_walk
from pipeline.codecs.avro import reread, reread_pure
from pipeline.codecs.avro_walk import (
    MAX_EMPTY_ITEMS,
    TooManyEmptyItems,
    compile_walks,
    needs_bounded_read,
)

REPO = Path(__file__).resolve().parents[2]
INNER = {
    "type": "record",
    "name": "Inner",
    "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": ["null", "E"]}],
}
RICH = parse_schema(
    {
        "type": "record",
        "name": "Rich",
        "namespace": "t",
        "fields": [
            {"name": "n", "type": "null"},
            {"name": "b", "type": "boolean"},
            {"name": "i", "type": "int"},
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "by", "type": "bytes"},
            {"name": "s", "type": "string"},
            {"name": "fx", "type": {"type": "fixed", "name": "F3", "size": 3}},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
            {"name": "u", "type": ["null", "string", INNER]},
            {
                "name": "arr",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "It",
                        "fields": [
                            {"name": "sku", "type": "string"},
                            {"name": "tags", "type": {"type": "array", "items": "string"}},
                        ],
                    },
                },
            },
            {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
            {"name": "again", "type": "Inner"},
            {"name": "date", "type": {"type": "int", "logicalType": "date"}},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
            {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
            {
                "name": "dec",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2},
            },
            {
                "name": "decf",
                "type": {
                    "type": "fixed",
                    "name": "DF",
                    "size": 6,
                    "logicalType": "decimal",
                    "precision": 10,
                    "scale": 3,
                },
            },
            {"name": "last", "type": "string"},
        ],
    }
)
RICH_VALUE = {
    "n": None,
    "b": True,
    "i": -70000,
    "f": 1.5,
    "d": 2.5e300,
    "by": b"\x00\xff",
    "s": "été",
    "fx": b"abc",
    "e": "B",
    "u": {"x": 1, "y": "C"},
    "arr": [{"sku": "k1", "tags": ["a", "b"]}, {"sku": "", "tags": []}],
    "m": {"k": [1, -2, 300], "l": []},
    "again": {"x": 3, "y": None},
    "date": dt.date(2024, 1, 2),
    "ts": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    "tu": dt.time(3, 4, 5, 6),
    "uid": uuid.UUID(int=12345),
    "dec": decimal.Decimal("12.34"),
    "decf": decimal.Decimal("-1.234"),
    "last": "z",
}
ORDERS = parse_schema(json.loads((REPO / "schemas/avro/orders-value/2.avsc").read_text()))
ORDER = {
    "order_id": "o-1",
    "customer": {"id": "c-1", "email": "alice@example.com"},
    "items": [{"sku": "s", "qty": 2}, {"sku": "t", "qty": 1}],
    "amount": 12.5,
    "currency": "EUR",
    "created_at": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
}


def encoded(schema: Schema, value: object) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema, value)
    return buf.getvalue()


@pytest.mark.parametrize(("schema", "value"), [(RICH, RICH_VALUE), (ORDERS, ORDER)])
def test_every_truncation_reads_as_the_pure_python_reader_says(
    schema: Schema, value: object
) -> None:
    body = encoded(schema, value)
    walk = compile_walks(schema).walk
    assert walk is not None
    answers = set()
    for cut in range(len(body) + 1):
        assert walk(body[:cut]) == reread_pure(body[:cut], schema)
        answers.add(walk(body[:cut]))
    assert (None, None) in answers and len(answers) > 5


@settings(max_examples=400, deadline=None)
@given(
    schema=st.sampled_from([RICH, ORDERS]),
    edits=st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=3)), max_size=3),
    cut=st.integers(0, 400),
)
def test_broken_bodies_read_as_the_pure_python_reader_says(
    schema: Schema, edits: list[tuple[int, bytes]], cut: int
) -> None:
    """Overwritten, inserted and cut bytes: wrong lengths, counts, union and enum indexes, bad
    UTF-8, out-of-range dates and uuids, over-long varints."""
    body = bytearray(encoded(schema, RICH_VALUE if schema is RICH else ORDER))
    for at, data in edits:
        at %= len(body) + 1
        body[at : at + len(data) // 2] = data
    broken = bytes(body[: max(cut, len(body) // 3)])
    assert reread(broken, schema) == reread_pure(broken, schema)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=120))
def test_arbitrary_bodies_read_as_the_pure_python_reader_says(body: bytes) -> None:
    for schema in (RICH, ORDERS):
        assert reread(body, schema) == reread_pure(body, schema)


def test_schemas_the_walk_would_not_read_exactly_go_to_the_reader() -> None:
    recursive = parse_schema(
        {
            "type": "record",
            "name": "Node",
            "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
        }
    )
    assert compile_walks(recursive).walk is None
    body = encoded(recursive, {"v": 1, "next": {"v": 2, "next": None}})
    for cut in range(len(body)):
        assert reread(body[:cut], recursive) == reread_pure(body[:cut], recursive)
    assert reread(body[:3], recursive) == ("next.next", EOFError)


def test_a_long_run_of_continuation_bytes_is_left_to_the_bounded_reader() -> None:
    body = b"\xff" * 11 + b"\x01"
    assert needs_bounded_read(body)
    assert not needs_bounded_read(b"\xff" * 10 + b"\x01" + b"\xff" * 10)
    assert reread(body, ORDERS) == reread_pure(body, ORDERS)
    assert reread(body, ORDERS)[1] is OverflowError


EMPTY_ITEMS = parse_schema(
    {
        "type": "record",
        "name": "Z",
        "fields": [
            {"name": "id", "type": "int"},
            {"name": "a", "type": {"type": "array", "items": "null"}},
            {
                "name": "rows",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Row",
                        "fields": [
                            {"name": "marks", "type": {"type": "array", "items": "null"}},
                            {"name": "none", "type": {"type": "fixed", "name": "F0", "size": 0}},
                        ],
                    },
                },
            },
        ],
    }
)


def varint(n: int) -> bytes:
    """Avro's zig-zag varint."""
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    return bytes(out) + bytes([z])


def test_arrays_of_empty_items_are_walked_as_the_reader_reads_them() -> None:
    body = encoded(
        EMPTY_ITEMS,
        {"id": 1, "a": [None] * 300, "rows": [{"marks": [None, None], "none": b""}] * 3},
    )
    walks = compile_walks(EMPTY_ITEMS)
    assert walks.walk is not None and walks.guard is walks.walk
    assert compile_walks(ORDERS).guard is None  # every item takes a byte: no guard needed
    for cut in range(len(body) + 1):
        assert walks.walk(body[:cut]) == reread_pure(body[:cut], EMPTY_ITEMS)


def test_a_body_claiming_too_many_empty_items_stops_the_walk_at_its_field() -> None:
    """Ten bytes claiming 2**62 nulls would keep a reader looping for good."""
    walk = compile_walks(EMPTY_ITEMS).walk
    assert walk is not None
    assert walk(varint(1) + varint(2**62) + varint(0) + varint(0)) == ("a", TooManyEmptyItems)
    # the budget is the body's, across arrays: two rows of MAX_EMPTY_ITEMS // 2 + 1 marks each
    row = varint(MAX_EMPTY_ITEMS // 2 + 1) + varint(0)
    rows = varint(1) + varint(0) + varint(2) + row + row + varint(0)
    assert walk(rows) == ("rows.marks", TooManyEmptyItems)
    assert walk(varint(1) + varint(MAX_EMPTY_ITEMS) + varint(0) + varint(0)) == (None, None)
    assert walk(varint(1) + varint(-5) + varint(0) + varint(0) + varint(0)) == (None, None)


def record(name: str, **fields: object) -> dict[str, object]:
    """A record schema with `fields` in order."""
    return {
        "type": "record",
        "name": name,
        "fields": [{"name": k, "type": v} for k, v in fields.items()],
    }


def _every_cut_matches(schema: Schema, value: object) -> None:
    body = encoded(schema, value)
    walk = compile_walks(schema).walk
    assert walk is not None
    for cut in range(len(body) + 1):
        assert walk(body[:cut]) == reread_pure(body[:cut], schema)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "array", "items": "string"}, ["a", "été", ""]),
        ({"type": "map", "values": "int"}, {"k": 1, "é": -300}),
        (["null", "string", "long"], 2**40),
        ("string", "plain"),
        (record("One", e="int"), {"e": 5}),
        (record("Empty"), {}),
    ],
)
def test_schemas_that_are_not_records_are_walked_as_the_reader_reads_them(
    schema: Schema, value: object
) -> None:
    _every_cut_matches(parse_schema(schema), value)


def nested_arrays(depth: int) -> dict[str, object]:
    schema: object = "string"
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return record("Deep", a=schema)


def nested_records(depth: int) -> dict[str, object]:
    schema = record("R0", x="int")
    for level in range(1, depth):
        schema = record(f"R{level}", s="string", **{f"r{level}": ["null", schema]})
    return schema


def test_values_nested_past_one_function_are_read_by_functions_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python takes 20 loop blocks and 100 indentation levels a function: deeper values are
    generated as functions, and still read exactly."""
    arrays = parse_schema(nested_arrays(15))
    value: object = ["x", "é"]
    for _ in range(14):
        value = [value, []]
    _every_cut_matches(arrays, {"a": value})
    assert "def read" in compile_walks(arrays).source
    records = parse_schema(nested_records(30))
    record: object = {"x": 7}
    for level in range(1, 30):
        record = {"s": "é" if level % 2 else "s", f"r{level}": record}
    _every_cut_matches(records, record)
    assert "def read" not in compile_walks(records).source  # 31 levels: one function
    monkeypatch.setattr(avro_walk, "_MAX_LEVEL", 4)
    _every_cut_matches(records, record)
    assert compile_walks(records).source.count("def read") > 5


def test_nesting_deeper_than_max_depth_goes_to_the_reader() -> None:
    assert compile_walks(parse_schema(nested_records(32))).walk is not None  # height 63
    deep = parse_schema(record("Top", t=nested_records(40)))
    assert compile_walks(deep).walk is None
    body = encoded(deep, {"t": {"s": "a", "r39": None}})
    assert reread(body[:2], deep) == reread_pure(body[:2], deep)


def test_a_record_type_read_in_several_places_is_one_function() -> None:
    """`Inner` is defined once and referenced by name once more (`again`)."""
    source = compile_walks(RICH).source
    assert source.count("def read") == 1 and "Inner(buf, pos, n, path, ascii_end)" in source
    assert source.count("pos = read") == 2


def test_the_generated_source_is_the_one_tracebacks_show() -> None:
    walks = compile_walks(ORDERS)
    assert walks.walk is not None and walks.source.startswith("def walk(buf):")
    filename = walks.walk.__code__.co_filename
    shown = [linecache.getline(filename, line) for line in (1, 2)]
    assert shown == walks.source.splitlines(True)[:2]


def test_bad_utf8_is_found_before_and_after_the_first_byte_past_ascii() -> None:
    """Strings wholly before the body's first byte >= 0x80 are ASCII and not decoded again;
    the others are."""
    schema = parse_schema(record("S", a="string", n="long", b="string"))
    walk = compile_walks(schema).walk
    assert walk is not None
    first_bad = varint(1) + b"\xff" + varint(1) + varint(0)
    assert walk(first_bad) == ("a", UnicodeDecodeError)
    later_bad = varint(1) + b"a" + varint(2**40) + varint(2) + b"\xc3("
    assert walk(later_bad) == ("b", UnicodeDecodeError)
    for body in (first_bad, later_bad):
        assert reread(body, schema) == reread_pure(body, schema)


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=60))
def test_needs_bounded_read_finds_runs_of_eleven_high_bytes(body: bytes) -> None:
    assert needs_bounded_read(body) == (re.search(rb"[\x80-\xff]{11}", body) is not None)


def test_an_empty_items_array_in_a_shared_record_type_is_still_guarded() -> None:
    nulls = record("Nulls", a={"type": "array", "items": "null"})
    shared = parse_schema(record("Two", first=nulls, second="Nulls"))
    walks = compile_walks(shared)
    assert walks.guard is not None and walks.guard is walks.walk
    half = varint(MAX_EMPTY_ITEMS // 2 + 1) + varint(0)
    assert walks.guard(half + half) == ("second.a", TooManyEmptyItems)
    assert walks.guard(varint(3) + varint(0) + varint(0)) == (None, None)


@pytest.mark.parametrize("suffix", ["\u00b2", "\u0663", "\u00fc", "\u037a"])
def test_type_names_that_are_no_python_identifiers_are_walked_and_guarded(suffix: str) -> None:
    """A named type's full name becomes part of a generated function's name: characters that
    are word characters but cannot be in an identifier (a superscript two, an Arabic-Indic
    digit) used to make the source fail to compile, leaving the schema without its walk and its
    decoding-bomb guard."""
    name = f"Nulls{suffix}"
    shared = parse_schema(
        record(
            f"Two{suffix}", first=record(name, a={"type": "array", "items": "null"}), second=name
        )
    )
    walks = compile_walks(shared)
    assert walks.walk is not None and walks.guard is not None
    half = varint(MAX_EMPTY_ITEMS // 2 + 1) + varint(0)
    assert walks.guard(half + half) == ("second.a", TooManyEmptyItems)
    body = varint(3) + varint(0) + varint(0)
    assert walks.walk(body[:1]) == reread_pure(body[:1], shared)


HOSTILE = "x'); raise SystemExit('walk source injected') #\n\"\\"


def test_names_from_a_schema_never_become_code_in_the_generated_walk() -> None:
    """The walk is generated Python and schemas come from a registry anyone may write to: a
    field name only ever appears as a string literal (`repr`), a type name only as letters,
    digits and `_` of a function's name, and numbers only as ints."""
    inner = record(f"T{HOSTILE}", **{HOSTILE: "string"})
    schema = {
        "type": "record",
        "name": f"R{HOSTILE}",
        "fields": [
            {"name": HOSTILE, "type": inner},
            {"name": "again", "type": f"T{HOSTILE}"},
            {"name": "kind", "type": {"type": "enum", "name": f"E{HOSTILE}", "symbols": ["A"]}},
        ],
    }
    walks = compile_walks(schema)  # an injected statement would raise SystemExit here...
    assert walks.walk is not None and repr(HOSTILE) in walks.source
    # ...or in the walk, whose own `except Exception` would not catch it
    body = varint(1) + b"a" + varint(1) + b"b" + varint(0)
    assert walks.walk(body) == (None, None)
    assert walks.walk(body[:1]) == (f"{HOSTILE}.{HOSTILE}", EOFError)
    assert walks.walk(body[:3]) == (f"again.{HOSTILE}", EOFError)
