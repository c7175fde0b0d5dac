"""What the on-disk index keeps of each dead letter (its ledger records: `index_ledger`), and the
pure decisions about when the index can no longer be trusted. Nothing here talks to Kafka or SQLite.

A dead letter's row holds the header fields that grouping and selection read, never the payload.
`dead_letter_row` reads Lazarus headers on a fast path (one pass over the headers, no details
JSON, no message normalisation) and falls back to `deadletters.from_record` for anything else —
foreign dialects, a malformed or missing field, a foreign header after the `dlq.*` ones — so a row
always says what `from_record` says (the unit tests hold the two paths to that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter, lshift, or_
from typing import TypeAlias, cast

from pipeline.core import contract as c
from pipeline.core.contract import DeadLetterMeta, format_coordinates
from pipeline.errors import Category
from reprocessor.deadletters import LAZARUS, DeadLetter, ReplayState, from_record, held_by

Row: TypeAlias = tuple[
    int, int, int, int, int, int | None, str | None, str, str | None, str | None, str | None,
    int | None, int | None, str | None, str | None, str | None, str | None, int | None, int,
    int, str,
]  # fmt: skip
"""(id, partition, offset, ts, seen_ms, failed_at, category, fingerprint, error_type, message,
source_topic, source_partition, source_offset, origin, pipeline, schema, policy_rule, attempts,
replay_count, value_size, dialect): the order of `COLUMNS`. The id is `row_id(partition,
offset)`: SQLite's rowid, so rows are stored in partition and offset order without a second key."""

COLUMNS: tuple[str, ...] = (
    "id",
    "partition",
    "offset",
    "ts",
    "seen_ms",
    "failed_at",
    "category",
    "fingerprint",
    "error_type",
    "message",
    "source_topic",
    "source_partition",
    "source_offset",
    "origin",
    "pipeline",
    "schema",
    "policy_rule",
    "attempts",
    "replay_count",
    "value_size",
    "dialect",
)
STATE_CODES: dict[int, ReplayState] = {
    0: ReplayState.UNRESOLVED,
    1: ReplayState.REPLAYED,
    2: ReplayState.DISCARDED,
}
OFFSET_BITS = 44
"""A row id is the partition shifted left by this many bits, plus the offset: offsets up to
1.7e13 and partitions up to 524,287 fit SQLite's signed 64-bit rowid."""


def row_id(partition: int, offset: int) -> int:
    return (partition << OFFSET_BITS) | offset


_CATEGORIES = frozenset(category.value for category in Category)
_HEX = b"0123456789abcdef"
Headers: TypeAlias = Sequence[tuple[str, bytes | None]]


def dead_letter_row(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    value: bytes | None,
    headers: Headers | None,
) -> Row:
    """The row of the DLQ record at `topic/partition/offset`. Never raises on bad headers."""
    ts = timestamp_ms if timestamp_ms >= 0 else 0
    row = fast_row(partition, offset, ts, value, headers) if headers else None
    if row is not None:
        return row
    dl = from_record(topic, partition, offset, ts, None, value, headers)
    return row_of(dl, len(value) if value is not None else 0)


def fast_row(
    partition: int, offset: int, ts: int, value: bytes | None, headers: Headers
) -> Row | None:
    """A Lazarus dead letter whose every field is well-formed, read in one pass (the last
    occurrence of a header wins, as the contract says); None otherwise (`dead_letter_row` then
    takes the slow path). `ts` must not be negative."""
    if not headers[-1][0].startswith(c.PREFIX):
        return None  # a foreign header may come last: from_record decides
    get = dict(headers).get
    digest = get(c.ERROR_FINGERPRINT)
    if (
        get(c.VERSION) != b"1"
        or digest is None
        or len(digest) != 16
        or digest.translate(None, _HEX)
    ):
        return None
    numbers: list[bytes] = []
    for raw in (get(c.FAILED_AT), get(c.SOURCE_PARTITION), get(c.SOURCE_OFFSET),
                get(c.ATTEMPTS), get(c.REPLAY_COUNT)):  # fmt: skip
        if raw is None or len(raw) > 20 or not raw.isdigit():
            return None
        numbers.append(raw)
    schema, rule = get(c.SCHEMA), get(c.POLICY_RULE)
    texts: list[str] = []
    try:
        for raw in (get(c.ERROR_CATEGORY), get(c.ERROR_TYPE), get(c.ERROR_MESSAGE),
                    get(c.SOURCE_TOPIC), get(c.ORIGIN), get(c.PIPELINE)):  # fmt: skip
            if raw is None:
                return None
            texts.append(raw.decode())
        schema_text = None if schema is None else schema.decode()
        rule_text = None if rule is None else rule.decode()
    except UnicodeDecodeError:
        return None
    category, error_type, message, source_topic, origin, pipeline = texts
    if category not in _CATEGORIES:
        return None
    failed_at, source_partition, source_offset, attempts, replay_count = map(int, numbers)
    return (
        (partition << OFFSET_BITS) | offset, partition, offset, ts, failed_at, failed_at,
        category, digest.decode(), error_type, message, source_topic, source_partition,
        source_offset, origin, pipeline, schema_text, rule_text, attempts, replay_count,
        len(value) if value is not None else 0, LAZARUS,
    )  # fmt: skip


_PICKED = (
    c.VERSION, c.ERROR_FINGERPRINT, c.FAILED_AT, c.SOURCE_PARTITION, c.SOURCE_OFFSET, c.ATTEMPTS,
    c.REPLAY_COUNT, c.ERROR_CATEGORY, c.ERROR_TYPE, c.ERROR_MESSAGE, c.SOURCE_TOPIC, c.ORIGIN,
    c.PIPELINE,
)  # fmt: skip
_PICK = itemgetter(*_PICKED)
_LAST, _NAME, _VALUE, _DECODE = itemgetter(-1), itemgetter(0), itemgetter(1), bytes.decode
_BAD_BATCH = (KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError)


def fast_rows(
    partitions: Sequence[int],
    offsets: Sequence[int],
    timestamps: Sequence[int],
    sizes: Sequence[int],
    headers: Sequence[Headers],
    absent: int | None = None,
) -> list[Row] | None:
    """`fast_row` of a whole batch at once, column by column (each column a loop in C, several
    times cheaper than the same checks record by record), or None when any record of the batch
    fails one of `fast_row`'s checks (the caller then takes them one by one). The checks are
    `fast_row`'s, over columns; timestamps must not be negative. An absent schema or policy
    rule is `absent` (the index passes 0 and its INSERT stores NULL for it: sqlite3 binds a None
    after failing to find an adapter for it, two attribute lookups that raise, about 0.7 us a
    value, where an int costs 0.07): rows to store then, not to read."""
    try:
        if not all(map(str.startswith, map(_NAME, map(_LAST, headers)), repeat(c.PREFIX))):
            return None
        by_name = _by_position(headers)
        picked: list[Sequence[bytes]]  # a None value fails a check below, as a bad one does
        if by_name is None:  # header names in different orders: a dict per record
            found = list(map(dict, headers))
            picked = list(zip(*map(_PICK, found), strict=True))
            schemas = list(map(dict.get, found, repeat(c.SCHEMA)))
            rules = list(map(dict.get, found, repeat(c.POLICY_RULE)))
        else:
            picked = cast(list[Sequence[bytes]], [by_name[name] for name in _PICKED])
            nones: list[bytes | None] = [None] * len(headers)
            schemas, rules = by_name.get(c.SCHEMA, nones), by_name.get(c.POLICY_RULE, nones)
        (version, digest, failed, s_part, s_off, attempts, replays, category, error_type,
         message, source_topic, origin, pipeline) = picked  # fmt: skip
        if set(version) != {b"1"} or set(map(len, digest)) != {16}:
            return None
        if b"".join(digest).translate(None, _HEX):
            return None
        categories = list(map(_DECODE, category))
        if not _CATEGORIES.issuperset(categories):
            return None
        failed_at = _numbers(failed)
        schema, rule = _texts(schemas, absent), _texts(rules, absent)
        ids = map(or_, map(lshift, partitions, repeat(OFFSET_BITS)), offsets)
        return cast(list[Row], list(zip(
            ids, partitions, offsets, timestamps, failed_at, failed_at, categories,
            map(_DECODE, digest), map(_DECODE, error_type), map(_DECODE, message),
            map(_DECODE, source_topic), _numbers(s_part), _numbers(s_off), map(_DECODE, origin),
            map(_DECODE, pipeline), schema, rule, _numbers(attempts), _numbers(replays), sizes,
            repeat(LAZARUS, len(offsets)), strict=True,
        )))  # fmt: skip
    except _BAD_BATCH:
        return None


def _by_position(headers: Sequence[Headers]) -> dict[str, list[bytes | None]] | None:
    """Each header name's values as a column, when every record of the batch has the same
    header names in the same order (one worker's dead letters of one kind): a column per
    position, a loop in C each, instead of a dict per record. A repeated name's last position
    wins, as in `dict(headers)`. None when the records' names differ. Each position's names
    are compared with the first record's (`list.count`), not put in a set: every record's
    names are fresh strings, and hashing them cost more than comparing them."""
    if len(set(map(len, headers))) != 1:
        return None
    columns: dict[str, list[bytes | None]] = {}
    for position in zip(*headers, strict=True):
        names = list(map(_NAME, position))
        if names.count(names[0]) != len(names):
            return None
        columns[names[0]] = list(map(_VALUE, position))
    return columns


def _numbers(column: Sequence[bytes]) -> list[int]:
    """Non-negative decimal integers of 1 to 20 digits; ValueError (or TypeError) otherwise."""
    lengths = set(map(len, column))
    if min(lengths) < 1 or max(lengths) > 20 or not b"".join(column).isdigit():
        raise ValueError("not a number")
    return list(map(int, column))


def _texts(column: Sequence[bytes | None], absent: int | None) -> list[str | int | None]:
    if None not in column:
        return list(map(_DECODE, cast(Sequence[bytes], column)))
    if column.count(None) == len(column):
        return [absent] * len(column)
    return [absent if raw is None else raw.decode() for raw in column]


def row_of(dl: DeadLetter, value_size: int) -> Row:
    """The row of a dead letter already read by `from_record` (any dialect)."""
    meta = dl.meta
    return (
        row_id(dl.partition, dl.offset), dl.partition, dl.offset, dl.timestamp_ms, dl.seen_ms,
        dl.failed_at_ms, dl.category, dl.fingerprint, dl.error_type, dl.message, dl.source_topic,
        dl.source_partition, dl.source_offset, dl.origin, dl.pipeline,
        None if meta is None else meta.schema, None if meta is None else meta.policy_rule,
        dl.attempts, dl.replay_count, value_size, dl.dialect,
    )  # fmt: skip


def letter_of(topic: str, row: Sequence[object]) -> DeadLetter:
    """A DeadLetter from an index row (in `COLUMNS` order): what selection, grouping and
    statistics read. It has no key, value, headers nor stack trace, and a meta only to carry
    the policy rule of a held one: commands that need more fetch the record itself."""
    (_id, p, o, ts, _seen, failed_at, category, digest, error_type, message, source_topic,
     source_partition, source_offset, origin, pipeline, schema, rule, attempts,
     replay_count, _size, dialect) = row  # fmt: skip
    return DeadLetter(
        topic=topic,
        partition=_int(p),
        offset=_int(o),
        timestamp_ms=_int(ts),
        key=None,
        value=None,
        headers=(),
        dialect=str(dialect),
        meta=None
        if rule is None
        else DeadLetterMeta(schema=_str_or_none(schema), policy_rule=str(rule)),
        foreign=None,
        source_topic=_str_or_none(source_topic),
        source_partition=_int_or_none(source_partition),
        source_offset=_int_or_none(source_offset),
        origin=_str_or_none(origin),
        category=_str_or_none(category),
        error_type=_str_or_none(error_type),
        message=_str_or_none(message),
        stacktrace=None,
        fingerprint=str(digest),
        attempts=_int_or_none(attempts),
        failed_at_ms=_int_or_none(failed_at),
        pipeline=_str_or_none(pipeline),
        replay_count=_int(replay_count),
        problems=(),
    )


class RowView:
    """An index row (in `COLUMNS` order) as a selection reads it (`selection.Selectable`): a
    few attribute stores per row while the index selects, where a DeadLetter costs several
    times more; `letter` makes one of a row once it is selected. A row has no key, stack
    trace nor trace (the index cannot select on those)."""

    __slots__ = (
        "attempts",
        "category",
        "dialect",
        "error_type",
        "failed_at_ms",
        "fingerprint",
        "message",
        "offset",
        "origin",
        "partition",
        "pipeline",
        "policy_rule",
        "replay_count",
        "row",
        "source_offset",
        "source_partition",
        "source_topic",
        "timestamp_ms",
        "topic",
    )  # fmt: skip
    row: Row
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    failed_at_ms: int | None
    category: str | None
    fingerprint: str
    error_type: str | None
    message: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    origin: str | None
    pipeline: str | None
    policy_rule: str | None
    attempts: int | None
    replay_count: int
    dialect: str

    def __init__(self, topic: str, row: Row) -> None:
        self.row, self.topic = row, topic
        (_, self.partition, self.offset, self.timestamp_ms, _, self.failed_at_ms, self.category,
         self.fingerprint, self.error_type, self.message, self.source_topic,
         self.source_partition, self.source_offset, self.origin, self.pipeline, _,
         self.policy_rule, self.attempts, self.replay_count, _, self.dialect) = row  # fmt: skip

    @property
    def key(self) -> bytes | None:
        return None

    @property
    def stacktrace(self) -> str | None:
        return None

    @property
    def trace(self) -> str | None:
        return None

    @property
    def rule(self) -> str | None:
        return held_by(self.policy_rule)

    @property
    def seen_ms(self) -> int:
        return self.timestamp_ms if self.failed_at_ms is None else self.failed_at_ms

    @property
    def coordinates(self) -> str:
        return format_coordinates(self.topic, self.partition, self.offset)

    def letter(self, key: bytes | None = None, value: bytes | None = None) -> DeadLetter:
        """The row's DeadLetter (as `letter_of` makes it), with its record's key and value
        when given: one positional constructor call."""
        rule = self.policy_rule
        meta = None if rule is None else DeadLetterMeta(schema=self.row[15], policy_rule=rule)
        return DeadLetter(
            self.topic, self.partition, self.offset, self.timestamp_ms, key, value, (),
            self.dialect, meta, None, self.source_topic, self.source_partition,
            self.source_offset, self.origin, self.category, self.error_type, self.message, None,
            self.fingerprint, self.attempts, self.failed_at_ms, self.pipeline,
            self.replay_count, (),
        )  # fmt: skip


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _int_or_none(value: object) -> int | None:
    return None if value is None else _int(value)


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the index stored the last time it caught up."""

    cluster_id: str | None = None
    topic_id: str | None = None
    lows: Mapping[int, int] = field(default_factory=dict)
    positions: Mapping[int, int] = field(default_factory=dict)
    ledger_topic_id: str | None = None
    ledger_synced_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Observed:
    """What the broker says now. `lows` are the DLQ's low watermarks; `ledger_topic_id` is None
    when the ledger topic does not exist."""

    cluster_id: str
    topic_id: str
    lows: Mapping[int, int]
    ledger_topic_id: str | None
    ledger_delete_retention_ms: int | None
    now_ms: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """How to bring the index in line with the broker before reading what is new.

    `reset` (a reason) drops every dead letter and counter: another cluster, or the topic was
    deleted and recreated. `expire` maps a partition to the low watermark below which rows were
    deleted by retention (their unresolved ones count as expired). `skip_to` moves a partition's
    read position up to its low watermark (records deleted before the index saw them).
    `reset_ledger` (a reason) drops every decision and re-reads the ledger from its start."""

    reset: str | None = None
    expire: Mapping[int, int] = field(default_factory=dict)
    skip_to: Mapping[int, int] = field(default_factory=dict)
    reset_ledger: str | None = None


def verdict(seen: Seen, now: Observed) -> Verdict:
    """Compare what the index saw with what the broker says (pure)."""
    reset = None
    if seen.cluster_id is not None and seen.cluster_id != now.cluster_id:
        reset = f"the cluster id changed ({seen.cluster_id} -> {now.cluster_id})"
    elif seen.topic_id is not None and seen.topic_id != now.topic_id:
        reset = "the topic was deleted and recreated (its topic id changed)"
    lows: Mapping[int, int] = {} if reset else seen.lows
    positions: Mapping[int, int] = {} if reset else seen.positions
    expire = {p: low for p, low in now.lows.items() if low > lows.get(p, 0)}
    skip_to = {p: low for p, low in now.lows.items() if low > positions.get(p, 0)}
    return Verdict(reset, expire, skip_to, _ledger_reset(seen, now, bool(reset)))


def _ledger_reset(seen: Seen, now: Observed, reset: bool) -> str | None:
    if seen.ledger_topic_id is None and seen.ledger_synced_ms is None:
        return None  # nothing read yet
    if reset:
        return "the index was reset"
    if seen.ledger_topic_id != now.ledger_topic_id:
        return "the ledger topic was deleted or recreated"
    keep = now.ledger_delete_retention_ms
    synced = seen.ledger_synced_ms
    if keep is not None and synced is not None and now.now_ms - synced > keep:
        return "the ledger index is older than the ledger's delete.retention.ms"
    return None
