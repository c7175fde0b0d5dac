"""The bench's inputs and the per-record work every non-Lazarus contender does.

A workload is a format (Confluent-framed Avro orders, schema id 1, or JSON orders) and a share
of bad records. Bad records alternate between the two failure kinds a DLQ exists for: bytes
that do not decode (truncated Avro, truncated JSON) and records that decode but break the
model's rules (`qty = 0` against `schemas.orders:Order`'s `gt=0`).

`checker(fmt)` returns the work of `ceiling`, `quix` and `arroyo`: fastavro's
`schemaless_reader` + `Order.model_validate`, or `Order.model_validate_json`; it raises on a bad
record. The same function in every peer, so their differences are their frameworks'.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastavro.types import Schema
    from pydantic import BaseModel

REPO = Path(__file__).resolve().parent.parent
AVRO_SCHEMA = REPO / "schemas/avro/orders-value/1.avsc"
MODEL = "schemas.orders:Order"
SCHEMA_ID = 1
POOL = 20_000  # distinct values cycled through; a multiple of 100 keeps the bad pattern


@dataclass(frozen=True, slots=True)
class Workload:
    fmt: str  # "avro" or "json"
    bad_pct: int

    @property
    def name(self) -> str:
        return f"{self.fmt}-{self.bad_pct}"

    @classmethod
    def parse(cls, name: str) -> Workload:
        fmt, _, pct = name.partition("-")
        if fmt not in ("avro", "json") or not pct.isdigit() or int(pct) > 100:
            raise ValueError(f"unknown workload {name!r}: use avro-N or json-N, N in 0..100")
        return cls(fmt, int(pct))

    def expected_bad(self, count: int) -> int:
        """How many of the first `count` records are bad (the steps of `is_bad` telescope)."""
        return count * self.bad_pct // 100


WORKLOADS = tuple(Workload(f, p) for f in ("avro", "json") for p in (0, 5, 50))


def is_bad(i: int, pct: int) -> bool:
    """Spread `pct`% bad records evenly: record i is bad when the running share steps up."""
    return (i + 1) * pct // 100 > i * pct // 100


def truncated(i: int, pct: int) -> bool:
    """Which kind of bad record i is: every other bad record does not decode at all."""
    return (i + 1) * pct // 100 % 2 == 1


def order(i: int, qty: int) -> dict[str, object]:
    return {
        "order_id": f"o-{i}",
        "customer": {"id": f"c-{i % 7}", "email": f"user{i}@example.com"},
        "items": [{"sku": f"sku-{i % 5}", "qty": qty}, {"sku": "sku-x", "qty": 1 + i % 3}],
        "amount": 10.0 + i % 1000,
        "currency": "EUR",
        "created_at": 1_760_000_000_000 + i,
    }


def avro_value(i: int, pct: int, schema: Schema) -> bytes:
    import fastavro

    bad = is_bad(i, pct)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, order(i, 0 if bad else 1 + i % 4))
    body = buf.getvalue()
    if bad and truncated(i, pct):
        body = body[: len(body) // 2]
    return b"\x00" + struct.pack(">I", SCHEMA_ID) + body


def json_value(i: int, pct: int) -> bytes:
    bad = is_bad(i, pct)
    data = order(i, 0 if bad else 1 + i % 4)
    data["created_at"] = "2025-10-09T08:53:20.000Z"
    text = json.dumps(data, separators=(",", ":")).encode()
    return text[: len(text) // 2] if bad and truncated(i, pct) else text


def value_pool(workload: Workload) -> list[bytes]:
    """`POOL` values; value i is bad exactly when `is_bad(i, workload.bad_pct)`."""
    if workload.fmt == "avro":
        schema = avro_schema()
        return [avro_value(i, workload.bad_pct, schema) for i in range(POOL)]
    return [json_value(i, workload.bad_pct) for i in range(POOL)]


def records(workload: Workload, count: int) -> Iterator[tuple[bytes, bytes]]:
    pool = value_pool(workload)
    for i in range(count):
        yield f"k-{i}".encode(), pool[i % POOL]


def avro_schema() -> Schema:
    import fastavro

    return fastavro.parse_schema(json.loads(AVRO_SCHEMA.read_text(encoding="utf-8")))


def load_order_model() -> type[BaseModel]:
    import sys

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from schemas.orders import Order

    return Order


def checker(fmt: str) -> Callable[[bytes], object]:
    """Decode and validate one value; raises on a bad record (any exception type)."""
    model = load_order_model()
    if fmt == "json":
        return model.model_validate_json
    from fastavro import schemaless_reader

    schema = avro_schema()
    validate = model.model_validate

    def check_avro(value: bytes) -> object:
        if len(value) < 5 or value[0] != 0 or int.from_bytes(value[1:5]) != SCHEMA_ID:
            raise ValueError("not Confluent-framed Avro with schema id 1")
        return validate(schemaless_reader(io.BytesIO(value[5:]), schema, None))

    return check_avro
