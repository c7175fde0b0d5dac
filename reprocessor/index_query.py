"""Answers from the DLQ index: depth and statistics, groups, and selections (coordinates, or the
dead letters themselves with their payloads fetched by offset).

Without a `--where` (or a time window only), `stats` and `group` are SQL aggregates over indexed
columns. A `--where` on header fields is evaluated by the same `selection` code as a scan, over
dead letters rebuilt from index rows (no payload read); one that needs a payload, the key or the
stack trace (`value.*`, `key`, `stacktrace`) or `--tail` cannot be answered from the
index: `answerable` says so and the caller scans the topic instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar, cast

from pipeline.core.ledger_codec import decode_ledger_entry
from pipeline.kafka import follow
from pipeline.kafka.follow import KafkaConf
from reprocessor.deadletters import DeadLetter, ReplayState, from_record
from reprocessor.grouping import NONE_KEY, GroupRow
from reprocessor.index import DlqIndex
from reprocessor.index_rows import COLUMNS, STATE_CODES, Row, RowView, row_id
from reprocessor.ledger import UNRESOLVED, Decision
from reprocessor.selection import Selectable
from reprocessor.stats import Item, TopicStats, Window

T = TypeVar("T")
UNINDEXED_FIELDS = ("key", "stacktrace", "trace")
GROUP_COLUMNS = {
    "fingerprint": "fingerprint",
    "category": "category",
    "type": "error_type",
    "source.topic": "source_topic",
    "pipeline": "pipeline",
    "dialect": "dialect",
}


def answerable(window: Window, by: str | None = None) -> bool:
    """True when the index alone can select (and group `by`) what `window` asks for."""
    terms = window.selection.terms
    header_only = not any(
        t.field in UNINDEXED_FIELDS or t.field.startswith("value.") for t in terms
    )
    return header_only and window.tail is None and (by is None or by in GROUP_COLUMNS)


@dataclass(frozen=True, slots=True)
class Depth:
    """A DLQ's depth as the exporter reports it. `records`, `replayed`, `discarded` and
    `expired_unresolved` only grow (rows deleted by retention are kept as counts), except when
    the index is reset; `by_cause` is every fingerprint's unresolved count, largest first."""

    records: int
    unresolved: int
    replayed: int
    discarded: int
    expired_unresolved: int
    unresolved_by_category: dict[str, int]
    by_cause: list[tuple[str, int]]
    oldest_unresolved_ms: int | None
    oldest_unresolved_ts_ms: int | None


Cause = tuple[int, str, str | None, str, int, int, int, int]
"""(state, fingerprint, category, dialect, count, first and last seen, earliest DLQ timestamp):
the dead letters of one state, fingerprint, category and dialect."""


def causes(index: DlqIndex, window: Window | None = None) -> list[Cause]:
    """The dead letters by state, fingerprint, category and dialect (in a time window): one
    pass over the index's one secondary index, which holds every column read here."""
    where, params = _window_sql(window or Window())
    rows = index.db.execute(
        "SELECT state, fingerprint, category, dialect, count(*), min(seen_ms), max(seen_ms), "
        f"min(ts) FROM dl {where} GROUP BY state, fingerprint, category, dialect",
        params,
    )
    return rows.fetchall()


def _category(category: str | None, dialect: str) -> str:
    """A dead letter's category as `stats` counts it: foreign dialects as `foreign:<dialect>`."""
    return f"foreign:{dialect}" if category is None else category


def depth(index: DlqIndex) -> Depth:
    gone = index.counters()
    live, by_category, by_cause = [0, 0, 0], dict[str, int](), dict[str, int]()
    oldest: int | None = None
    oldest_ts: int | None = None
    for state, digest, category, dialect, count, first, _last, first_ts in causes(index):
        live[state] += count
        if state == 0:
            name = _category(category, dialect)
            by_category[name] = by_category.get(name, 0) + count
            by_cause[digest] = by_cause.get(digest, 0) + count
            oldest = first if oldest is None else min(oldest, first)
            oldest_ts = first_ts if oldest_ts is None else min(oldest_ts, first_ts)
    return Depth(
        records=sum(live) + gone["gone_records"],
        unresolved=live[0],
        replayed=live[1] + gone["gone_replayed"],
        discarded=live[2] + gone["gone_discarded"],
        expired_unresolved=gone["gone_unresolved"],
        unresolved_by_category=by_category,
        by_cause=sorted(by_cause.items(), key=lambda kv: (-kv[1], kv[0])),
        oldest_unresolved_ms=oldest,
        oldest_unresolved_ts_ms=oldest_ts,
    )


def topic_stats(index: DlqIndex, window: Window, limit: int | None) -> TopicStats:
    """`dlq stats` of the index's topic: SQL when only a time window selects, else the
    selection evaluated row by row."""
    found = TopicStats(index.topic)
    if window.selection.terms or window.only is not None or limit is not None:
        for dl, state in letters(index, window, limit):
            found.add(Item(dl, Decision(state)))
        return found
    counted = causes(index, window)
    for code, _, category, dialect, count, first, _, _ in counted:
        name = _category(category, dialect)
        total, open_ = found.by_category.get(name, (0, 0))
        found.total += count
        if code == 0:
            found.unresolved += count
            found.by_category[name] = (total + count, open_ + count)
            oldest = found.oldest_unresolved_ms
            found.oldest_unresolved_ms = first if oldest is None else min(oldest, first)
        else:
            found.by_category[name] = (total + count, open_)
            if code == 1:
                found.replayed += count
            else:
                found.discarded += count
    found.by_category = dict(sorted(found.by_category.items(), key=lambda kv: -kv[1][0]))
    timed = window.since_ms is not None or window.until_ms is not None
    found.cause_rows = (
        group_rows(index, "fingerprint", window) if timed else cause_rows(index, counted)
    )
    return found


def group_rows(
    index: DlqIndex, by: str, window: Window, limit: int | None = None
) -> list[GroupRow] | None:
    """`dlq group` rows by a header column in SQL; None when the selection or a limit needs
    row-by-row evaluation (the caller feeds `letters` to a Grouper)."""
    if window.selection.terms or window.only is not None or limit is not None:
        return None
    if by == "fingerprint" and window.since_ms is None and window.until_ms is None:
        return cause_rows(index)
    column = GROUP_COLUMNS[by]
    where, params = _window_sql(window)
    rows = index.db.execute(
        f"SELECT {column}, count(*), min(seen_ms), max(seen_ms), sum(state=0), sum(state=1), "
        "sum(state=2), min(coalesce(category, '')), max(coalesce(category, '')), "
        "min(coalesce(error_type, '')), max(coalesce(error_type, '')), "
        "count(category), count(error_type), min(id) "
        f"FROM dl {where} GROUP BY {column}",
        params,
    ).fetchall()
    out = [_group_row(index, row) for row in rows]
    out.sort(key=lambda row: (-row.count, row.key))
    return out


def cause_rows(index: DlqIndex, counted: list[Cause] | None = None) -> list[GroupRow]:
    """Groups by fingerprint from `causes` (read again when not given). A fingerprint covers
    the category and the error type, so the example row gives both; the example is the group's
    earliest failure, found in the index by its state, fingerprint, category and dialect."""
    found: dict[str, list[int]] = {}  # count, first, last, unresolved, replayed, discarded
    earliest: dict[str, Cause] = {}
    for cause in causes(index) if counted is None else counted:
        state, digest, _, _, count, first, last, _ = cause
        group = found.setdefault(digest, [0, first, last, 0, 0, 0])
        group[0] += count
        if first <= group[1]:
            group[1], earliest[digest] = first, cause
        group[2] = max(group[2], last)
        group[3 + state] += count
    out = []
    for digest, (count, first, last, unresolved, replayed, discarded) in found.items():
        state, _, category, dialect = earliest[digest][:4]
        example = index.db.execute(
            "SELECT message, partition, offset, category, error_type FROM dl WHERE state=? "
            "AND fingerprint=? AND category IS ? AND dialect=? ORDER BY seen_ms LIMIT 1",
            (state, digest, category, dialect),
        ).fetchone()
        out.append(
            GroupRow(
                key=digest,
                count=count,
                first_seen_ms=first,
                last_seen_ms=last,
                example=example[0] or "",
                example_coordinates=f"{index.topic}/{example[1]}/{example[2]}",
                category=example[3],
                error_type=example[4],
                replayed=replayed,
                discarded=discarded,
                unresolved=unresolved,
            )
        )
    out.sort(key=lambda row: (-row.count, row.key))
    return out


def _group_row(index: DlqIndex, row: Sequence[object]) -> GroupRow:
    key, count, first, last, unresolved, replayed, discarded = row[:7]
    cat_lo, cat_hi, type_lo, type_hi, cats, types, first_at = row[7:]
    assert isinstance(count, int) and isinstance(first_at, int)
    example = index.db.execute(
        "SELECT message, partition, offset FROM dl WHERE id=?", (first_at,)
    ).fetchone()
    partition, offset = example[1], example[2]
    same_category = cat_lo == cat_hi and cats in (0, count)
    same_type = type_lo == type_hi and types in (0, count)
    return GroupRow(
        key=NONE_KEY if key is None else str(key),
        count=count,
        first_seen_ms=int(str(first)),
        last_seen_ms=int(str(last)),
        example=str(example[0] or ""),
        example_coordinates=f"{index.topic}/{partition}/{offset}",
        category=str(cat_lo) if same_category and cats else None,
        error_type=str(type_lo) if same_type and types else None,
        replayed=int(str(replayed)),
        discarded=int(str(discarded)),
        unresolved=int(str(unresolved)),
    )


def selected(
    index: DlqIndex, window: Window, limit: int | None = None, partition: int | None = None
) -> Iterator[tuple[RowView, ReplayState]]:
    """The rows the window selects (of one partition, if given), in partition and offset
    order, at most `limit`, each seen as the selection reads it (no DeadLetter is made); the
    state is the index's."""
    where, params = _window_sql(window, partition)
    sql = f"SELECT {', '.join(COLUMNS)}, state FROM dl {where} ORDER BY id"
    selection, only, found, topic = window.selection, window.only, 0, index.topic
    for row in index.rows(sql, params):
        view = RowView(topic, cast(Row, row[:-1]))
        state = STATE_CODES[cast(int, row[-1])]
        if only is not None and view.coordinates not in only:
            continue
        if selection.matches(view, state):
            yield view, state
            found += 1
            if limit is not None and found >= limit:
                return


PlanRow = tuple[int, int, int, str, str | None, str | None, str | None, int, str]
"""(partition, offset, seen_ms, fingerprint, pipeline, origin, source_topic, replay_count,
dialect): what planning a replay reads of a row (`unresolved`)."""
_PLAN_COLUMNS = (
    "partition", "offset", "seen_ms", "fingerprint", "pipeline", "origin", "source_topic",
    "replay_count", "dialect",
)  # fmt: skip
TARGET_COLUMNS = frozenset({"pipeline", "origin", "source_topic", "dialect"})
"""The `PlanRow` columns a target may read (`unresolved`'s `wanted`); the others it always reads."""
_UNRESOLVED = next(code for code, state in STATE_CODES.items() if state is ReplayState.UNRESOLVED)


def selects_by_time_only(window: Window) -> bool:
    """Whether `window` selects by nothing but the failure time (no `--where`, no listed
    coordinates) and the index can answer it (`answerable`: no `--tail`): then `unresolved`
    answers what `selected` would, without a view per row."""
    return window.selection.selects_all and window.only is None and answerable(window)


def unresolved(
    index: DlqIndex,
    window: Window,
    limit: int | None = None,
    wanted: frozenset[str] = TARGET_COLUMNS,
) -> Iterator[PlanRow]:
    """The unresolved rows `window` selects (`selects_by_time_only`), in partition and offset
    order, at most `limit`: the rows `selected` yields in the state UNRESOLVED, reading only
    the columns a plan needs (a fifth of the row), as plain tuples. A replay plans from these:
    `selected` spent most of a plan's time building whole rows and their views. Of the
    `TARGET_COLUMNS`, those not `wanted` are None (each text read costs a string per row:
    the 9 columns took twice the time of 4 over 100,000 rows)."""
    names = (n if n in wanted or n not in TARGET_COLUMNS else f"NULL AS {n}" for n in _PLAN_COLUMNS)
    where, params = _window_sql(window)
    # `+state`: no use of an index on state, whose order would need a sort by id
    unresolved_only = f"+state = {_UNRESOLVED}"
    clause = f"{where} AND {unresolved_only}" if where else f"WHERE {unresolved_only}"
    sql = f"SELECT {', '.join(names)} FROM dl {clause} ORDER BY id"
    if limit is not None:
        sql, params = f"{sql} LIMIT ?", (*params, limit)
    return cast(Iterator[PlanRow], index.rows(sql, params))


def letters(
    index: DlqIndex, window: Window, limit: int | None = None
) -> Iterator[tuple[DeadLetter, ReplayState]]:
    """The selected dead letters rebuilt from index rows (no payload), in partition and offset
    order, at most `limit`; the state is the index's."""
    for view, state in selected(index, window, limit):
        yield view.letter(), state


def select(index: DlqIndex, window: Window, limit: int | None = None) -> Iterator[str]:
    """The coordinates (`topic/partition/offset`) the window selects, in partition and offset
    order: what a plan stores."""
    for dl, _ in letters(index, window, limit):
        yield dl.coordinates


def items(
    index: DlqIndex, conf: KafkaConf, window: Window, limit: int | None = None
) -> Iterator[Item]:
    """The selected dead letters in full: payloads fetched by offset with one consumer, a chunk
    at a time, and the deciding ledger entry from the index."""
    with follow.Fetcher(conf, index.topic) as fetcher:
        for chunk in chunks(letters(index, window, limit)):
            yield from fetch(index, fetcher, chunk)


def chunks(found: Iterator[T], size: int = 500) -> Iterator[list[T]]:
    """`found` in lists of at most `size`, none empty."""
    while True:
        chunk = list(islice(found, size))
        if chunk:
            yield chunk
        if len(chunk) < size:
            return


def fetch(
    index: DlqIndex, fetcher: follow.Fetcher, chosen: Sequence[tuple[DeadLetter, ReplayState]]
) -> Iterator[Item]:
    """The records at the chosen dead letters' coordinates, read by offset, as Items (a dead
    letter deleted since it was indexed is left out)."""
    states = {(dl.partition, dl.offset): state for dl, state in chosen}
    for consumed in fetcher.consumed(states):
        r = consumed.record
        dl = from_record(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
        state = states[(r.partition, r.offset)]
        yield Item(dl, decision(index, dl, state), None, consumed.tstype)


def decision(index: DlqIndex, dl: Selectable, state: ReplayState) -> Decision:
    """The ledger's decision on an indexed dead letter in `state`: its entry read from the
    index when it is decided."""
    if state is ReplayState.UNRESOLVED:
        return UNRESOLVED
    row = index.db.execute(
        "SELECT entry FROM ledger WHERE id=?", (row_id(dl.partition, dl.offset),)
    ).fetchone()
    return Decision(state, None if row is None else decode_ledger_entry(bytes(row[0])))


def _window_sql(window: Window, partition: int | None = None) -> tuple[str, tuple[int, ...]]:
    clauses, params = [], []
    if partition is not None:
        clauses.append("id BETWEEN ? AND ?")
        params += [row_id(partition, 0), row_id(partition + 1, 0) - 1]
    if window.since_ms is not None:
        clauses.append("ts >= ?")
        params.append(window.since_ms)
    if window.until_ms is not None:
        clauses.append("ts <= ?")
        params.append(window.until_ms)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
