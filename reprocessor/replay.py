"""Replay and discard, exactly once: a frozen plan, then each chunk's copies and ledger entries in
one Kafka transaction.

The order is the contract's. `init_transactions()` first, under one stable transactional id per
DLQ topic (`lazarus-dlq-<dlq-topic>`, shared by replay and discard), which fences any earlier run
and aborts its open transaction; only then is the ledger read to its end (`read_committed`), so a
decision committed by a fenced run is seen and never repeated. Then, per chunk: begin; produce the
copies; flush, which yields each copy's `topic/partition/offset` from its delivery report;
produce the ledger entries naming those targets; commit (`replay_batches.Transactions` writes a
replay so; `Run.discard` here writes a discard). A crash at any point leaves either the whole
chunk (copies and entries) or none of it, so re-running replays exactly what is missing.

Chunks go in plan order, and the plan keeps each DLQ partition's offset order, so dead letters of
one key (one DLQ partition, by the contract's partitioner) are replayed in their DLQ order.
Kafka stays behind `TxnSink`: the real one is `pipeline.kafka.dlqio.TxnProducer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import repeat
from typing import Protocol

from pipeline.core.contract import Header, build_replay, redrive_topic
from pipeline.core.dialects import without_foreign
from pipeline.errors import ConfigError
from reprocessor.deadletters import LAZARUS, DeadLetter
from reprocessor.ledger import (
    Ledger,
    discarded_entry,
    ledger_record,
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
    def send_chunk(
        self,
        topics: Sequence[str],
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        headers: Sequence[list[Header]],
    ) -> None: ...
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
        """The topic a copy of `dl` goes to; None when the dead letter names none (`topic_of`)."""
        return self.topic_of(dl.dialect, dl.pipeline, dl.origin, dl.source_topic)

    def topic_of(
        self, dialect: str | None, pipeline: str | None, origin: str | None, source: str | None
    ) -> str | None:
        """The topic a copy of a dead letter of `dialect` goes to, from its pipeline, its
        `dlq.origin` and its source topic; None when it names none. The one place that
        decides it, for a `DeadLetter` (`topic_for`) and for the index's rows alike: `--to`
        names the topic; a Lazarus dead letter's redrive topic is its pipeline's; a foreign
        dialect's dead letter has none (Spring's pipeline is its consumer group, no Lazarus
        pipeline); `--to-source` reads the origin (arroyo's name no topic). Only the columns
        the mode reads need be given (`replay_run.TARGET_READS`): None for the others."""
        if self.mode is TargetMode.TO:
            return self.topic
        if self.mode is TargetMode.REDRIVE:
            return redrive_topic(pipeline) if pipeline and dialect == LAZARUS else None
        return origin_topic_of(origin, source)

    def topics_of(
        self,
        pipelines: Sequence[str | None],
        origins: Sequence[str | None],
        source_topics: Sequence[str | None],
    ) -> list[str | None]:
        """`topic_of` each Lazarus dead letter (index `i` of every column: a uniform batch,
        `replay_columns.uniform_lineage`, holds nothing else); with `--to`, the one topic
        without a call per dead letter."""
        if self.mode is TargetMode.TO:
            return [self.topic] * len(pipelines)
        return list(map(self.topic_of, repeat(LAZARUS), pipelines, origins, source_topics))

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
    reason = refusal_of(dl.replay_count, recipe, topic)
    if reason is not None:
        return Refusal(dl, reason)
    assert topic is not None  # refusal_of() said so
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


def refusal_of(replay_count: int, recipe: Recipe, topic: str | None) -> str | None:
    """Why a dead letter replayed `replay_count` times before, whose copy would go to `topic`,
    is refused before its value is looked at (loop protection, no target topic, a target
    outside the pipeline); None when it is not. `prepare` checks this first; a plan made from
    the index checks only this (the value is read, fixed and checked when it is replayed)."""
    if replay_count >= recipe.max_replays and not recipe.force:
        return (
            f"loop protection: already replayed {replay_count} times "
            f"(max_replays {recipe.max_replays}; --force to override)"
        )
    if topic is None:
        return "no target topic (use --to TOPIC)"
    return recipe.target.outside(topic)


@dataclass
class Tally:
    """What a run did. `done` counts dead letters decided by this run; `skipped` those another
    run decided after the plan was made (seen in the ledger once this run fenced it)."""

    done: int = 0
    skipped: int = 0
    by_target: dict[str, int] = field(default_factory=dict)


Progress = Callable[[int], None]


class StreamHooks(Protocol):
    """What a replay (`replay_batches`) reports to, and asks, its caller."""

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
        """`count` more were sent; the next `before` waits for them."""
        self.sent += count

    def before(self) -> None:
        """Wait until the ones sent so far fit the rate: before the next chunk, never after the
        last (`--rate 0.01/s` with one dead letter waited 100 s once it was done)."""
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
