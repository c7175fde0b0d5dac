"""A batch of Lazarus dead letters that all carry the same header names in the same order (one
worker's dead letters of one kind: what a replay reads almost always), read for replay alone:
each field a column taken by position, each check one loop in C over a column, and each copy's
headers (`contract.build_replay`'s bytes) assembled from slices and shared tuples.

The batch is accepted exactly when `index_rows.fast_row` accepts every record of it (the same
checks, over columns: version 1, a 16-hex fingerprint, decimal numbers of 1 to 20 digits, a
known category, UTF-8 texts, a `dlq.` header last), and when every `dlq.origin` is coordinates
and every `dlq.origin.timestamp` is canonical decimal digits (what `build_replay` writes back
unchanged). Anything else is None: the caller takes the general path (`index_rows.fast_rows`,
then `replay_headers`), whose answers these equal; the unit tests hold the two to that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import cast

from pipeline.core import contract as c
from pipeline.core.contract import Header, parse_coordinates
from pipeline.errors import Category

_NAME, _VALUE = itemgetter(0), itemgetter(1)
_DECODE = bytes.decode
_CATEGORIES = frozenset(category.value for category in Category)
_HEX = b"0123456789abcdef"
_CATEGORY_BYTES = frozenset(category.encode() for category in _CATEGORIES)
_CHECKED_NUMBERS = (c.SOURCE_PARTITION, c.SOURCE_OFFSET, c.ATTEMPTS)
"""Numbers `fast_row` checks that a replay does not read (it reads the failure time and the
replay count)."""
_READ_TEXTS = (c.PIPELINE, c.ORIGIN, c.SOURCE_TOPIC)
_CHECKED_TEXTS = (c.ERROR_TYPE, c.ERROR_MESSAGE)
_OPTIONAL_TEXTS = (c.SCHEMA, c.POLICY_RULE)
"""Texts `fast_row` checks that a replay does not read (the optional ones may be absent or
null)."""
_REQUIRED = frozenset(
    (c.VERSION, c.ERROR_FINGERPRINT, c.ERROR_CATEGORY, c.FAILED_AT, c.REPLAY_COUNT,
     *_CHECKED_NUMBERS, *_READ_TEXTS, c.ERROR_TYPE, c.ERROR_MESSAGE)
)  # fmt: skip
_COORDINATE = rb"[A-Za-z0-9._-]{1,249}/[0-9]{1,20}/[0-9]{1,20}"
_ALL_COORDINATES = re.compile(rb"(?:" + _COORDINATE + rb"\n)*" + _COORDINATE)
"""Lines of `topic/partition/offset` (what `build_replay` keeps as `dlq.origin`): a column
checked by one match."""
_CANONICAL = rb"(?:0|[1-9][0-9]{0,18})"
_ALL_CANONICAL = re.compile(rb"(?:" + _CANONICAL + rb"\n)*" + _CANONICAL)
"""Lines of timestamps whose digits `build_replay` writes back unchanged."""


@dataclass(frozen=True, slots=True)
class Lineage:
    """What a replay reads of a uniform batch, record `i` at index `i` of every column: the
    fields its target, loop protection and plan check need, and what its copy's headers are
    made of (each record's original headers, which `copy_headers` completes)."""

    fingerprints: list[str]
    failed_at: list[int]
    replay_counts: list[int]
    pipelines: list[str]
    origins: list[str]
    source_topics: list[str]
    headers: list[list[Header]]
    origin_bytes: list[bytes]
    stamps: list[bytes] | None

    def copy_headers(self, dead_letters: Sequence[str], run_id: str) -> list[list[Header]]:
        """`build_replay(headers[i], dead_letter=dead_letters[i], run_id=run_id)` for every
        record (`dead_letters` are valid coordinates, `run_id` is not empty): its original
        headers, `dlq.origin` and its timestamp as they were, the count plus one, the dead
        letter it replays and the run."""
        run = (c.REPLAY_RUN, run_id.encode("utf-8", errors="replace"))
        counts = {n: (c.REPLAY_COUNT, str(n + 1).encode()) for n in set(self.replay_counts)}
        count_of = counts.__getitem__
        of = c.REPLAY_OF
        if self.stamps is None:
            return [
                [*copy, (c.ORIGIN, origin), count_of(n), (of, where.encode()), run]
                for copy, origin, n, where in zip(
                    self.headers, self.origin_bytes, self.replay_counts, dead_letters, strict=True
                )
            ]
        stamp_name = c.ORIGIN_TIMESTAMP
        return [
            [*copy, (c.ORIGIN, origin), (stamp_name, stamp), count_of(n), (of, where.encode()), run]
            for copy, origin, stamp, n, where in zip(
                self.headers, self.origin_bytes, self.stamps, self.replay_counts, dead_letters,
                strict=True,
            )
        ]  # fmt: skip


def uniform_lineage(headers: Sequence[Sequence[Header]]) -> Lineage | None:
    """The `Lineage` of a batch of dead letters with the same header names in the same order,
    each one `fast_row` accepts, whose origins and origin timestamps `build_replay` keeps as
    they are; None for any other batch."""
    layout = _layout(headers)
    if layout is None:
        return None
    names, columns = layout
    if not _REQUIRED.issubset(names) or not names[-1].startswith(c.PREFIX):
        return None
    last = {name: at for at, name in enumerate(names)}  # a repeated name: its last wins

    def column(name: str) -> list[bytes]:  # a None value fails a check below
        return list(map(_VALUE, columns[last[name]]))

    try:
        version, digest = column(c.VERSION), column(c.ERROR_FINGERPRINT)
        if version.count(b"1") != len(version) or set(map(len, digest)) != {16}:
            return None
        if b"".join(digest).translate(None, _HEX):
            return None
        if not _CATEGORY_BYTES.issuperset(column(c.ERROR_CATEGORY)):
            return None  # also what is not UTF-8 (no category's bytes)
        for name in _CHECKED_NUMBERS:
            _digits(column(name))
        failed_at, replay_counts = _numbers(column(c.FAILED_AT)), _numbers(column(c.REPLAY_COUNT))
        for name in _CHECKED_TEXTS:
            _utf8(column(name))
        for name in _OPTIONAL_TEXTS:
            if name in last:
                _utf8([raw for raw in column(name) if raw is not None])
        pipelines, origin_texts, sources = (_texts(column(name)) for name in _READ_TEXTS)
    except (TypeError, ValueError, UnicodeDecodeError):  # a None value, bad digits or UTF-8
        return None
    origins = column(c.ORIGIN)
    stamps = column(c.ORIGIN_TIMESTAMP) if c.ORIGIN_TIMESTAMP in last else None
    if not _every(_ALL_COORDINATES, origins) or not (
        stamps is None or _every(_ALL_CANONICAL, stamps)
    ):
        return None
    return Lineage(
        fingerprints=list(map(_DECODE, digest)),
        failed_at=failed_at,
        replay_counts=replay_counts,
        pipelines=pipelines,
        origins=origin_texts,
        source_topics=sources,
        headers=_originals(headers, names),
        origin_bytes=origins,
        stamps=stamps,
    )


def _every(lines: re.Pattern[bytes], column: Sequence[bytes | None]) -> bool:
    """Whether every value of the column is one line of `lines`: one match over the column
    joined by newlines, which must also count one line per value (a value holding a newline
    is none)."""
    if None in column:
        return False
    joined = b"\n".join(cast(Sequence[bytes], column))
    return joined.count(b"\n") == len(column) - 1 and lines.fullmatch(joined) is not None


def _layout(
    headers: Sequence[Sequence[Header]],
) -> tuple[list[str], list[tuple[Header, ...]]] | None:
    """The header names every record carries, in order, and the headers at each position;
    None when the records' names differ. Names are compared with the first record's
    (`list.count`), not hashed: each record's names are fresh strings."""
    if not headers or len(set(map(len, headers))) != 1:
        return None
    columns = list(zip(*headers, strict=True))
    names = []
    for position in columns:
        found = list(map(_NAME, position))
        if found.count(found[0]) != len(found):
            return None
        names.append(found[0])
    return names, columns


def _digits(column: list[bytes]) -> None:
    """ValueError (or TypeError, for a None) unless every value is a decimal number of 1 to 20
    ASCII digits, as `fast_row` reads them."""
    lengths = set(map(len, column))
    if min(lengths) < 1 or max(lengths) > 20 or not b"".join(column).isdigit():
        raise ValueError("not a number")


def _numbers(column: list[bytes]) -> list[int]:
    """The column's numbers (`_digits` checks them)."""
    _digits(column)
    return list(map(int, column))


def _utf8(column: list[bytes]) -> None:
    """UnicodeDecodeError (or TypeError, for a None) unless every value is UTF-8: one decode of
    the column joined by newlines, which decodes exactly when each value does (a newline ends
    any sequence a value leaves open)."""
    b"\n".join(column).decode()


def _texts(column: list[bytes]) -> list[str]:
    """The column's texts (`_utf8` checks them)."""
    _utf8(column)
    return list(map(_DECODE, column))


def _originals(headers: Sequence[Sequence[Header]], names: list[str]) -> list[list[Header]]:
    """Each record's headers that are not `dlq.` ones, in order: a slice when they all come
    before the first `dlq.` one, as the worker writes them."""
    kept = [at for at, name in enumerate(names) if not name.startswith(c.PREFIX)]
    if kept == list(range(len(kept))):
        count = len(kept)
        return [list(items[:count]) for items in headers]
    pick = itemgetter(*kept) if len(kept) > 1 else None
    if pick is None:
        return [[items[kept[0]]] for items in headers] if kept else [[] for _ in headers]
    return [list(pick(items)) for items in headers]


def check_coordinates(topic: str, run_id: str) -> bool:
    """Whether `topic/partition/offset` is valid coordinates for any numbers, and a run id is
    given: what `build_replay` checks of every copy (else it raises, on the general path)."""
    try:
        parse_coordinates(f"{topic}/0/0")
    except ValueError:
        return False
    return bool(run_id)
