"""Readers for other tools' dead letters: Kafka Connect, Spring for Apache Kafka, Kafka Streams
(KIP-1034) and arroyo, mapped onto the fields of the Lazarus contract (the page's section
"Reading other tools' dead letters").

A missing, repeated or malformed header is recorded in `ForeignMeta.problems`, never raised:
these records come from clusters we do not control. Where a header repeats, the source fields
take the first occurrence (for Spring, whose original-* headers repeat across hops, the first is
the true origin) and the error fields the last (the latest failure). A foreign dead letter names
no Lazarus pipeline, so replaying one needs an explicit target.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from pipeline.core.contract import Header
from pipeline.errors import Category

CONNECT_PREFIX = "__connect.errors."
CONNECT_TOPIC = "__connect.errors.topic"
CONNECT_PARTITION = "__connect.errors.partition"
CONNECT_OFFSET = "__connect.errors.offset"
CONNECT_EXCEPTION = "__connect.errors.exception.class.name"
CONNECT_MESSAGE = "__connect.errors.exception.message"
CONNECT_STACKTRACE = "__connect.errors.exception.stacktrace"
CONNECT_STAGE = "__connect.errors.stage"
CONNECT_CONNECTOR = "__connect.errors.connector.name"
CONNECT_TASK = "__connect.errors.task.id"
CONNECT_CLASS = "__connect.errors.class.name"

SPRING_PREFIX = "kafka_dlt-"
SPRING_TOPIC = "kafka_dlt-original-topic"
SPRING_PARTITION = "kafka_dlt-original-partition"
SPRING_OFFSET = "kafka_dlt-original-offset"
SPRING_TIMESTAMP = "kafka_dlt-original-timestamp"
SPRING_TIMESTAMP_TYPE = "kafka_dlt-original-timestamp-type"
SPRING_CONSUMER_GROUP = "kafka_dlt-original-consumer-group"
SPRING_EXCEPTION = "kafka_dlt-exception-fqcn"
SPRING_CAUSE = "kafka_dlt-exception-cause-fqcn"
SPRING_MESSAGE = "kafka_dlt-exception-message"
SPRING_STACKTRACE = "kafka_dlt-exception-stacktrace"
SPRING_KEY_EXCEPTION = "kafka_dlt-key-exception-fqcn"
SPRING_KEY_CAUSE = "kafka_dlt-key-exception-cause-fqcn"
SPRING_KEY_MESSAGE = "kafka_dlt-key-exception-message"
SPRING_KEY_STACKTRACE = "kafka_dlt-key-exception-stacktrace"

STREAMS_PREFIX = "__streams.errors."
STREAMS_EXCEPTION = "__streams.errors.exception"
STREAMS_MESSAGE = "__streams.errors.message"
STREAMS_STACKTRACE = "__streams.errors.stacktrace"
STREAMS_TOPIC = "__streams.errors.topic"
STREAMS_PARTITION = "__streams.errors.partition"
STREAMS_OFFSET = "__streams.errors.offset"

ARROYO_PARTITION = "original_partition"
ARROYO_OFFSET = "original_offset"

DIALECTS = ("connect", "spring", "streams", "arroyo")

_DECIMAL = re.compile(r"[0-9]+")
_INT_BYTES = 4
_LONG_BYTES = 8


@dataclass(frozen=True, slots=True)
class ForeignMeta:
    """A foreign dead letter mapped onto the contract's fields; None where absent or malformed.
    `extra` holds what has no contract field (connector, stage, consumer group, cause, ...)."""

    dialect: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    source_timestamp_ms: int | None
    error_type: str | None
    message: str | None
    stacktrace: str | None
    extra: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()


def dialect_of(name: str) -> str | None:
    """The dialect a header name belongs to, or None."""
    if name.startswith(CONNECT_PREFIX):
        return "connect"
    if name.startswith(SPRING_PREFIX):
        return "spring"
    if name.startswith(STREAMS_PREFIX):
        return "streams"
    if name in (ARROYO_PARTITION, ARROYO_OFFSET):
        return "arroyo"
    return None


CONVERTER_STAGES = frozenset({"KEY_CONVERTER", "VALUE_CONVERTER", "HEADER_CONVERTER"})
"""Connect stages whose failure is a deserialization: Connect dead-letters only for sink
connectors, whose converters turn the topic's bytes into Connect data. The other stages
(TRANSFORMATION, TASK_PUT, KAFKA_CONSUME, ...) do not say what kind of failure it was."""


def foreign_category(meta: ForeignMeta) -> Category | None:
    """The contract category of a foreign dead letter, where its headers make it unambiguous:
    a Connect converter stage is `deserialization`; None otherwise."""
    stage = dict(meta.extra).get("stage") if meta.dialect == "connect" else None
    return Category.DESERIALIZATION if stage in CONVERTER_STAGES else None


def foreign_pipeline(meta: ForeignMeta) -> str | None:
    """The pipeline of a foreign dead letter: Spring's `kafka_dlt-original-consumer-group` (the
    consumer group that failed, which is what a Lazarus pipeline names); None otherwise."""
    return dict(meta.extra).get("consumer_group") if meta.dialect == "spring" else None


def without_foreign(headers: Sequence[Header]) -> list[Header]:
    """`headers` without any dialect's dead-letter headers (`__connect.errors.*`,
    `kafka_dlt-*`, `__streams.errors.*`, arroyo's `original_*`), in order: what a replayed copy
    of a foreign dead letter carries unless the operator asks to keep them."""
    return [(name, value) for name, value in headers if dialect_of(name) is None]


def read_foreign(headers: Sequence[Header] | None) -> ForeignMeta | None:
    """Read a foreign dead letter, or None when no dialect's headers are present.

    When several dialects are present (a record dead-lettered by one tool, then by another), the
    one whose header comes last — the latest hop, since tools append — is read, and the others
    are named in `problems`."""
    found = [d for d in (dialect_of(name) for name, _ in headers or ()) if d is not None]
    if not found:
        return None
    dialect = found[-1]
    reader = _Reader(headers or ())
    for other in sorted(set(found) - {dialect}):
        reader.problems.append(f"also carries {other} headers; read as {dialect}")
    meta = _READERS[dialect](reader)
    return replace(meta, problems=tuple(reader.problems))


_Use = Literal["first", "last"]


class _Reader:
    """Typed access to header values by name, collecting problems instead of raising."""

    def __init__(self, headers: Sequence[Header]) -> None:
        self.values: dict[str, list[bytes | None]] = {}
        for name, value in headers:
            self.values.setdefault(name, []).append(value)
        self.problems: list[str] = []

    def raw(
        self, name: str, *, required: bool, use: _Use, may_repeat: bool = False
    ) -> bytes | None:
        values = self.values.get(name, [])
        if not values:
            if required:
                self.problems.append(f"{name} is missing")
            return None
        if len(values) > 1 and not may_repeat:
            self.problems.append(f"{name} is repeated {len(values)} times; the {use} is used")
        value = values[0] if use == "first" else values[-1]
        if value is None and required:
            self.problems.append(f"{name} has no value")
        return value

    def text(
        self, name: str, *, required: bool = False, use: _Use = "last", may_repeat: bool = False
    ) -> str | None:
        raw = self.raw(name, required=required, use=use, may_repeat=may_repeat)
        try:
            return None if raw is None else raw.decode("utf-8")
        except UnicodeDecodeError:
            self.problems.append(f"{name} is not UTF-8")
            return None

    def decimal(self, name: str) -> int | None:
        """A required non-negative number written as decimal text; the first occurrence."""
        text = self.text(name, required=True, use="first")
        if text is None:
            return None
        if len(text) > 20 or not _DECIMAL.fullmatch(text):  # 64-bit; int() refuses 4,300 digits
            self.problems.append(f"{name} is not a decimal number: {text[:32]!r}")
            return None
        return int(text)

    def big_endian(self, name: str, size: int, *, required: bool = True) -> int | None:
        """A signed big-endian binary number of exactly `size` bytes; the first occurrence."""
        raw = self.raw(name, required=required, use="first", may_repeat=True)
        if raw is None:
            return None
        if len(raw) != size:
            self.problems.append(f"{name} is {len(raw)} bytes, expected {size} (big-endian)")
            return None
        return int.from_bytes(raw, "big", signed=True)

    def extra(
        self, labels: Sequence[tuple[str, str]], *, origin: bool = False
    ) -> list[tuple[str, str]]:
        """(label, text) for each header of `labels` that is present and readable. `origin`:
        the headers repeat across hops and the first occurrence is the origin's."""
        use: _Use = "first" if origin else "last"
        pairs = [
            (label, self.text(name, use=use, may_repeat=origin))
            for label, name in labels
            if name in self.values
        ]
        return [(label, text) for label, text in pairs if text is not None]


def _read_connect(r: _Reader) -> ForeignMeta:
    extra = r.extra(
        (
            ("connector", CONNECT_CONNECTOR),
            ("task", CONNECT_TASK),
            ("stage", CONNECT_STAGE),
            ("class", CONNECT_CLASS),
        )
    )
    return ForeignMeta(
        dialect="connect",
        source_topic=r.text(CONNECT_TOPIC, required=True, use="first"),
        source_partition=r.decimal(CONNECT_PARTITION),
        source_offset=r.decimal(CONNECT_OFFSET),
        source_timestamp_ms=None,
        error_type=r.text(CONNECT_EXCEPTION, required=True),
        message=r.text(CONNECT_MESSAGE),
        stacktrace=r.text(CONNECT_STACKTRACE),
        extra=tuple(extra),
    )


def _read_spring(r: _Reader) -> ForeignMeta:
    """Spring's original-* headers repeat across hops (the first is the origin: not a problem);
    key-deserialization failures use the key-exception-* headers, noted in `extra`."""
    hops = len(r.values.get(SPRING_TOPIC, []))
    extra = r.extra(
        (("consumer_group", SPRING_CONSUMER_GROUP), ("timestamp_type", SPRING_TIMESTAMP_TYPE)),
        origin=True,
    )
    extra += r.extra((("cause", SPRING_CAUSE),))
    if hops > 1:
        extra.append(("hops", str(hops)))
    error_type, message, stacktrace = _spring_error(r, extra)
    return ForeignMeta(
        dialect="spring",
        source_topic=r.text(SPRING_TOPIC, required=True, use="first", may_repeat=True),
        source_partition=r.big_endian(SPRING_PARTITION, _INT_BYTES),
        source_offset=r.big_endian(SPRING_OFFSET, _LONG_BYTES),
        source_timestamp_ms=r.big_endian(SPRING_TIMESTAMP, _LONG_BYTES, required=False),
        error_type=error_type,
        message=message,
        stacktrace=stacktrace,
        extra=tuple(extra),
    )


def _spring_error(
    r: _Reader, extra: list[tuple[str, str]]
) -> tuple[str | None, str | None, str | None]:
    """(type, message, stacktrace): the value's exception if any, else the key's."""
    key_type = r.text(SPRING_KEY_EXCEPTION)
    if SPRING_EXCEPTION in r.values or key_type is None:
        if key_type is not None:
            extra.append(("key_exception", key_type))
        return (
            r.text(SPRING_EXCEPTION, required=True),
            r.text(SPRING_MESSAGE),
            r.text(SPRING_STACKTRACE),
        )
    extra.append(("failed_part", "key"))
    extra += r.extra((("cause", SPRING_KEY_CAUSE),))
    return key_type, r.text(SPRING_KEY_MESSAGE), r.text(SPRING_KEY_STACKTRACE)


def _read_streams(r: _Reader) -> ForeignMeta:
    return ForeignMeta(
        dialect="streams",
        source_topic=r.text(STREAMS_TOPIC, required=True, use="first"),
        source_partition=r.decimal(STREAMS_PARTITION),
        source_offset=r.decimal(STREAMS_OFFSET),
        source_timestamp_ms=None,
        error_type=r.text(STREAMS_EXCEPTION, required=True),
        message=r.text(STREAMS_MESSAGE),
        stacktrace=r.text(STREAMS_STACKTRACE),
    )


def _read_arroyo(r: _Reader) -> ForeignMeta:
    """arroyo names no topic and carries no error headers: neither is a problem."""
    return ForeignMeta(
        dialect="arroyo",
        source_topic=None,
        source_partition=r.decimal(ARROYO_PARTITION),
        source_offset=r.decimal(ARROYO_OFFSET),
        source_timestamp_ms=None,
        error_type=None,
        message=None,
        stacktrace=None,
    )


_READERS = {
    "connect": _read_connect,
    "spring": _read_spring,
    "streams": _read_streams,
    "arroyo": _read_arroyo,
}
