"""`dlq group`: dead letters counted by cause, so that 40,000 errors read as the three causes they
are. Streaming: a `Grouper` keeps one small accumulator per group, never the dead letters, so
grouping a DLQ of a million records needs memory for its groups only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reprocessor.deadletters import MISSING, DeadLetter, ReplayState, lookup, text_of

GROUP_KEYS = ("fingerprint", "category", "type", "source.topic", "pipeline", "dialect")
"""The fixed keys; `value.<path>` (a decoded payload field) is accepted too."""
NONE_KEY = "(none)"
"""The row key of dead letters that lack the grouped field (e.g. foreign ones by category)."""
MISSING_KEY = "(missing)"
"""The row key of payloads without the grouped `value.<path>` (or not decoded)."""

KeyFunction = Callable[[DeadLetter, object], str | None]

_FIELDS: dict[str, KeyFunction] = {
    "fingerprint": lambda dl, decoded: dl.fingerprint,
    "category": lambda dl, decoded: dl.category,
    "type": lambda dl, decoded: dl.error_type,
    "source.topic": lambda dl, decoded: dl.source_topic,
    "pipeline": lambda dl, decoded: dl.pipeline,
    "dialect": lambda dl, decoded: dl.dialect,
}


@dataclass(frozen=True, slots=True)
class GroupRow:
    """One group. `first_seen_ms`/`last_seen_ms` use `dlq.failed.at`, or the DLQ record's
    timestamp when the dialect has none. `example` is the message of the first dead letter
    added (`example_coordinates` says where it is). `category` and `error_type` are the
    group's common value, None when its members differ or lack one."""

    key: str
    count: int
    first_seen_ms: int
    last_seen_ms: int
    example: str
    example_coordinates: str
    category: str | None
    error_type: str | None
    replayed: int
    discarded: int
    unresolved: int


def key_function(by: str) -> KeyFunction:
    """How dead letters are keyed for `by`; ValueError naming the valid keys otherwise."""
    if by in _FIELDS:
        return _FIELDS[by]
    path = tuple(by.split("."))[1:]
    if by.startswith("value.") and all(path):
        return lambda dl, decoded: _payload_key(lookup(decoded, path))
    raise ValueError(f"cannot group by {by!r} (one of {', '.join(GROUP_KEYS)}, value.<path>)")


def _payload_key(value: object) -> str:
    return MISSING_KEY if value is MISSING else text_of(value)


class _Group:
    """A group's running totals. Mutable and private: `Grouper.rows` freezes them."""

    __slots__ = (
        "category",
        "count",
        "discarded",
        "error_type",
        "example",
        "first",
        "last",
        "mixed_category",
        "mixed_type",
        "replayed",
        "unresolved",
    )

    def __init__(self, dl: DeadLetter) -> None:
        self.example = dl
        self.count = self.replayed = self.discarded = self.unresolved = 0
        self.first = self.last = dl.seen_ms
        self.category = dl.category
        self.error_type = dl.error_type
        self.mixed_category = self.mixed_type = False


class Grouper:
    """Groups dead letters one at a time: `add` is O(1) and allocates only for a new group."""

    __slots__ = ("_by", "_groups", "_key")

    def __init__(self, by: str = "fingerprint") -> None:
        """Raises ValueError for an unknown key (see `key_function`)."""
        self._by = by
        self._key = key_function(by)
        self._groups: dict[str | None, _Group] = {}

    @property
    def by(self) -> str:
        return self._by

    @property
    def needs_payload(self) -> bool:
        """True when grouping by a payload field: `add` then needs the decoded payload."""
        return self._by.startswith("value.")

    def add(self, dl: DeadLetter, state: ReplayState, decoded: object | None = None) -> None:
        key = self._key(dl, decoded)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(dl)
        group.count += 1
        seen = dl.timestamp_ms if dl.failed_at_ms is None else dl.failed_at_ms
        if seen < group.first:
            group.first = seen
        elif seen > group.last:
            group.last = seen
        if state is ReplayState.UNRESOLVED:
            group.unresolved += 1
        elif state is ReplayState.REPLAYED:
            group.replayed += 1
        else:
            group.discarded += 1
        if dl.category != group.category:
            group.mixed_category = True
        if dl.error_type != group.error_type:
            group.mixed_type = True

    def rows(self) -> list[GroupRow]:
        """One row per group, by count (largest first), then key."""
        rows = [_row(key, group) for key, group in self._groups.items()]
        rows.sort(key=lambda row: (-row.count, row.key))
        return rows


def _row(key: str | None, group: _Group) -> GroupRow:
    example = group.example
    return GroupRow(
        key=NONE_KEY if key is None else key,
        count=group.count,
        first_seen_ms=group.first,
        last_seen_ms=group.last,
        example=example.message or "",
        example_coordinates=example.coordinates,
        category=None if group.mixed_category else group.category,
        error_type=None if group.mixed_type else group.error_type,
        replayed=group.replayed,
        discarded=group.discarded,
        unresolved=group.unresolved,
    )


def group(
    items: Iterable[tuple[DeadLetter, ReplayState, object | None]], by: str
) -> list[GroupRow]:
    """Group `(dead letter, state, decoded payload or None)` items by `by`; sorted by count
    (largest first), then key. Raises ValueError for an unknown key."""
    grouper = Grouper(by)
    for dl, state, decoded in items:
        grouper.add(dl, state, decoded)
    return grouper.rows()
