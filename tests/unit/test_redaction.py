"""No payload value in any `dlq.error.*` header or log line by default: the record's own keys in
validation locations (dict keys, extra field names, union tags), a validator's own message, a
processor's exception text and its stack trace. A pipeline opts in to messages with
`policy.error_messages = "keep"`, through its `policy.redact` hook."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    field_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from pipeline.app.build import Schemas, build_handler, message_hook
from pipeline.app.settings import Settings
from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.catalog import LocalCatalog
from pipeline.codecs.json import JsonCodec, validate_python
from pipeline.codecs.locations import EXTRA, KEY, TAG, safe_location
from pipeline.core import contract
from pipeline.core.classify import WITHHELD, classify, exhausted
from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Routed
from pipeline.core.holds import HoldRules
from pipeline.errors import Category, ValidationFailed
from pipeline.runtime.deadletter_log import DeadLetterLog

SECRET = "alice@example.com"


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    barks: int


class Left(BaseModel):
    x: int


class Right(BaseModel):
    y: int


@dataclasses.dataclass
class Point:
    x: int
    labels: dict[str, int]


class Address(TypedDict):
    city: str
    lines: dict[str, str]


class Account(BaseModel):
    """Every kind of location part a record can choose."""

    model_config = ConfigDict(extra="forbid")

    tags: dict[str, int] = {}
    nested: dict[str, dict[int, list[int]]] = {}
    pet: Cat | Dog | None = Field(default=None, discriminator="kind")
    pets: list[Annotated[Cat | Dog, Field(discriminator="kind")]] = []
    either: Left | Right | None = None
    pair: tuple[int, dict[str, int]] | None = None
    point: Point | None = None
    address: Address | None = None
    nick: str = Field(default="n", validation_alias=AliasChoices("nick", "nickname"))
    name: str = "n"

    @field_validator("name")
    @classmethod
    def _no_secret(cls, value: str) -> str:
        if "@" in value:
            raise ValueError(f"{value} looks like an e-mail address")
        assert value != "root", f"{value} is reserved"
        return value


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, int] = Field(init=False)

    id: int = 0


class Counts(RootModel[dict[str, int]]):
    pass


class Tagged(BaseModel):
    shape: Annotated[
        Annotated[Cat, Tag("c")] | Annotated[Dog, Tag("d")],
        Discriminator(lambda v: "c" if v.get("kind") == "cat" else "d"),
    ]


class Custom(BaseModel):
    code: str

    @field_validator("code")
    @classmethod
    def _custom(cls, value: str) -> str:
        raise PydanticCustomError("bad_code", "code {code} is not ours", {"code": value})


def failure(model: type[BaseModel], data: object, **kw: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        validate_python(model, data, **kw)
    return caught.value


def locations(model: type[BaseModel], data: object) -> list[str]:
    return [d["loc"] for d in failure(model, data).details]


# --- locations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"tags": {SECRET: "x"}}, [f"tags.{KEY}"]),
        ({"nested": {SECRET: {"7": ["x"]}}}, [f"nested.{KEY}.{KEY}.0"]),
        ({"nested": {SECRET: {SECRET: [1]}}}, [f"nested.{KEY}.{KEY}.[key]"]),
        ({SECRET: 1}, [EXTRA]),
        ({"pet": {"kind": "cat", "lives": "x"}}, [f"pet.{TAG}.lives"]),
        ({"pets": [{"kind": "dog", "barks": "x"}]}, [f"pets.0.{TAG}.barks"]),
        ({"pet": {"kind": SECRET}}, ["pet"]),
        ({"either": {}}, ["either.Left.x", "either.Right.y"]),
        ({"pair": [1, {SECRET: "x"}]}, [f"pair.1.{KEY}"]),
        ({"point": {"x": "x", "labels": {SECRET: "y"}}}, ["point.x", f"point.labels.{KEY}"]),
        ({"address": {"city": 1, "lines": {SECRET: 2}}}, ["address.city", f"address.lines.{KEY}"]),
        ({"nickname": 5}, ["nickname"]),
        ({"name": 5}, ["name"]),
    ],
)
def test_locations_keep_the_models_names_and_drop_the_records_keys(
    data: object, expected: list[str]
) -> None:
    got = locations(Account, data)
    assert got == expected
    assert all(SECRET not in loc for loc in got)


def test_allowed_extra_fields_a_root_model_and_callable_discriminators_too() -> None:
    assert locations(Loose, {"id": 1, SECRET: "x"}) == [EXTRA]
    assert locations(Counts, {SECRET: "x"}) == [KEY]
    assert locations(Tagged, {"shape": {"kind": "cat", "lives": "x"}}) == [f"shape.{TAG}.lives"]


def test_an_unknown_shape_redacts_the_names_it_cannot_explain() -> None:
    assert safe_location(Account, ("unknown", SECRET, 3)) == f"{EXTRA}.{KEY}.3"


def test_the_message_names_the_safe_locations_and_one_cause_is_one_fingerprint() -> None:
    first = failure(Account, {"tags": {SECRET: "x"}})
    second = failure(Account, {"tags": {"bob": "y"}})
    assert (
        first.message
        == second.message
        == f"1 validation error for Account: tags.{KEY} (int_parsing)"
    )
    prints = {
        contract.fingerprint(Category.VALIDATION, "pydantic_core.ValidationError", e.message,
                             [d["loc"] for d in e.details])
        for e in (first, second)
    }  # fmt: skip
    assert len(prints) == 1


def test_the_codecs_redacted_location_gives_the_golden_fingerprint() -> None:
    """Ties `tests/unit/test_contract.py`'s golden vector for `tags.<key>` to the codec."""
    with pytest.raises(ValidationFailed) as caught:
        JsonCodec(Account).decode(json.dumps({"tags": {SECRET: "x"}}).encode())
    locs = [d["loc"] for d in caught.value.details]
    digest = contract.fingerprint(
        Category.VALIDATION, "pydantic_core.ValidationError", caught.value.message, locs
    )
    assert digest == "73209370bf219343"


def test_the_json_codec_redacts_its_locations() -> None:
    with pytest.raises(ValidationFailed) as caught:
        JsonCodec(Account).decode(json.dumps({"tags": {SECRET: "x"}, SECRET: 1}).encode())
    assert SECRET not in caught.value.message
    assert [d["loc"] for d in caught.value.details] == [f"tags.{KEY}", EXTRA]


def test_non_finite_numbers_under_keys_and_extras_are_located_without_them() -> None:
    with pytest.raises(ValidationFailed) as caught:
        JsonCodec(Loose).decode(json.dumps({"id": 1, SECRET: 1}).encode().replace(b"1}", b"NaN}"))
    assert SECRET not in json.dumps(caught.value.details)


# --- messages ----------------------------------------------------------------------------------


def test_a_validators_own_message_is_withheld_by_default() -> None:
    for name in (f"x{SECRET}", "root"):
        got = failure(Account, {"name": name})
        (entry,) = got.details
        assert WITHHELD in entry["msg"]
        assert name not in entry["msg"] and name not in got.message


def test_a_validators_message_is_kept_through_the_hook_when_the_pipeline_opts_in() -> None:
    got = failure(Account, {"name": SECRET}, keep_messages=lambda t: t.replace(SECRET, "<email>"))
    assert got.details[0]["msg"] == "Value error, <email> looks like an e-mail address"


def test_a_custom_error_type_is_user_text_too() -> None:
    (entry,) = failure(Custom, {"code": SECRET}).details
    assert entry["type"] == "bad_code"
    assert SECRET not in entry["msg"] and WITHHELD in entry["msg"]


def test_an_unknown_union_tag_is_not_quoted() -> None:
    (entry,) = failure(Account, {"pet": {"kind": SECRET}}).details
    assert entry == {
        "loc": "pet",
        "msg": "Input tag found using 'kind' does not match any of the expected tags: 'cat', 'dog'",
        "type": "union_tag_invalid",
    }


def test_a_crashing_validator_is_named_without_its_text_unless_kept() -> None:
    class Crashy(BaseModel):
        v: str

        @field_validator("v")
        @classmethod
        def _crash(cls, value: str) -> str:
            raise LookupError(value)

    withheld = failure(Crashy, {"v": SECRET})
    assert SECRET not in withheld.message and WITHHELD in withheld.message
    kept = failure(Crashy, {"v": SECRET}, keep_messages=str.upper)
    assert kept.message.endswith(SECRET.upper())


# --- user exceptions ---------------------------------------------------------------------------


class CardDeclined(Exception):
    pass


def raised(exc: BaseException) -> BaseException:
    def charge(card: str) -> None:
        raise exc

    try:
        charge(SECRET)
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


def test_a_processor_exception_keeps_its_type_and_frames_but_not_its_text() -> None:
    got = classify(raised(CardDeclined(f"card of {SECRET} declined")), None)
    assert got.message == f"{__name__}.CardDeclined raised by the processor ({WITHHELD})"
    assert got.stacktrace is not None
    assert "in charge" in got.stacktrace and "raise exc" in got.stacktrace
    assert SECRET not in got.stacktrace and "declined" not in got.stacktrace


def test_retries_exhausted_withholds_the_text_too() -> None:
    got = exhausted(raised(TimeoutError(SECRET)), 3, 1.0, None, with_stack=True)
    assert SECRET not in got.message and WITHHELD in got.message
    assert got.stacktrace is not None and SECRET not in got.stacktrace


def test_the_dead_letter_log_line_has_no_payload_value(caplog: pytest.LogCaptureFixture) -> None:
    failed = classify(raised(CardDeclined(SECRET)), None)
    rec = SourceRecord("t", 0, 1, 0, b"k", b"v", ())
    full = contract.Failure(
        failed.category,
        failed.error_type,
        failed.message,
        failed_at_ms=0,
        pipeline="p",
        details=failed.details,
        stacktrace=failed.stacktrace,
        attempts=1,
    )
    dead_log = DeadLetterLog("p")
    with caplog.at_level(logging.DEBUG, logger="lazarus.worker"):
        dead_log.record(rec, Routed((), "dead_lettered", full, "f" * 16), 0.0)
        dead_log.record(rec, Routed((), "dead_lettered", full, "f" * 16), 0.0)
        dead_log.flush(100.0, force=True)
    assert len(caplog.records) == 2
    assert all(SECRET not in r.getMessage() for r in caplog.records)


# --- configuration -----------------------------------------------------------------------------


def settings(tmp_path: Path, **policy: str) -> Settings:
    (tmp_path / "redaction_hooks.py").write_text(
        "def stars(text):\n    return text.replace('alice@example.com', '***')\n"
    )
    sys.path.insert(0, str(tmp_path))
    return Settings.model_validate(
        {
            "pipeline": "p",
            "sources": {"t": {"format": "json", "model": "schemas.orders:Payment"}},
            "output": {"topic": "o"},
            "dlq": {"topic": "d"},
            "python_path": [],
            "policy": policy,
        }
    )


def test_messages_are_withheld_unless_the_pipeline_keeps_them(tmp_path: Path) -> None:
    assert message_hook(settings(tmp_path)) is None
    keep = message_hook(settings(tmp_path, error_messages="keep"))
    assert keep is not None and keep(SECRET) == SECRET
    hooked = message_hook(settings(tmp_path, error_messages="keep", redact="redaction_hooks:stars"))
    assert hooked is not None and hooked(f"x {SECRET}") == "x ***"


def test_a_hook_without_keep_is_unused_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configured = settings(tmp_path, redact="redaction_hooks:stars")
    with caplog.at_level(logging.WARNING, logger="lazarus.worker"):
        handler = build_handler(configured, Schemas(configured), HoldRules.empty(), "w")
    assert handler.redact is None
    assert any("policy.error_messages" in r.getMessage() for r in caplog.records)


def test_avro_with_a_model_withholds_validator_text_by_default() -> None:
    class Strict(BaseModel):
        order_id: str

        @field_validator("order_id")
        @classmethod
        def _check(cls, value: str) -> str:
            raise ValueError(f"order {value} unknown")

    from tests.kit import avro_framed, good_order

    repo = Path(__file__).resolve().parents[2]
    codec = AvroCodec(source=LocalCatalog(repo / "schemas" / "avro"), model=Strict)
    with pytest.raises(ValidationFailed) as caught:
        codec.decode(avro_framed(good_order(1)))
    order_id = str(good_order(1)["order_id"])
    assert order_id not in json.dumps(caught.value.details)
    assert WITHHELD in caught.value.details[0]["msg"]
