"""A DLQ as `dlq` reads it: its dead letters with their ledger decisions and, where needed, their
payloads decoded by the pipeline's own codecs (what every command works on); and the per-topic
statistics of `dlq stats`.

`scan` reads the DLQ topic once, up to the end offsets captured when it starts, never joining a
group nor committing (see `pipeline.kafka.dlqio`). Decoding payloads costs more than reading
headers, so it happens only when the selection, the grouping or the output needs it.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from pipeline.app import Schemas
from pipeline.codecs.base import Codec
from pipeline.contract import ledger_topic, parse_coordinates
from pipeline.errors import RecordError
from pipeline.kafka import dlqio
from pipeline.kafka.dlqio import KafkaConf
from pipeline.settings import SchemaSpec, Settings
from reprocessor import fixes
from reprocessor.deadletters import DeadLetter, ReplayState, from_record, jsonable
from reprocessor.ledger import Decision, Ledger
from reprocessor.selection import Selection


@dataclass(frozen=True, slots=True)
class Item:
    """One selected dead letter: its decision, its payload when decoded, kcat's tstype."""

    dl: DeadLetter
    decision: Decision
    payload: Payload | None = None
    tstype: str = "create"

    @property
    def state(self) -> ReplayState:
        return self.decision.state

    @property
    def decoded(self) -> object | None:
        """The decoded event for selection and grouping (None when not decoded)."""
        return None if self.payload is None else self.payload.event


@dataclass(frozen=True, slots=True)
class Window:
    """What to read and keep: a `--where` selection, a time window on the DLQ record's
    timestamp (the failure time), the last `tail` records per partition, only the listed
    coordinates (a resumed plan), and whether to decode payloads."""

    selection: Selection = field(default_factory=Selection)
    since_ms: int | None = None
    until_ms: int | None = None
    tail: int | None = None
    only: frozenset[str] | None = None
    decode: bool = False

    def admits(self, dl: DeadLetter) -> bool:
        """The checks that need neither the ledger nor the payload."""
        if self.since_ms is not None and dl.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and dl.timestamp_ms > self.until_ms:
            return False
        return self.only is None or dl.coordinates in self.only


def read_ledger(conf: KafkaConf, dlq_topic: str) -> Ledger:
    """The DLQ's ledger, read `read_committed` to its current end; empty when the ledger
    topic does not exist (nothing was ever decided)."""
    topic = ledger_topic(dlq_topic)
    if dlqio.missing_topics(conf, [topic]):
        return Ledger(dlq_topic)
    with dlqio.TopicReader(conf, topic) as reader:
        return Ledger.from_records(dlq_topic, (c.record for c in reader.records()))


def scan(
    conf: KafkaConf, dlq_topic: str, window: Window, payloads: Payloads, ledger: Ledger
) -> Iterator[Item]:
    """Every dead letter of `dlq_topic` that the window and selection keep, in each
    partition's offset order. Raises ConfigError when the topic does not exist."""
    spec = dlqio.ReadSpec(tail=window.tail, since_ms=window.since_ms)
    decode = window.decode or window.selection.needs_payload
    with dlqio.TopicReader(conf, dlq_topic, spec) as reader:
        for consumed in reader.records():
            r = consumed.record
            dl = from_record(
                r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers
            )
            if not window.admits(dl):
                continue
            decision = ledger.decision(dl)
            payload = payloads.decode(dl) if decode else None
            event = None if payload is None else payload.event
            if window.selection.matches(dl, decision.state, event):
                yield Item(dl, decision, payload, consumed.tstype)


def unresolved_items(
    conf: KafkaConf, topic: str, window: Window, payloads: Payloads, limit: int | None
) -> list[Item]:
    """The unresolved dead letters selected (what a replay or discard may decide), at most
    `limit`, sorted by (partition, offset): each partition's DLQ order, hence each key's."""
    found = scan(conf, topic, window, payloads, read_ledger(conf, topic))
    chosen = itertools.islice((i for i in found if i.decision.entry is None), limit)
    return sorted(chosen, key=lambda item: (item.dl.partition, item.dl.offset))


def planned_items(
    conf: KafkaConf, topic: str, coordinates: Sequence[str], payloads: Payloads
) -> tuple[list[Item], list[str]]:
    """The still unresolved dead letters at `coordinates`, in that order, and the coordinates
    no longer in the DLQ (expired by retention, or the topic was recreated)."""
    only = Window(only=frozenset(coordinates))
    found = {
        i.dl.coordinates: i for i in scan(conf, topic, only, payloads, read_ledger(conf, topic))
    }
    missing = [c for c in coordinates if c not in found]
    kept = [found[c] for c in coordinates if c in found and found[c].decision.entry is None]
    return kept, missing


def origin_topic(dl: DeadLetter) -> str | None:
    """The topic of the dead letter's first appearance (`dlq.origin`), else its source topic."""
    if dl.origin is not None:
        try:
            return parse_coordinates(dl.origin)[0]
        except ValueError:
            pass
    return dl.source_topic


@dataclass
class TopicStats:
    """`dlq stats` for one DLQ topic. The depth is `unresolved`: what no ledger entry decided."""

    topic: str
    total: int = 0
    unresolved: int = 0
    replayed: int = 0
    discarded: int = 0
    by_category: dict[str, tuple[int, int]] = field(default_factory=dict)
    """category -> (total, unresolved); foreign dialects count under `foreign:<dialect>`."""
    oldest_unresolved_ms: int | None = None

    def to_json(self, now_ms: int) -> dict[str, object]:
        oldest = self.oldest_unresolved_ms
        return {
            "topic": self.topic,
            "total": self.total,
            "unresolved": self.unresolved,
            "replayed": self.replayed,
            "discarded": self.discarded,
            "by_category": {
                k: {"total": t, "unresolved": u} for k, (t, u) in self.by_category.items()
            },
            "oldest_unresolved_ms": oldest,
            "oldest_unresolved_age_ms": None if oldest is None else now_ms - oldest,
        }

    def add(self, item: Item) -> None:
        dl, state = item.dl, item.state
        self.total += 1
        unresolved = state is ReplayState.UNRESOLVED
        if unresolved:
            self.unresolved += 1
            if self.oldest_unresolved_ms is None or dl.seen_ms < self.oldest_unresolved_ms:
                self.oldest_unresolved_ms = dl.seen_ms
        elif state is ReplayState.REPLAYED:
            self.replayed += 1
        else:
            self.discarded += 1
        category = dl.category or f"foreign:{dl.dialect}"
        total, open_ = self.by_category.get(category, (0, 0))
        self.by_category[category] = (total + 1, open_ + int(unresolved))


Change = Callable[[object], dict[str, object]]
"""A fix: the decoded event in, the fixed event out; raises `fixes.FixError`."""


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
        self._schemas = Schemas(settings) if settings else None
        self._codecs: dict[tuple[str, bool], Codec] = {}
        for path in settings.python_path if settings else ():
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))

    def topic_of(self, dl: DeadLetter) -> str | None:
        """The configured source topic whose schema applies to `dl`, if any."""
        origin = origin_topic(dl)
        for topic in (origin, dl.source_topic):
            if topic is not None and topic in self._sources:
                return topic
        return None

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
        if dl.value is None:
            return Payload(None, None, "null")
        topic = self.topic_of(dl)
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
        payload = self.decode(dl)
        if payload.event is None:
            why = payload.problem or f"the value is {payload.how}, not a record"
            return Fixed(None, None, None, [], f"cannot fix: {why}", False)
        try:
            after = change(payload.event)
        except fixes.FixError as exc:
            return Fixed(payload.event, None, None, [], f"fix failed: {exc}", False)
        lines = fixes.diff(payload.event, after)
        topic = self.topic_of(dl)
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
        return json.dumps(jsonable(after), ensure_ascii=False, separators=(",", ":")).encode()

    def _validate(self, topic: str | None, value: bytes) -> bool:
        if topic is None or self._schemas is None:
            return False
        codec = self._codec(topic, raw=False)
        assert codec is not None
        codec.decode(value)
        return True


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
