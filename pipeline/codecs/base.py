"""What every codec offers the worker and the reprocessor: bytes in, a `Decoded` event out, and
back again. Pure: no Kafka, no I/O beyond what a `SchemaSource` does on a cache miss."""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Decoded(NamedTuple):
    """A record value that decoded and validated (a named tuple: one per record, and a frozen
    dataclass cost several times as much to build).

    `event` is a dict for Avro (fastavro's types: `datetime` for timestamp logical types, ...)
    and a model instance for JSON. `schema_ref` names what the event was checked against, for
    the `dlq.schema` header (e.g. `registry:orders-value/3/id=7`,
    `file:schemas/avro/orders-value/1.avsc#0123456789ab`, `model:schemas.orders:Order`).
    `schema_id` is the writer schema id from Confluent framing, `None` when there was none; the
    reprocessor passes it back to `Codec.encode` so a fixed event keeps its original framing.
    """

    event: object
    schema_ref: str
    schema_id: int | None = None


class Codec(Protocol):
    """Turns a record value into an event and back.

    `decode` raises only `RecordError` subclasses, so the caller can dead-letter with the
    error's category without guessing: `DeserializationError` (the bytes are not decodable),
    `SchemaError` (unknown writer schema, or writer and reader schemas that do not resolve;
    `SchemaUnavailable` when the schema could not be fetched right now) and `ValidationFailed`
    (decoded, but the event breaks its model). Messages and details name fields and rules, never
    the payload's values.
    """

    def decode(self, data: bytes) -> Decoded:
        """Decode and validate one record value."""
        ...

    def encode(self, event: object, *, schema_id: int | None = None) -> bytes:
        """Encode `event` (validated first) with the writer schema `schema_id` where the format
        has one; raises `ValidationFailed` if the event does not fit, `SchemaError` if the
        schema cannot be had."""
        ...
