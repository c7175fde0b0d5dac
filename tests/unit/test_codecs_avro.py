"""AvroCodec: Confluent framing, schemaless Avro, schema resolution, model validation, and the
fastavro traps (trailing bytes, bad UTF-8, truncation), each with the message it must give."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import pipeline.codecs.avro as avro_module
from pipeline.codecs.avro import AvroCodec, ParsedSchema, parse_avro
from pipeline.codecs.catalog import LocalCatalog, load_model
from pipeline.errors import (
    ConfigError,
    DeserializationError,
    RecordError,
    SchemaError,
    SchemaUnavailable,
    ValidationFailed,
)

REPO = Path(__file__).resolve().parents[2]
EMAIL = "alice@example.com"
SKU = "SKU-PRIVATE-42"


@pytest.fixture(scope="module")
def catalog() -> LocalCatalog:
    return LocalCatalog(REPO / "schemas" / "avro")


@pytest.fixture(scope="module")
def order_model() -> type[BaseModel]:
    return load_model("schemas.orders:Order", search_path=REPO)


def order(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "order_id": "o-1",
        "customer": {"id": "c-1", "email": EMAIL},
        "items": [{"sku": SKU, "qty": 2}],
        "amount": 12.5,
        "currency": "EUR",
        "created_at": datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
    }
    event.update(changes)
    return event


@pytest.fixture
def framed(catalog: LocalCatalog) -> AvroCodec:
    return AvroCodec(source=catalog)


@pytest.fixture
def data(framed: AvroCodec) -> bytes:
    return framed.encode(order(), schema_id=1)


def assert_no_payload(error: RecordError) -> None:
    text = error.message + repr(error.details)
    for value in (EMAIL, "alice", SKU, "o-1", "c-1"):
        assert value not in text, f"{value!r} leaked into {text!r}"


def test_confluent_round_trip(framed: AvroCodec, data: bytes) -> None:
    assert data[:5] == b"\x00\x00\x00\x00\x01"
    decoded = framed.decode(data)
    assert decoded.event == order()
    assert decoded.schema_id == 1
    digest = hashlib.sha256((REPO / "schemas/avro/orders-value/1.avsc").read_bytes()).hexdigest()
    assert decoded.schema_ref == f"file:orders-value/1.avsc#{digest[:12]}"


def test_schemaless_round_trip(catalog: LocalCatalog) -> None:
    codec = AvroCodec(writer=catalog.by_id(1))
    data = codec.encode(order())
    assert not data.startswith(b"\x00\x00\x00\x00\x01")
    decoded = codec.decode(data)
    assert decoded.event == order()
    assert decoded.schema_id is None


def test_trailing_bytes_are_rejected(framed: AvroCodec, data: bytes) -> None:
    with pytest.raises(DeserializationError, match=r"^2 trailing bytes after the Avro record"):
        framed.decode(data + b"\x00\x00")


def test_every_truncation_is_a_deserialization_error(framed: AvroCodec, data: bytes) -> None:
    for end in range(5, len(data)):
        with pytest.raises(DeserializationError) as caught:
            framed.decode(data[:end])
        assert_no_payload(caught.value)


def test_truncation_names_the_field_not_its_value(framed: AvroCodec, data: bytes) -> None:
    cut = data.index(EMAIL.encode()) + 3
    with pytest.raises(DeserializationError) as caught:
        framed.decode(data[:cut])
    assert caught.value.message.startswith(
        "truncated Avro record (expected more bytes reading field 'customer.email'"
    )
    assert_no_payload(caught.value)


def test_invalid_utf8_in_a_string_is_a_deserialization_error(
    framed: AvroCodec, data: bytes
) -> None:
    bad = data.replace(b"alice", b"\xff\xfelic")
    with pytest.raises(DeserializationError) as caught:
        framed.decode(bad)
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)
    assert caught.value.message == "invalid UTF-8 in an Avro string reading field 'customer.email'"
    assert "\\xff" not in caught.value.message


def test_out_of_range_union_index_is_a_deserialization_error(catalog: LocalCatalog) -> None:
    codec = AvroCodec(writer=catalog.by_id(2))
    good = codec.encode(order(channel="web"))
    bad = good[: -len(b"\x02\x06web")] + b"\x08\x06web"  # branch 4 of a 2-branch union
    with pytest.raises(DeserializationError, match=r"malformed Avro record \(IndexError"):
        codec.decode(bad)


def test_bad_magic_byte(framed: AvroCodec, data: bytes) -> None:
    with pytest.raises(DeserializationError, match="bad magic byte 0x7b"):
        framed.decode(b"{" + data[1:])


@pytest.mark.parametrize("length", range(5))
def test_value_shorter_than_the_header(framed: AvroCodec, length: int) -> None:
    with pytest.raises(DeserializationError, match=f"value of {length} bytes is shorter"):
        framed.decode(b"\x00\x00\x00\x00\x01"[:length])


def test_unknown_schema_id_is_a_schema_error(framed: AvroCodec, data: bytes) -> None:
    with pytest.raises(SchemaError, match="schema id 99 is not in the local catalog"):
        framed.decode(b"\x00" + struct.pack(">I", 99) + data[5:])


def test_a_failing_source_is_schema_unavailable() -> None:
    class Broken:
        def by_id(self, schema_id: int) -> ParsedSchema:
            raise ConnectionResetError("peer said secret things")

    with pytest.raises(SchemaUnavailable, match=r"looking up schema id 1 \(ConnectionResetError\)"):
        AvroCodec(source=Broken()).decode(b"\x00\x00\x00\x00\x01\x00")


def test_v1_data_resolves_with_the_v2_reader(catalog: LocalCatalog, data: bytes) -> None:
    codec = AvroCodec(source=catalog, reader=catalog.latest("orders-value"))
    decoded = codec.decode(data)
    assert decoded.event == {**order(), "channel": None}
    assert decoded.schema_id == 1
    v1, v2 = catalog.by_id(1).ref, catalog.by_id(2).ref
    assert decoded.schema_ref == f"{v1} -> {v2}"


def test_incompatible_reader_is_a_schema_error(catalog: LocalCatalog, data: bytes) -> None:
    reader_text = (REPO / "schemas/avro/orders-value/1.avsc").read_text()
    reader_text = reader_text.replace(
        '{"name": "amount", "type": "double"}', '{"name": "amount", "type": "string"}'
    )
    reader = ParsedSchema(parse_avro(reader_text), None, None, None, "file:test-reader")
    codec = AvroCodec(source=catalog, reader=reader)
    with pytest.raises(SchemaError) as caught:
        codec.decode(data)
    assert caught.value.message.startswith("writer schema file:")
    assert "cannot be read as file:test-reader: Schema mismatch" in caught.value.message


def test_model_violations_name_fields_and_rules(
    catalog: LocalCatalog, order_model: type[BaseModel]
) -> None:
    plain, checked = AvroCodec(source=catalog), AvroCodec(source=catalog, model=order_model)
    data = plain.encode(order(items=[{"sku": SKU, "qty": 0}], currency="eur"), schema_id=1)
    with pytest.raises(ValidationFailed) as caught:
        checked.decode(data)
    assert (
        caught.value.message == "2 validation errors for Order: items.0.qty (greater_than), "
        "currency (string_pattern_mismatch)"
    )
    assert caught.value.details[0] == {
        "loc": "items.0.qty",
        "msg": "Input should be greater than 0",
        "type": "greater_than",
    }
    assert_no_payload(caught.value)
    assert checked.decode(plain.encode(order(), schema_id=1)).schema_ref.endswith(
        " + model:schemas.orders:Order"
    )


def test_nan_is_rejected_even_when_the_model_allows_it(catalog: LocalCatalog) -> None:
    class Loose(BaseModel):
        amount: float

    codec = AvroCodec(writer=catalog.by_id(1))
    data = codec.encode(order(amount=float("nan")))
    assert AvroCodec(writer=catalog.by_id(1)).decode(data)  # Avro itself allows NaN
    with pytest.raises(
        ValidationFailed, match=r"^1 validation error for Loose: amount \(finite_number\)$"
    ):
        AvroCodec(writer=catalog.by_id(1), model=Loose).decode(data)


def test_encode_checks_int_ranges_fastavro_would_truncate(framed: AvroCodec) -> None:
    with pytest.raises(ValidationFailed) as caught:
        framed.encode(order(items=[{"sku": SKU, "qty": 2**40}]), schema_id=1)
    assert caught.value.details == [
        {
            "loc": "com.example.orders.Item.qty",
            "msg": "Input should be Avro int",
            "type": "avro_type",
        }
    ]
    assert_no_payload(caught.value)


def test_encode_rejects_unknown_and_missing_fields(framed: AvroCodec) -> None:
    with pytest.raises(ValidationFailed, match=r"more fields than the schema specifies: note$"):
        framed.encode(order(note="call alice"), schema_id=1)
    event = order()
    del event["currency"]
    with pytest.raises(ValidationFailed):
        framed.encode(event, schema_id=1)


def test_encode_wrong_type_withholds_the_value(framed: AvroCodec) -> None:
    with pytest.raises(ValidationFailed) as caught:
        framed.encode(order(amount=EMAIL), schema_id=1)
    assert caught.value.details[0]["loc"] == "com.example.orders.Order.amount"
    assert_no_payload(caught.value)


def test_encode_a_model_instance_with_another_writer(
    catalog: LocalCatalog, order_model: type[BaseModel]
) -> None:
    codec = AvroCodec(source=catalog, model=order_model)
    data = codec.encode(order_model.model_validate(order()), schema_id=2)
    assert data[:5] == b"\x00\x00\x00\x00\x02"
    assert codec.decode(data).event == {**order(), "channel": None}


def test_encode_validates_against_the_model(
    catalog: LocalCatalog, order_model: type[BaseModel]
) -> None:
    with pytest.raises(ValidationFailed, match=r"items.0.qty \(greater_than\)"):
        AvroCodec(source=catalog, model=order_model).encode(
            order(items=[{"sku": SKU, "qty": -1}]), schema_id=1
        )


def test_encode_needs_the_right_kind_of_schema_id(catalog: LocalCatalog) -> None:
    with pytest.raises(SchemaError, match="needs the writer schema id"):
        AvroCodec(source=catalog).encode(order())
    with pytest.raises(SchemaError, match="schemaless Avro codec has no schema ids"):
        AvroCodec(writer=catalog.by_id(1)).encode(order(), schema_id=1)


def test_exactly_one_of_source_and_writer(catalog: LocalCatalog) -> None:
    with pytest.raises(ConfigError):
        AvroCodec()
    with pytest.raises(ConfigError):
        AvroCodec(source=catalog, writer=catalog.by_id(1))


def test_no_schema_is_parsed_per_record(
    framed: AvroCodec, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("parse_schema called while decoding")

    monkeypatch.setattr(avro_module, "parse_schema", forbidden)
    for _ in range(3):
        framed.decode(data)
    framed.encode(order(), schema_id=1)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=80), schema_id=st.sampled_from([1, 2]))
def test_arbitrary_bytes_raise_only_record_errors(body: bytes, schema_id: int) -> None:
    codec = AvroCodec(source=LocalCatalog(REPO / "schemas" / "avro"))
    try:
        codec.decode(b"\x00" + struct.pack(">I", schema_id) + body)
    except RecordError as error:
        assert error.message


def test_truncation_is_one_cause_wherever_the_bytes_end() -> None:
    """fastavro's compiled reader raises EOFError or IndexError depending on where the bytes
    end; both are the same corruption and must read (and fingerprint) the same way."""
    from pipeline.codecs.catalog import LocalCatalog
    from pipeline.core.classify import reported_type
    from tests.kit import avro_framed, good_order

    codec = AvroCodec(source=LocalCatalog(REPO / "schemas" / "avro"))
    whole = avro_framed(good_order(3))
    kinds, types = set(), set()
    for cut in range(6, len(whole)):
        with pytest.raises(DeserializationError) as caught:
            codec.decode(whole[:cut])
        kinds.add(caught.value.message.split(" (")[0])
        types.add(reported_type(caught.value))
    assert kinds == {"truncated Avro record"}
    assert types == {"EOFError"}  # the type is in the fingerprint too (IndexError split it)


def test_a_record_claiming_endless_empty_array_items_is_a_deserialization_error() -> None:
    """A poison pill: ten bytes claiming 2**62 nulls kept fastavro's compiled reader looping
    (and its list growing) for good, stopping the partition. The codec refuses it first."""
    writer = ParsedSchema(
        parse_avro(
            '{"type": "record", "name": "Z", "fields": [{"name": "id", "type": "int"},'
            ' {"name": "flags", "type": {"type": "array", "items": "null"}}]}'
        ),
        None,
        None,
        None,
        "file:z.avsc",
    )
    codec = AvroCodec(writer=writer)
    assert codec.decode(b"\x02\x06\x00").event == {"id": 1, "flags": [None] * 3}
    refused = (
        "malformed Avro record (more than 1,000,000 array items that take no bytes reading "
        "field 'flags'; writer schema file:z.avsc)"
    )
    three_million = b"\x80\x9b\xee\x02"  # zig-zag varint of 3,000,000: read, then refused
    endless = b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"  # 2**62 - 1: read for good
    for count in (three_million, endless):
        with pytest.raises(DeserializationError) as caught:
            codec.decode(b"\x02" + count + b"\x00")
        assert caught.value.message == refused


def test_a_failure_s_message_is_its_own_when_met_again(catalog: LocalCatalog) -> None:
    """Each of fastavro's exception types gets its own message for the same body, asked in
    turn and again (nothing said for one carries over to another)."""
    writer = catalog.by_id(2)
    good = AvroCodec(writer=writer).encode(order(channel="web"))
    bad_union = good[: -len(b"\x02\x06web")] + b"\x08\x06web"  # branch 4 of 2: IndexError
    for _ in range(2):
        for exc in (IndexError(), ValueError(), EOFError()):
            message = avro_module._undecodable(exc, bad_union, writer).message
            name = type(exc).__name__
            if isinstance(exc, EOFError):
                assert message.startswith("truncated Avro record (expected more bytes")
            else:
                assert f"malformed Avro record ({name} reading field 'channel'" in message
