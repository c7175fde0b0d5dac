"""One view over dead letters of every dialect: Lazarus's own `dlq.*` headers and the foreign
dialects of `pipeline.core.dialects` (Kafka Connect, Spring Kafka, Kafka Streams, arroyo).

`from_record` never raises: a DLQ holds records from clusters and tools we do not control, and
one malformed header must not stop `dlq inspect` or `dlq group`. What is wrong is listed in
`DeadLetter.problems`. Nothing here talks to Kafka.

`to_kcat_json` renders a dead letter as one line of kcat's `-J` output (same field names, so an
operator's `jq` habits work) plus an `error` object. Bytes are never mangled:

- `key` and `payload` are text when the bytes are valid UTF-8; otherwise they are base64 and the
  object says so with `"key_encoding": "base64"` / `"payload_encoding": "base64"` (absent when
  the field is text). `null` stays `null`.
- `headers` is kcat's flat list alternating name and value. A value that is valid UTF-8 is a
  string, a null value is `null`, and any other value is the object `{"base64": "..."}`. A JSON
  string can never be mistaken for that object, so every header round-trips.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, TypeGuard, cast

from pipeline.core.contract import (
    FINGERPRINT_LENGTH,
    DeadLetterMeta,
    Header,
    fingerprint,
    format_coordinates,
    is_dlq_header,
    normalise_message,
    parse_dead_letter,
)
from pipeline.core.correlation import correlation_id
from pipeline.core.dialects import (
    ForeignMeta,
    dialect_of,
    foreign_category,
    foreign_pipeline,
    read_foreign,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

LAZARUS = "lazarus"
UNKNOWN = "unknown"
NO_DIALECT = "carries neither dlq.* headers nor a known dialect's headers"

_NO_DIALECT = ForeignMeta(UNKNOWN, None, None, None, None, None, None, None, problems=(NO_DIALECT,))
_VALID_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_INDEX = re.compile(r"[0-9]+")


class ReplayState(StrEnum):
    """Where a dead letter stands according to the ledger."""

    UNRESOLVED = "unresolved"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


_correlation_header: str | None = None


def use_correlation_header(header: str | None) -> None:
    """The header the pipeline names for correlation ids (`correlation_header` in its config,
    e.g. `x-request-id`), read for every dead letter of this process when it carries no valid
    `traceparent`: one setting per `dlq` command, set as its config is loaded."""
    global _correlation_header
    _correlation_header = header


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A DLQ record with its dead-letter fields normalised across dialects.

    `meta` is set for Lazarus dead letters, `foreign` for the other dialects (never both); the
    normalised fields below them are None where the dialect does not carry them. `category` is
    None for foreign dialects, whose exceptions do not map onto the contract's closed list,
    except where the headers make it unambiguous (`dialects.foreign_category`: a Connect
    converter stage is `deserialization`); `pipeline` is Spring's original consumer group.
    `fingerprint` is always set, so that every dead letter can be grouped: the `dlq.error.
    fingerprint` header when it is well-formed, else computed as the contract computes it (for
    foreign dialects, over the category placeholder `foreign:<dialect>`)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    dialect: str
    meta: DeadLetterMeta | None
    foreign: ForeignMeta | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    origin: str | None
    category: str | None
    error_type: str | None
    message: str | None
    stacktrace: str | None
    fingerprint: str
    attempts: int | None
    failed_at_ms: int | None
    pipeline: str | None
    replay_count: int
    problems: tuple[str, ...]
    source_timestamp_ms: int | None = None

    @property
    def coordinates(self) -> str:
        """`topic/partition/offset` of this dead letter in its DLQ (the ledger key)."""
        return format_coordinates(self.topic, self.partition, self.offset)

    @property
    def rule(self) -> str | None:
        """The name of the hold rule that parked it (`dlq.policy.rule`), None when none did."""
        return None if self.meta is None else held_by(self.meta.policy_rule)

    @property
    def trace(self) -> str | None:
        """The correlation id of the request it belongs to: its W3C `traceparent` trace id, else
        the header the pipeline names (`use_correlation_header`); replays keep the header, so a
        replayed record stays on its trace."""
        return correlation_id(self.headers, _correlation_header)

    @property
    def seen_ms(self) -> int:
        """When it failed: `dlq.failed.at` when known, else the DLQ record's own timestamp."""
        return self.timestamp_ms if self.failed_at_ms is None else self.failed_at_ms


def from_record(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[Header] | None,
) -> DeadLetter:
    """The dead letter stored at `topic/partition/offset`. Never raises on bad headers.

    When a record carries both `dlq.*` and a foreign dialect's headers, the one whose header
    comes last is read: every tool appends its headers, so the last is the latest hop (a Lazarus
    worker dead-lettering a Spring dead letter keeps Spring's headers before its own)."""
    kept = tuple(headers or ())
    record = (topic, partition, offset, timestamp_ms, key, value, kept)
    meta = parse_dead_letter(kept)
    if meta is not None and not _foreign_comes_last(kept):
        return _lazarus(record, meta)
    foreign = read_foreign(kept)
    if foreign is None:  # neither: every field unknown, the problem says why
        return replace(_foreign(record, _NO_DIALECT, ()), foreign=None)
    extra = () if meta is None else (f"also carries dlq.* headers; read as {foreign.dialect}",)
    return _foreign(record, foreign, extra)


_Record = tuple[str, int, int, int, bytes | None, bytes | None, tuple[Header, ...]]


def _foreign_comes_last(headers: tuple[Header, ...]) -> bool:
    for name, _ in reversed(headers):
        if is_dlq_header(name):
            return False
        if dialect_of(name) is not None:
            return True
    return False


def _lazarus(record: _Record, meta: DeadLetterMeta) -> DeadLetter:
    category = None if meta.category is None else meta.category.value
    digest = meta.fingerprint
    if digest is None or not _VALID_FINGERPRINT.fullmatch(digest):
        digest = _lazarus_fingerprint(meta)
    return DeadLetter(
        *record,
        dialect=LAZARUS,
        meta=meta,
        foreign=None,
        source_topic=meta.source_topic,
        source_partition=meta.source_partition,
        source_offset=meta.source_offset,
        origin=meta.origin,
        category=category,
        error_type=meta.error_type,
        message=meta.message,
        stacktrace=meta.stacktrace,
        fingerprint=digest,
        attempts=meta.attempts,
        failed_at_ms=meta.failed_at_ms,
        pipeline=meta.pipeline,
        replay_count=meta.replay_count or 0,
        problems=meta.problems,
        source_timestamp_ms=meta.source_timestamp_ms,
    )


def _lazarus_fingerprint(meta: DeadLetterMeta) -> str:
    """The contract's fingerprint, recomputed when the header is missing or malformed. The
    message header may have been truncated, so it can differ from what the worker computed."""
    if meta.category is None:
        return placeholder_fingerprint("lazarus:unknown", meta.error_type, meta.message)
    locations = [entry["loc"] for entry in meta.details if "loc" in entry]
    return fingerprint(meta.category, meta.error_type or "", meta.message or "", locations)


def placeholder_fingerprint(category: str, error_type: str | None, message: str | None) -> str:
    """`contract.fingerprint`'s formula (sha256 over category, type and normalised message joined
    by NUL, first 16 hex chars) for a category outside the contract's list, such as
    `foreign:spring`. Dead letters of one foreign cause therefore group together."""
    parts = (category, error_type or "", normalise_message(message or ""))
    data = "\x00".join(parts).encode("utf-8", errors="replace")
    return hashlib.sha256(data).hexdigest()[:FINGERPRINT_LENGTH]


def _foreign(record: _Record, foreign: ForeignMeta, extra: tuple[str, ...]) -> DeadLetter:
    topic, partition, offset = foreign.source_topic, foreign.source_partition, foreign.source_offset
    origin = None
    if topic is not None and partition is not None and offset is not None:
        origin = format_coordinates(topic, partition, offset)
    category = foreign_category(foreign)
    return DeadLetter(
        *record,
        dialect=foreign.dialect,
        meta=None,
        foreign=foreign,
        source_topic=foreign.source_topic,
        source_partition=foreign.source_partition,
        source_offset=foreign.source_offset,
        origin=origin,
        category=None if category is None else category.value,
        error_type=foreign.error_type,
        message=foreign.message,
        stacktrace=foreign.stacktrace,
        fingerprint=placeholder_fingerprint(
            f"foreign:{foreign.dialect}", foreign.error_type, foreign.message
        ),
        attempts=None,
        failed_at_ms=None,
        pipeline=foreign_pipeline(foreign),
        replay_count=0,
        problems=foreign.problems + extra,
        source_timestamp_ms=foreign.source_timestamp_ms,
    )


def to_kcat_json(
    dl: DeadLetter, *, state: ReplayState, decoded: object | None = None, tstype: str = "create"
) -> dict[str, object]:
    """kcat `-J` fields (`broker` is -1: a consumer does not learn it per record), then `error`
    and, when given, `decoded` (made JSON-safe by `jsonable`). See the module docstring for
    how bytes are encoded. The result is ready for `json.dumps`."""
    out: dict[str, object] = {
        "topic": dl.topic,
        "partition": dl.partition,
        "offset": dl.offset,
        "tstype": tstype,
        "ts": dl.timestamp_ms,
        "broker": -1,
        "headers": [item for name, value in dl.headers for item in (name, _header_json(value))],
    }
    _put_bytes(out, "key", dl.key)
    _put_bytes(out, "payload", dl.value)
    out["error"] = _error_json(dl, state)
    if decoded is not None:
        out["decoded"] = jsonable(decoded)
    return out


def _error_json(dl: DeadLetter, state: ReplayState) -> dict[str, object]:
    return {
        "category": dl.category,
        "type": dl.error_type,
        "message": dl.message,
        "fingerprint": dl.fingerprint,
        "attempts": dl.attempts,
        "failed_at": dl.failed_at_ms,
        "pipeline": dl.pipeline,
        "origin": dl.origin,
        "replay_count": dl.replay_count,
        "state": state.value,
        "dialect": dl.dialect,
        "rule": dl.rule,
        "correlation": dl.trace,
        "problems": list(dl.problems),
        "source": {
            "topic": dl.source_topic,
            "partition": dl.source_partition,
            "offset": dl.source_offset,
            "timestamp": dl.source_timestamp_ms,
        },
    }


def _put_bytes(out: dict[str, object], field: str, data: bytes | None) -> None:
    if data is None:
        out[field] = None
        return
    try:
        out[field] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[field] = base64.b64encode(data).decode("ascii")
        out[f"{field}_encoding"] = "base64"


def _header_json(value: bytes | None) -> object:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode("ascii")}


def bytes_from_json(value: object) -> bytes | None:
    """Inverse of the header value encoding: a string, null or `{"base64": ...}` → bytes."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Mapping) and isinstance(value.get("base64"), str):
        return base64.b64decode(value["base64"], validate=True)
    raise ValueError(f"not an encoded header value: {type(value).__name__}")


_JSON_SCALARS = frozenset({str, int, bool, type(None)})


def held_by(policy_rule: str | None) -> str | None:
    """`holds.held_by`, imported when a dead letter's rule is first asked for: the holds
    module builds pydantic models as it loads (some 40 ms of every `dlq` command's start,
    pydantic included), which only the commands reading a hold rule need."""
    return None if policy_rule is None else _rule_reader()(policy_rule)


@cache
def _rule_reader() -> Callable[[str | None], str | None]:
    """`holds.held_by`, imported once (an import statement per call costs 1 us a row)."""
    from pipeline.core.holds import held_by

    return held_by


def is_model(value: object) -> TypeGuard[BaseModel]:
    """`isinstance(value, pydantic.BaseModel)` without importing pydantic (some 20 ms of a
    `dlq` command's start): no value is a model until something has imported pydantic's."""
    pydantic_main = sys.modules.get("pydantic.main")
    return pydantic_main is not None and isinstance(value, pydantic_main.BaseModel)


def jsonable(value: object) -> object:
    """`value` as plain JSON types: pydantic models dumped in JSON mode, bytes as
    `{"base64": ...}`, datetimes and dates as ISO-8601, Decimal and UUID as strings, enums as
    their value, tuples and sets as lists; anything else unknown as `str()`."""
    kind = type(value)  # the plain types first, by identity: a fix preview calls this per value
    if kind in _JSON_SCALARS:
        return value
    if kind is dict:
        return {str(k): jsonable(v) for k, v in cast(dict[object, object], value).items()}
    if kind is list:
        return [jsonable(item) for item in cast(list[object], value)]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if is_model(value):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    return str(value)  # Decimal, UUID, ...


class _Missing:
    """A payload path that does not exist (as opposed to one holding null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def is_number(value: object) -> bool:
    """int, float or Decimal, but not bool."""
    return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)


def lookup(event: object, path: Sequence[str]) -> object:
    """The value at `path` in a decoded payload: mappings by key, pydantic models by field
    name (extras included), lists and tuples by a decimal index. `MISSING` when absent."""
    current = event
    for part in path:
        if isinstance(current, Mapping):
            current = current.get(part, MISSING)
        elif is_model(current):
            current = _model_field(current, part)
        elif isinstance(current, list | tuple) and _INDEX.fullmatch(part):
            index = int(part)
            current = current[index] if index < len(current) else MISSING
        else:
            return MISSING
        if current is MISSING:
            return MISSING
    return current


def _model_field(model: BaseModel, name: str) -> object:
    if name in type(model).model_fields:
        return getattr(model, name)
    extra = model.model_extra or {}
    return extra.get(name, MISSING)


def text_of(value: object) -> str:
    """The text a payload value compares (and groups) as: strings as is, null/true/false as in
    JSON, bytes as UTF-8 (replacing bad bytes), dates in ISO-8601, containers as JSON."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, enum.Enum):
        return text_of(value.value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple) or is_model(value):
        return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return str(value)
