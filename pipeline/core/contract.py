"""The dead-letter contract, version 1: header names written once, and pure build/parse functions.

`shared/DLQ-CONTRACT.md` (beside the repository) is the specification; tests/unit/test_contract.py
reads its header table and fails when this module and the page disagree. Nothing here talks to
Kafka or mutates its arguments: builders return new header lists, readers record problems instead
of raising, because a malformed dead letter must never stop a worker or a reprocessor.
Other tools' dead letters (Connect, Spring, Streams, arroyo) are read by `pipeline.core.dialects`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple, TypeAlias

from pipeline.errors import Category

Header: TypeAlias = tuple[str, bytes | None]
Headers: TypeAlias = list[Header]

CONTRACT_VERSION = 1
PREFIX = "dlq."

VERSION = "dlq.version"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
SOURCE_TIMESTAMP = "dlq.source.timestamp"
ORIGIN = "dlq.origin"
ORIGIN_TIMESTAMP = "dlq.origin.timestamp"
ERROR_CATEGORY = "dlq.error.category"
ERROR_TYPE = "dlq.error.type"
ERROR_MESSAGE = "dlq.error.message"
ERROR_DETAILS = "dlq.error.details"
ERROR_STACKTRACE = "dlq.error.stacktrace"
ERROR_FINGERPRINT = "dlq.error.fingerprint"
ATTEMPTS = "dlq.attempts"
FAILED_AT = "dlq.failed.at"
PIPELINE = "dlq.pipeline"
WORKER = "dlq.worker"
SCHEMA = "dlq.schema"
POLICY_RULE = "dlq.policy.rule"
REPLAY_COUNT = "dlq.replay.count"
REPLAY_OF = "dlq.replay.of"
REPLAY_RUN = "dlq.replay.run"
VALUE_OMITTED = "dlq.value.omitted"

REQUIRED_HEADERS: tuple[str, ...] = (
    VERSION,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    SOURCE_TIMESTAMP,
    ORIGIN,
    ORIGIN_TIMESTAMP,
    ERROR_CATEGORY,
    ERROR_TYPE,
    ERROR_MESSAGE,
    ERROR_FINGERPRINT,
    ATTEMPTS,
    FAILED_AT,
    PIPELINE,
    REPLAY_COUNT,
)
# Set on replayed records (the page's Replay section), never on a dead letter.
REPLAY_HEADERS: tuple[str, ...] = (REPLAY_OF, REPLAY_RUN)
OPTIONAL_HEADERS: tuple[str, ...] = (
    ERROR_DETAILS,
    ERROR_STACKTRACE,
    WORKER,
    SCHEMA,
    POLICY_RULE,
    VALUE_OMITTED,
    *REPLAY_HEADERS,
)

MESSAGE_LIMIT = 1024
DETAILS_LIMIT = 8192
STACKTRACE_LIMIT = 8192
FINGERPRINT_LENGTH = 16

# record_size(): a record batch header (61 bytes, one record per batch in the worst case) plus the
# record's own framing at its widest varints (length 5, attributes 1, timestamp delta 10, offset
# delta 5, key and value lengths 5 + 5, header count 5); each header adds two length varints.
RECORD_OVERHEAD = 61 + 36
HEADER_OVERHEAD = 10

_ELLIPSIS = "…".encode()
_DECIMAL = re.compile(r"[0-9]+")
_SIGNED_DECIMAL = re.compile(r"-?[0-9]+")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_OMITTED = re.compile(r"size=([0-9]{1,19});sha256=([0-9a-f]{64})")
# Kafka's numbers (offsets, timestamps, counts) are 64-bit: 20 characters at most with a sign.
# Longer digit strings are malformed, and int() of over 4,300 digits would raise.
_MAX_DIGITS = 20
_INDEX_SPLIT = re.compile(r"[.\[\]]+")
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"""(?<!\w)b?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")(?!\w)""", re.S), "<str>"),
    (re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"(?<!\w)-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"), "<num>"),
    (re.compile(r"\s+"), " "),
)


@dataclass(slots=True)
class SourceRecord:
    """The record that failed, as it was read in this hop. Never modified: it is not frozen only
    because one is built for every record consumed, and a frozen dataclass's `__init__` (an
    `object.__setattr__` per field) costs four times as much."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]


@dataclass(slots=True)
class Failure:
    """Why it failed. `message` and `details` must already be free of payload values (no PII).
    Never modified; not frozen for the cost of building one per dead letter (`SourceRecord`)."""

    category: Category
    error_type: str
    message: str
    failed_at_ms: int
    pipeline: str
    details: tuple[dict[str, str], ...] = ()
    stacktrace: str | None = None
    attempts: int = 1
    worker: str | None = None
    schema: str | None = None
    policy_rule: str | None = None


@dataclass(frozen=True, slots=True)
class Lineage:
    """A record's lineage as its (last) dlq.* headers state it; None where absent or malformed."""

    origin: str | None
    origin_timestamp_ms: int | None
    replay_count: int | None


@dataclass(frozen=True, slots=True)
class OmittedValue:
    """What `dlq.value.omitted` says of an oversize record's value, which the dead letter lacks."""

    size: int
    sha256: str

    def matches(self, value: bytes | None) -> bool:
        """True when `value` (re-read from the source coordinates) is the omitted original."""
        return (
            value is not None
            and len(value) == self.size
            and hashlib.sha256(value).hexdigest() == self.sha256
        )


@dataclass(frozen=True, slots=True)
class DeadLetterMeta:
    """Every dlq.* field of a dead letter, typed; None where absent or malformed (see problems)."""

    version: int | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_timestamp_ms: int | None = None
    origin: str | None = None
    origin_timestamp_ms: int | None = None
    category: Category | None = None
    error_type: str | None = None
    message: str | None = None
    details: tuple[dict[str, str], ...] = ()
    stacktrace: str | None = None
    fingerprint: str | None = None
    attempts: int | None = None
    failed_at_ms: int | None = None
    pipeline: str | None = None
    worker: str | None = None
    schema: str | None = None
    policy_rule: str | None = None
    replay_count: int | None = None
    value_omitted: OmittedValue | None = None
    problems: tuple[str, ...] = ()


def truncate_utf8(text: str, limit: int) -> bytes:
    """UTF-8 of `text`, at most `limit` bytes. When cut, the start is kept and ends with "…";
    a multi-byte character is never split. Below 3 bytes there is no room for the ellipsis, so
    the cut has none. Unencodable code points (lone surrogates) become "?"."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    data = _utf8(text)
    if len(data) <= limit:
        return data
    if limit < len(_ELLIPSIS):
        return data[: _boundary_before(data, limit)]
    return data[: _boundary_before(data, limit - len(_ELLIPSIS))] + _ELLIPSIS


def truncate_utf8_tail(text: str, limit: int) -> bytes:
    """Like `truncate_utf8` but keeps the end, starting with "…". For stack traces: Python prints
    the innermost frame and the exception last, and those are what an operator needs."""
    if limit < len(_ELLIPSIS):
        raise ValueError(f"limit must be at least {len(_ELLIPSIS)}, got {limit}")
    data = _utf8(text)
    if len(data) <= limit:
        return data
    start = len(data) - (limit - len(_ELLIPSIS))
    while start < len(data) and _is_continuation(data[start]):
        start += 1
    return _ELLIPSIS + data[start:]


def details_json(details: Sequence[Mapping[str, str]], limit: int = DETAILS_LIMIT) -> bytes | None:
    """Compact JSON array of `details`, at most `limit` bytes; None when empty (or when not even
    the truncation marker fits). Each value is first capped at MESSAGE_LIMIT so one long entry
    cannot crowd out the others; entries that still do not fit are dropped from the end and
    replaced by `{"loc": "…", "msg": "N more", "type": "truncated"}`, so the result stays JSON."""
    if not details:
        return None
    pieces = [_json_bytes({k: _cap(v) for k, v in entry.items()}) for entry in details]
    whole = _json_array(pieces)
    if len(whole) <= limit:
        return whole
    best: bytes | None = None
    used = 2  # the brackets
    for kept, piece in enumerate(pieces):
        marker = _json_bytes({"loc": "…", "msg": f"{len(pieces) - kept} more", "type": "truncated"})
        if used + kept + len(marker) > limit:  # `kept` commas
            break
        best = _json_array([*pieces[:kept], marker])
        used += len(piece)
    return best


def normalise_message(message: str) -> str:
    """Replace the variable parts of a message — quoted values, UUIDs, hex ids and numbers, list
    indices included — with placeholders, and collapse whitespace, so that messages differing
    only in values normalise identically. The order of the patterns matters (quotes first)."""
    for pattern, placeholder in _NORMALISERS:
        message = pattern.sub(placeholder, message)
    return message.strip()


def strip_indices(location: str) -> str:
    """`items.0.qty` and `items[3].qty` → `items.qty`: a field location without list indices."""
    return ".".join(p for p in _INDEX_SPLIT.split(location) if p and not _DECIMAL.fullmatch(p))


def fingerprint(
    category: Category, error_type: str, message: str, locations: Iterable[str] = ()
) -> str:
    """16 hex chars of sha256 over category, error type, normalised message and — for validation
    only — the sorted, de-duplicated field locations without list indices, joined by NUL.
    Changing this changes every fingerprint in every DLQ: the tests pin golden vectors."""
    return _fingerprint(category, error_type, message, tuple(locations))


@functools.lru_cache(maxsize=4096)
def _fingerprint(
    category: Category, error_type: str, message: str, locations: tuple[str, ...]
) -> str:
    """Cached: one cause repeats the same inputs (messages name fields, never values), and the
    normalising regexes are most of a dead letter's cost."""
    parts = [category.value, error_type, normalise_message(message)]
    if category is Category.VALIDATION:
        parts.extend(sorted({strip_indices(loc) for loc in locations}))
    digest = hashlib.sha256(_utf8("\x00".join(parts))).hexdigest()
    return digest[:FINGERPRINT_LENGTH]


def is_dlq_header(name: str) -> bool:
    return name.startswith(PREFIX)


def original_headers(headers: Sequence[Header] | None) -> Headers:
    """A new list of the headers that are not `dlq.*`, in order, values untouched."""
    return [(name, value) for name, value in headers or () if not is_dlq_header(name)]


def lineage(headers: Sequence[Header] | None) -> Lineage:
    """Read `dlq.origin`, `dlq.origin.timestamp` and `dlq.replay.count` (last occurrence wins).
    A worker uses it to find the origin topic of a record read from its redrive topic."""
    values = _last_dlq_values(headers)
    origin = _text(values.get(ORIGIN))
    if origin is not None and _coordinates_or_none(origin) is None:
        origin = None
    return Lineage(
        origin=origin,
        origin_timestamp_ms=_integer(_text(values.get(ORIGIN_TIMESTAMP)), signed=True),
        replay_count=_integer(_text(values.get(REPLAY_COUNT))),
    )


def build_dead_letter(
    record: SourceRecord, failure: Failure, *, include_stacktrace: bool = True
) -> Headers:
    """The dead letter's headers: the record's non-dlq headers, then each dlq header once.

    Origin, origin timestamp and replay count are inherited from the record's own dlq headers
    when present and well-formed (a replayed record failing again), otherwise they describe this
    record (replay count 0); an origin timestamp is inherited only together with its origin.
    Other incoming dlq headers, `dlq.replay.of`/`.run` included, are replaced: a dead letter
    carries only the page's header table. Never raises on bad input headers, since the worker
    must always be able to dead-letter."""
    return dead_letter_headers(record, failure, include_stacktrace=include_stacktrace)[0]


def dead_letter_headers(
    record: SourceRecord, failure: Failure, *, include_stacktrace: bool = True
) -> tuple[Headers, str]:
    """`build_dead_letter`'s headers and the fingerprint among them, built per cause: the
    `dlq.error.*` block (message cut, details JSON, fingerprint) and the pipeline's own headers
    are encoded once per distinct failure and reused, so a dead letter of a known cause only
    encodes its coordinates and times."""
    headers, digest, _ = _sized_headers(record, failure, include_stacktrace)
    return headers, digest


def dead_letter(
    record: SourceRecord, failure: Failure, max_bytes: int, *, include_stacktrace: bool = True
) -> tuple[FittedDeadLetter, str]:
    """`fit_dead_letter` of `dead_letter_headers`, and the fingerprint: the worker's one call
    per dead letter. The headers are sized as they are built (each cached block with its size,
    counted as `record_size` counts it), so a dead letter that fits is never measured again."""
    headers, digest, size = _sized_headers(record, failure, include_stacktrace)
    key, value = record.key, record.value
    if RECORD_OVERHEAD + len(key or b"") + len(value or b"") + size <= max_bytes:
        return FittedDeadLetter(value, headers, omitted=False), digest
    return fit_dead_letter(key, value, headers, max_bytes), digest


def _sized_headers(
    record: SourceRecord, failure: Failure, include_stacktrace: bool
) -> tuple[Headers, str, int]:
    """The dead letter's headers, its fingerprint, and the headers' `headers_size`.

    Per record only its numbers are encoded: the topic and partition headers, with the
    `dlq.origin` prefix they make, come built per partition (`_place`), the error block per
    cause and the pipeline's own headers per pipeline."""
    headers, origin, origin_ms, replay_count = _inherited(record.headers)
    topic_h, partition_h, prefix, place_size = _place(record.topic, record.partition)
    offset = _number(record.offset)
    timestamp = _number(record.timestamp_ms)
    failed_at = _number(failure.failed_at_ms)
    attempts, replays = _number(failure.attempts), _number(replay_count)
    # format_coordinates' text, encoded piecewise: an int's digits are ASCII
    where = prefix + offset if origin is None else _utf8(origin)
    since = timestamp if origin_ms is None else _number(origin_ms)
    block, digest, block_size = _error_block(failure, include_stacktrace)
    own, own_size = _own_headers(
        failure.pipeline, failure.worker, failure.schema, failure.policy_rule
    )
    size = headers_size(headers) if headers else 0
    headers += [
        _VERSION_HEADER,
        topic_h,
        partition_h,
        (SOURCE_OFFSET, offset),
        (SOURCE_TIMESTAMP, timestamp),
        (ORIGIN, where),
        (ORIGIN_TIMESTAMP, since),
        *block,
        (ATTEMPTS, attempts),
        (FAILED_AT, failed_at),
        *own,
        (REPLAY_COUNT, replays),
    ]
    size += (
        _RECORD_HEADERS_SIZE
        + place_size
        + block_size
        + own_size
        + len(offset)
        + len(timestamp)
        + len(where)
        + len(since)
        + len(attempts)
        + len(failed_at)
        + len(replays)
    )
    return headers, digest, size


def _inherited(
    headers: Sequence[Header] | None,
) -> tuple[Headers, str | None, int | None, int]:
    """The record's own non-dlq headers (a new list), and the origin, origin timestamp and
    replay count its dlq headers pass on (an origin timestamp only together with its origin)."""
    if not headers:
        return [], None, None, 0
    inherited = lineage(headers)
    origin = inherited.origin
    origin_ms = inherited.origin_timestamp_ms if origin else None
    return original_headers(headers), origin, origin_ms, inherited.replay_count or 0


_VERSION_BYTES = str(CONTRACT_VERSION).encode("ascii")
_RECORD_HEADERS_SIZE = len(_VERSION_BYTES) + sum(
    HEADER_OVERHEAD + len(name)
    for name in REQUIRED_HEADERS
    if name not in (ERROR_CATEGORY, ERROR_TYPE, ERROR_MESSAGE, ERROR_FINGERPRINT, PIPELINE)
)
"""`headers_size` of the required headers built per record (the `dlq.error.*` block and
`dlq.pipeline` are sized with their caches), without their values (names are ASCII;
`dlq.version`'s value is constant)."""


_VERSION_HEADER: Header = (VERSION, _VERSION_BYTES)


@functools.lru_cache(maxsize=4096)
def _place(topic: str, partition: int) -> tuple[Header, Header, bytes, int]:
    """The `dlq.source.topic` and `dlq.source.partition` headers of a partition, the
    `dlq.origin` text of its records up to their offset (`topic/partition/`), and the two
    values' length: the same for every dead letter of the partition."""
    name, number = _utf8(topic), _number(partition)
    return (
        (SOURCE_TOPIC, name),
        (SOURCE_PARTITION, number),
        name + b"/" + number + b"/",
        len(name) + len(number),
    )


@functools.lru_cache(maxsize=256)
def _own_headers(
    pipeline: str, worker: str | None, schema: str | None, policy_rule: str | None
) -> tuple[tuple[Header, ...], int]:
    """`dlq.pipeline` and the optional worker, schema and policy rule headers, in order, and
    their `headers_size`."""
    optional = ((WORKER, worker), (SCHEMA, schema), (POLICY_RULE, policy_rule))
    present = [(name, _utf8(value)) for name, value in optional if value is not None]
    own = ((PIPELINE, _utf8(pipeline)), *present)
    return own, headers_size(own)


def _error_block(failure: Failure, include_stacktrace: bool) -> tuple[tuple[Header, ...], str, int]:
    """The dlq.error.* headers, the fingerprint and the headers' `headers_size`, cached per
    cause (category, type, message, details and the stack trace recorded).

    The cause met last with the same texts is found first, in `_SEEN`, by comparing its
    details (in order: the details JSON keeps each entry's key order); only a new cause pays
    for the size check and the lru key, whose nested tuples are hashed afresh on every call."""
    stacktrace = failure.stacktrace if include_stacktrace else None
    try:  # dict.items of each entry, in C; a mapping of another type builds afresh
        details = tuple(map(tuple, map(dict.items, failure.details)))
    except TypeError:
        return _error_headers(
            failure.category, failure.error_type, failure.message, failure.details, stacktrace
        )
    texts = (failure.category, failure.error_type, failure.message, stacktrace)
    seen = _SEEN.get(texts)
    if seen is not None and seen[0] == details:
        return seen[1]
    block = _kept_error_block(failure, details, stacktrace)
    if block is None:
        return _error_headers(
            failure.category, failure.error_type, failure.message, failure.details, stacktrace
        )
    if len(_SEEN) >= _MAX_SEEN:
        _SEEN.clear()
    _SEEN[texts] = (details, block)
    return block


_Block = tuple[tuple[Header, ...], str, int]
_SEEN: dict[tuple[Category, str, str, str | None], tuple[tuple[object, ...], _Block]] = {}
_MAX_SEEN = 256


def _kept_error_block(
    failure: Failure, details: tuple[tuple[tuple[str, str], ...], ...], stacktrace: str | None
) -> _Block | None:
    """The block from the lru cache, or None for a cause that must not be kept: too much text,
    or an unhashable detail value."""
    try:
        text = len(failure.message) + len(stacktrace or "")
        text += sum(map(len, chain.from_iterable(map(dict.values, failure.details))))
        if text > _MAX_CACHED_TEXT:  # a key holds the cause's whole text: keep them small
            return None
        return _cached_error_block(
            failure.category, failure.error_type, failure.message, details, stacktrace
        )
    except TypeError:
        return None


_MAX_CACHED_TEXT = 32_768
"""Causes with more text than this (a huge kept message) are encoded afresh, never cached."""


@functools.lru_cache(maxsize=256)
def _cached_error_block(
    category: Category,
    error_type: str,
    message: str,
    details: tuple[tuple[tuple[str, str], ...], ...],
    stacktrace: str | None,
) -> tuple[tuple[Header, ...], str, int]:
    entries = tuple(dict(entry) for entry in details)
    return _error_headers(category, error_type, message, entries, stacktrace)


def _error_headers(
    category: Category,
    error_type: str,
    message: str,
    details: Sequence[Mapping[str, str]],
    stacktrace: str | None,
) -> tuple[tuple[Header, ...], str, int]:
    """The dlq.error.* headers. The fingerprint is taken over the whole message, not the cut one."""
    locations = [entry["loc"] for entry in details if "loc" in entry]
    headers: Headers = [
        (ERROR_CATEGORY, _utf8(category.value)),
        (ERROR_TYPE, _utf8(error_type)),
        (ERROR_MESSAGE, truncate_utf8(message, MESSAGE_LIMIT)),
    ]
    details_header = details_json(details)
    if details_header is not None:
        headers.append((ERROR_DETAILS, details_header))
    if stacktrace is not None:
        headers.append((ERROR_STACKTRACE, truncate_utf8_tail(stacktrace, STACKTRACE_LIMIT)))
    digest = fingerprint(category, error_type, message, locations)
    headers.append((ERROR_FINGERPRINT, _utf8(digest)))
    return tuple(headers), digest, headers_size(headers)


def drop_optional(headers: Sequence[Header]) -> Headers:
    """A new list without the contract's optional headers (details, stack trace, worker,
    schema, policy rule): the first fallback when a dead letter exceeds the DLQ topic's max
    message size, as the page's "Oversize records" says. `dlq.value.omitted` stays: it
    describes a value already left out."""
    return [(name, value) for name, value in headers if name not in _DROPPABLE]


_DROPPABLE = frozenset(OPTIONAL_HEADERS) - {VALUE_OMITTED}


def omitted_value_header(value: bytes | None) -> Header:
    """`dlq.value.omitted` for an oversize record: the size and sha256 of the value left out, so
    a replay that re-reads it from `dlq.source.*` can prove it found the same bytes."""
    data = value or b""
    digest = hashlib.sha256(data).hexdigest()
    return (VALUE_OMITTED, f"size={len(data)};sha256={digest}".encode("ascii"))


class FittedDeadLetter(NamedTuple):
    """A dead letter sized for the DLQ: `value` is None and `omitted` True for an oversize one."""

    value: bytes | None
    headers: Sequence[Header]
    omitted: bool


def fit_dead_letter(
    key: bytes | None, value: bytes | None, headers: Sequence[Header], max_bytes: int
) -> FittedDeadLetter:
    """The contract's "Oversize records" rule: the dead letter as built when it fits
    `max_bytes`; else without its optional headers (`drop_optional`); else with a null value and
    `dlq.value.omitted` (key and original headers stay). The result may still exceed
    `max_bytes` when the key and headers alone do; the broker then refuses it, and the caller
    must treat that refusal as a property of the record, never as an outage."""
    if record_size(key, value, headers) <= max_bytes:
        return FittedDeadLetter(value, headers, omitted=False)  # as built, not copied
    kept = drop_optional(headers)
    if record_size(key, value, kept) <= max_bytes:
        return FittedDeadLetter(value, kept, omitted=False)
    kept.append(omitted_value_header(value))  # last, as in the page's table
    return FittedDeadLetter(None, kept, omitted=True)


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> int:
    """An upper estimate of a record's size on the wire, compared with `max.message.bytes`:
    key, value, UTF-8 header names and values, plus RECORD_OVERHEAD and HEADER_OVERHEAD each."""
    return RECORD_OVERHEAD + len(key or b"") + len(value or b"") + headers_size(headers)


def headers_size(headers: Sequence[Header]) -> int:
    """What `headers` add to `record_size`: UTF-8 names and values, HEADER_OVERHEAD each."""
    # UTF-8 is concatenative (and "replace" turns each unencodable code point into one "?"), so
    # the names' and the values' lengths are the lengths of their joins, summed in C.
    names = "".join(map(_name_of, headers))
    values = b"".join(filter(None, map(_value_of, headers)))
    named = len(names) if names.isascii() else len(_utf8(names))
    return HEADER_OVERHEAD * len(headers) + named + len(values)


_name_of = operator.itemgetter(0)
_value_of = operator.itemgetter(1)


def parse_dead_letter(headers: Sequence[Header] | None) -> DeadLetterMeta | None:
    """The typed dlq.* fields of a dead letter, or None when it has no `dlq.version` (not a
    Lazarus dead letter). The last occurrence of a repeated header wins; a missing required
    header or a malformed value is recorded in `problems`, never raised."""
    if not any(name == VERSION for name, _ in headers or ()):
        return None
    reader = _Reader(headers or ())
    return DeadLetterMeta(  # arguments run left to right: problems is read last
        version=reader.version(),
        source_topic=reader.text(SOURCE_TOPIC, required=True),
        source_partition=reader.integer(SOURCE_PARTITION, required=True),
        source_offset=reader.integer(SOURCE_OFFSET, required=True),
        source_timestamp_ms=reader.integer(SOURCE_TIMESTAMP, required=True, signed=True),
        origin=reader.checked(ORIGIN, _coordinates_or_none, "topic/partition/offset"),
        origin_timestamp_ms=reader.integer(ORIGIN_TIMESTAMP, required=True, signed=True),
        category=reader.category(),
        error_type=reader.text(ERROR_TYPE, required=True),
        message=reader.text(ERROR_MESSAGE, required=True),
        details=reader.details(),
        stacktrace=reader.text(ERROR_STACKTRACE),
        fingerprint=reader.checked(ERROR_FINGERPRINT, _FINGERPRINT.fullmatch, "16 hex chars"),
        attempts=reader.integer(ATTEMPTS, required=True),
        failed_at_ms=reader.integer(FAILED_AT, required=True, signed=True),
        pipeline=reader.text(PIPELINE, required=True),
        worker=reader.text(WORKER),
        schema=reader.text(SCHEMA),
        policy_rule=reader.text(POLICY_RULE),
        replay_count=reader.integer(REPLAY_COUNT, required=True),
        value_omitted=reader.omitted(),
        problems=tuple(reader.problems),
    )


class _Reader:
    """Typed access to the last occurrence of each dlq.* header, collecting problems."""

    def __init__(self, headers: Sequence[Header]) -> None:
        self._values = _last_dlq_values(headers)
        self.problems: list[str] = []

    def text(self, name: str, *, required: bool = False) -> str | None:
        if name not in self._values:
            if required:
                self.problems.append(f"{name} is missing")
            return None
        raw = self._values[name]
        text = _text(raw)
        if text is None:
            self.problems.append(f"{name} has no value" if raw is None else f"{name} is not UTF-8")
        return text

    def integer(self, name: str, *, required: bool = False, signed: bool = False) -> int | None:
        text = self.text(name, required=required)
        value = _integer(text, signed=signed)
        if text is not None and value is None:
            self.problems.append(f"{name} is not a decimal number: {_excerpt(text)}")
        return value

    def version(self) -> int | None:
        version = self.integer(VERSION, required=True)
        if version is not None and version != CONTRACT_VERSION:
            self.problems.append(f"{VERSION} is {version}; this reader knows {CONTRACT_VERSION}")
        return version

    def checked(self, name: str, valid: Callable[[str], object], expected: str) -> str | None:
        """A required text that is kept even when malformed (it may still identify the record)."""
        text = self.text(name, required=True)
        if text is not None and not valid(text):
            self.problems.append(f"{name} is not {expected}: {_excerpt(text)}")
        return text

    def category(self) -> Category | None:
        text = self.text(ERROR_CATEGORY, required=True)
        if text is None:
            return None
        try:
            return Category(text)
        except ValueError:
            self.problems.append(f"{ERROR_CATEGORY} is not a known category: {_excerpt(text)}")
            return None

    def omitted(self) -> OmittedValue | None:
        text = self.text(VALUE_OMITTED)
        if text is None:
            return None
        match = _OMITTED.fullmatch(text)
        if match is None:
            self.problems.append(f"{VALUE_OMITTED} is not size=<bytes>;sha256=<64 hex>")
            return None
        return OmittedValue(int(match.group(1)), match.group(2))

    def details(self) -> tuple[dict[str, str], ...]:
        text = self.text(ERROR_DETAILS)
        if text is None:
            return ()
        try:
            parsed: object = json.loads(text)
        except (ValueError, RecursionError):  # deep nesting exhausts the stack
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(e, dict) for e in parsed):
            self.problems.append(f"{ERROR_DETAILS} is not a JSON array of objects")
            return ()
        return tuple({str(k): _as_text(v) for k, v in entry.items()} for entry in parsed)


def build_replay(headers: Sequence[Header] | None, *, dead_letter: str, run_id: str) -> Headers:
    """Headers of the record replayed from a dead letter: its original headers in order, then
    `dlq.origin` and its timestamp (kept when present and valid), `dlq.replay.count`
    (incremented; a missing or malformed count counts as 0), `dlq.replay.of` and `.run`.

    Every other dlq header is dropped, `dlq.version` included: a replayed record is not a dead
    letter, and `parse_dead_letter` must not mistake it for one. Raises ValueError when
    `dead_letter` is not `topic/partition/offset` or `run_id` is empty.

    It runs once per replayed record, so it reads the headers in two passes, one in C: `dict()`
    keeps each name's last value (the contract's rule for repeated dlq headers), and the
    originals are kept as they are (tuples); `lineage` and `original_headers` agree with it."""
    if not _is_coordinates(dead_letter):
        parse_coordinates(dead_letter)  # raises, saying what is wrong
    if not run_id:
        raise ValueError("a replay needs a run id")
    items = headers or ()
    replayed = [header for header in items if not header[0].startswith(PREFIX)]
    last = dict(items)
    origin = last.get(ORIGIN)
    if origin is not None and _is_coordinates(_text(origin)):
        replayed.append((ORIGIN, origin))  # valid UTF-8: encoding its text gives these bytes
        origin_ms = _integer(_text(last.get(ORIGIN_TIMESTAMP)), signed=True)
        if origin_ms is not None:
            replayed.append((ORIGIN_TIMESTAMP, _number(origin_ms)))
    count = _integer(_text(last.get(REPLAY_COUNT)))
    replayed += [
        (REPLAY_COUNT, _number((count or 0) + 1)),
        (REPLAY_OF, _utf8(dead_letter)),
        (REPLAY_RUN, _utf8(run_id)),
    ]
    return replayed


def _is_coordinates(text: str | None) -> bool:
    """Whether `parse_coordinates(text)` would succeed, without its regexes for the numbers
    (ASCII digits are what `[0-9]+` matches) and with the topic names seen before cached."""
    if text is None:
        return False
    parts = text.rsplit("/", 2)
    if len(parts) != 3:
        return False
    topic, partition, offset = parts
    return (
        len(partition) <= _MAX_DIGITS
        and len(offset) <= _MAX_DIGITS
        and partition.isascii()
        and partition.isdigit()
        and offset.isascii()
        and offset.isdigit()
        and _is_topic_name(topic)
    )


@functools.lru_cache(maxsize=1024)
def _is_topic_name(topic: str) -> bool:
    return _TOPIC_NAME.fullmatch(topic) is not None


def format_coordinates(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def parse_coordinates(text: str) -> tuple[str, int, int]:
    """`topic/partition/offset` → (topic, partition, offset). Topic names cannot hold `/`, so
    the text is split from the right. Raises ValueError saying what is wrong."""
    parts = text.rsplit("/", 2)
    if len(parts) != 3:
        raise ValueError(f"expected topic/partition/offset, got {text!r}")
    topic, partition, offset = parts
    if not _TOPIC_NAME.fullmatch(topic):
        raise ValueError(f"{topic!r} in {text!r} is not a Kafka topic name")
    if len(partition) > _MAX_DIGITS or not _DECIMAL.fullmatch(partition):
        raise ValueError(f"partition {partition!r} in {text!r} is not a number")
    if len(offset) > _MAX_DIGITS or not _DECIMAL.fullmatch(offset):
        raise ValueError(f"offset {offset!r} in {text!r} is not a number")
    return topic, int(partition), int(offset)


def ledger_topic(dlq_topic: str) -> str:
    return f"{dlq_topic}.ledger"


def redrive_topic(pipeline: str) -> str:
    return f"{pipeline}.redrive"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", errors="replace")


_number: Callable[[int], bytes] = b"%d".__mod__
"""An int's decimal digits as ASCII bytes (`str(value).encode()`), formatted in C without a
Python frame: a dead letter encodes six numbers."""


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _integer(text: str | None, *, signed: bool = False) -> int | None:
    """A decimal header value, or None when it is not one. Never raises: a header of thousands
    of digits is malformed, not a reason to crash (Python's int() refuses over 4,300 digits)."""
    if text is None or len(text) > _MAX_DIGITS:
        return None
    if text.isascii() and text.isdigit():  # the common case, without a regex
        return int(text)
    return int(text) if signed and _SIGNED_DECIMAL.fullmatch(text) else None


def _coordinates_or_none(text: str) -> tuple[str, int, int] | None:
    try:
        return parse_coordinates(text)
    except ValueError:
        return None


def _last_dlq_values(headers: Sequence[Header] | None) -> dict[str, bytes | None]:
    return {name: value for name, value in headers or () if name.startswith(PREFIX)}


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _boundary_before(data: bytes, index: int) -> int:
    """The largest character boundary <= index (data is longer than index)."""
    while index > 0 and _is_continuation(data[index]):
        index -= 1
    return index


def _cap(value: str) -> str:
    return truncate_utf8(value, MESSAGE_LIMIT).decode("utf-8")


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _excerpt(text: str) -> str:
    return repr(truncate_utf8(text, 64).decode("utf-8"))


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_array(pieces: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(pieces) + b"]"
