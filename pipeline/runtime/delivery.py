"""How routed records reach the broker and when offsets count as done: the two delivery modes.

`AtLeastOnce` produces asynchronously and commits, per partition, only the position below which
every record was acknowledged in its output or the DLQ (`core.offsets.BatchTracker`, fed with
the sink's per-batch acknowledgements). `Transactions` (exactly-once) puts a batch's outputs,
dead letters and consumed offsets in one Kafka transaction; an abortable failure aborts it and
rewinds to the committed offsets.

Both speak only to the seam (`pipeline.kafka.seam`): a `Sink` and a `Source`. Each fold of
acknowledgements answers one `Polled` value, from which the worker decides pause or go on.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Routed
from pipeline.core.offsets import Batch, BatchTracker
from pipeline.errors import RuntimeFailure
from pipeline.kafka.seam import TP, Ack, Committed, Sink, SinkError, SinkFailure, Source
from pipeline.runtime.metrics import Tally, WorkerMetrics

MAX_RENEWALS = 3
RENEWAL_WINDOW_S = 300.0
"""At most this many new transactional producers in this many seconds, then exit 1."""
ABORT_PATIENCE = 3
"""An abort unconfirmed for this many `timeout_s` is ended by a new producer with the same
transactional id (initialising it aborts the open transaction). Seen here once the broker came
back from a restart: librdkafka kept the EndTxn in its queue to the coordinator and timed out
every retry, for minutes, while the worker's gate stayed closed waiting for it."""

log = logging.getLogger("lazarus.worker")


@dataclass(frozen=True, slots=True)
class Polled:
    """What one fold of acknowledgements says: a failure to act on, or progress made."""

    failure: str | None = None
    progress: bool = False
    too_large: bool = False
    """Every refusal in the failure was the broker's "too large": a property of a record (which
    one the per-batch counts do not say), not an outage."""


IDLE = Polled()


class TornRoute(SinkFailure):
    """Exactly-once: one of a record's several outputs was refused at once as too large after
    those before it joined the transaction, and the transaction was aborted (all its outputs or
    its dead letter, never both). The worker rewinds and dead-letters the record when it reads
    it again."""


class Delivery(ABC):
    """What the worker loop needs from a delivery mode."""

    atomic = False
    """A record's route is written whole or not at all (exactly-once's transactions)."""

    def __init__(
        self,
        sink: Sink,
        source: Source,
        metrics: WorkerMetrics,
        clock: Callable[[], float],
        wall: Callable[[], float],
        dlq_topic: str,
    ) -> None:
        self.sink = sink
        self.source = source
        self.metrics = metrics
        self.clock = clock
        self.wall = wall
        self.dlq_topic = dlq_topic
        self.last_committed: dict[TP, int] = {}
        """The positions this member committed last (progress commits carry no metadata)."""
        self.reread: dict[TP, int] = {}
        """Set by `take_rewind`: per partition it rewinds, one past the last record routed
        before (the records read again up to there were routed once already)."""

    def pending(self) -> int:
        """Records produced and not yet acknowledged (for the in-flight gauge)."""
        return self.sink.pending()

    def _count_failures(self, ack: Ack) -> None:
        target = "dlq" if ack.error is not None and ack.error.topic == self.dlq_topic else "output"
        self.metrics.pending.produce_failures[target] += ack.failed

    def _committed_now(self) -> None:
        self.metrics.pending.commits += 1
        self.metrics.last_commit.labels(self.metrics.pipeline).set(self.wall())

    @abstractmethod
    def begin(self, now: float) -> None:
        """A batch starts."""

    @abstractmethod
    def send(self, rec: SourceRecord, routed: Routed) -> None:
        """Produce `routed`'s records for `rec`; `SinkFailure` when one is refused at once."""

    @abstractmethod
    def end(self, now: float, tally: Tally, *, final: bool = True) -> Polled:
        """The batch is routed; `tally` counts once the broker has it all. `final=False`: the
        worker's loop ending a batch, which exactly-once may keep open for the next ones."""

    @abstractmethod
    def commit_marks(self, marks: dict[TP, Committed]) -> None:
        """Commit positions with metadata (crash marks) now, durably; `SinkFailure` if not."""

    @abstractmethod
    def settle(self, deadline: float) -> Polled:
        """Make what was routed so far durable now: acknowledged and committed; what the
        acknowledgements it waited for said."""

    @abstractmethod
    def poll(self, now: float) -> Polled: ...
    @abstractmethod
    def in_flight(self) -> int:
        """Non-zero while the worker must not rewind and resume yet."""

    @abstractmethod
    def stalled(self, now: float) -> str | None: ...
    @abstractmethod
    def take_rewind(self) -> dict[TP, int]: ...
    @abstractmethod
    def assign(self, tps: list[TP]) -> None: ...
    @abstractmethod
    def revoke(self, tps: list[TP], deadline: float) -> None: ...
    @abstractmethod
    def lost(self, tps: list[TP]) -> None: ...
    @abstractmethod
    def close(self, deadline: float) -> None: ...


class AtLeastOnce(Delivery):
    """Asynchronous produce, acknowledgements per batch; commits only finished prefixes."""

    def __init__(
        self,
        sink: Sink,
        source: Source,
        metrics: WorkerMetrics,
        clock: Callable[[], float],
        wall: Callable[[], float],
        dlq_topic: str,
        *,
        commit_interval_s: float,
        stall_s: float,
    ) -> None:
        super().__init__(sink, source, metrics, clock, wall, dlq_topic)
        self.tracker = BatchTracker()
        self.commit_interval_s = commit_interval_s
        self.stall_s = stall_s
        self._batch: Batch | None = None
        self._last_commit = clock()

    def begin(self, now: float) -> None:
        self._batch = self.tracker.open(now)

    def send(self, rec: SourceRecord, routed: Routed) -> None:
        batch = self._batch
        assert batch is not None, "send outside a batch"
        produced = 0
        try:
            for out in routed.outputs:
                self.sink.produce(out, batch.id)
                produced += 1
        except SinkFailure as exc:
            if produced:  # part of this record's outputs is out: they count for the batch
                batch.add((rec.topic, rec.partition), rec.offset, produced)
                # Too large is a property of the record, which the worker routes again (as a
                # dead letter) and goes on: the batch must be able to finish. Any other
                # refusal is an outage: the batch is redone once the worker rewinds.
                batch.failed = batch.failed or not exc.error.too_large
            raise
        batch.add((rec.topic, rec.partition), rec.offset, produced)

    def end(self, now: float, tally: Tally, *, final: bool = True) -> Polled:
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.tag = tally
            batch.started_at = now  # acknowledgement latency counts from the end of routing
            self._finished(self.tracker.close(batch), now)
        return self.poll(now)

    def settle(self, deadline: float) -> Polled:
        state = self._fold(self.sink.flush(max(0.0, deadline - self.clock())), self.clock())
        self.commit(self.clock(), wait=True)
        return state

    def commit_marks(self, marks: dict[TP, Committed]) -> None:
        self.source.commit(marks, wait=True)

    def poll(self, now: float) -> Polled:
        state = self._fold(self.sink.poll(0), now)
        self.tracker.commit_failed(self.source.commit_failures())
        if now - self._last_commit >= self.commit_interval_s:
            self.commit(now)
        return state

    def _fold(self, acks: list[Ack], now: float) -> Polled:
        failure: str | None = None
        progress = False
        too_large = True
        for ack in acks:
            if ack.failed:
                self._count_failures(ack)
                if failure is None:
                    failure = ack.error.reason if ack.error else "delivery failed"
                too_large = too_large and ack.error is not None and ack.error.too_large
            progress = progress or ack.acked > 0
            self._finished(self.tracker.apply(ack.batch, ack.acked, ack.failed), now)
        return Polled(failure, progress and failure is None, failure is not None and too_large)

    def _finished(self, batches: list[Batch], now: float) -> None:
        pending = self.metrics.pending
        for batch in batches:
            if isinstance(batch.tag, Tally):
                pending.add(batch.tag)
                if batch.expected:
                    pending.ack_seconds.append(max(0.0, now - batch.started_at))

    def commit(self, now: float, only: list[TP] | None = None, *, wait: bool = False) -> None:
        """Commit what is safe: asynchronously in the loop (a coordinator outage must not block
        it; a failure is retried next interval), synchronously on revoke and shutdown."""
        offsets = self.tracker.committable()
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        self._last_commit = now
        if not offsets:
            return
        try:
            self.source.commit({tp: Committed(o) for tp, o in offsets.items()}, wait=wait)
        except SinkFailure as exc:
            log.warning("offset commit failed (will retry): %s", exc.error.reason)
            return
        self.tracker.mark_committed(offsets)
        self.last_committed.update(offsets)
        self._committed_now()

    def in_flight(self) -> int:
        return self.sink.pending()

    def stalled(self, now: float) -> str | None:
        oldest = self.tracker.oldest_started_at()
        if oldest is not None and now - oldest > self.stall_s:
            return f"a produced record has waited {now - oldest:.1f}s for its acknowledgement"
        return None

    def take_rewind(self) -> dict[TP, int]:
        routed = self.tracker.routed_through()  # the unfinished batches: read again
        points = self.tracker.take_rewind()
        self.reread = {tp: routed[tp] for tp in points if tp in routed}
        return points

    def assign(self, tps: list[TP]) -> None:
        return None  # the tracker learns partitions from the batches

    def revoke(self, tps: list[TP], deadline: float) -> None:
        self._fold(self.sink.flush(max(0.0, deadline - self.clock())), self.clock())
        self.commit(self.clock(), only=tps, wait=True)
        for tp in tps:
            self.tracker.revoke(tp)

    def lost(self, tps: list[TP]) -> None:
        for tp in tps:
            self.tracker.revoke(tp)

    def close(self, deadline: float) -> None:
        if self._batch is not None:
            self.tracker.close(self._batch)
            self._batch = None
        self._fold(self.sink.flush(max(0.0, deadline - self.clock())), self.clock())
        left = self.sink.pending()
        if left:
            log.error(
                "%d records still unacknowledged at shutdown; their offsets stay uncommitted", left
            )
        self.commit(self.clock(), wait=True)


class Transactions(Delivery):
    """Exactly-once: transactions holding outputs, dead letters and offsets. A transaction
    spans the loop's batches for up to `linger_s` (Kafka Streams' `commit.interval.ms` under
    exactly-once): a commit costs a few round trips whatever its size, so one per batch bound
    the rate by latency, not work. Anything else that ends a batch (a retry wait, a crash mark,
    a rebalance, shutdown) commits at once; an idle loop commits once the time is up."""

    atomic = True

    def __init__(
        self,
        sink: Sink,
        source: Source,
        metrics: WorkerMetrics,
        clock: Callable[[], float],
        wall: Callable[[], float],
        dlq_topic: str,
        *,
        timeout_s: float,
        linger_s: float = 0.0,
    ) -> None:
        super().__init__(sink, source, metrics, clock, wall, dlq_topic)
        self.timeout_s = timeout_s
        self.linger_s = linger_s
        self._opened_at = 0.0
        self.positions: dict[TP, int] = {}
        self.assigned: set[TP] = set()
        self._tally = Tally()
        self._batch = 0
        self._open = False
        self._rewind_all = False
        self._abort_pending = False
        self._abort_since = 0.0
        self._stuck = False  # an abort never confirmed: a new producer is owed
        self._aborted_through: dict[TP, int] = {}  # `reread`'s, from the aborted transactions
        self._renewals: deque[float] = deque()
        try:
            sink.init_transactions(timeout_s)
        except SinkFailure as exc:
            raise RuntimeFailure(exc.error.reason) from exc

    def begin(self, now: float) -> None:
        self._batch += 1

    def send(self, rec: SourceRecord, routed: Routed) -> None:
        if self._abort_pending:
            raise SinkFailure(SinkError("an aborted transaction is not confirmed yet"))
        if not self._open:
            try:
                self.sink.begin_transaction()
            except SinkFailure as exc:
                self._failed(exc.error)
                raise
            self._open = True
            self._opened_at = self.clock()
        try:
            for out in routed.outputs:
                self.sink.produce(out, self._batch)
        except SinkFailure as exc:
            # torn: a later output refused, the earlier ones in the transaction already
            if exc.error.too_large and out is not routed.outputs[0]:
                raise self._torn(exc.error) from exc
            raise
        self.positions[(rec.topic, rec.partition)] = rec.offset + 1

    def _torn(self, error: SinkError) -> TornRoute:
        """One output of a record with several refused at once as too large, the outputs before
        it in the transaction already: the transaction is aborted (`TornRoute`)."""
        torn = SinkError(error.reason, error.topic, abortable=True, too_large=True)
        self._failed(torn)
        return TornRoute(torn)

    def end(self, now: float, tally: Tally, *, final: bool = True) -> Polled:
        self._tally.add(tally)
        if not self._open or self._abort_pending:
            return self.poll(now)  # an abort unconfirmed: tried again, never committed
        if not final and not self._due():
            return self.poll(now)  # acknowledgements folded: a failed send aborts at once
        routed_at = self.clock()  # ack latency counts from here, as at-least-once's does
        try:
            failure = self._delivery_failure(self.sink.poll(0))
        except SinkFailure as exc:
            failure = exc.error
        if failure is not None:
            return self._failed(failure)
        offsets = {tp: o for tp, o in self.positions.items() if tp in self.assigned}
        try:
            if offsets:
                self.sink.send_offsets(
                    {tp: Committed(o) for tp, o in offsets.items()},
                    self.source.group_metadata(),
                    self.timeout_s,
                )
            self.sink.commit_transaction(self.timeout_s)
        except SinkFailure as exc:
            # the refusals that failed it were served by the commit's flush: what were they?
            # (a producer that failed fatally, fenced say, raises its error again instead)
            try:
                late = self._delivery_failure(self.sink.poll(0))
            except SinkFailure:
                late = None
            return self._failed(late if late is not None and late.too_large else exc.error)
        self._open = False
        self.positions.clear()
        self.last_committed.update(offsets)
        tally, self._tally = self._tally, Tally()
        tally.ack_seconds.append(max(0.0, self.clock() - routed_at))
        self.metrics.pending.add(tally)
        self._committed_now()
        return Polled(None, progress=True)

    def settle(self, deadline: float) -> Polled:
        return IDLE  # `end` committed the transaction, offsets included

    def commit_marks(self, marks: dict[TP, Committed]) -> None:
        """In a transaction of their own (never a plain commit beside open transactional
        offsets, which the coordinator holds back until the transaction ends)."""
        if self._abort_pending:
            raise SinkFailure(SinkError("an aborted transaction is not confirmed yet"))
        if self._open:
            state = self.end(self.clock(), Tally())
            if state.failure is not None:
                raise SinkFailure(SinkError(state.failure))
        try:
            self.sink.begin_transaction()
            self._open = True
            self.sink.send_offsets(marks, self.source.group_metadata(), self.timeout_s)
            self.sink.commit_transaction(self.timeout_s)
            self._open = False
        except SinkFailure as exc:
            self._failed(exc.error)
            raise

    def _delivery_failure(self, acks: list[Ack]) -> SinkError | None:
        failure = None
        too_large = True
        for ack in acks:
            if ack.failed:
                self._count_failures(ack)
                failure = failure or ack.error or SinkError("delivery failed")
                too_large = too_large and ack.error is not None and ack.error.too_large
        if failure is not None and not failure.fatal:  # a failed send dooms the transaction
            return SinkError(failure.reason, failure.topic, abortable=True, too_large=too_large)
        return failure

    def _failed(self, error: SinkError) -> Polled:
        if error.fatal:
            return self._renew(error)
        if not (error.abortable or error.retriable):
            raise RuntimeFailure(f"transactional producer failed: {error.reason}")
        if not self._abort_pending:
            self._abort_since = self.clock()
        self._abort_pending = True
        self._rewind_all = True
        self._tally = Tally()  # nothing of the aborted transaction counts
        self._try_abort()
        return Polled(f"transaction failed, aborting: {error.reason}", too_large=error.too_large)

    def _renew(self, error: SinkError) -> Polled:
        """A fatal producer error, typically fenced after a transaction outlived
        `transaction.timeout.ms` while the broker was away (it aborts it and bumps the epoch).
        A new producer with the same id recovers; the worker rewinds to the committed offsets.
        Instance ids are unique among live workers, so a real zombie fight is bounded by the
        renewal budget and then stops the worker."""
        now = self.clock()
        while self._renewals and now - self._renewals[0] > RENEWAL_WINDOW_S:
            self._renewals.popleft()
        if len(self._renewals) >= MAX_RENEWALS:
            raise RuntimeFailure(f"transactional producer failed fatally (fenced?): {error.reason}")
        self._renewals.append(now)
        log.warning("transactional producer failed fatally, starting a new one: %s", error.reason)
        try:
            self.sink.reset(self.timeout_s)
        except SinkFailure as exc:
            raise RuntimeFailure(f"cannot start a new producer: {exc.error.reason}") from exc
        self._rewind_all = True
        self._tally = Tally()
        self._aborted()
        return Polled(f"transactional producer renewed after: {error.reason}")

    def _try_abort(self) -> None:
        if self._stuck:
            self._replace_stuck()
            return
        try:
            self.sink.abort_transaction(self.timeout_s)
        except SinkFailure as exc:
            if exc.error.fatal:
                self._renew(exc.error)
                return
            waited = self.clock() - self._abort_since
            if self._abort_pending and waited >= ABORT_PATIENCE * self.timeout_s:
                log.warning(
                    "abort not confirmed for %.0fs, ending it with a new producer: %s",
                    waited,
                    exc.error.reason,
                )
                self._stuck = True
                self._replace_stuck()
                return
            log.warning("abort not confirmed yet (will retry): %s", exc.error.reason)
            return
        self._aborted()

    def _replace_stuck(self) -> None:
        """A new producer in place of one whose abort never came back; while the cluster
        refuses it, try again at the next poll (the gate stays closed; nothing is consumed).
        Not a fencing fight, so not counted against the renewal budget."""
        try:
            self.sink.reset(self.timeout_s)
        except SinkFailure as exc:
            log.warning("cannot start a new producer yet (will retry): %s", exc.error.reason)
            return
        self._rewind_all = True
        self._aborted()

    def _aborted(self) -> None:
        """The open transaction is gone (aborted, or ended by a new producer)."""
        self._abort_pending = self._stuck = False
        self._open = False
        through = self._aborted_through
        for tp, offset in self.positions.items():
            through[tp] = max(through.get(tp, offset), offset)
        self.positions.clear()
        self.metrics.pending.aborts += 1

    def _due(self) -> bool:
        """The open transaction has lingered long enough to commit."""
        return self.clock() - self._opened_at >= self.linger_s

    def poll(self, now: float) -> Polled:
        if self._open and not self._abort_pending and self.linger_s > 0 and self._due():
            return self.end(now, Tally())  # a paused or idle loop still commits in time
        try:
            acks = self.sink.poll(0)
        except SinkFailure as exc:
            return self._failed(exc.error)
        if self._abort_pending:
            self._try_abort()
            return IDLE
        failure = self._delivery_failure(acks)
        if failure is not None and self._open:
            return self._failed(failure)
        return IDLE

    def in_flight(self) -> int:
        """Non-zero while an abort is unconfirmed: the worker's gate stays closed until then."""
        return 1 if self._abort_pending else 0

    def stalled(self, now: float) -> str | None:
        return None  # a stalled transaction fails its commit within `timeout_s`

    def take_rewind(self) -> dict[TP, int]:
        """After an abort, every assigned partition goes back to its committed offset, or past
        the records of the transaction open since (the abort was at a revoke or a loss, and the
        partition came back): those are written when it commits, never read again."""
        self.reread = {}
        if not self._rewind_all or not self.assigned:
            return {}
        try:
            committed = self.source.committed(sorted(self.assigned), self.timeout_s)
        except SinkFailure as exc:
            raise RuntimeFailure(exc.error.reason) from exc
        self._rewind_all = False
        self.reread, self._aborted_through = self._aborted_through, {}
        positions = self.positions if self._open else {}
        return {tp: positions.get(tp, c.offset) for tp, c in committed.items()}

    def assign(self, tps: list[TP]) -> None:
        self.assigned.update(tps)

    def revoke(self, tps: list[TP], deadline: float) -> None:
        """Commit the open transaction while the partitions are still ours (one being aborted
        is not committed: `end` tries the abort again)."""
        if self._open:
            state = self.end(self.clock(), Tally())
            if state.failure:
                log.warning("revoke: %s", state.failure)
        for tp in tps:
            self.assigned.discard(tp)
            self.positions.pop(tp, None)

    def lost(self, tps: list[TP]) -> None:
        """The open transaction holds records of partitions another member owns now: it is
        aborted like a failed one (nothing of it counts, no send joins it until the abort is
        confirmed) and the partitions still assigned rewind to their committed offsets."""
        if self._open or self._abort_pending:
            lost = ", ".join(f"{t}/{p}" for t, p in tps)
            self._failed(SinkError(f"partitions lost: {lost}", abortable=True))
        for tp in tps:
            self.assigned.discard(tp)
            self.positions.pop(tp, None)

    def close(self, deadline: float) -> None:
        """Commit the open transaction, or abort it (an abort unconfirmed: never committed)."""
        if self._open:
            self.end(self.clock(), Tally())
        if self._open or self._abort_pending:
            self._try_abort()
