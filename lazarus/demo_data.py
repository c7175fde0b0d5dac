"""The demo's order stream: realistic events with a realistic mix of failures (pure).

Avro orders with Confluent framing (schema id 1 of `schemas/avro/orders-value`) and JSON payments
(`schemas.orders:Payment`), with: truncated bytes, a wrong magic byte, an unknown schema id,
missing and mistyped fields, a business-rule violation, a transient dependency error that
succeeds on retry, and one record parked by a hold rule.
"""

from __future__ import annotations

import io
import json
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_writer

from pipeline.core.handler import Context
from pipeline.errors import Retryable

HELD_CUSTOMER = "c-fraud-7"
TRANSIENT_ORDER = "o-1007"


@dataclass(frozen=True, slots=True)
class DemoRecord:
    topic: str  # "orders" or "payments" (the demo prefixes its own topic names)
    key: bytes
    value: bytes
    expect: str  # "forwarded" or a contract category
    cause: str


def _order(i: int, rng: random.Random) -> dict[str, Any]:
    items = [
        {"sku": f"SKU-{rng.randint(100, 999)}", "qty": rng.randint(1, 4)}
        for _ in range(rng.randint(1, 3))
    ]
    return {
        "order_id": f"o-{1000 + i}",
        "customer": {"id": f"c-{rng.randint(1, 60)}", "email": f"buyer{i}@shop.example"},
        "items": items,
        "amount": round(rng.uniform(5, 400), 2),
        "currency": rng.choice(["EUR", "USD", "GBP"]),
        "created_at": 1_764_000_000_000 + i * 1000,
    }


def _payment(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "payment_id": f"p-{5000 + i}",
        "order_id": f"o-{1000 + i}",
        "amount": round(rng.uniform(5, 400), 2),
        "currency": "EUR",
        "status": rng.choice(["authorized", "captured"]),
    }


class Encoder:
    def __init__(self, schema_file: Path) -> None:
        self.schema = parse_schema(json.loads(schema_file.read_text()))

    def avro(self, record: dict[str, Any], schema_id: int = 1) -> bytes:
        buf = io.BytesIO()
        schemaless_writer(buf, self.schema, record)
        return b"\x00" + struct.pack(">I", schema_id) + buf.getvalue()


def stream(
    schema_file: Path, orders: int = 60, payments: int = 30, seed: int = 7
) -> list[DemoRecord]:
    """The demo's input, in produce order. Deterministic for a seed."""
    rng = random.Random(seed)
    enc = Encoder(schema_file)
    out: list[DemoRecord] = []
    for i in range(orders):
        order = _order(i, rng)
        key = order["customer"]["id"].encode()
        out.append(_order_case(i, order, key, enc))
    for i in range(payments):
        out.append(_payment_case(i, _payment(i, rng)))
    return out


def _order_case(i: int, order: dict[str, Any], key: bytes, enc: Encoder) -> DemoRecord:
    if i in (5, 23, 41):
        return DemoRecord("orders", key, enc.avro(order)[:-4], "deserialization", "truncated bytes")
    if i in (11, 47):
        return DemoRecord(
            "orders", key, b"\x01" + enc.avro(order)[1:], "deserialization", "bad magic"
        )
    if i in (17, 29):
        return DemoRecord(
            "orders", key, enc.avro(order, schema_id=42), "schema", "unknown schema id"
        )
    if i in (3, 13, 31, 37, 53):
        order["items"][0]["qty"] = 0  # business rule: qty must be positive
        return DemoRecord("orders", key, enc.avro(order), "validation", "qty 0")
    if i == 19:
        order["customer"]["id"] = HELD_CUSTOMER
        return DemoRecord("orders", HELD_CUSTOMER.encode(), enc.avro(order), "held", "hold rule")
    return DemoRecord("orders", key, enc.avro(order), "forwarded", "good")


def _payment_case(i: int, payment: dict[str, Any]) -> DemoRecord:
    key = payment["order_id"].encode()
    if i in (2, 9, 15, 21):
        del payment["currency"]  # missing field: fixable with a default
        return DemoRecord("payments", key, json.dumps(payment).encode(), "validation", "missing")
    if i in (6, 25):
        payment["amount"] = "12,50"  # mistyped
        return DemoRecord("payments", key, json.dumps(payment).encode(), "validation", "mistyped")
    return DemoRecord("payments", key, json.dumps(payment).encode(), "forwarded", "good")


_seen_transient: set[str] = set()


def enrich(event: object, ctx: Context) -> object:
    """The demo's processing function: passes events on, after one transient failure of the
    pricing service for one order (retried in place, then it succeeds)."""
    transient = isinstance(event, dict) and event.get("order_id") == TRANSIENT_ORDER
    if transient and ctx.attempt == 1 and TRANSIENT_ORDER not in _seen_transient:
        _seen_transient.add(TRANSIENT_ORDER)
        raise Retryable("pricing service timed out")
    return event


def hold_rules(expires_iso: str) -> str:
    return (
        "[[hold]]\n"
        'name = "fraud-review"\n'
        f'reason = "customer {HELD_CUSTOMER} under fraud review"\n'
        f"expires = {expires_iso}\n"
        'field = "customer.id"\n'
        f'equals = "{HELD_CUSTOMER}"\n'
    )
