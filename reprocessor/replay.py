"""Replay and discard, exactly once: a frozen plan, then each chunk's copies and ledger entries in
one Kafka transaction.

The order is the contract's. `init_transactions()` first, under one stable transactional id per
DLQ topic (`lazarus-dlq-<dlq-topic>`, shared by replay and discard), which fences any earlier run
and aborts its open transaction; only then is the ledger read to its end (`read_committed`), so a
decision committed by a fenced run is seen and never repeated. Then, per chunk: begin; produce the
copies; flush, which yields each copy's `topic/partition/offset` from its delivery report;
produce the ledger entries naming those targets; commit. A crash at any point leaves either the
whole chunk (copies and entries) or none of it, so re-running replays exactly what is missing.

Chunks go in plan order, and the plan keeps each DLQ partition's offset order, so dead letters of
one key (one DLQ partition, by the contract's partitioner) are replayed in their DLQ order.
Kafka stays behind `TxnSink`: the real one is `pipeline.kafka.dlqio.TxnProducer`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pipeline.core.contract import Header, build_replay, redrive_topic
from pipeline.core.dialects import without_foreign
from pipeline.core.ledger_codec import LedgerEntry
from pipeline.errors import ConfigError
from reprocessor.deadletters import DeadLetter
from reprocessor.ledger import (
    Ledger,
    ReplayedRecords,
    discarded_entry,
    ledger_record,
    replayed_entry,
)
from reprocessor.payloads import origin_topic_of

CHUNK = 2000
"""Dead letters per transaction at full speed: big enough to amortise the flush and the commit
(two round trips each), small enough that a crash loses little work and a transaction stays far
below `transaction.timeout.ms`."""


def transactional_id(dlq_topic: str) -> str:
    """The one transactional id of a DLQ topic: every replay and discard run uses it, so a new
    run fences the previous one instead of racing it."""
    return f"lazarus-dlq-{dlq_topic}"


class TxnSink(Protocol):
    """What a run needs from a transactional producer (see `TxnProducer` for the semantics)."""

    def init(self) -> None: ...
    def begin(self) -> None: ...
    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Header]
    ) -> int: ...
    def send_all(self, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None: ...
    def flush(self) -> list[str]: ...
    def commit(self) -> None: ...


class TargetMode(StrEnum):
    """Where copies go: the failing pipeline's redrive topic (the default, read only by that
    pipeline's workers), the topic named in `dlq.origin`, or a topic given with `--to`."""

    REDRIVE = "redrive"
    SOURCE = "source"
    TO = "to"


@dataclass(frozen=True, slots=True)
class Target:
    mode: TargetMode
    topic: str | None = None
    allowed: frozenset[str] | None = None
    """Topics the configured pipeline owns (its redrive topic and sources): the only ones a
    replay without `--to` may write to, since `--to-source` and the redrive topic come from
    the dead letter's own headers, which whoever can write to the DLQ controls. None (no
    config, only --bootstrap and --topic): no limit."""

    def outside(self, topic: str) -> str | None:
        """Why a copy may not go to `topic` without `--to` naming it; None when it may."""
        if self.mode is TargetMode.TO or self.allowed is None or topic in self.allowed:
            return None
        return f"target {topic} is outside the configured pipeline (name it with --to {topic})"

    def topic_for(self, dl: DeadLetter) -> str | None:
        """The topic a copy of `dl` goes to; None when the dead letter names none (foreign
        dead letters name no pipeline, arroyo's not even a topic)."""
        lazarus = dl.foreign is None  # a Spring consumer group has no redrive topic
        return self.topic_of(dl.pipeline if lazarus else None, dl.origin, dl.source_topic)

    def topic_of(
        self, pipeline: str | None, origin: str | None, source_topic: str | None
    ) -> str | None:
        """`topic_for` a dead letter of this Lazarus pipeline (None: foreign), `dlq.origin`
        and source topic."""
        if self.mode is TargetMode.TO:
            return self.topic
        if self.mode is TargetMode.REDRIVE:
            return redrive_topic(pipeline) if pipeline else None
        return origin_topic_of(origin, source_topic)

    def check(self, letters: Sequence[DeadLetter]) -> None:
        """Refuse, before anything is written, dead letters this target cannot place.
        Raises ConfigError (exit 2) saying which option would work."""
        homeless = [dl for dl in letters if self.topic_for(dl) is None]
        if homeless:
            raise self.homeless(len(homeless), {dl.dialect for dl in homeless})

    def homeless(self, count: int, dialects: set[str]) -> ConfigError:
        """The error for `count` selected dead letters (of `dialects`) this target cannot place."""
        names = ", ".join(sorted(dialects))
        if self.mode is TargetMode.REDRIVE:
            return ConfigError(
                f"{count} selected dead letters ({names}) name no Lazarus pipeline, "
                "so they have no redrive topic: replay them with --to TOPIC or --to-source"
            )
        return ConfigError(
            f"{count} selected dead letters ({names}) name no source topic "
            "(arroyo's carry only a partition and an offset): replay them with --to TOPIC"
        )


@dataclass(frozen=True, slots=True)
class Copy:
    """A dead letter ready to replay: its copy's target, key, (fixed) value and headers."""

    dl: DeadLetter
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    fix: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A selected dead letter that will not be replayed, and why (exit 3)."""

    dl: DeadLetter
    reason: str

    @property
    def coordinates(self) -> str:
        return self.dl.coordinates


@dataclass(frozen=True, slots=True)
class Refused:
    """A refusal without its dead letter (a stored plan's, or one that left the DLQ)."""

    coordinates: str
    reason: str


@dataclass(frozen=True, slots=True)
class Recipe:
    """How each dead letter of a run becomes a copy: target, fix, loop protection."""

    run: str
    target: Target
    fix: Callable[[DeadLetter], tuple[bytes | None, str | None]] | None = None
    fix_description: tuple[str, ...] = ()
    max_replays: int = 3
    force: bool = False
    keep_foreign_headers: bool = False


def prepare(dl: DeadLetter, recipe: Recipe) -> Copy | Refusal:
    """The copy of `dl` per `recipe`, or why it is refused: its lineage was already replayed
    `max_replays` times (unless forced), or its fixed value fails validation."""
    topic = recipe.target.topic_for(dl)
    reason = _refusal(dl, recipe, topic)
    if reason is not None:
        return Refusal(dl, reason)
    assert topic is not None  # _refusal() said so
    value, problem = (dl.value, None) if recipe.fix is None else recipe.fix(dl)
    if problem is not None:
        return Refusal(dl, problem)
    kept = dl.headers if recipe.keep_foreign_headers or dl.foreign is None else None
    headers = build_replay(
        without_foreign(dl.headers) if kept is None else kept,
        dead_letter=dl.coordinates,
        run_id=recipe.run,
    )
    return Copy(dl, topic, dl.key, value, headers, recipe.fix_description)


def refusal(dl: DeadLetter, recipe: Recipe) -> str | None:
    """Why `dl` is refused before its value is looked at (loop protection, no target topic);
    None when it is not. `prepare` checks this first; a plan made from the index checks only
    this (the value is read, fixed and checked when the plan is replayed)."""
    return _refusal(dl, recipe, recipe.target.topic_for(dl))


def _refusal(dl: DeadLetter, recipe: Recipe, topic: str | None) -> str | None:
    """`refusal`, given the topic `recipe.target` chose for `dl` (asked once per record)."""
    return refusal_of(dl.replay_count, recipe, topic)


def refusal_of(replay_count: int, recipe: Recipe, topic: str | None) -> str | None:
    """`refusal` of a dead letter replayed `replay_count` times before, whose copy would go
    to `topic`."""
    if replay_count >= recipe.max_replays and not recipe.force:
        return (
            f"loop protection: already replayed {replay_count} times "
            f"(max_replays {recipe.max_replays}; --force to override)"
        )
    if topic is None:
        return "no target topic (use --to TOPIC)"
    return recipe.target.outside(topic)


def prepare_all(letters: Sequence[DeadLetter], recipe: Recipe) -> tuple[list[Copy], list[Refusal]]:
    """`prepare` each dead letter, keeping their order: the copies, and the refusals."""
    results = [prepare(dl, recipe) for dl in letters]
    copies = [r for r in results if isinstance(r, Copy)]
    return copies, [r for r in results if isinstance(r, Refusal)]


def count_targets(copies: Sequence[Copy]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for copy in copies:
        counts[copy.topic] = counts.get(copy.topic, 0) + 1
    return counts


@dataclass
class Tally:
    """What a run did. `done` counts dead letters decided by this run; `skipped` those another
    run decided after the plan was made (seen in the ledger once this run fenced it)."""

    done: int = 0
    skipped: int = 0
    by_target: dict[str, int] = field(default_factory=dict)


Progress = Callable[[int], None]


class StreamHooks(Protocol):
    """What `Run.replay_stream` reports to, and asks, its caller."""

    def refused(self, refusal: Refusal | Refused) -> None: ...
    def check_targets(self, topics: set[str]) -> None: ...


@dataclass
class Pacer:
    """Chunk sizes and pauses for `--rate N/s`: small chunks spaced so the run averages `rate`
    dead letters per second (None: full speed)."""

    rate: float | None
    started: float = field(default_factory=time.monotonic)
    sent: int = 0

    @property
    def chunk(self) -> int:
        if self.rate is None:
            return CHUNK
        return max(1, min(CHUNK, int(self.rate / 4)))

    def after(self, count: int) -> None:
        self.sent += count
        if self.rate is not None:
            delay = self.started + self.sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


@dataclass
class Run:
    """One replay or discard run against one DLQ topic's ledger topic."""

    sink: TxnSink
    ledger_topic: str
    run: str
    operator: str
    clock: Callable[[], int] = field(default=lambda: int(time.time() * 1000))

    def start(self, read_ledger: Callable[[], Ledger]) -> Ledger:
        """Fence earlier runs, then read the ledger to its end: the only order under which a
        decision committed by a fenced run is always seen."""
        self.sink.init()
        return read_ledger()

    def replay(
        self, copies: Sequence[Copy], ledger: Ledger, pacer: Pacer, progress: Progress
    ) -> Tally:
        """Replay every copy not yet decided in `ledger`, chunk by chunk (one transaction
        each). Raises what the sink raises (`Fenced`: stop; the committed chunks stand)."""
        tally = Tally()
        todo = [c for c in copies if ledger.decision(c.dl).entry is None]
        tally.skipped = len(copies) - len(todo)
        progress(tally.skipped)
        for start in range(0, len(todo), pacer.chunk):
            chunk = todo[start : start + pacer.chunk]
            self._replay_chunk(chunk, ledger, tally)
            progress(len(chunk))
            pacer.after(len(chunk))
        return tally

    def replay_stream(
        self,
        results: Iterable[Copy | Refusal | Refused],
        ledger: Ledger,
        pacer: Pacer,
        progress: Progress,
        hooks: StreamHooks,
    ) -> Tally:
        """`replay` for a stream of copies (a stored plan read back): at most one chunk of
        copies in memory. Refusals go to `hooks.refused`; each chunk's target topics to
        `hooks.check_targets` before its transaction begins. Decisions are not kept in
        `ledger` (a plan holds each dead letter once), so memory stays bounded."""
        tally, chunk, size = Tally(), [], pacer.chunk
        for result in results:
            if not isinstance(result, Copy):
                hooks.refused(result)
                progress(1)
            elif ledger.entries and ledger.decision(result.dl).entry is not None:
                tally.skipped += 1
                progress(1)
            else:
                chunk.append(result)
            if len(chunk) >= size:
                self._stream_chunk(chunk, ledger, tally, pacer, progress, hooks)
                chunk = []
        if chunk:
            self._stream_chunk(chunk, ledger, tally, pacer, progress, hooks)
        return tally

    def _stream_chunk(
        self,
        chunk: list[Copy],
        ledger: Ledger,
        tally: Tally,
        pacer: Pacer,
        progress: Progress,
        hooks: StreamHooks,
    ) -> None:
        hooks.check_targets({copy.topic for copy in chunk})
        self._replay_chunk(chunk, ledger, tally, remember=False)
        progress(len(chunk))
        pacer.after(len(chunk))

    def _replay_chunk(
        self, chunk: Sequence[Copy], ledger: Ledger, tally: Tally, *, remember: bool = True
    ) -> None:
        self.sink.begin()
        for copy in chunk:
            self.sink.send(copy.topic, copy.key, copy.value, copy.headers)
        targets = self.sink.flush()
        at = self.clock()
        self.sink.send_all(self.ledger_topic, self._ledger_records(chunk, targets, at))
        self.sink.commit()
        if remember:
            for copy, target in zip(chunk, targets, strict=True):
                ledger.record(copy.dl.coordinates, self._entry(copy, target, at))
        for topic, count in Counter(copy.topic for copy in chunk).items():
            tally.by_target[topic] = tally.by_target.get(topic, 0) + count
        tally.done += len(chunk)

    def _ledger_records(
        self, chunk: Sequence[Copy], targets: Sequence[str], at: int
    ) -> list[tuple[bytes, bytes]]:
        """The chunk's ledger records, encoded per chunk (`ReplayedRecords`) when its copies
        share one fix, as a run's copies do."""
        fixes = {copy.fix for copy in chunk}
        if len(fixes) == 1:
            batch = ReplayedRecords(self.run, self.operator, at, fixes.pop())
            return batch.records([copy.dl for copy in chunk], targets)
        return [
            ledger_record(copy.dl, self._entry(copy, target, at))
            for copy, target in zip(chunk, targets, strict=True)
        ]

    def _entry(self, copy: Copy, target: str, at: int) -> LedgerEntry:
        return replayed_entry(
            copy.dl, run=self.run, operator=self.operator, target=target, at_ms=at, fix=copy.fix
        )

    def discard(
        self, letters: Iterable[DeadLetter], reason: str, ledger: Ledger, progress: Progress
    ) -> Tally:
        """Write a discard entry for every dead letter not yet decided, a chunk (one
        transaction) at a time as `letters` are read: at most one chunk in memory."""
        tally, chunk = Tally(), []
        for dl in letters:
            if ledger.entries and ledger.decision(dl).entry is not None:
                tally.skipped += 1
                progress(1)
                continue
            chunk.append(dl)
            if len(chunk) >= CHUNK:
                self._discard_chunk(chunk, reason, tally, progress)
                chunk = []
        if chunk:
            self._discard_chunk(chunk, reason, tally, progress)
        return tally

    def _discard_chunk(
        self, chunk: Sequence[DeadLetter], reason: str, tally: Tally, progress: Progress
    ) -> None:
        self.sink.begin()
        at = self.clock()
        for dl in chunk:
            entry = discarded_entry(
                dl, run=self.run, operator=self.operator, reason=reason, at_ms=at
            )
            key, value = ledger_record(dl, entry)
            self.sink.send(self.ledger_topic, key, value, [])
        self.sink.commit()
        tally.done += len(chunk)
        progress(len(chunk))
