"""Dead letters' payloads as `dlq` decodes, shows, selects on and fixes them, with the
pipeline's own codecs (chosen by the topic in `dlq.origin`, as the worker does for its redrive
topic); a fixed payload is re-encoded with its original writer schema and framing and must pass
the pipeline's validation before it may be replayed."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.core.contract import parse_coordinates
from pipeline.errors import RecordError
from reprocessor import fixes
from reprocessor.deadletters import DeadLetter, jsonable

if TYPE_CHECKING:  # pydantic-settings costs 0.1-0.2 s: only a config needs it (`options.Env`)
    from pipeline.app.build import Schemas
    from pipeline.app.settings import SchemaSpec, Settings
    from pipeline.codecs.base import Codec

Change = Callable[[object], dict[str, object]]
"""A fix: the decoded event in, the fixed event out; raises `fixes.FixError`."""


def origin_topic(dl: DeadLetter) -> str | None:
    """The topic of the dead letter's first appearance (`dlq.origin`), else its source topic."""
    return origin_topic_of(dl.origin, dl.source_topic)


def origin_topic_of(origin: str | None, source_topic: str | None) -> str | None:
    """`origin_topic` of a dead letter with this `dlq.origin` and source topic."""
    if origin is not None:
        try:
            return parse_coordinates(origin)[0]
        except ValueError:
            pass
    return source_topic


@dataclass(frozen=True, slots=True)
class Payload:
    """A dead letter's value as `dlq` shows, selects on and fixes it. `event` is the decoded
    record (Avro in its writer schema's shape, JSON as parsed), None when it does not decode;
    `shown` is what to display (the event, else UTF-8 text, else hex); `problem` says why the
    pipeline's codec could not decode it."""

    event: object | None
    shown: object
    how: str
    schema_id: int | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Fixed:
    """A fix applied to one dead letter. `error` (not replayable) when the value does not
    decode, the fix does not apply, or the fixed event fails the pipeline's validation;
    `checked` is False when no schema is configured for the topic (nothing to validate)."""

    before: object | None
    after: object | None
    value: bytes | None
    diff: list[str]
    error: str | None
    checked: bool


class Payloads:
    """Decodes dead letters' values with the pipeline's own codecs, chosen by the topic named in
    `dlq.origin` (the worker does the same for its redrive topic), else the source topic.

    Fixing decodes with the writer schema alone (no reader schema, no model: the event failed
    those), re-encodes with the same writer schema id and framing, then decodes the result
    with the pipeline's full codec, so a fixed record is replayed only if the pipeline would
    accept it. Without a configuration, UTF-8 JSON values are still decoded and fixed
    (unchecked)."""

    def __init__(self, settings: Settings | None) -> None:
        self._sources: dict[str, SchemaSpec] = dict(settings.sources) if settings else {}
        self._schemas: Schemas | None = None
        if settings:
            # imported here: it brings the worker's whole runtime, which every `dlq` command
            # paid for at start-up, with or without a configuration to decode with
            from pipeline.app.build import Schemas

            self._schemas = Schemas(settings)
        self._codecs: dict[tuple[str, bool], Codec] = {}
        for path in settings.python_path if settings else ():
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))

    def topic_of(self, dl: DeadLetter) -> str | None:
        """The configured source topic whose schema applies to `dl`, if any: the topic of
        its `dlq.origin` when that is configured, else its source topic when that is."""
        sources = self._sources
        if not sources:
            return None  # no configuration: nothing to look up (a preview's every record)
        origin = dl.origin
        if origin is not None and origin.rsplit("/", 2)[0] in sources:  # topics hold no `/`
            found = origin_topic(dl)  # the full check, only for a configured topic
            if found in sources:
                return found
        return dl.source_topic if dl.source_topic in sources else None

    def _codec(self, topic: str, *, raw: bool) -> Codec | None:
        spec = self._sources[topic]
        if self._schemas is None or (raw and not spec.format.startswith("avro")):
            return None
        if (topic, raw) not in self._codecs:
            if raw:
                spec = spec.model_copy(update={"model": None, "reader_schema": None})
            self._codecs[(topic, raw)] = self._schemas.codec(spec)
        return self._codecs[(topic, raw)]

    def decode(self, dl: DeadLetter) -> Payload:
        """Never raises: what does not decode is shown as text or hex, with the reason."""
        return self._decode(dl, self.topic_of(dl))

    def _decode(self, dl: DeadLetter, topic: str | None) -> Payload:
        if dl.value is None:
            return Payload(None, None, "null")
        codec = None if topic is None else self._codec(topic, raw=True)
        if codec is None:
            return _generic(dl.value, None)
        try:
            decoded = codec.decode(dl.value)
        except RecordError as exc:
            return _generic(dl.value, exc.message)
        return Payload(decoded.event, decoded.event, "avro", decoded.schema_id)

    def fixer(self, change: Change) -> Callable[[DeadLetter], tuple[bytes | None, str | None]]:
        """A `replay.Recipe.fix`: the fixed value, or the reason it cannot be replayed."""

        def fix(dl: DeadLetter) -> tuple[bytes | None, str | None]:
            fixed = self.fix(dl, change)
            return (None, fixed.error) if fixed.error is not None else (fixed.value, None)

        return fix

    def fix(self, dl: DeadLetter, change: Change) -> Fixed:
        """Apply `change` to the decoded value, re-encode it and validate it."""
        topic = self.topic_of(dl)
        payload = self._decode(dl, topic)
        if payload.event is None:
            why = payload.problem or f"the value is {payload.how}, not a record"
            return Fixed(None, None, None, [], f"cannot fix: {why}", False)
        try:
            after = change(payload.event)
        except fixes.FixError as exc:
            return Fixed(payload.event, None, None, [], f"fix failed: {exc}", False)
        lines = fixes.diff(payload.event, after)
        try:
            value = self._encode(topic, payload, after)
            checked = self._validate(topic, value)
        except RecordError as exc:
            return Fixed(payload.event, after, None, lines, f"invalid after fix: {exc}", True)
        return Fixed(payload.event, after, value, lines, None, checked)

    def _encode(self, topic: str | None, payload: Payload, after: object) -> bytes:
        codec = None if topic is None else self._codec(topic, raw=True)
        if codec is not None:
            return codec.encode(after, schema_id=payload.schema_id)
        return _COMPACT.encode(jsonable(after)).encode()

    def _validate(self, topic: str | None, value: bytes) -> bool:
        if topic is None or self._schemas is None:
            return False
        codec = self._codec(topic, raw=False)
        assert codec is not None
        codec.decode(value)
        return True


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""`json.dumps(..., ensure_ascii=False, separators=(",", ":"))` built once: `dumps` with
options builds a new encoder per call, a tenth of a fixed record's encoding."""


def _generic(value: bytes, problem: str | None) -> Payload:
    """A value no configured codec reads: JSON when it parses, else UTF-8 text, else hex."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return Payload(None, value.hex(), "hex", problem=problem)
    try:
        event: object = json.loads(text)
    except ValueError:
        printable = text.replace("\n", "").replace("\t", "").replace("\r", "").isprintable()
        if not printable:
            return Payload(None, value.hex(), "hex", problem=problem)
        return Payload(None, text, "utf-8", problem=problem)
    return Payload(event, event, "json", problem=problem)
