"""JsonCodec: pydantic validation whose errors name fields and rules, never values; undecodable
bytes as deserialization errors; NaN and infinities refused whatever the model says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError, field_validator

from pipeline.codecs import json as json_codec
from pipeline.codecs.catalog import load_model
from pipeline.codecs.json import (
    UNDECODABLE,
    JsonCodec,
    error_details,
    errors_text,
    summarise,
)
from pipeline.errors import DeserializationError, RecordError, ValidationFailed

REPO = Path(__file__).resolve().parents[2]
SECRET = "alice@example.com"


@pytest.fixture(scope="module")
def payment_model() -> type[BaseModel]:
    return load_model("schemas.orders:Payment", search_path=REPO)


@pytest.fixture(scope="module")
def order_model() -> type[BaseModel]:
    return load_model("schemas.orders:Order", search_path=REPO)


def payment(**changes: object) -> bytes:
    event: dict[str, object] = {
        "payment_id": "p-1",
        "order_id": "o-1",
        "amount": 10.0,
        "currency": "EUR",
        "status": "captured",
    }
    event.update(changes)
    return json.dumps(event).encode()


def order(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "order_id": "o-1",
        "customer": {"id": "c-1", "email": SECRET},
        "items": [{"sku": "s", "qty": 1}],
        "amount": 1.0,
        "currency": "EUR",
        "created_at": "2024-01-02T03:04:05Z",
    }
    event.update(changes)
    return event


class Loose(BaseModel):
    """No inf/nan settings at all: the codec must still refuse non-finite numbers."""

    amount: float
    scores: list[float] = []
    extra_info: dict[str, float] = {}


def test_decode_returns_the_model_instance(payment_model: type[BaseModel]) -> None:
    decoded = JsonCodec(payment_model).decode(payment())
    assert isinstance(decoded.event, payment_model)
    assert decoded.schema_ref == "model:schemas.orders:Payment"
    assert decoded.schema_id is None


def test_validation_errors_name_field_and_rule_never_value(order_model: type[BaseModel]) -> None:
    event = order(items=[{"sku": "s", "qty": 0}])
    customer = event["customer"]
    assert isinstance(customer, dict)
    del customer["id"]
    customer["email"] = "not-an-email " + SECRET
    with pytest.raises(ValidationFailed) as caught:
        JsonCodec(order_model).decode(json.dumps(event).encode())
    error = caught.value
    assert error.message == (
        "3 validation errors for Order: customer.id (missing), "
        "customer.email (string_pattern_mismatch), items.0.qty (greater_than)"
    )
    assert error.details[2] == {
        "loc": "items.0.qty",
        "msg": "Input should be greater than 0",
        "type": "greater_than",
    }
    assert SECRET not in error.message + repr(error.details)
    assert isinstance(error.__cause__, Exception)


def test_literal_and_extra_errors(payment_model: type[BaseModel]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        JsonCodec(payment_model).decode(payment(status=SECRET, note=SECRET))
    assert [d["type"] for d in caught.value.details] == ["literal_error", "extra_forbidden"]
    assert "'authorized', 'captured', 'refunded' or 'failed'" in caught.value.details[0]["msg"]
    assert SECRET not in caught.value.message + repr(caught.value.details)


def test_invalid_utf8_is_a_deserialization_error(payment_model: type[BaseModel]) -> None:
    data = payment(payment_id="pXX").replace(b"XX", b"\xff\xfe")
    with pytest.raises(
        DeserializationError, match=r"^invalid UTF-8 at byte \d+: not a JSON document$"
    ):
        JsonCodec(payment_model).decode(data)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"payment_id": }', "expected value"),
        (b'{"a": 1} trailing', "trailing characters"),
        (b'{"a": "\\ud800"}', "hex escape"),
    ],
)
def test_malformed_json_is_a_deserialization_error(
    payment_model: type[BaseModel], data: bytes, problem: str
) -> None:
    with pytest.raises(DeserializationError, match=f"^malformed JSON for Payment: .*{problem}"):
        JsonCodec(payment_model).decode(data)


@pytest.mark.parametrize("data", [b"{", b'{"payment_id": "p', b'{"payment_id": ', b"[1, 2"])
def test_truncated_json_is_one_cause(payment_model: type[BaseModel], data: bytes) -> None:
    """pydantic says "EOF while parsing a string / a value / an object / a list": one
    corruption, one message, one fingerprint."""
    with pytest.raises(DeserializationError) as caught:
        JsonCodec(payment_model).decode(data)
    assert caught.value.message == "truncated JSON for Payment: the document ends early"


def test_empty_value(payment_model: type[BaseModel]) -> None:
    with pytest.raises(DeserializationError, match="empty value"):
        JsonCodec(payment_model).decode(b"")


def test_deep_nesting_is_a_deserialization_error(payment_model: type[BaseModel]) -> None:
    with pytest.raises(DeserializationError, match="recursion limit exceeded") as caught:
        JsonCodec(payment_model).decode(b"[" * 100_000)
    assert len(caught.value.message) < 200


def test_a_5000_digit_number_is_a_deserialization_error() -> None:
    class Counter(BaseModel):
        n: int

    with pytest.raises(DeserializationError, match="number out of range"):
        JsonCodec(Counter).decode(b'{"n": ' + b"9" * 5000 + b"}")
    with pytest.raises(ValidationFailed, match=r"n \(int_parsing_size\)"):
        JsonCodec(Counter).decode(b'{"n": "' + b"9" * 5000 + b'"}')
    counted = JsonCodec(Counter).decode(b'{"n": ' + b"9" * 40 + b"}").event
    assert isinstance(counted, Counter) and counted.n == int("9" * 40)


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (b'{"amount": NaN}', "amount"),
        (b'{"amount": Infinity}', "amount"),
        (b'{"amount": -Infinity}', "amount"),
        (b'{"amount": "nan"}', "amount"),
        (b'{"amount": 1e999}', "amount"),
        (b'{"amount": ' + b"9" * 400 + b"}", "amount"),
        (b'{"amount": 1, "scores": [1, NaN]}', "scores.1"),
        (b'{"amount": 1, "extra_info": {"k": "-inf"}}', "extra_info.<key>"),  # key redacted
    ],
)
def test_non_finite_numbers_are_refused(data: bytes, loc: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        JsonCodec(Loose).decode(data)
    assert caught.value.details == [
        {"loc": loc, "msg": "Input should be a finite number", "type": "finite_number"}
    ]
    assert caught.value.message == f"1 validation error for Loose: {loc} (finite_number)"


def test_strict_mode_refuses_coercion(payment_model: type[BaseModel]) -> None:
    data = payment(amount="10.5")
    # the model is loaded by name: mypy cannot know its fields
    assert JsonCodec(payment_model).decode(data).event.amount == 10.5  # type: ignore[attr-defined]
    with pytest.raises(ValidationFailed, match=r"amount \(float_type\)"):
        JsonCodec(payment_model, strict=True).decode(data)


def test_a_crashing_validator_withholds_its_message() -> None:
    class Picky(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def crash(cls, value: str) -> str:
            raise LookupError(f"no such name {value}")

    with pytest.raises(ValidationFailed, match="validator of Picky raised LookupError") as caught:
        JsonCodec(Picky).decode(b'{"name": "alice"}')
    assert "alice" not in caught.value.message


def test_long_error_lists_are_summarised() -> None:
    class Many(BaseModel):
        values: list[int]

    data = json.dumps({"values": ["x"] * 30}).encode()
    with pytest.raises(ValidationFailed) as caught:
        JsonCodec(Many).decode(data)
    assert caught.value.message.startswith("30 validation errors for Many: values.0 (int_parsing)")
    assert caught.value.message.endswith("values.9 (int_parsing), and 20 more")
    assert len(caught.value.details) == 30


def test_encode_round_trips_models_and_mappings(order_model: type[BaseModel]) -> None:
    codec = JsonCodec(order_model)
    decoded = codec.decode(json.dumps(order()).encode())
    assert codec.decode(codec.encode(decoded.event)).event == decoded.event
    assert codec.decode(codec.encode(order())).event == decoded.event


def test_encode_uses_aliases_so_decode_reads_it_back() -> None:
    class Aliased(BaseModel):
        full_name: str = Field(alias="fullName")

    codec = JsonCodec(Aliased)
    event = Aliased.model_validate({"fullName": "x"})
    encoded = codec.encode(event)
    assert json.loads(encoded) == {"fullName": "x"}
    assert codec.decode(encoded).event == event


def test_encode_refuses_invalid_events(order_model: type[BaseModel]) -> None:
    codec = JsonCodec(order_model)
    with pytest.raises(ValidationFailed, match=r"items.0.qty \(greater_than\)"):
        codec.encode(order(items=[{"sku": "s", "qty": 0}]))
    with pytest.raises(ValidationFailed, match="cannot encode a list as Order"):
        codec.encode([1, 2])
    with pytest.raises(ValidationFailed, match=r"amount \(finite_number\)"):
        JsonCodec(Loose).encode(Loose(amount=float("inf")))


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode)))
def test_arbitrary_bytes_raise_only_record_errors(data: bytes) -> None:
    try:
        JsonCodec(Loose).decode(data)
    except RecordError as error:
        assert error.message


def test_a_repeated_error_shape_is_described_once_and_handed_out_fresh(
    order_model: type[BaseModel],
) -> None:
    """`validation_failed` remembers a shape of error (messages withheld): the same message and
    details every time, each record its own detail dicts; a keep hook still runs per record."""
    codec = JsonCodec(order_model)
    bad = json.dumps({"order_id": "o", "items": [{"sku": "s", "qty": 0}]}).encode()

    def failure(c: JsonCodec, data: bytes) -> ValidationFailed:
        with pytest.raises(ValidationFailed) as caught:
            c.decode(data)
        return caught.value

    first = failure(codec, bad)
    first.details[0]["loc"] = "mutated"
    second = failure(codec, bad)
    assert second.message == first.message
    assert second.details[0]["loc"] != "mutated"
    assert second.details == failure(JsonCodec(order_model), bad).details
    other = json.dumps({"order_id": "o", "items": [{"sku": "s", "qty": -1}, {"qty": 1}]})
    assert failure(codec, other.encode()).message != second.message


class Checked(BaseModel):
    code: str

    @field_validator("code")
    @classmethod
    def known(cls, value: str) -> str:
        raise ValueError(f"unknown code {value}")


def test_a_keep_hook_runs_for_every_record() -> None:
    seen: list[str] = []

    def keep(text: str) -> str:
        seen.append(text)
        return text

    keeping = JsonCodec(Checked, keep_messages=keep)
    withheld = JsonCodec(Checked)
    for code in ("c-1", "c-2"):
        with pytest.raises(ValidationFailed) as kept:
            keeping.decode(json.dumps({"code": code}).encode())
        assert code in kept.value.details[0]["msg"]
        with pytest.raises(ValidationFailed) as hidden:
            withheld.decode(json.dumps({"code": code}).encode())
        assert code not in hidden.value.details[0]["msg"]
    assert len(seen) == 2


class _Cat(BaseModel):
    kind: Literal["cat"]


class _Dog(BaseModel):
    kind: Literal["dog"]


class _Owner(BaseModel):
    pet: _Cat | _Dog = Field(discriminator="kind")


def test_a_union_tag_error_from_json_names_the_discriminator_and_the_expected_tags() -> None:
    """The decoder reads pydantic's errors without their contexts (the cached shape needs none);
    a union tag's message is built from its context, so that build reads them again."""
    codec = JsonCodec(model=_Owner)
    for _ in range(2):  # the second time as the first: such a cause is never cached
        with pytest.raises(ValidationFailed) as caught:
            codec.decode(b'{"pet": {"kind": "fish"}}')
        assert caught.value.details == [
            {
                "loc": "pet",
                "msg": "Input tag found using 'kind' does not match any of the expected tags: "
                "'cat', 'dog'",
                "type": "union_tag_invalid",
            }
        ]


def test_a_cause_met_again_is_described_as_the_first_time() -> None:
    """The second record of a shape takes the cached description (its errors read without
    their contexts): the same message and details as the first."""
    codec = JsonCodec(model=_Owner)
    seen = []
    for _ in range(2):
        with pytest.raises(ValidationFailed) as caught:
            codec.decode(b'{"pet": {}}')
        seen.append((caught.value.message, caught.value.details))
    assert seen[0] == seen[1]
    assert seen[0][0] == "1 validation error for _Owner: pet (union_tag_not_found)"


class _Keyed(BaseModel):
    tags: dict[str, int]
    n: int


def _described_by_errors(exc: ValidationError, model: type[BaseModel], data: bytes) -> RecordError:
    """What `JsonCodec` said before it read `errors_text`: the errors' dicts, each time."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    undecodable = [error["msg"] for error in errors if error["type"] in UNDECODABLE]
    if undecodable:
        return json_codec._undecodable(data, model.__name__, undecodable[0])
    details = error_details(exc, model)
    return ValidationFailed(summarise(model.__name__, details, exc.error_count()), details=details)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(min_size=1, max_size=40),
        st.builds(
            lambda doc, cut: doc[:cut],
            st.sampled_from(
                [
                    b'{"tags": {"json_invalid": "x", "a\\\\"b": 1}, "n": "q"}',
                    b'{"tags": {"union_tag_invalid": []}, "n": 1e999999}',
                    b'{"tags": {"\xc3(": 1}, "n": 2}',
                    b'[{"type":"json_invalid","loc":[],"msg":"x"}]',
                ]
            ),
            st.integers(1, 60),
        ),
    )
)
def test_errors_read_as_one_text_describe_every_failure_as_the_errors_did(data: bytes) -> None:
    """`errors_text` decides (bytes that are no JSON, or a model's errors) and keys the cache
    of described shapes: the same message and details, and kind, as reading `errors()`, even
    where a record's dict key spells an error type or the message would need unescaping."""
    try:
        _Keyed.__pydantic_validator__.validate_json(data)
    except ValidationError as exc:
        expected = _described_by_errors(exc, _Keyed, data)
    else:
        return
    for _ in range(2):  # described, then from the cache
        with pytest.raises(RecordError) as caught:
            JsonCodec(_Keyed).decode(data)
        assert type(caught.value) is type(expected)
        assert (caught.value.message, caught.value.details) == (expected.message, expected.details)


def test_a_dict_key_spelling_an_error_type_is_still_a_validation_error() -> None:
    data = json.dumps({"tags": {"json_invalid": "x"}, "n": 1}).encode()
    with pytest.raises(ValidationFailed) as caught:
        JsonCodec(_Keyed).decode(data)
    assert caught.value.details == [
        {
            "loc": "tags.<key>",
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]
    cause = caught.value.__cause__
    assert isinstance(cause, ValidationError) and '"json_invalid"' in errors_text(cause)


def test_the_markers_of_undecodable_errors_are_every_undecodable_type() -> None:
    markers = {json_codec._JSON_INVALID, json_codec._JSON_TYPE}
    assert {marker.strip('"') for marker in markers} == UNDECODABLE
