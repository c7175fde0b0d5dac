"""The per-model non-finite check (pipeline/codecs/finite.py): it visits only the fields whose
type can hold a NaN or an infinity, falls back to the full walk where types do not say, and
never misses one that the full walk would find."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from pipeline.codecs.finite import Check, compile_model_check
from pipeline.codecs.json import holds_non_finite, validate_python
from pipeline.errors import ValidationFailed


class Item(BaseModel):
    sku: str
    qty: int
    price: float | None = None


class Order(BaseModel):
    id: str
    amount: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    items: list[Item] = []
    tags: dict[str, float] = {}
    note: Any = None


class Plain(BaseModel):
    id: str
    qty: int
    when: str


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str


def check(model: type[BaseModel]) -> Check:
    return compile_model_check(model, holds_non_finite)


@pytest.mark.parametrize(
    "event",
    [
        Order.model_construct(id="a", amount=Decimal("NaN"), items=[], tags={}, note=None),
        Order(id="a", items=[Item(sku="s", qty=1, price=math.inf)]),
        Order(id="a", tags={"x": -math.inf}),
        Order(id="a", note={"deep": [1.0, math.nan]}),
    ],
)
def test_finds_non_finite_numbers_wherever_the_model_allows_them(event: Order) -> None:
    assert check(Order)(event)


def test_finite_events_pass_without_a_walk() -> None:
    assert not check(Order)(Order(id="a", amount=Decimal(3), items=[Item(sku="s", qty=1)]))


def test_models_without_float_fields_are_never_checked() -> None:
    assert not check(Plain)(Plain(id="nan", qty=1, when="inf"))


def test_extra_fields_are_walked() -> None:
    assert check(Loose)(Loose.model_validate({"id": "a", "x": [math.nan]}))
    assert not check(Loose)(Loose.model_validate({"id": "a", "x": [1.5]}))


def test_lax_strings_that_become_nan_are_caught() -> None:
    with pytest.raises(ValidationFailed, match="finite_number"):
        validate_python(Item, {"sku": "s", "qty": 1, "price": "nan"}, may_be_non_finite=check(Item))


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5), st.floats())
def test_agrees_with_the_full_walk(prices: list[float], tag: float) -> None:
    event = Order(
        id="a",
        items=[Item(sku="s", qty=1, price=p) for p in prices],
        tags={"t": tag},
    )
    assert check(Order)(event) == holds_non_finite(event)


Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Priced(BaseModel):
    amount: Money
    refund: Money | None = None
    fees: list[Annotated[float, Field(allow_inf_nan=False)]] = []


class FiniteConfig(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)
    price: float
    tags: dict[str, float] = {}
    loose: Annotated[float, Field(allow_inf_nan=True)] = 0.0


class Recomputed(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)
    price: float

    @field_validator("price")
    @classmethod
    def scale(cls, value: float) -> float:
        return value * 1e308 * 10  # overflows to inf after pydantic's own check


Doubled = Annotated[float, Field(allow_inf_nan=False), AfterValidator(lambda v: v * 1e308 * 10)]


class AfterAnnotated(BaseModel):
    price: Doubled


def test_floats_pydantic_keeps_finite_are_not_visited() -> None:
    """pydantic refuses a NaN in these fields before the check runs, so the check skips them:
    built without validation, a NaN there goes unseen by the compiled check..."""
    nan = math.nan
    assert not check(Priced)(Priced.model_construct(amount=nan, refund=nan, fees=[nan]))
    assert not check(FiniteConfig)(FiniteConfig.model_construct(price=nan, tags={"t": nan}))
    # ...and validation still refuses every one of them
    cases: list[tuple[type[BaseModel], dict[str, object]]] = [
        (Priced, {"amount": nan}),
        (Priced, {"amount": 1, "refund": math.inf}),
        (Priced, {"amount": 1, "fees": [1.0, -math.inf]}),
        (FiniteConfig, {"price": "nan"}),
        (FiniteConfig, {"price": 1, "tags": {"t": math.inf}}),
    ]
    for model, data in cases:
        with pytest.raises(ValidationFailed, match="finite"):
            validate_python(model, data, may_be_non_finite=check(model))


def test_a_field_allowing_infinities_is_still_checked() -> None:
    event = FiniteConfig.model_construct(price=1.0, tags={}, loose=math.inf)
    assert check(FiniteConfig)(event)
    with pytest.raises(ValidationFailed, match="finite"):
        validate_python(
            FiniteConfig, {"price": 1, "loose": "inf"}, may_be_non_finite=check(FiniteConfig)
        )


@pytest.mark.parametrize("model", [Recomputed, AfterAnnotated])
def test_validators_running_after_pydantics_check_are_not_trusted(model: Any) -> None:
    with pytest.raises(ValidationFailed, match="finite"):
        validate_python(model, {"price": 1.0}, may_be_non_finite=check(model))
