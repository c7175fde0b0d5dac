"""Recursive Avro schemas (a tree, a linked list) get the decoding-bomb guard too: a body claiming
2**62 items that take no bytes, or nesting its values past `MAX_NESTING` levels, is a dead letter
before fastavro's compiled reader sees it (it would loop for good, or overflow the C stack: a
segfault). They used to get no guard at all (`compile_walks` refused recursive named types)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from fastavro import parse_schema, schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.codecs.avro as avro_module
from pipeline.codecs import avro_walk
from pipeline.codecs.avro import AvroCodec, ParsedSchema, read_record, reread, reread_pure
from pipeline.codecs.avro_walk import (
    MAX_EMPTY_ITEMS,
    MAX_NESTING,
    NestedTooDeep,
    TooManyEmptyItems,
    compile_walks,
)
from pipeline.errors import DeserializationError
from tests.unit import test_avro_walk
from tests.unit.test_avro_walk import encoded, record, varint

REPO = Path(__file__).resolve().parents[2]

TREE_JSON: dict[str, object] = {
    "type": "record",
    "name": "Node",
    "namespace": "t",
    "fields": [
        {"name": "v", "type": "int"},
        {"name": "children", "type": {"type": "array", "items": "Node"}},
        {"name": "tags", "type": {"type": "array", "items": "null"}},
    ],
}
TREE = parse_schema(TREE_JSON)
LIST_JSON: dict[str, object] = {
    "type": "record",
    "name": "Link",
    "fields": [{"name": "next", "type": ["null", "Link"]}],
}
LIST = parse_schema(LIST_JSON)
LABELLED = parse_schema(  # recursive, every item takes a byte
    {
        "type": "record",
        "name": "Branch",
        "fields": [
            {"name": "label", "type": ["null", "string"]},
            {"name": "kids", "type": {"type": "map", "values": "Branch"}},
            {"name": "first", "type": ["null", "Branch"]},
        ],
    }
)
T = TypeVar("T")
ENDLESS = 2**62 - 1
"""A count no reader gets through: fastavro's compiled reader loops over it for good."""


def node(*children: bytes, tags: int = 0) -> bytes:
    """A `TREE` body: v = 0, one block of `children`, `tags` nulls."""
    block = varint(len(children)) + b"".join(children) if children else b""
    return varint(0) + block + varint(0) + (varint(tags) + varint(0) if tags else varint(0))


def links(count: int) -> bytes:
    """A `LIST` body of `count` records after the first (each `next` the second branch)."""
    return b"\x02" * count + b"\x00"


def codec(schema: dict[str, object], name: str) -> AvroCodec:
    """A codec of schemaless bodies written with `schema`, which must have its guard (or a test
    would hang on fastavro's compiled reader)."""
    writer = ParsedSchema(parse_schema(schema), None, None, None, f"file:{name}")
    assert avro_module._walks_for(writer.schema).guard is not None
    return AvroCodec(writer=writer)


def test_a_recursive_schema_gets_a_guard_and_no_walk() -> None:
    """The guard reads recursive types by calling their function by name; there is no walk, as
    the pure-Python re-read's own limit (RecursionError) depends on its caller's stack."""
    for schema in (TREE, LIST, LABELLED):
        walks = compile_walks(schema)
        assert walks.walk is None and walks.guard is not None
        assert "depth + " in walks.source and "raise NestedTooDeep" in walks.source
    assert compile_walks(TREE).source.count("def read") == 1  # one function, calling itself
    body = node(node(), node(node(tags=2)), tags=1)
    assert reread(body[:5], TREE) == reread_pure(body[:5], TREE) == ("children.v", EOFError)


def test_a_bomb_in_a_recursive_schema_is_stopped_by_the_guard() -> None:
    """Ten bytes claiming 2**62 - 1 nulls, at the root or three levels down."""
    guard = compile_walks(TREE).guard
    assert guard is not None
    assert guard(node(tags=ENDLESS)) == ("tags", TooManyEmptyItems)
    deep = node(node(node(node(tags=ENDLESS))))
    assert guard(deep) == ("children.children.children.tags", TooManyEmptyItems)
    assert guard(node(node(), node(tags=3), tags=MAX_EMPTY_ITEMS - 3)) == (None, None)


def test_the_item_budget_is_shared_across_recursion_levels() -> None:
    guard = compile_walks(TREE).guard
    assert guard is not None
    half = MAX_EMPTY_ITEMS // 2 + 1
    assert guard(node(tags=half)) == (None, None)
    assert guard(node(node(tags=half))) == (None, None)
    assert guard(node(node(tags=half), tags=half)) == ("tags", TooManyEmptyItems)
    siblings = node(node(tags=half), node(tags=half))
    assert guard(siblings) == ("children.tags", TooManyEmptyItems)
    # a new body starts with the whole budget again
    assert guard(node(node(tags=half))) == (None, None)


def test_the_codec_dead_letters_a_recursive_bomb() -> None:
    tree = codec(TREE_JSON, "tree.avsc")
    with pytest.raises(DeserializationError) as caught:
        tree.decode(node(node(tags=ENDLESS)))
    assert caught.value.message == (
        "malformed Avro record (more than 1,000,000 array items that take no bytes reading "
        "field 'children.tags'; writer schema file:tree.avsc)"
    )


def tree_values(depth: int) -> st.SearchStrategy[dict[str, object]]:
    value = st.integers(-(2**31), 2**31 - 1)
    tags = st.lists(st.none(), max_size=4)
    leaf = st.builds(lambda v, t: {"v": v, "children": [], "tags": t}, value, tags)

    def extend(kids: st.SearchStrategy[dict[str, object]]) -> st.SearchStrategy[dict[str, object]]:
        return st.builds(
            lambda v, c, t: {"v": v, "children": c, "tags": t},
            value,
            st.lists(kids, max_size=3),
            tags,
        )

    return st.recursive(leaf, extend, max_leaves=depth)


@settings(max_examples=150, deadline=None)
@given(value=tree_values(25))
def test_good_trees_decode_as_fastavro_reads_them_and_the_guard_reads_as_it_does(
    value: dict[str, object],
) -> None:
    body = encoded(TREE, value)
    tree = codec(TREE_JSON, "tree.avsc")
    assert tree.decode(body).event == schemaless_reader(io.BytesIO(body), TREE, None) == value
    guard = compile_walks(TREE).guard
    assert guard is not None
    for cut in range(len(body) + 1):  # shallow bodies: read for read as the pure-Python reader
        assert guard(body[:cut]) == reread_pure(body[:cut], TREE)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=120))
def test_arbitrary_bodies_are_guarded_as_the_pure_python_reader_reads_them(body: bytes) -> None:
    """Schemas whose items all take bytes (so no body makes the pure-Python reader loop)."""
    for schema in (LIST, LABELLED):
        guard = compile_walks(schema).guard
        assert guard is not None
        assert guard(body) == reread_pure(body, schema)


def test_a_body_nesting_past_max_nesting_is_refused() -> None:
    """fastavro's compiled reader recursed in C on each level: 4,656 links (a 4.7 KB body)
    overflowed an 8 MB stack (SIGSEGV). Each link is 3 levels (field, branch, named type): the
    334th (at level 1,002) is one too deep."""
    guard = compile_walks(LIST).guard
    assert guard is not None
    deepest = MAX_NESTING // 3
    assert guard(links(deepest)) == (None, None)
    path, kind = guard(links(deepest + 1))
    assert kind is NestedTooDeep and path == ".".join(["next"] * (deepest + 1))
    assert guard(links(100_000))[1] is NestedTooDeep
    chain = codec(LIST_JSON, "list.avsc")
    value = chain.decode(links(deepest)).event
    assert value == schemaless_reader(io.BytesIO(links(deepest)), LIST, None)
    with pytest.raises(DeserializationError) as caught:
        chain.decode(links(100_000))
    assert caught.value.message == (
        "malformed Avro record (values nested more than 1,000 levels deep reading field "
        "'next.next.next.next.….next.next.next.next' (334 fields deep); writer schema "
        "file:list.avsc)"
    )


def test_a_record_that_contains_itself_is_refused_for_any_body() -> None:
    """`R {n: null, r: R}` has no finite value: fastavro's compiled reader recurses without
    reading a byte until the C stack overflows, on any body, the empty one included."""
    schema: dict[str, object] = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "n", "type": "null"}, {"name": "r", "type": "R"}],
    }
    guard = compile_walks(parse_schema(schema)).guard
    assert guard is not None and guard(b"")[1] is NestedTooDeep
    with pytest.raises(DeserializationError, match="values nested more than 1,000 levels"):
        codec(schema, "r.avsc").decode(b"")


def at_depth(frames: int, call: Callable[[], T]) -> T:
    """`call()` from `frames` more Python frames down the stack."""
    return at_depth(frames - 1, call) if frames else call()


def test_the_deepest_guard_fits_python_s_recursion_limit() -> None:
    """A required self-reference is the fewest levels a frame (2: a field and a named type):
    the guard stops at `MAX_NESTING` within about 500 frames, here called 300 frames down."""
    schema = parse_schema(
        {
            "type": "record",
            "name": "Rx",
            "fields": [{"name": "x", "type": "int"}, {"name": "r", "type": "Rx"}],
        }
    )
    guard = compile_walks(schema).guard
    assert guard is not None
    assert at_depth(300, lambda: guard(b"\x00" * 2000))[1] is NestedTooDeep
    assert guard(b"\x00" * 400) == (".".join(["r"] * 400 + ["x"]), EOFError)


def test_a_guard_out_of_stack_is_a_dead_letter_too() -> None:
    """Called from a stack too deep for the body's nesting, the guard meets RecursionError:
    the body is refused rather than left to fastavro unchecked."""
    writer = ParsedSchema(LIST, None, None, None, "file:list.avsc")
    guard = compile_walks(LIST).guard
    body = links(MAX_NESTING // 3)
    limit = sys.getrecursionlimit()
    with pytest.raises(DeserializationError) as caught:
        at_depth(limit - 300, lambda: read_record(body, writer, None, guard))
    assert caught.value.message.startswith(
        "malformed Avro record (values nested too deep to be checked reading field 'next.next"
    )


def test_nesting_past_max_depth_keeps_its_guard() -> None:
    """A schema nesting deeper than the walk takes (`MAX_DEPTH`) has no walk, but its arrays of
    nulls still have their guard (it had none)."""
    inner: dict[str, object] = {
        "type": "record",
        "name": "R0",
        "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}],
    }
    for level in range(1, 40):
        inner = {
            "type": "record",
            "name": f"R{level}",
            "fields": [
                {"name": "s", "type": "string"},
                {"name": f"r{level}", "type": ["null", inner]},
            ],
        }
    schema = parse_schema(inner)
    walks = compile_walks(schema)
    assert walks.walk is None and walks.guard is not None
    body = (varint(0) + varint(1)) * 39 + varint(ENDLESS) + varint(0)
    path, kind = walks.guard(body)
    assert kind is TooManyEmptyItems and path is not None and path.endswith("r2.r1.a")
    good = (varint(0) + varint(1)) * 39 + varint(3) + varint(0)
    assert walks.guard(good) == (None, None)


SOURCES = {
    "orders-value/1.avsc": "fdee54e234337f73",
    "orders-value/2.avsc": "7b67358993c1c976",
    "RICH": "da3e62266deec3a1",
    "EMPTY_ITEMS": "4c50db8221461b6f",
}
"""The sha256 (first 16 hex digits) of each schema's generated walk as it was before the walk
took recursive types: the walks of other schemas are unchanged (update on an intended change)."""


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_walk_of_a_schema_without_recursion_is_unchanged(name: str) -> None:
    if name.endswith(".avsc"):
        schema = parse_schema(json.loads((REPO / "schemas/avro" / name).read_text()))
    else:
        schema = getattr(test_avro_walk, name)
    walks = compile_walks(schema)
    assert walks.walk is not None
    assert (walks.guard is None) is (name != "EMPTY_ITEMS")  # no guard runs for the others
    assert hashlib.sha256(walks.source.encode()).hexdigest()[:16] == SOURCES[name]


def test_a_bomb_and_a_deep_body_are_dead_letters_not_a_stopped_process(tmp_path: Path) -> None:
    """End to end in a process of its own (on the old code the first died of SIGSEGV and the
    second never returned)."""
    script = tmp_path / "decode.py"
    script.write_text(
        "import json, sys\n"
        "from fastavro import parse_schema\n"
        "from pipeline.codecs.avro import AvroCodec, ParsedSchema\n"
        "from pipeline.errors import DeserializationError\n"
        "for schema, body in json.load(sys.stdin):\n"
        "    codec = AvroCodec(writer=ParsedSchema(parse_schema(schema), None, None, None, 'f'))\n"
        "    try:\n"
        "        codec.decode(bytes.fromhex(body))\n"
        "    except DeserializationError as exc:\n"
        "        print(exc.message.split(' reading')[0])\n"
    )
    cases = [(LIST_JSON, links(100_000).hex()), (TREE_JSON, node(node(tags=ENDLESS)).hex())]
    done = subprocess.run(
        [sys.executable, str(script)],
        input=json.dumps(cases),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "malformed Avro record (values nested more than 1,000 levels deep",
        "malformed Avro record (more than 1,000,000 array items that take no bytes",
    ]


def test_measuring_item_widths_is_linear_in_a_schema_s_references(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`T<k> {a: T<k-1>, b: T<k-1>}`: each type referred to twice. Measuring whether an array's
    items take bytes walked every path (2**k), so a schema of 40 such levels kept the first
    record of its schema id compiling for good."""
    schema: dict[str, object] = {
        "type": "record",
        "name": "T0",
        "fields": [{"name": "n", "type": "null"}],
    }
    for level in range(1, 15):
        schema = {
            "type": "record",
            "name": f"T{level}",
            "fields": [{"name": "a", "type": schema}, {"name": "b", "type": f"T{level - 1}"}],
        }
    calls = []
    measure = avro_walk._Generator._width

    def counted(self: avro_walk._Generator, schema: object, seen: frozenset[str]) -> int:
        calls.append(schema)
        return measure(self, schema, seen)

    monkeypatch.setattr(avro_walk._Generator, "_width", counted)
    walks = compile_walks(parse_schema(record("Top", x={"type": "array", "items": schema})))
    assert walks.guard is not None
    assert walks.guard(varint(ENDLESS) + varint(0))[1] is TooManyEmptyItems
    assert len(calls) < 100  # 2**15 before
