"""Pydantic models of the example orders pipeline: the `orders` topic (Avro, see
`schemas/avro/orders-value/*.avsc`) and the `payments` topic (JSON).

The models carry the business rules the schemas cannot state (positive quantities, a
non-negative amount, ISO-4217-shaped currency codes). Every rule is a declarative constraint, so
pydantic's error messages name the rule and the bound, never the offending value: those messages
end up in dead-letter headers, which must hold no payload data.

Loaded by path (`load_model("schemas.orders:Order", search_path=<repo root>)`), not installed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
"""Three upper-case letters (ISO 4217 shape; membership in the ISO list is not checked)."""

Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
"""Loosely checked: one `@`, no blanks, a dot in the domain. Real verification is out of scope."""

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Customer(BaseModel):
    """The buyer: an opaque id and a contact address."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: NonEmpty
    email: Email


class Item(BaseModel):
    """One order line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: NonEmpty
    qty: int = Field(gt=0)


class Order(BaseModel):
    """An order, as written by `orders-value` v1 or v2 (`channel` arrived in v2, with a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: NonEmpty
    customer: Customer
    items: list[Item] = Field(min_length=1)
    amount: Money
    currency: CurrencyCode
    created_at: datetime
    channel: str | None = None


class Payment(BaseModel):
    """A payment event on the JSON `payments` topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payment_id: NonEmpty
    order_id: NonEmpty
    amount: Money
    currency: CurrencyCode
    status: Literal["authorized", "captured", "refunded", "failed"]
