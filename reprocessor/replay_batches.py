"""A stored plan replayed a batch at a time: the records of one poll, the plan lines they match
and the copies made of them are columns (lists), never an object per record.

One poll of the DLQ (`dlqio.RecordBatch`) is merged with each partition's plan lines (read a
block at a time, `plans.EntryBlock`), and the planned records become copies column by column:
the headers are read by position when every record has the same layout (`replay_columns`), else
by `index_rows.fast_rows` (one loop in C per field, over the whole batch); the checks of
`replay.prepare` and `plans.Entry.same` run over plain values, and the copies join the next
chunk, written a transaction at a time: copies, flush, ledger entries naming their targets,
commit (`Transactions`, each finished in the background while the next chunk is read). A batch
the fast reading refuses (a foreign, malformed or oversize dead letter, or a plan with a fix,
which decodes each value) goes through `replay_run`'s per-record path, record by record, with
the same result.

What stays per record is what cannot be shared: each copy's headers (`build_replay`'s bytes),
its produce and delivery report, and its ledger entry's text. Guarantees are the contract's
(`replay.Run`): the caller fenced and read the ledger first; a decided dead letter (by a ledger
entry that is not stale) is skipped; loop protection, target and plan checks refuse exactly what
`prepare` and `Entry.same` refuse; each partition's records stay in offset order, hence each
key's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import compress
from typing import TypeVar, cast

from pipeline.core.contract import Header, SourceRecord
from pipeline.kafka.dlqio import RecordBatch
from reprocessor import plans
from reprocessor.index_rows import fast_rows
from reprocessor.ledger import Ledger, ReplayedRecords
from reprocessor.replay import (
    Copy,
    Pacer,
    Progress,
    Recipe,
    Refused,
    Run,
    StreamHooks,
    Tally,
    refusal_of,
)
from reprocessor.replay_columns import Lineage, check_coordinates, uniform_lineage
from reprocessor.replay_headers import replay_headers

Slow = Callable[[SourceRecord, plans.Entry], Copy | Refused]
"""The per-record path for a planned record the batch path does not take."""


@dataclass
class Copies:
    """Copies ready to replay, column by column (copy `i` is index `i` of every column): the
    copy's target topic, key, value and headers, and its dead letter's coordinates, failure
    time and fingerprint (what its ledger entry records)."""

    topics: list[str] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    headers: list[list[Header]] = field(default_factory=list)
    coordinates: list[str] = field(default_factory=list)
    seen_ms: list[int] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.coordinates)

    def add(self, copy: Copy) -> None:
        self.append(copy.topic, copy.key, copy.value, copy.headers)
        dl = copy.dl
        self.coordinates.append(dl.coordinates)
        self.seen_ms.append(dl.seen_ms)
        self.fingerprints.append(dl.fingerprint)

    def append(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Header]
    ) -> None:
        """The copy's own columns; the caller appends its dead letter's."""
        self.topics.append(topic)
        self.keys.append(key)
        self.values.append(value)
        self.headers.append(headers)

    def extend(self, other: Copies) -> None:
        self.topics += other.topics
        self.keys += other.keys
        self.values += other.values
        self.headers += other.headers
        self.coordinates += other.coordinates
        self.seen_ms += other.seen_ms
        self.fingerprints += other.fingerprints

    def take(self, count: int) -> Copies:
        """The first `count` copies, removed from these."""
        taken = Copies(
            self.topics[:count], self.keys[:count], self.values[:count], self.headers[:count],
            self.coordinates[:count], self.seen_ms[:count], self.fingerprints[:count],
        )  # fmt: skip
        for column in (self.topics, self.keys, self.values, self.headers, self.coordinates,
                       self.seen_ms, self.fingerprints):  # fmt: skip
            del column[:count]
        return taken

    def keep(self, wanted: Sequence[bool]) -> Copies:
        """The copies whose flag is set, in order."""
        return Copies(
            list(compress(self.topics, wanted)), list(compress(self.keys, wanted)),
            list(compress(self.values, wanted)), list(compress(self.headers, wanted)),
            list(compress(self.coordinates, wanted)), list(compress(self.seen_ms, wanted)),
            list(compress(self.fingerprints, wanted)),
        )  # fmt: skip


@dataclass
class Planned:
    """A batch's planned records (their indexes in the batch, in order) with what their plan
    lines saw, and the refusals of planned offsets the read passed (gone from the DLQ)."""

    indexes: list[int] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)
    failed_at: list[int] = field(default_factory=list)
    gone: list[Refused] = field(default_factory=list)


class _Lines:
    """One partition's plan lines not matched yet, a block at a time."""

    def __init__(self, blocks: Iterator[plans.EntryBlock]) -> None:
        self._blocks = blocks
        self.offsets: list[int] = []
        self.digests: list[str] = []
        self.fingerprints: list[str] = []
        self.failed_at: list[int] = []
        self.at = 0

    def fill(self, count: int) -> bool:
        """Read blocks until `count` lines are left (or the plan ends); False when none is."""
        while len(self.offsets) - self.at < count:
            block = next(self._blocks, None)
            if block is None:
                break
            at = self.at
            self.offsets = self.offsets[at:] + block.offsets
            self.digests = self.digests[at:] + list(block.digests)
            self.fingerprints = self.fingerprints[at:] + list(block.fingerprints)
            self.failed_at = self.failed_at[at:] + block.failed_at
            self.at = 0
        return self.at < len(self.offsets)

    def take(self, planned: Planned, indexes: Sequence[int], count: int) -> None:
        """The next `count` lines match the records at `indexes`."""
        at, end = self.at, self.at + count
        planned.indexes.extend(indexes)
        planned.digests.extend(self.digests[at:end])
        planned.fingerprints.extend(self.fingerprints[at:end])
        planned.failed_at.extend(self.failed_at[at:end])
        self.at = end


class PlanMatch:
    """Every planned partition's lines, merged with the records read, both in offset order."""

    def __init__(self, stored: plans.StoredPlan) -> None:
        self.topic = stored.plan.dlq_topic
        self.lines: dict[int, _Lines] = {}
        for partition in stored.partitions():
            lines = _Lines(stored.blocks(partition))
            if lines.fill(1):
                self.lines[partition] = lines

    def starts(self) -> tuple[tuple[int, int], ...]:
        """Where the read of each planned partition starts: its first planned offset."""
        return tuple((p, lines.offsets[lines.at]) for p, lines in self.lines.items())

    def match(self, batch: RecordBatch) -> tuple[Planned, list[int]]:
        """The batch's planned records, and the partitions whose plan is done (read no more)."""
        planned, done = Planned(), []
        partitions, offsets, start, size = batch.partitions, batch.offsets, 0, len(batch)
        while start < size:
            partition, end = partitions[start], start + 1
            while end < size and partitions[end] == partition:
                end += 1
            lines = self.lines.get(partition)
            if lines is not None and lines.fill(1):
                self._run(planned, partition, lines, offsets[start:end], start)
                if not lines.fill(1):
                    done.append(partition)
            start = end
        return planned, done

    def _run(
        self, planned: Planned, partition: int, lines: _Lines, offsets: list[int], first: int
    ) -> None:
        """Match one partition's consecutive records (from batch index `first`)."""
        count = len(offsets)
        lines.fill(count)
        if lines.offsets[lines.at : lines.at + count] == offsets:  # all planned: the usual case
            lines.take(planned, range(first, first + count), count)
            return
        for index, offset in enumerate(offsets, start=first):
            while lines.fill(1) and lines.offsets[lines.at] < offset:
                planned.gone.append(_gone(self.topic, partition, lines.offsets[lines.at]))
                lines.at += 1
            if not lines.fill(1):
                return
            if lines.offsets[lines.at] == offset:
                lines.take(planned, (index,), 1)

    def rest(self) -> Iterator[Refused]:
        """Refusals for every planned line left once the read ended: the DLQ no longer holds
        those offsets."""
        for partition, lines in self.lines.items():
            while lines.fill(1):
                yield _gone(self.topic, partition, lines.offsets[lines.at])
                lines.at += 1


def _gone(topic: str, partition: int, offset: int) -> Refused:
    where = f"{topic}/{partition}/{offset}"
    return Refused(where, "no longer in the DLQ (deleted by retention, or the topic recreated)")


def copies_of(
    batch: RecordBatch, planned: Planned, recipe: Recipe, slow: Slow
) -> tuple[Copies, list[Refused]]:
    """The copies of the batch's planned records (and the refusals), as `replay.prepare` and
    `plans.Entry.same` decide them: column by column when every one is a well-formed Lazarus
    dead letter with a value and the plan has no fix (`replay_columns` when they also share one
    header layout, else `fast_rows`), else record by record by `slow`."""
    picked = planned.indexes
    if not picked:
        return Copies(), []
    every = len(picked) == len(batch)
    values = _pick(batch.values, picked, every)
    if recipe.fix is not None or None in values:
        return _slowly(batch, planned, slow)
    headers = _pick(batch.headers, picked, every)
    partitions = _pick(batch.partitions, picked, every)
    offsets = _pick(batch.offsets, picked, every)
    keys = _pick(batch.keys, picked, every)
    if check_coordinates(batch.topic, recipe.run):
        lineage = uniform_lineage(headers)
        if lineage is not None:
            named = list(map(f"{batch.topic}/{{}}/{{}}".format, partitions, offsets))
            return _uniform(Copies(keys=keys, values=values, coordinates=named), lineage, planned,
                            recipe)  # fmt: skip
    stamps = _pick(batch.timestamps, picked, every)
    rows = fast_rows(partitions, offsets, stamps, [0] * len(picked), headers)
    if rows is None:
        return _slowly(batch, planned, slow)
    copies, refused = Copies(), []
    target, prefix, run = recipe.target, f"{batch.topic}/", recipe.run
    originals, origins, counts = [], [], []
    seen = zip(planned.digests, planned.fingerprints, planned.failed_at, strict=True)
    for row, key, value, original, plan in zip(rows, keys, values, headers, seen, strict=True):
        where = f"{prefix}{row[1]}/{row[2]}"
        topic = target.topic_of(row[20], row[14], row[13], row[10])
        why = refusal_of(row[18], recipe, topic)
        if why is None and not plans.same(plan, value, row[7], row[4]):
            why = f"changed since plan {run} was made: not replayed"
        if why is not None or topic is None:
            refused.append(Refused(where, why or "no target topic"))
            continue
        copies.topics.append(topic)
        copies.keys.append(key)
        copies.values.append(value)
        copies.coordinates.append(where)
        copies.seen_ms.append(row[4])
        copies.fingerprints.append(row[7])
        originals.append(original)
        origins.append(row[13])
        counts.append(row[18])
    copies.headers = replay_headers(originals, origins, counts, copies.coordinates, run)
    return copies, refused


def _uniform(
    copies: Copies, lineage: Lineage, planned: Planned, recipe: Recipe
) -> tuple[Copies, list[Refused]]:
    """`copies_of` a batch read by `replay_columns` (`copies` holds its keys, values and
    coordinates): targets, loop protection and the plan's check decided per distinct value,
    or, when the plan saw no value, by comparing whole columns; a copy's headers built only
    for a batch with nothing refused."""
    counts, target = lineage.replay_counts, recipe.target
    topics = target.topics_of(lineage.pipelines, lineage.origins, lineage.source_topics)
    copies.topics = cast(list[str], topics)  # a None is refused below (no target topic)
    copies.seen_ms, copies.fingerprints = lineage.failed_at, lineage.fingerprints
    pairs = set(zip(counts, topics, strict=True))
    reasons = {(n, topic): refusal_of(n, recipe, topic) for n, topic in pairs}
    if (
        not any(reasons.values())
        and not any(planned.digests)
        and planned.fingerprints == copies.fingerprints
        and planned.failed_at == copies.seen_ms
    ):  # the usual case: every planned record is replayed
        copies.headers = lineage.copy_headers(copies.coordinates, recipe.run)
        return copies, []
    seen = zip(planned.digests, planned.fingerprints, planned.failed_at, strict=True)
    refused, wanted = [], []
    for where, n, topic, value, fingerprint, seen_ms, plan in zip(
        copies.coordinates, counts, topics, copies.values, copies.fingerprints,
        copies.seen_ms, seen, strict=True,
    ):  # fmt: skip
        why = reasons[n, topic]
        if why is None and not plans.same(plan, value, fingerprint, seen_ms):
            why = f"changed since plan {recipe.run} was made: not replayed"
        if why is not None:
            refused.append(Refused(where, why))
        wanted.append(why is None)
    copies.headers = lineage.copy_headers(copies.coordinates, recipe.run)
    return copies.keep(wanted), refused


_T = TypeVar("_T")


def _pick(column: list[_T], picked: list[int], every: bool) -> list[_T]:
    return column if every else [column[i] for i in picked]


def _slowly(batch: RecordBatch, planned: Planned, slow: Slow) -> tuple[Copies, list[Refused]]:
    """`copies_of` record by record, through `slow` (the per-record path)."""
    copies, refused = Copies(), []
    lines = zip(planned.digests, planned.fingerprints, planned.failed_at, strict=True)
    for i, (digest, fingerprint, failed_at) in zip(planned.indexes, lines, strict=True):
        partition, offset = batch.partitions[i], batch.offsets[i]
        record = SourceRecord(
            batch.topic, partition, offset, batch.timestamps[i], batch.keys[i], batch.values[i],
            tuple(batch.headers[i]),
        )  # fmt: skip
        result = slow(record, plans.Entry(partition, offset, digest, fingerprint, failed_at))
        if isinstance(result, Copy):
            copies.add(result)
        else:
            refused.append(result)
    return copies, refused


def undecided(copies: Copies, ledger: Ledger) -> tuple[Copies, int]:
    """The copies whose dead letter no ledger entry decided, and how many were decided (by
    another run, after the plan was made: seen once this run fenced it)."""
    if not ledger.entries:
        return copies, 0
    decided = ledger.decided
    wanted = [
        not decided(where, seen, fingerprint)
        for where, seen, fingerprint in zip(
            copies.coordinates, copies.seen_ms, copies.fingerprints, strict=True
        )
    ]
    kept = copies if all(wanted) else copies.keep(wanted)
    return kept, len(copies) - len(kept)


def replay_batches(
    run: Run,
    batches: Iterable[tuple[Copies, list[Refused]]],
    ledger: Ledger,
    pacer: Pacer,
    progress: Progress,
    hooks: StreamHooks,
    fix: tuple[str, ...] = (),
) -> Tally:
    """Replay copies that come in batches: each batch's refusals go to `hooks.refused`, its
    decided copies are skipped, the rest join the next chunk, written a transaction at a time
    (`pacer.chunk` copies, their target topics checked first by `hooks.check_targets`; see
    `Transactions`). At most two chunks and one batch in memory; decisions are not kept in
    `ledger` (a plan holds each dead letter once). When reading the batches fails or is
    interrupted, the open transaction is committed (its copies are good) before the error goes
    on."""
    tally, chunk, size = Tally(), Copies(), pacer.chunk
    with ThreadPoolExecutor(1, thread_name_prefix="lazarus-txn") as closer:
        writer = Transactions(run, fix, tally, pacer, progress, hooks, closer)
        try:
            for copies, refused in batches:
                for refusal in refused:
                    hooks.refused(refusal)
                kept, skipped = undecided(copies, ledger)
                tally.skipped += skipped
                if refused or skipped:
                    progress(len(refused) + skipped)
                chunk.extend(kept)
                while len(chunk) >= size:
                    writer.send(chunk.take(size))
            if chunk:
                writer.send(chunk)
        except BaseException:
            # Ctrl-C too: a transaction left open would hold read_committed consumers of its
            # targets until the coordinator times it out
            writer.finish()
            raise
        writer.finish()
    return tally


@dataclass
class Transactions:
    """Chunks written a transaction each, the end of each in the background: `send` begins a
    chunk's transaction and produces its copies, then `closer` (one thread) finishes it (flush,
    giving the copies' targets; their ledger entries; commit) while the next chunk is read and
    built, and the next `send` (or `finish`) waits for that commit before it begins. Those waits
    on the broker (delivery, the ledger entries' acks, the commit's markers: about 0.8 s of a
    100,000-record replay) overlap the reading instead of stopping it; librdkafka releases the
    GIL while it waits. One thread at a time uses the producer. What a transaction holds is
    unchanged: its chunk's copies, then their ledger entries, all committed or none; a failure
    in the background is raised by the next `send` or `finish`."""

    run: Run
    fix: tuple[str, ...]
    tally: Tally
    pacer: Pacer
    progress: Progress
    hooks: StreamHooks
    closer: Executor
    closing: Future[Copies] | None = None

    def send(self, chunk: Copies) -> None:
        """Wait for the open transaction's commit, then begin the chunk's, produce its copies
        and finish it in the background."""
        self.finish()
        self.pacer.before()
        self.hooks.check_targets(set(chunk.topics))
        sink = self.run.sink
        sink.begin()
        sink.send_chunk(chunk.topics, chunk.keys, chunk.values, chunk.headers)
        self.closing = self.closer.submit(self._close, chunk)

    def finish(self) -> None:
        """Wait until the open transaction is committed (raising why it was not), and count it.
        Interrupted while waiting, it stays open: the next `finish` waits for it again."""
        closing = self.closing
        if closing is None:
            return
        try:
            chunk = closing.result()
        finally:
            if closing.done():
                self.closing = None
        by_target = self.tally.by_target
        for topic, count in Counter(chunk.topics).items():
            by_target[topic] = by_target.get(topic, 0) + count
        self.tally.done += len(chunk)
        self.progress(len(chunk))
        self.pacer.after(len(chunk))

    def _close(self, chunk: Copies) -> Copies:
        """The transaction's ledger entries, naming its copies' targets, and its commit."""
        run, sink = self.run, self.run.sink
        targets = sink.flush()
        entries = ReplayedRecords(run.run, run.operator, run.clock(), self.fix)
        values = entries.values(chunk.seen_ms, chunk.fingerprints, targets)
        keys = map(str.encode, chunk.coordinates)
        sink.send_all(run.ledger_topic, zip(keys, values, strict=True))
        sink.commit()
        return chunk
