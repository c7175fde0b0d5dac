"""Bad input never escapes unclassified. Hypothesis drives, with arbitrary and mutated inputs
(5,000-digit numbers in every numeric header and field, 1 MB values, deep nesting, invalid UTF-8,
binary junk):

- the decoders (Confluent-framed Avro, schemaless Avro, Avro + model, JSON + model): a value is
  decoded or raises a `RecordError` subtype, nothing else;
- the header readers (`parse_dead_letter`, `lineage`, `read_foreign` for every dialect,
  `deadletters.from_record`): never raise;
- `--where` (`selection.parse`): raises only `SelectionError`, and a parsed selection's
  `matches` never raises on any dead letter or payload;
- the fix language: parsing raises only `ValueError` (`FixError`), applying only `FixError`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.base import Codec
from pipeline.codecs.catalog import LocalCatalog, load_model
from pipeline.codecs.json import JsonCodec
from pipeline.core import contract, dialects
from pipeline.errors import RecordError
from reprocessor import fixes, selection
from reprocessor.deadletters import ReplayState, from_record
from tests.kit import avro_framed, good_order, good_payment

REPO = Path(__file__).resolve().parents[2]
HUGE = "9" * 5000
NEGATIVE_HUGE = "-" + "1" * 5000
MEGABYTE = b"\xff" * (1 << 20)
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    # a loaded machine makes generation slow; expressions that do not parse are filtered
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

DLQ_HEADERS = sorted(
    v
    for k, v in vars(contract).items()
    if k.isupper() and isinstance(v, str) and v.startswith("dlq.")
)
FOREIGN_HEADERS = sorted(
    v
    for k, v in vars(dialects).items()
    if k.isupper() and isinstance(v, str) and not k.endswith("PREFIX")
)
NUMERIC_TEXT = [HUGE, NEGATIVE_HUGE, "1e999", "0x10", " 7", "٣", "NaN", "-0", "+1", "", "00"]


def codecs() -> dict[str, Codec]:
    catalog = LocalCatalog(REPO / "schemas" / "avro")
    order = load_model("schemas.orders:Order", search_path=REPO)
    payment = load_model("schemas.orders:Payment", search_path=REPO)
    return {
        "avro": AvroCodec(source=catalog),
        "avro+model": AvroCodec(source=catalog, model=order),
        "avro-schemaless": AvroCodec(writer=catalog.by_id(1), model=order),
        "json": JsonCodec(payment),
        "json-strict": JsonCodec(payment, strict=True),
    }


CODECS = codecs()


def decodes_or_classifies(codec: Codec, data: bytes) -> None:
    with contextlib.suppress(RecordError):  # classified: a dead letter with its category
        codec.decode(data)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Flip, insert or delete bytes at positions taken modulo the length."""
    out = bytearray(data)
    for kind, where, byte in edits:
        at = where % (len(out) + 1)
        if kind == 0 and out:
            out[at % len(out)] = byte
        elif kind == 1:
            out.insert(at, byte)
        elif out:
            del out[at % len(out)]
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=8
)


class Huge(int):
    """A 5,000-digit int whose repr Hypothesis can print (int's own str() refuses it)."""

    def __repr__(self) -> str:
        return f"Huge(<{self.bit_length()}-bit int>)"


def nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.integers(0, 2).map(lambda i: Huge((10**5000 - 1, -(10**5000 // 9), 10**400)[i])),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def json_bytes(value: object) -> bytes:
    import sys

    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # write the 5,000-digit numbers the decoder must survive
    try:
        return json.dumps(value, allow_nan=True).encode()
    finally:
        sys.set_int_max_str_digits(old)


# ---------------------------------------------------------------- decoders


@pytest.mark.parametrize("name", sorted(CODECS))
@EXAMPLES
@given(data=st.binary(max_size=512))
def test_decoders_classify_binary_junk(name: str, data: bytes) -> None:
    decodes_or_classifies(CODECS[name], data)
    decodes_or_classifies(CODECS[name], b"\x00\x00\x00\x00\x01" + data)  # framed junk


@pytest.mark.parametrize("name", sorted(CODECS))
@EXAMPLES
@given(i=st.integers(0, 10_000), changes=edits)
def test_decoders_classify_mutated_records(
    name: str, i: int, changes: list[tuple[int, int, int]]
) -> None:
    valid = json_bytes(good_payment(i)) if name.startswith("json") else avro_framed(good_order(i))
    if name == "avro-schemaless":
        valid = valid[5:]
    decodes_or_classifies(CODECS[name], mutate(valid, changes))


@pytest.mark.parametrize("name", ["json", "json-strict"])
@EXAMPLES
@given(
    field=st.sampled_from(["payment_id", "order_id", "amount", "currency", "status", "x"]),
    value=json_values,
)
def test_json_decoders_classify_any_field_value(name: str, field: str, value: object) -> None:
    decodes_or_classifies(CODECS[name], json_bytes({**good_payment(1), field: value}))


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize(
    "data",
    [
        MEGABYTE,
        b"\x00\x00\x00\x00\x01" + MEGABYTE,
        b'{"amount": ' + HUGE.encode() + b"}",
        b'{"payment_id": "p", "order_id": "o", "amount": '
        + HUGE.encode()
        + b', "currency": "EUR", "status": "captured"}',
        b'{"amount": 1' + b"0" * 5000 + b".5e99999}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"a":[' * 2500 + b"1" + b"]}" * 2500,
        b'{"currency": "\xed\xa0\x80"}',  # a UTF-8 surrogate
        b'{"currency": "\\ud800"}',  # a lone surrogate escape
        b"\xef\xbb\xbf{}",  # a BOM
        b"\x00\x00\x00\x00\x01" + b"\xff" * 64,  # a huge varint length
        b"\x00\x00\x00\x00\x01" + b"\x80" * 20,  # an unterminated varint
        b"\x00\xff\xff\xff\xff",  # a schema id past the catalog
        b"",
    ],
    ids=lambda d: f"{len(d)}b",
)
def test_decoders_classify_hostile_values(name: str, data: bytes) -> None:
    decodes_or_classifies(CODECS[name], data)


# ---------------------------------------------------------------- header readers

header_values = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.sampled_from([v.encode() for v in NUMERIC_TEXT]),
    st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"t/0/" + HUGE.encode(), b"//", b"[]", b"{"]),
    st.text(max_size=40).map(str.encode),
)
header_lists = st.lists(
    st.tuples(st.sampled_from(DLQ_HEADERS + FOREIGN_HEADERS) | st.text(max_size=12), header_values),
    max_size=25,
)


def read_headers(headers: list[tuple[str, bytes | None]]) -> None:
    contract.parse_dead_letter(headers)
    contract.lineage(headers)
    dialects.read_foreign(headers)
    from_record("dlq", 0, 0, 0, None, None, headers)


@EXAMPLES
@given(headers=header_lists)
def test_header_readers_never_raise(headers: list[tuple[str, bytes | None]]) -> None:
    read_headers(headers)


@pytest.mark.parametrize("name", DLQ_HEADERS + FOREIGN_HEADERS)
@pytest.mark.parametrize("value", [HUGE, NEGATIVE_HUGE, "1" * 4301, f"t/{HUGE}/{HUGE}"])
def test_every_header_survives_5000_digit_numbers(name: str, value: str) -> None:
    """Each header alone, and inside an otherwise complete dead letter of each dialect."""
    read_headers([(name, value.encode())])
    for complete in _complete_dead_letters():
        read_headers([*complete, (name, value.encode())])
        read_headers([(name, value.encode()), *complete])


@pytest.mark.parametrize("name", DLQ_HEADERS + FOREIGN_HEADERS)
def test_every_header_survives_a_megabyte_of_junk(name: str) -> None:
    for complete in _complete_dead_letters():
        read_headers([*complete, (name, MEGABYTE)])


def _complete_dead_letters() -> list[list[tuple[str, bytes | None]]]:
    from tests.dlq_kit import (
        arroyo_headers,
        connect_headers,
        failure,
        lazarus_letter,
        spring_headers,
        streams_headers,
    )

    lazarus = lazarus_letter("orders", 3, b"k", b"v", failure())
    return [
        list(lazarus.headers),
        list(connect_headers("orders", 1, 2)),
        list(spring_headers("orders", hops=2)),
        list(streams_headers("orders", 1, 2)),
        list(arroyo_headers(1, 2)),
    ]


# ---------------------------------------------------------------- --where

FIELDS = [
    "category",
    "fingerprint",
    "type",
    "message",
    "stacktrace",
    "source.topic",
    "topic",
    "origin",
    "pipeline",
    "dialect",
    "rule",
    "key",
    "state",
    "partition",
    "offset",
    "source.partition",
    "source.offset",
    "attempts",
    "replay_count",
    "ts",
    "failed_at",
    "age",
    "value.a.0.b",
    "value.amount",
]
OPS = ["=", "!=", "<", "<=", ">", ">=", "~"]
values = st.one_of(
    st.sampled_from([HUGE, NEGATIVE_HUGE, "null", "true", "1e999", "9" * 400 + "d", "2h", "x"]),
    st.text(max_size=12).map(lambda t: json.dumps(t)),
    st.from_regex(r"[A-Za-z0-9._:-]{1,12}", fullmatch=True),
)
terms = st.builds(
    lambda f, o, v: f"{f}{o}{v}", st.sampled_from(FIELDS), st.sampled_from(OPS), values
)
expressions = st.recursive(
    terms,
    lambda inner: (
        st.builds(
            lambda a, w, b: f"{a} {w} {b}", inner, st.sampled_from(["and", "or", "AND"]), inner
        )
        | inner.map(lambda e: f"not ({e})")
    ),
    max_leaves=6,
)


def parse_or_refuse(text: str) -> selection.Selection | None:
    try:
        return selection.parse(text, now_ms=1_800_000_000_000)
    except selection.SelectionError:
        return None


@EXAMPLES
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_where_refuses_arbitrary_text_with_selection_error_only(text: str) -> None:
    parse_or_refuse(text)


@EXAMPLES
@given(expr=expressions, headers=header_lists, payload=json_values, key=st.binary(max_size=8))
def test_where_matches_never_raise(
    expr: str, headers: list[tuple[str, bytes | None]], payload: object, key: bytes
) -> None:
    parsed = parse_or_refuse(expr)
    assume(parsed is not None)
    assert parsed is not None
    dl = from_record("dlq", 0, 5, 1_700_000_000_000, key, b"v", headers)
    for state in ReplayState:
        parsed.matches(dl, state, payload)
        parsed.matches(dl, state, None)


# ---------------------------------------------------------------- the fix language

KINDS = ["set", "delete", "rename", "default", "cast"]
fix_texts = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda p, v: f"{p}={v}",
        st.sampled_from(["a", "a.b", "a.0", "items.0.qty", "x." * 200 + "y", "", ".", "a..b"]),
        st.sampled_from([HUGE, NEGATIVE_HUGE, "1e999", "null", '"\\ud800"', "[" * 5000, "{}", "x"]),
    ),
    st.builds(
        lambda p, t: f"{p}:{t}",
        st.sampled_from(["a", "a.0"]),
        st.sampled_from(["int", "float", "str", "bool", "decimal", "x"]),
    ),
)


@EXAMPLES
@given(pairs=st.lists(st.tuples(st.sampled_from(KINDS), fix_texts), max_size=5), event=json_values)
def test_fix_language_raises_only_its_own_errors(
    pairs: list[tuple[str, str]], event: object
) -> None:
    try:
        ops = fixes.parse_ordered(pairs)
    except ValueError:
        return
    for target in (event, {"a": event, "items": [{"qty": event}]}, nested(3000)):
        with contextlib.suppress(fixes.FixError):
            fixes.apply(ops, target)


def test_a_cast_of_a_5000_digit_string_is_a_fix_error_or_a_value() -> None:
    for cast in ("int", "float", "str", "bool"):
        try:
            ops = fixes.parse_ordered([("cast", f"a:{cast}")])
        except ValueError:
            continue
        with contextlib.suppress(fixes.FixError):
            fixes.apply(ops, {"a": HUGE})


def test_a_megabyte_of_continuation_bytes_is_diagnosed_by_its_field() -> None:
    """The failure path's pure-Python re-read once spent a minute on 1 MB of 0xff (a varint
    that never ends, built as an ever larger int); a varint past 10 bytes now stops it."""
    with pytest.raises(RecordError, match="reading field 'order_id'"):
        CODECS["avro-schemaless"].decode(MEGABYTE)


@pytest.mark.parametrize("field", ["partition", "offset", "attempts", "replay_count", "ts"])
def test_where_refuses_a_5000_digit_number_with_a_selection_error(field: str) -> None:
    """Once a ValueError from int()'s 4,300-digit limit (an unexpected error, exit 1)."""
    with pytest.raises(selection.SelectionError, match="too large a number"):
        selection.parse(f"{field}={HUGE}")


def test_where_compares_a_5000_digit_payload_number_as_text() -> None:
    parsed = selection.parse(f"value.amount={HUGE}")
    dl = from_record("dlq", 0, 0, 0, None, b"v", [])
    assert parsed.matches(dl, ReplayState.UNRESOLVED, {"amount": HUGE})
    assert not parsed.matches(dl, ReplayState.UNRESOLVED, {"amount": 1})


def test_fixing_a_deeply_nested_event_is_a_fix_error() -> None:
    """Once a RecursionError out of `to_plain`."""
    with pytest.raises(fixes.FixError, match="nests too deeply"):
        fixes.apply(fixes.parse_ordered([("set", "a=1")]), nested(5000))
