"""The on-disk incremental index of one DLQ topic and its ledger: the one piece of state that `dlq
stats`, `dlq group`, `dlq inspect --where`, the selection of `fix`/`replay` and `dlq exporter`
share.

One SQLite database (standard library, WAL) per cluster id and DLQ topic, under the state folder:
`<state>/index/<cluster id>/<topic>.v<N>.sqlite3`. It holds one row per dead letter with the header
fields that selection and grouping read (never the payload), one row per ledger decision, and the
read positions. `catch_up` reads only what is new (both topics, `read_committed`, up to their last
stable offsets), one transaction per consumed batch, so memory stays bounded and a crash resumes
from the last stored batch. A large first scan is shared by partition with helper processes
(`index_scan`), each storing its partitions' rows and positions into the same file.

The index is a cache: deleting the file loses nothing, and it is never trusted past what the
broker says. Before each catch-up `index_rows.verdict` compares what it saw with the broker: a
new cluster id or topic id (deleted and recreated) resets it; rows below a partition's low
watermark were deleted by retention (their unresolved ones are counted as expired, then dropped);
a ledger index older than the ledger topic's `delete.retention.ms` (compaction may have dropped a
tombstone it never saw) is re-read from the start. The index selects; the ledger decides: a replay
still reads the ledger to its end inside its fenced transaction before writing.

A dead letter's `state` (0 unresolved, 1 replayed, 2 discarded) is kept on its row: a ledger
entry decides it only when its `failed_at` and fingerprint are the dead letter's
(`ledger_codec.is_stale`), whichever of the two was indexed first.
"""

from __future__ import annotations

import gc
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from pipeline.core.contract import ledger_topic
from pipeline.errors import ConfigError
from pipeline.kafka.follow import Cluster, Fetched, Follower, KafkaConf, TopicMeta
from reprocessor import index_scan
from reprocessor.index_ledger import LedgerRow, ledger_rows
from reprocessor.index_rows import (
    COLUMNS,
    Observed,
    Row,
    Seen,
    Verdict,
    dead_letter_row,
    fast_row,
    fast_rows,
    row_id,
    verdict,
)
from reprocessor.ledger_guard import no_such_topic

log = logging.getLogger("lazarus.dlq.index")
SCHEMA_VERSION = "2"
T = TypeVar("T")
_KEY, _VALUE = itemgetter(3), itemgetter(4)


class Progress(Protocol):
    """What a catch-up reports to (`render.Bar`): `expect(total)` once it knows how many
    offsets it will read (an upper bound: markers take offsets), then counts of records read."""

    def __call__(self, count: int) -> None: ...
    def expect(self, total: int) -> None: ...


_DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
    kind TEXT, partition INTEGER, next_offset INTEGER, low INTEGER,
    PRIMARY KEY (kind, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dl (
    id INTEGER PRIMARY KEY, {", ".join(COLUMNS[1:])}, state INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY, partition INTEGER, offset INTEGER, action INTEGER,
    failed_at INTEGER, fingerprint TEXT, entry BLOB);
"""
_INDEXES = {"dl_cause": "dl (state, fingerprint, category, dialect, seen_ms, ts)"}
"""The one secondary index: every count, cause and age `stats`, `group` and the exporter read
without a selection is one pass over it (`index_query.causes`). One, not three: a decision
moves one entry of it instead of three (the ledger catch-up's largest cost), and a first scan
sorts one index at its end."""
_OLD_INDEXES = ("dl_state_category", "dl_state_fingerprint", "dl_state_seen")
"""The three secondary indexes of the index's first form, dropped when an index file that has
them is opened (the rows stay: nothing is read again)."""
_CREATE_INDEXES = "".join(f"DROP INDEX IF EXISTS {n};\n" for n in _OLD_INDEXES) + "".join(
    f"CREATE INDEX IF NOT EXISTS {n} ON {on};\n" for n, on in _INDEXES.items()
)
BULK_ROWS = 50_000
"""A first scan of more records than this builds the secondary indexes once at its end (one
sort) rather than row by row, which doubled what SQLite did per row. Until then the table has
none: a crash in between leaves it without, and the next open creates them."""
_NULL_IF_0 = ("schema", "policy_rule")
"""Columns whose value 0 is stored as NULL (`fast_rows`' `absent`): 0 is no text they hold."""
_VALUES = "(" + ", ".join("NULLIF(?, 0)" if c in _NULL_IF_0 else "?" for c in COLUMNS) + ")"
_INSERT = f"INSERT OR IGNORE INTO dl ({', '.join(COLUMNS)}) VALUES {_VALUES}"
ROWS_PER_INSERT = 256
"""Rows per INSERT statement (fewer when SQLite takes fewer parameters): SQLite releases the GIL
once per statement, so a writer thread that inserted row by row took the GIL back once per row,
each time waiting for the reading thread to yield it, and the two threads ran one after the
other."""


def _insert_many(rows: int) -> str:
    return _INSERT + (", " + _VALUES) * (rows - 1)


_DECIDE_NEW = """
UPDATE dl SET state = l.action FROM ledger AS l
WHERE dl.id BETWEEN ? AND ? AND l.id = dl.id AND l.failed_at = dl.seen_ms
  AND l.fingerprint = dl.fingerprint
"""
_DECIDE = """
UPDATE dl SET state = CASE WHEN seen_ms = ? AND fingerprint = ? THEN ? ELSE 0 END WHERE id = ?
"""
_COUNTERS = ("gone_records", "gone_unresolved", "gone_replayed", "gone_discarded")


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What one catch-up did: records indexed from the DLQ and the ledger, dead letters found
    deleted by retention (and how many of them were unresolved), and why it reset, if it did."""

    records: int
    ledger_records: int
    expired: int
    expired_unresolved: int
    reset: str | None
    reset_ledger: str | None


def corrupt(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged or no database at all (a truncated copy, a disk
    error): the index is then removed and rebuilt, never trusted."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def remove_files(path: Path, why: str) -> None:
    """Remove an index file and its WAL, shared-memory and seal files, saying why on the log."""
    log.warning("the DLQ index %s is rebuilt: %s", path, why)
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}{SEAL}"):
        (path.parent / name).unlink(missing_ok=True)


SEAL = "-seal"
"""`<index>-seal`: the size, modification time and inode of the index file and of its WAL (when
one is left: another connection still has the file open) as a `dlq` left them last, at its
close, or the exporter after each round (`DlqIndex.seal`). An index opened as it was sealed is
trusted as it is; any other (a file another process, version or tool wrote since, one whose
last writer crashed) is checked first with `PRAGMA quick_check(1)`: damage in the middle of the
file, which SQLite does not see at open, would otherwise answer wrong (a count read from an
intact secondary index, rows of a damaged table page missing) or fail a query half-way. The
check reads the whole file once: some 40 ms for 100,000 rows (24 MB) on a quiet machine."""


def _stamp(path: Path) -> str | None:
    """The size, modification time and inode of the file and of its WAL ("-" when there is
    none); None when the file cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    try:
        wal = (path.parent / f"{path.name}-wal").stat()
        wal_stamp = f"{wal.st_size} {wal.st_mtime_ns} {wal.st_ino}"
    except OSError:
        wal_stamp = "-"
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino} {wal_stamp}"


def sealed(path: Path) -> bool:
    """Whether the index file is as a `dlq` closed it last (see SEAL)."""
    stamp = _stamp(path)
    try:
        seal = (path.parent / f"{path.name}{SEAL}").read_text(encoding="ascii")
    except (OSError, ValueError):
        return False
    return stamp is not None and seal == stamp


def _reseal(path: Path, stamp: str | None) -> None:
    """Write the seal of the file as it is now, or remove it (`stamp` None: the file is being
    written, or cannot be read). A seal that cannot be written only costs the next open a
    check."""
    seal = path.parent / f"{path.name}{SEAL}"
    with suppress(OSError):
        if stamp is None:
            seal.unlink(missing_ok=True)
        else:
            seal.write_text(stamp, encoding="ascii")


class _Damaged(sqlite3.DatabaseError):
    """What `damage` found, raised as SQLite's own errors of a damaged file are."""


def damage(db: sqlite3.Connection) -> str | None:
    """What `PRAGMA quick_check(1)` finds wrong (its first line), None when nothing."""
    (first,) = db.execute("PRAGMA quick_check(1)").fetchone()
    return None if first == "ok" else str(first).strip().splitlines()[-1]


def index_path(folder: Path, cluster_id: str, topic: str) -> Path:
    """Where the index lives; a new SCHEMA_VERSION starts a new file (the old one is a cache)."""
    return folder / "index" / cluster_id / f"{topic}.v{SCHEMA_VERSION}.sqlite3"


class DlqIndex:
    """The index of one DLQ topic of one cluster. Not thread-safe: one per thread (SQLite's WAL
    lets other connections, other processes included, read and write the same file)."""

    def __init__(self, path: Path, topic: str, cluster_id: str, *, schema: bool = True) -> None:
        """Open (and create) the index at `path`; `schema` False leaves its tables and indexes
        as they are (a helper of a first scan, `index_scan`, while the secondary index is
        dropped)."""
        self.path, self.topic, self.cluster_id = path, topic, cluster_id
        self.seals = schema  # a helper of a first scan neither checks nor seals (`SEAL`)
        path.parent.mkdir(parents=True, exist_ok=True)
        trusted = not schema or not path.exists() or sealed(path)  # a new file: nothing to check
        try:
            limit = self._connect(schema)
            found = None if trusted else damage(self.db)
            if found is not None:
                raise _Damaged(f"quick_check: {found}")
        except sqlite3.DatabaseError as exc:
            if not (schema and (corrupt(exc) or isinstance(exc, _Damaged))):
                raise ConfigError(f"cannot open the DLQ index {path}: {exc}") from exc
            if hasattr(self, "db"):
                self.db.close()
            remove_files(path, f"it is damaged ({exc})")  # a cache: rebuilt from the topic
            try:
                limit = self._connect(schema)
            except sqlite3.Error as again:
                raise ConfigError(f"cannot open the DLQ index {path}: {again}") from again
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the DLQ index {path}: {exc}") from exc
        if schema:
            _reseal(path, None)  # written from now on: sealed again when closed
        self._per_insert = max(1, min(ROWS_PER_INSERT, limit // len(COLUMNS)))
        self._insert_rows = _insert_many(self._per_insert)

    def _connect(self, schema: bool) -> int:
        """Connect to the file (creating it and, with `schema`, its tables); SQLite's limit on
        the parameters of one statement."""
        # one thread at a time: the catch-up's writer thread, then the caller's again
        self.db = sqlite3.connect(
            self.path, timeout=60, isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-16384")  # 16 MiB, whatever the DLQ's size
        self.db.execute("PRAGMA wal_autocheckpoint=8192")  # 32 MiB: fewer, larger checkpoints
        if schema:
            self.db.executescript(_DDL + _CREATE_INDEXES)
        return self.db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    @classmethod
    def open(cls, cluster: Cluster, topic: str, folder: Path) -> DlqIndex:
        """The index of `topic`, created when new; ConfigError, and no file or folder left
        behind, when a topic with no index yet does not exist (a mistyped --topic). An index
        that exists is opened without asking: `catch_up` checks the topic anyway."""
        cluster_id = cluster.cluster_id()
        path = index_path(folder, cluster_id, topic)
        if not path.exists() and cluster.topics([topic]).get(topic) is None:
            raise no_such_topic(cluster, topic)
        return cls(path, topic, cluster_id)

    def close(self) -> None:
        """Close the connection and seal the file as it is left (`SEAL`)."""
        self.db.close()
        if self.seals:
            self.seal()

    def seal(self) -> None:
        """Seal the file as it is now, between two writes of this process (`SEAL`): the next
        `dlq` that finds it so opens it without a check."""
        _reseal(self.path, _stamp(self.path))

    def __enter__(self) -> DlqIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- catching up -------------------------------------------------------------------------

    def catch_up(self, cluster: Cluster, progress: Progress | None = None) -> CatchUp:
        """Read what is new in the DLQ and its ledger; ConfigError when the DLQ does not exist.
        Raises RuntimeFailure when the cluster cannot be reached."""
        names = (self.topic, ledger_topic(self.topic))
        metas = cluster.topics(names)
        dlq = metas.get(self.topic)
        if dlq is None:
            raise no_such_topic(cluster, self.topic)
        ledger = metas.get(names[1])
        marks = cluster.marks(self.topic, dlq.partitions)
        now = Observed(
            cluster_id=self.cluster_id,
            topic_id=dlq.topic_id,
            lows={p: m.low for p, m in marks.items()},
            ledger_topic_id=None if ledger is None else ledger.topic_id,
            ledger_delete_retention_ms=None if ledger is None else ledger.delete_retention_ms,
            now_ms=int(time.time() * 1000),
        )
        plan = verdict(self._seen(), now)
        self.reset(plan)
        ledger_read = self._follow_ledger(cluster, ledger, now.now_ms)
        expired, expired_unresolved = self.expire(plan, now)
        read = self._follow_dlq(cluster.conf, {p: m.end for p, m in marks.items()}, progress)
        with self._transaction():
            self._put_meta({"topic_id": dlq.topic_id, "cluster_id": self.cluster_id})
        return CatchUp(
            read, ledger_read, expired, expired_unresolved, plan.reset, plan.reset_ledger
        )

    def _seen(self) -> Seen:
        meta = self.meta()
        rows = self.db.execute("SELECT partition, next_offset, low FROM positions WHERE kind='dlq'")
        lows, positions = {}, {}
        for partition, next_offset, low in rows:
            positions[partition], lows[partition] = next_offset, low
        return Seen(
            cluster_id=_opt_str(meta.get("cluster_id")),
            topic_id=_opt_str(meta.get("topic_id")),
            lows=lows,
            positions=positions,
            ledger_topic_id=_opt_str(meta.get("ledger_topic_id")),
            ledger_synced_ms=_opt_int(meta.get("ledger_synced_ms")),
        )

    def reset(self, plan: Verdict) -> None:
        """Drop what the verdict says can no longer be trusted, in one transaction."""
        with self._transaction():
            if plan.reset:
                log.warning("index of %s reset: %s", self.topic, plan.reset)
                for table in ("dl", "ledger", "positions", "meta"):
                    self.db.execute(f"DELETE FROM {table}")
            if plan.reset_ledger:
                log.warning("ledger index of %s re-read: %s", self.topic, plan.reset_ledger)
                self.db.execute("DELETE FROM ledger")
                self.db.execute("DELETE FROM positions WHERE kind='ledger'")
                self.db.execute("UPDATE dl SET state = 0 WHERE state != 0")

    def expire(self, plan: Verdict, now: Observed) -> tuple[int, int]:
        """Drop the rows below each partition's low watermark, keeping them as counts by state
        (after the ledger was read, so a late decision still counts), and move read positions
        past what was deleted unseen; (rows expired, of which unresolved)."""
        gone = dict.fromkeys(_COUNTERS, 0)
        with self._transaction():
            for partition, low in plan.expire.items():
                span = (row_id(partition, 0), row_id(partition, low))
                counts = self.db.execute(
                    "SELECT state, count(*) FROM dl WHERE id >= ? AND id < ? GROUP BY state", span
                ).fetchall()
                by_state = dict(counts)
                gone["gone_records"] += sum(by_state.values())
                gone["gone_unresolved"] += by_state.get(0, 0)
                gone["gone_replayed"] += by_state.get(1, 0)
                gone["gone_discarded"] += by_state.get(2, 0)
                self.db.execute("DELETE FROM dl WHERE id >= ? AND id < ?", span)
            self._add_counters(gone)
            for partition, low in now.lows.items():
                start = plan.skip_to.get(partition)
                self.db.execute(
                    "INSERT INTO positions VALUES ('dlq', ?, ?, ?) ON CONFLICT DO UPDATE SET "
                    "low = excluded.low, next_offset = max(next_offset, excluded.next_offset)",
                    (partition, low if start is None else start, low),
                )
        if gone["gone_unresolved"]:
            log.warning(
                "%d unresolved dead letters of %s were deleted by retention",
                gone["gone_unresolved"],
                self.topic,
            )
        return gone["gone_records"], gone["gone_unresolved"]

    def _follow_dlq(self, conf: KafkaConf, ends: dict[int, int], progress: Progress | None) -> int:
        start = self._positions("dlq")
        todo = {p: end - start.get(p, 0) for p, end in ends.items() if end > start.get(p, 0)}
        total = sum(todo.values())
        if not total:
            return 0
        bulk = total > BULK_ROWS and self.db.execute("SELECT 1 FROM dl LIMIT 1").fetchone() is None
        if progress is not None:
            progress.expect(total)
        groups = index_scan.split(todo, index_scan.workers() if bulk else 1)
        others = [{p: (start.get(p, 0), ends[p]) for p in group} for group in groups[1:]]
        with _Bulk(self.db, bulk), index_scan.Helpers(self, conf, others) as helpers:
            mine = {p: start.get(p, 0) for p in groups[0]}
            count = helpers.counter(progress)
            read = self.scan(conf, mine, {p: ends[p] for p in groups[0]}, count, len(groups) > 1)
            return read + helpers.wait(progress)

    def scan(
        self,
        conf: KafkaConf,
        start: dict[int, int],
        ends: dict[int, int],
        progress: Callable[[int], None] | None = None,
        shared: bool = False,
    ) -> int:
        """Read the DLQ's partitions of `ends` from `start` to their ends and store their rows
        and read positions, a transaction per batch (what waits goes in one); the records read.
        Also what a helper process of a first scan runs (`index_scan`); `shared` when other
        processes write the index meanwhile (they take turns: `_Turn`)."""
        read = 0
        follower = Follower(conf, self.topic, start, ends)
        writer = _Writer(self, "dlq", self.store_rows, shared=shared)
        with _scanning(), follower, writer:
            for batch, positions in follower.batches():
                writer.put(self.rows_of(batch), positions)
                read += len(batch)
                if progress is not None:
                    progress(len(batch))
        return read

    def rows_of(self, batch: list[Fetched]) -> list[Row]:
        """The rows of a batch: column by column when every record is a well-formed Lazarus
        dead letter (`fast_rows`), else record by record."""
        if batch:
            partitions, offsets, stamps, _keys, values, lists = zip(*batch, strict=True)
            if all(lists) and min(stamps) >= 0:
                sizes = [0 if value is None else len(value) for value in values]
                rows = fast_rows(partitions, offsets, stamps, sizes, lists, absent=0)
                if rows is not None:
                    return rows
        topic, rows, fast = self.topic, [], fast_row
        for p, o, ts, _key, value, headers in batch:
            row = fast(p, o, ts if ts >= 0 else 0, value, headers) if headers else None
            rows.append(dead_letter_row(topic, p, o, ts, value, headers) if row is None else row)
        return rows

    def store_letters(self, batch: list[Fetched]) -> None:
        self.store_rows(self.rows_of(batch))

    def store_rows(self, rows: list[Row]) -> None:
        """Insert dead letters (rows already indexed are left alone: another reader of the
        same range counts nothing twice) and decide them from the ledger rows already read."""
        per = self._per_insert
        whole = len(rows) - len(rows) % per
        flat = chain.from_iterable
        many = (list(flat(rows[i : i + per])) for i in range(0, whole, per))
        self.db.executemany(self._insert_rows, many)
        self.db.executemany(_INSERT, rows[whole:])
        if rows and self.db.execute("SELECT 1 FROM ledger LIMIT 1").fetchone():
            spans: dict[int, tuple[int, int]] = {}
            for row in rows:
                low, high = spans.get(row[1], (row[0], row[0]))
                spans[row[1]] = (min(low, row[0]), max(high, row[0]))
            self.db.executemany(_DECIDE_NEW, list(spans.values()))

    def _follow_ledger(self, cluster: Cluster, meta: TopicMeta | None, now_ms: int) -> int:
        if meta is None:
            with self._transaction():
                self._put_meta({"ledger_topic_id": None, "ledger_synced_ms": None})
            return 0
        marks = cluster.marks(meta.name, meta.partitions)
        ends = {p: m.end for p, m in marks.items()}
        start = {p: max(m.low, self._positions("ledger").get(p, 0)) for p, m in marks.items()}
        read = 0
        if any(start[p] < ends[p] for p in ends):
            follower = Follower(cluster.conf, meta.name, start, ends)
            with _scanning(), follower, _Writer(self, "ledger", self.store_decided) as writer:
                for batch, positions in follower.batches():
                    writer.put(self.decisions_of(batch), positions)
                    read += len(batch)
        with self._transaction():
            self._put_meta({"ledger_topic_id": meta.topic_id, "ledger_synced_ms": now_ms})
        return read

    def decisions_of(self, batch: list[Fetched]) -> list[tuple[int, LedgerRow | None]]:
        """The decisions of a batch of ledger records, in order: (row id, row), the row None
        for a tombstone; unreadable records are left out (`index_ledger.ledger_rows`)."""
        return ledger_rows(self.topic, list(map(_KEY, batch)), list(map(_VALUE, batch)))

    def store_decisions(self, batch: list[Fetched]) -> None:
        self.store_decided(self.decisions_of(batch))

    def store_decided(self, decisions: list[tuple[int, LedgerRow | None]]) -> None:
        """Store a batch's decisions and decide their dead letters: a statement per kind of
        change, not per record. Only the last decision of a key counts (each replaces what the
        key's earlier ones did), so the batch's order is kept."""
        last = dict(decisions)
        withdrawn = [(key,) for key, row in last.items() if row is None]
        decided = [row for row in last.values() if row is not None]
        self.db.executemany("DELETE FROM ledger WHERE id=?", withdrawn)
        self.db.executemany("UPDATE dl SET state=0 WHERE id=?", withdrawn)
        self.db.executemany("INSERT OR REPLACE INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?)", decided)
        self.db.executemany(_DECIDE, [(row[4], row[5], row[3], row[0]) for row in decided])

    # -- storage helpers ---------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)

    def _positions(self, kind: str) -> dict[int, int]:
        rows = self.db.execute("SELECT partition, next_offset FROM positions WHERE kind=?", (kind,))
        return dict(rows.fetchall())

    def _store_positions(self, kind: str, positions: dict[int, int]) -> None:
        self.db.executemany(
            "INSERT INTO positions VALUES (?, ?, ?, 0) ON CONFLICT DO UPDATE SET "
            "next_offset = max(next_offset, excluded.next_offset)",
            [(kind, p, o) for p, o in positions.items()],
        )

    def partitions(self) -> list[int]:
        """The DLQ's partitions the index has read positions for."""
        return sorted(self._positions("dlq"))

    def meta(self) -> dict[str, object]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def _put_meta(self, values: dict[str, object]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def _add_counters(self, added: dict[str, int]) -> None:
        for name, count in added.items():
            if count:
                self.db.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT DO UPDATE SET "
                    "value = coalesce(value, 0) + excluded.value",
                    (name, count),
                )

    def counters(self) -> dict[str, int]:
        """Rows deleted by retention so far, by state (see `queries.Depth`)."""
        meta = self.meta()
        return {name: _opt_int(meta.get(name)) or 0 for name in _COUNTERS}

    def rows(self, sql: str, params: Iterable[object] = ()) -> Iterator[tuple[object, ...]]:
        """Run a read query and stream its rows (bounded memory). A caller that stops early
        (`--limit`) may leave this generator to be finalized after the index was closed: its
        cursor then went with the connection, and closing it again is no error."""
        cursor = self.db.execute(sql, tuple(params))
        try:
            while chunk := cursor.fetchmany(1000):
                yield from chunk
        finally:
            with suppress(sqlite3.ProgrammingError):  # "Cannot operate on a closed database"
                cursor.close()


class _Writer(Generic[T]):
    """Stores parsed batches (`store`, then the read positions of `kind`) on a thread of its
    own while the caller reads and parses the next ones: SQLite works without the GIL. At most
    `depth` batches wait (bounded memory); what waits is stored in one transaction, in order;
    leaving the block waits for the last one and re-raises the writer's failure."""

    def __init__(
        self,
        index: DlqIndex,
        kind: str,
        store: Callable[[T], None],
        depth: int = 4,
        *,
        shared: bool = False,
    ) -> None:
        self.index, self.kind, self.store, self.shared = index, kind, store, shared
        self.queue: queue.Queue[tuple[T, dict[int, int]] | None] = queue.Queue(depth)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="index-writer", daemon=True)

    def __enter__(self) -> _Writer[T]:
        self.thread.start()
        return self

    def put(self, rows: T, positions: dict[int, int]) -> None:
        while True:
            if self.failure is not None:
                raise self.failure
            try:
                self.queue.put((rows, positions), timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            items, done = [item], False
            while not done and not self.queue.empty():  # what waits goes in one transaction
                more = self.queue.get()
                if more is None:
                    done = True
                else:
                    items.append(more)
            if self.failure is None:
                self._store(items)
            if done:
                return

    def _store(self, items: list[tuple[T, dict[int, int]]]) -> None:
        try:
            with _Turn(self.index.db) if self.shared else self.index._transaction():
                for rows, positions in items:
                    self.store(rows)
                    self.index._store_positions(self.kind, positions)
        except BaseException as exc:
            self.failure = exc  # the caller raises it at its next put or on leaving

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if kind is None and self.failure is not None:
            raise self.failure


class _Bulk:
    """Without the secondary indexes while a first scan fills the table, then with them again
    (also when it fails: other commands read the table)."""

    def __init__(self, db: sqlite3.Connection, bulk: bool) -> None:
        self.db, self.bulk = db, bulk

    def __enter__(self) -> None:
        if self.bulk:
            self.db.executescript("".join(f"DROP INDEX IF EXISTS {name};" for name in _INDEXES))

    def __exit__(self, *_: object) -> None:
        if self.bulk:
            self.db.executescript(_CREATE_INDEXES)


@contextmanager
def _scanning() -> Iterator[None]:
    """The cyclic garbage collector paused while scanning, then as it was: a scan allocates
    millions of small tuples that hold no cycle, and each counted towards the next collection,
    which walked every object of the process (a third of a cold scan's time); what the scan
    frees, reference counting frees. (A shorter GIL switch interval, tried too, gained nothing
    once rows were inserted 256 at a time: 7.3 s against 7.0 s, medians of 7 interleaved cold
    scans of 300,000 records.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): another process writing the same index
    waits for the lock (busy timeout) instead of failing."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


class _Turn(_Transaction):
    """A transaction of processes that take turns writing one index (a first scan shared with
    helpers): BEGIN IMMEDIATE retried every half millisecond, then a millisecond's pause after
    COMMIT. SQLite's own busy handler sleeps longer and longer (up to 100 ms) between tries,
    while the process holding the lock began its next transaction microseconds after its
    commit: one process kept the lock and the other stalled (measured: the two ran one after
    the other, never together)."""

    def __init__(self, db: sqlite3.Connection, wait_s: float = 60.0) -> None:
        super().__init__(db)
        self.wait_s = wait_s

    def __enter__(self) -> None:
        deadline = time.monotonic() + self.wait_s
        (before,) = self.db.execute("PRAGMA busy_timeout").fetchone()
        self.db.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    super().__enter__()
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                        raise
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.0005)
        finally:
            self.db.execute(f"PRAGMA busy_timeout={int(before)}")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        super().__exit__(kind)
        time.sleep(0.001)  # the other processes' turn


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) else None
