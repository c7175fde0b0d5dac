"""Avro record values: Confluent wire format (magic byte 0, 4-byte big-endian schema id, then
the schemaless Avro body) or plain schemaless Avro with a configured writer schema.

fastavro is wrapped here, where it enters. Its decoders raise far more than `EOFError`:
`IndexError` and `ValueError` for truncated varints or out-of-range union and enum indexes,
`UnicodeDecodeError` for bad UTF-8 in a string (whose text quotes the bytes, i.e. payload),
`SchemaResolutionError` when writer and reader schemas do not resolve. And it silently accepts
trailing bytes after a record. Every one of those becomes a `RecordError` whose message names
the field, never its value. Schemas are parsed once (by the catalog or the registry source)
and handed over as `ParsedSchema`s, so no record pays for `parse_schema`.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from fastavro import _read_py, parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.types import NamedSchemas, Schema
from fastavro.validation import ValidationError as AvroValidationError
from fastavro.validation import validate
from pydantic import BaseModel

from pipeline.codecs.avro_walk import (
    MAX_EMPTY_ITEMS,
    MAX_NESTING,
    MAX_VARINT_BYTES,
    NestedTooDeep,
    TooManyEmptyItems,
    Walk,
    Walks,
    compile_walks,
    needs_bounded_read,
)
from pipeline.codecs.base import Decoded
from pipeline.codecs.finite import compile_model_check
from pipeline.codecs.json import holds_non_finite, model_ref, summarise, validate_python
from pipeline.codecs.locations import Redactor
from pipeline.errors import (
    ConfigError,
    DeserializationError,
    RecordError,
    SchemaError,
    SchemaUnavailable,
    ValidationFailed,
)

AvroSchema = Schema
"""A schema as fastavro's `parse_schema` returns it."""

MAGIC_BYTE = 0
HEADER_SIZE = 5
"""Magic byte plus the 4-byte schema id of the Confluent wire format."""
MAX_SCHEMA_ID = 2**31 - 1
"""Registry ids are Java ints."""
TRUNCATED = "truncated Avro record"
MAX_KNOWN_IDS = 1024
"""Writer schemas an `AvroCodec` remembers by id (each with its `dlq.schema` reference)."""

_SAFE_WRITER_MESSAGES = re.compile(
    r"^(record contains more fields than the schema specifies: [\w, ]+"
    r"|Field \w+ is specified in the schema but missing from the record)$"
)
"""fastavro writer errors that name fields only; any other writer text is withheld."""


@dataclass(frozen=True, slots=True)
class ParsedSchema:
    """An Avro schema parsed once, with where it came from.

    `schema_id`, `subject` and `version` are `None` when unknown (a schemaless writer schema
    has no id); `ref` is the `dlq.schema` text, e.g. `registry:orders-value/3/id=7` or
    `file:schemas/avro/orders-value/1.avsc#0123456789ab`.
    """

    schema: AvroSchema
    schema_id: int | None
    subject: str | None
    version: int | None
    ref: str


class SchemaSource(Protocol):
    """Where Confluent-framed records find their writer schema (the local catalog, the
    registry). `by_id` raises `SchemaError` for an id it does not know, `SchemaUnavailable`
    when it cannot tell right now; it caches, so repeated ids cost nothing."""

    def by_id(self, schema_id: int) -> ParsedSchema:
        """The writer schema registered under `schema_id`."""
        ...


def parse_avro(text: str, named: NamedSchemas | None = None) -> AvroSchema:
    """Parse Avro schema JSON once. `named` collects named types across calls, which is how
    schemas with references are parsed (referenced schemas first). Raises `SchemaError`."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"schema is not JSON ({exc})") from exc
    try:
        return parse_schema(raw, named)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        raise SchemaError(f"not a valid Avro schema ({reason})") from exc


def split_frame(data: bytes) -> tuple[int, bytes]:
    """`(schema_id, body)` of a Confluent-framed value; raises `DeserializationError`."""
    if len(data) < HEADER_SIZE:
        raise DeserializationError(
            f"value of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte Confluent header"
        )
    if data[0] != MAGIC_BYTE:
        raise DeserializationError(
            f"bad magic byte 0x{data[0]:02x}: not the Confluent wire format (expected 0x00)"
        )
    return int.from_bytes(data[1:HEADER_SIZE], "big"), data[HEADER_SIZE:]


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix `body` with the Confluent header for `schema_id`."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise SchemaError(f"schema id {schema_id} is out of range for the Confluent header")
    return bytes([MAGIC_BYTE]) + schema_id.to_bytes(4, "big") + body


def read_record(
    body: bytes, writer: ParsedSchema, reader: ParsedSchema | None, guard: Walk | None = None
) -> object:
    """Decode exactly one schemaless Avro datum filling all of `body`.

    Raises `SchemaError` when writer and reader do not resolve, `DeserializationError` for
    anything wrong with the bytes (including trailing bytes, which fastavro ignores). `guard`
    is the writer schema's `avro_walk.Walks.guard`, when it has one.
    """
    if guard is not None:
        field, kind = guard(body)
        if kind in _REFUSED:
            raise DeserializationError(
                f"malformed Avro record ({_REFUSED[kind]}{_where(field)}; "
                f"writer schema {writer.ref})"
            )
    fo = io.BytesIO(body)
    resolved = None if reader is None or reader.schema is writer.schema else reader.schema
    try:
        event = schemaless_reader(fo, writer.schema, resolved)
    except SchemaResolutionError as exc:
        target = reader.ref if reader is not None else "the reader schema"
        reason = str(exc)[:300]
        raise SchemaError(
            f"writer schema {writer.ref} cannot be read as {target}: {reason}"
        ) from exc
    except Exception as exc:
        error = _undecodable(exc, body, writer)
        try:
            raise error from _reported_cause(exc, error)
        finally:  # this frame, in the error's traceback, must not hold the error too: a cycle
            del error  # kept every dead letter's frames (fastavro's too) alive until a GC pass
    trailing = len(body) - fo.tell()
    if trailing:
        raise DeserializationError(
            f"{trailing} trailing bytes after the Avro record (writer schema {writer.ref})"
        )
    return event


_REFUSED: dict[type[BaseException] | None, str] = {
    TooManyEmptyItems: f"more than {MAX_EMPTY_ITEMS:,} array items that take no bytes",
    NestedTooDeep: f"values nested more than {MAX_NESTING:,} levels deep",
    RecursionError: "values nested too deep to be checked",
}
"""What the guard stops before fastavro's compiled reader sees the body: it would loop for good
over the items, or overflow the C stack (a segfault) on the nesting. A RecursionError is the
guard's own, when it is called from a stack too deep for `MAX_NESTING` levels."""
_PATH_SHOWN = 8
"""Fields of a longer path (a recursive schema's) that a message shows: its first and last."""


def _where(field: str | None) -> str:
    """` reading field '…'`; a long path by its ends, which stay within the message's limit."""
    if not field:
        return ""
    parts = field.split(".")
    if len(parts) > _PATH_SHOWN:
        half = _PATH_SHOWN // 2
        shown = ".".join([*parts[:half], "…", *parts[-half:]])
        return f" reading field '{shown}' ({len(parts)} fields deep)"
    return f" reading field '{field}'"


def _undecodable(exc: Exception, body: bytes, writer: ParsedSchema) -> DeserializationError:
    """Describe a decoder failure by its kind and field, never by fastavro's text. The kind is
    the pure-Python re-read's: fastavro's compiled reader raises IndexError where the bytes
    merely end early, which split one corruption (truncation) into two causes."""
    field, kind = reread(body, writer.schema)
    where = f" reading field '{field}'" if field else ""
    if isinstance(exc, UnicodeDecodeError) or kind is UnicodeDecodeError:
        return DeserializationError(f"invalid UTF-8 in an Avro string{where}")
    if isinstance(exc, EOFError) or kind is EOFError:
        detail = f"expected more bytes{where}" if field else "ended early"
        return DeserializationError(f"{TRUNCATED} ({detail}; writer schema {writer.ref})")
    return DeserializationError(
        f"malformed Avro record ({type(exc).__name__}{where}; writer schema {writer.ref})"
    )


def _reported_cause(exc: Exception, error: DeserializationError) -> Exception:
    """The cause a dead letter's `dlq.error.type` names (and its fingerprint covers): for a
    truncated record always EOFError, which fastavro's compiled reader raises for some cut
    points and IndexError for others; the original stays chained as the context."""
    if isinstance(exc, EOFError) or not error.message.startswith(TRUNCATED):
        return exc
    eof = EOFError("the Avro record ends early")
    eof.__context__ = exc
    return eof


def failing_field(body: bytes, schema: AvroSchema) -> str | None:
    """Best effort, on the failure path only: the dotted path of the field being read when
    decoding fails (e.g. `customer.email`), or `None`."""
    return reread(body, schema)[0]


def reread(body: bytes, schema: AvroSchema) -> tuple[str | None, type[BaseException] | None]:
    """The failing field's dotted path and the exception type of a pure-Python re-read (None,
    None when it decodes).

    fastavro's compiled reader reports no position. The walk compiled once per writer schema
    (`avro_walk`) answers what the pure-Python re-read would, without building the record;
    where it would not be exact, the body is re-read (`reread_pure`).
    """
    walk = _walks_for(schema).walk
    if walk is not None and not needs_bounded_read(body):
        return walk(body)
    return reread_pure(body, schema)


def reread_pure(body: bytes, schema: AvroSchema) -> tuple[str | None, type[BaseException] | None]:
    """`reread` by fastavro's pure-Python reader (private, hence the blanket guard), taking the
    `field` of each `read_record` frame in the traceback."""
    try:
        _read_py.schemaless_reader(_BoundedVarints(body), schema)
    except Exception as exc:
        return _field_path(exc.__traceback__), type(exc)
    return None, None


_WALKS: dict[int, tuple[AvroSchema, Walks]] = {}
"""Compiled walks by writer schema object (kept alive with it, so its id stays its own)."""
_MAX_WALKS = 256


def _walks_for(schema: AvroSchema) -> Walks:
    known = _WALKS.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    if len(_WALKS) >= _MAX_WALKS:
        _WALKS.clear()
    walks = compile_walks(schema)
    _WALKS[id(schema)] = (schema, walks)
    return walks


class _BoundedVarints(io.BytesIO):
    """The pure-Python reader builds a varint's value as a Python int, so a long run of
    continuation bytes (1 MB of 0xff) costs quadratic time: a 1 MB record took a minute to be
    classified. A varint longer than 10 bytes (64 bits) is malformed: stop there."""

    _run = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        if size == 1 and data and data[0] & 0x80:
            self._run += 1
            if self._run > MAX_VARINT_BYTES:
                raise OverflowError("an Avro varint longer than 10 bytes")
        else:
            self._run = 0
        return data


def _field_path(tb: TracebackType | None) -> str | None:
    names: list[str] = []
    while tb is not None:
        frame_ = tb.tb_frame
        if frame_.f_code.co_name == "read_record":
            field = frame_.f_locals.get("field")
            if isinstance(field, dict) and isinstance(field.get("name"), str):
                names.append(field["name"])
        tb = tb.tb_next
    return ".".join(names) or None


def write_record(event: object, writer: ParsedSchema) -> bytes:
    """Schemaless Avro of `event`, checked first: fastavro's writer alone would silently
    truncate out-of-range ints and drop unknown fields. Raises `ValidationFailed`."""
    try:
        validate(event, writer.schema, raise_errors=True)
    except AvroValidationError as exc:
        raise _does_not_fit(exc, writer) from exc
    except Exception as exc:
        raise ValidationFailed(
            f"event does not fit writer schema {writer.ref} ({type(exc).__name__})"
        ) from exc
    fo = io.BytesIO()
    try:
        schemaless_writer(fo, writer.schema, event, strict_allow_default=True)
    except Exception as exc:
        text = str(exc)
        reason = text if _SAFE_WRITER_MESSAGES.match(text) else type(exc).__name__
        raise ValidationFailed(f"event does not fit writer schema {writer.ref}: {reason}") from exc
    return fo.getvalue()


def _does_not_fit(exc: AvroValidationError, writer: ParsedSchema) -> ValidationFailed:
    """fastavro's own message quotes each bad datum; keep only field and expected type."""
    details = [
        {
            "loc": error.field or "",
            "msg": f"Input should be Avro {_type_name(error.schema)}",
            "type": "avro_type",
        }
        for error in exc.errors
    ]
    title = f"writer schema {writer.ref}"
    return ValidationFailed(summarise(title, details, len(details)), details=details)


def _type_name(schema: object) -> str:
    if isinstance(schema, list):
        return " | ".join(_type_name(branch) for branch in schema)
    if isinstance(schema, dict):
        return str(schema.get("logicalType") or schema.get("name") or schema.get("type"))
    return str(schema)


class AvroCodec:
    """Avro values, either Confluent-framed (`source=`: writer schemas looked up by the id in
    the frame) or schemaless (`writer=`: one configured writer schema). Exactly one of the two.

    `reader=` resolves every writer schema to that reader schema (Avro schema evolution).
    `model=` also validates the decoded dict against a pydantic model (`strict=` and
    `keep_messages=` as for `JsonCodec`); `Decoded.event` stays the dict, so that re-encoding
    keeps Avro's types.
    """

    __slots__ = (
        "_finite",
        "_keep",
        "_known",
        "_model",
        "_reader",
        "_source",
        "_strict",
        "_writer",
    )

    def __init__(
        self,
        *,
        source: SchemaSource | None = None,
        writer: ParsedSchema | None = None,
        reader: ParsedSchema | None = None,
        model: type[BaseModel] | None = None,
        strict: bool = False,
        keep_messages: Redactor | None = None,
    ) -> None:
        if (source is None) == (writer is None):
            raise ConfigError(
                "AvroCodec takes exactly one of source= (Confluent framing) "
                "or writer= (schemaless Avro)"
            )
        self._source = source
        self._writer = writer
        self._reader = reader
        self._model = model
        self._strict = strict
        self._keep = keep_messages
        self._finite = None if model is None else compile_model_check(model, holds_non_finite)
        self._known: dict[int | None, tuple[ParsedSchema, str, Walk | None]] = {}

    @property
    def framed(self) -> bool:
        """Whether values carry the Confluent header."""
        return self._source is not None

    def decode(self, data: bytes) -> Decoded:
        """Decode one value (and validate it against the model, if any)."""
        schema_id, body = split_frame(data) if self._source is not None else (None, data)
        writer, ref, guard = self._known.get(schema_id) or self._learn(schema_id)
        event = read_record(body, writer, self._reader, guard)
        if self._model is not None:
            validate_python(
                self._model,
                event,
                strict=self._strict,
                may_be_non_finite=self._finite,
                keep_messages=self._keep,
            )
        return Decoded(event, ref, schema_id)

    def _learn(self, schema_id: int | None) -> tuple[ParsedSchema, str, Walk | None]:
        """The writer schema of `schema_id` and its `dlq.schema` reference, looked up once:
        a schema id names one schema for good (the sources cache them too)."""
        writer = self._writer_for(schema_id)
        known = (writer, self._ref(writer), _walks_for(writer.schema).guard)
        if len(self._known) < MAX_KNOWN_IDS:
            self._known[schema_id] = known
        return known

    def encode(self, event: object, *, schema_id: int | None = None) -> bytes:
        """Encode `event` (a mapping or a model instance) with writer schema `schema_id`,
        framed; or, for a schemaless codec (`schema_id=None`), with its configured writer."""
        writer = self._writer_for(schema_id)
        body = write_record(self._as_record(event), writer)
        return frame(schema_id, body) if schema_id is not None else body

    def _writer_for(self, schema_id: int | None) -> ParsedSchema:
        """The writer schema for `schema_id`: the source's for framed values, else the
        configured one. Whatever a source raises leaves here as a `SchemaError`."""
        if self._source is None:
            if schema_id is not None or self._writer is None:
                raise SchemaError("a schemaless Avro codec has no schema ids (pass none)")
            return self._writer
        if schema_id is None:
            raise SchemaError("Confluent-framed Avro needs the writer schema id")
        try:
            return self._source.by_id(schema_id)
        except RecordError:
            raise
        except Exception as exc:
            raise SchemaUnavailable(
                f"schema source failed looking up schema id {schema_id} ({type(exc).__name__})"
            ) from exc

    def _as_record(self, event: object) -> dict[str, object]:
        """The dict fastavro writes; checked against the model first when there is one."""
        if isinstance(event, BaseModel):
            event = event.model_dump(mode="python", by_alias=True)
        if not isinstance(event, Mapping):
            raise ValidationFailed(f"cannot encode a {type(event).__name__} as an Avro record")
        if self._model is not None:
            validate_python(self._model, event, strict=self._strict, keep_messages=self._keep)
        return dict(event)

    def _ref(self, writer: ParsedSchema) -> str:
        """`<writer ref>[ -> <reader ref>][ + model:<module>:<name>]`."""
        ref = writer.ref
        if self._reader is not None and self._reader.schema is not writer.schema:
            ref += f" -> {self._reader.ref}"
        if self._model is not None:
            ref += f" + {model_ref(self._model)}"
        return ref


__all__ = [
    "AvroCodec",
    "AvroSchema",
    "ParsedSchema",
    "SchemaSource",
    "frame",
    "parse_avro",
    "read_record",
    "split_frame",
    "write_record",
]
