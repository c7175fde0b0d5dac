"""The worker loop: poll -> decode -> process -> route -> produce -> commit.

One `Worker.step()` reads a batch from the `Source`, asks the handler where each record goes,
produces it through the delivery mode, and folds the sink's acknowledgements once per batch.
The guarantees (nothing lost, nothing silent) live in three places:

* at-least-once: an offset is committed only when every record before it was acknowledged by
  the broker in the output or the DLQ (`core.offsets.BatchTracker`);
* exactly-once: outputs, dead letters and consumed offsets go in one transaction per batch
  (`delivery.Transactions`); an abortable error aborts and rewinds to the committed position;
* a downstream outage is not a bad record: a failed or stalled delivery, or too many dependency
  errors, open the circuit breaker; the worker pauses, drains what is in flight, seeks back to
  the first unacknowledged offset and probes again later. Nothing is dead-lettered or skipped.

Records of a partition revoked meanwhile (say during a retry wait) are never routed: the new
owner reads them. Held records never count toward the flood guard: parking is deliberate.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.core.contract import SourceRecord
from pipeline.core.crashes import CrashGuard
from pipeline.core.handler import Handler, RetryAfter, Routed
from pipeline.core.policy import BreakerState, CircuitBreaker, FloodGuard
from pipeline.errors import Category
from pipeline.kafka.seam import TP, Committed, SinkFailure, Source
from pipeline.runtime.deadletter_log import DeadLetterLog
from pipeline.runtime.delivery import Delivery, Polled, TornRoute
from pipeline.runtime.metrics import Tally, WorkerMetrics

log = logging.getLogger("lazarus.worker")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    pipeline: str
    topics: tuple[str, ...]
    batch_size: int = 500
    poll_timeout_s: float = 0.1
    shutdown_deadline_s: float = 30.0
    """One time budget per rebalance (and for shutdown): flush, then commit, within it."""
    correlation_header: str | None = None
    """Header naming a record's correlation id when it has no W3C `traceparent`."""


@dataclass
class Gate:
    """Why the worker is not consuming right now, and where each partition must resume."""

    paused: bool = False
    resume_at: dict[TP, int] = field(default_factory=dict)

    def remember(self, tp: TP, offset: int) -> None:
        """A record at `offset` was read but not handled: resume there, never past it."""
        known = self.resume_at.get(tp)
        if known is None or offset < known:
            self.resume_at[tp] = offset


class Worker:
    """Runs one group member of a pipeline until `stop()` (SIGTERM/SIGINT) is called."""

    def __init__(
        self,
        options: WorkerOptions,
        source: Source,
        delivery: Delivery,
        handler: Handler,
        metrics: WorkerMetrics,
        breaker: CircuitBreaker,
        flood: FloodGuard | None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        crashes: CrashGuard | None = None,
    ) -> None:
        self.options = options
        self.source = source
        self.delivery = delivery
        self.handler = handler
        self.metrics = metrics
        self.breaker = breaker
        self.flood = flood
        self.crashes = crashes
        self.clock = clock
        self.wall = wall
        self.gate = Gate()
        self.assigned: set[TP] = set()
        self.dead_log = DeadLetterLog(
            options.pipeline, correlation_header=options.correlation_header
        )
        self.on_tick: Callable[[], None] | None = None
        self._tally = Tally()
        self._stopping = False
        self._interrupted = False
        self._revoked = False
        self._gone: set[TP] = set()
        """Partitions revoked or lost since this batch was read (`_revoked` says it is not empty):
        its records of them are never routed nor set aside, even when the partition came back
        in the same rebalance (the new assignment reads them again from the committed offset)."""
        self._fresh: list[TP] = []
        self._unseekable: TP | None = None
        """The partition the last resume could not seek (logged once, not every loop)."""
        self._last_tick = 0.0
        self._last_step = clock()
        self._joined = False
        self._marks: dict[TP, int] = {}  # crash marks this member wrote, by partition
        self._unchecked: set[TP] = set()
        """Partitions whose committed position (a dead process's mark?) could not be read at
        assignment: read at their first record, which waits while that fails."""
        self._sizing: dict[TP, int] = {}
        """Partitions read again one record at a time (how many records left) because the
        broker refused one of their records as too large: per-batch counts do not say which."""
        self._sizing_owed = False  # a too-large refusal came: the next rewind starts sizing
        self._oversize: dict[TP, int] = {}
        """The offset, per partition, of the record found refused as too large (sizing), or one
        of whose several outputs was refused at once under exactly-once (the transaction holding
        the others aborted): dead-lettered (or its dead letter sent without its value) when it
        is read again."""
        self._refused_large = False

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until stopped, then drain, commit and leave the group."""
        # What start-up built (modules, schemas, validators, clients) lives as long as the
        # worker: out of the collector's sight, a full collection no longer walks it.
        gc.collect()
        gc.freeze()
        self.source.subscribe(self.options.topics, self)
        try:
            while not self._stopping:
                self.step()
        finally:
            self._shutdown()
            gc.unfreeze()  # a process that goes on (a test, an embedding) collects as before

    def stop(self) -> None:
        self._stopping = True

    def liveness(self, stuck_s: float = 60.0) -> str | None:
        """None while the loop turns; the reason when it has not for `stuck_s` seconds."""
        idle = self.clock() - self._last_step
        return None if idle < stuck_s else f"the worker loop has not turned for {idle:.0f}s"

    def readiness(self) -> str | None:
        """None once the member has joined its group (an assignment, possibly empty, came)."""
        if self._stopping:
            return "stopping"
        return None if self._joined else "not yet a member of the consumer group"

    def step(self) -> None:
        """One turn: if the gate is open, read a batch and route every record in it."""
        self._last_step = self.clock()
        self._tick(self._last_step)
        self._settle_fresh()
        if not self._gate_open():
            self._idle()
            return
        if self._revoked:
            self._revoked = False
            self._gone.clear()
        records = self.source.consume(self.options.batch_size, self.options.poll_timeout_s)
        if self._revoked:  # rebalance callbacks run inside consume, before its records
            self._gone.difference_update(self.assigned)
            self._revoked = bool(self._gone)
        started = self.clock()
        self._interrupted = False
        self.delivery.begin(started)
        guard = self.crashes
        # The partitions the crash guard watches (and those being sized after a too-large
        # refusal), taken once per batch (a redrive partition that never gets a record stays
        # unmarked all run): within a batch the guard only forgets partitions, and `_guarded`
        # then routes plainly; an assignment during a retry wait (`_fresh` until the next step)
        # sends the rest of the batch through `_special`.
        watched = {*guard.suspects, *guard.unmarked} if guard is not None else set()
        slow = guard is not None
        if self._sizing or self._oversize:
            watched.update(self._sizing, self._oversize)
            slow = True
        for rec in records:
            if self._revoked and (rec.topic, rec.partition) in self._gone:
                continue
            if self._interrupted or self._stopping:
                self.gate.remember((rec.topic, rec.partition), rec.offset)
            elif slow and (self._fresh or (rec.topic, rec.partition) in watched):
                self._special(rec)
            else:
                self._route(rec)
        ended = self.clock()
        if records:
            self._tally.batch_seconds.append(ended - started)
        tally, self._tally = self._tally, Tally()
        self._react(self.delivery.end(ended, tally, final=False), ended)
        self._watch(ended)

    def _route(self, rec: SourceRecord) -> None:
        """Handle one record, retrying in place with the partitions paused; produce its route."""
        attempt, first_at = 1, self.wall()
        now = first_at
        while True:
            outcome = self.handler.handle(rec, attempt, first_at, now)
            if isinstance(outcome, Routed):
                break
            if not self._retry_wait(rec, outcome):
                return
            if self._revoked and (rec.topic, rec.partition) in self._gone:
                return  # revoked during the wait: the new assignment reads it again
            attempt, now = attempt + 1, self.wall()
        failure = outcome.failure
        if self.flood is not None:
            dead = failure is not None and failure.category is not Category.HELD
            if dead and self.flood.would_flood(self.clock()):
                self._flood_pause(rec)
                return
            self.flood.record(dead)
        self._send(rec, outcome)

    def _special(self, rec: SourceRecord) -> None:
        """A record of a partition in careful mode (a crash suspect, or not yet marked), being
        sized (a too-large refusal to pin down) or holding a record found too large."""
        guard = self.crashes
        if guard is not None and (rec.topic, rec.partition) in guard.suspects:
            self._one_at_a_time(rec)
        elif (rec.topic, rec.partition) in self._sizing:
            self._sized(rec)
        elif guard is not None:
            self._guarded(rec, guard)
        else:
            self._plain(rec)

    def _plain(self, rec: SourceRecord) -> None:
        """Route `rec`, made smaller when it is the record found too large (exactly-once: one
        of its several outputs was refused at once, and the transaction holding the others was
        aborted, so it is read again)."""
        tp = (rec.topic, rec.partition)
        found = self._oversize.get(tp)
        if found is None or rec.offset < found:
            self._route(rec)
        elif rec.offset > found:  # passed (a seek past it): not to be met again
            del self._oversize[tp]
            self._route(rec)
        else:
            self._shrink(rec)
            if not self._interrupted:
                del self._oversize[tp]

    # -- a record the broker refuses as too large, in its delivery report ---------------------
    def _sized(self, rec: SourceRecord) -> None:
        """Route `rec` alone and make it durable before the next record: a too-large refusal
        then names it, and it is dead-lettered when read again (README, "Too large")."""
        tp = (rec.topic, rec.partition)
        if not (self._settle_now() and self._alone(rec)):
            return
        left = self._sizing.get(tp, 0) - 1
        if left > 0:
            self._sizing[tp] = left
        else:
            self._sizing.pop(tp, None)

    def _alone(self, rec: SourceRecord) -> bool:
        """Route `rec` (everything before it durable already) and make it durable now. False
        when the batch stops here; a too-large refusal is then `rec`'s own and remembered."""
        tp = (rec.topic, rec.partition)
        shrunk = self._oversize.get(tp) == rec.offset
        if shrunk:
            self._shrink(rec)
        else:
            self._route(rec)
        if self._interrupted or (self._revoked and tp in self._gone):
            return False
        self._refused_large = False
        if self._settle_now():
            if shrunk:
                del self._oversize[tp]
            return True
        if self._refused_large:
            if shrunk:  # refused again without its value: an outage after all
                self._delivery_failed(f"{tp[0]}/{tp[1]}/{rec.offset} refused as too large twice")
            else:  # found: read again (the rewind), it is dead-lettered; no new sizing owed
                self._oversize[tp] = rec.offset
                self._sizing_owed = False
        return False

    def _shrink(self, rec: SourceRecord) -> None:
        """The record the broker refused as too large, read again: its route made smaller (a
        dead letter without its value, an output dead-lettered instead) and sent."""
        now = self.wall()
        outcome = self.handler.handle(rec, 1, now, now)
        if not isinstance(outcome, Routed):  # a retry: routed as usual (and sized again)
            self._route(rec)
            return
        reason = "refused by the broker as too large"
        smaller = self.handler.too_large(rec, outcome, now, reason, atomic=self.delivery.atomic)
        if self.flood is not None:  # a dead letter is a dead letter: the flood guard counts it
            if self.flood.would_flood(self.clock()):
                self._flood_pause(rec)  # the record stays undecided, found again after the pause
                return
            self.flood.record(True)
        self._send(rec, smaller, shrink=False)

    def _settle_now(self) -> bool:
        """End the batch so far and make it durable now (acknowledged, committed). False when
        that failed (the batch stops: an outage, or a too-large refusal to size)."""
        self._checkpoint()
        if not self._interrupted:
            state = self.delivery.settle(self.clock() + self.options.shutdown_deadline_s)
            self._react(state, self.clock())
        if self._interrupted:
            return False
        if self.delivery.in_flight():
            # Not acknowledged within the deadline: a crash mark after it would commit past it.
            self._delivery_failed("a record was not acknowledged in time")
            return False
        return True

    def _size_owed(self, reason: str) -> None:
        self._refused_large = True
        self._sizing_owed = True
        self._interrupted = True
        self._pause_all()
        log.warning(
            "the broker refused a record as too large (%s): reading it again one record at a "
            "time to dead-letter it",
            reason,
        )

    # -- the crash-loop poison pill (core/crashes.py) -------------------------------------------
    def _guarded(self, rec: SourceRecord, guard: CrashGuard) -> None:
        """Route `rec` while some partition is suspect or not yet marked."""
        tp = (rec.topic, rec.partition)
        if tp in self._unchecked and not self._check_late(rec, guard):
            return
        if tp in guard.suspects:
            self._one_at_a_time(rec)
            return
        if tp in guard.unmarked and not self._commit_mark(rec, guard.first_seen(tp, rec.offset)):
            guard.unmarked.add(tp)  # marked when it is read again
            return
        self._plain(rec)

    def _check_late(self, rec: SourceRecord, guard: CrashGuard) -> bool:
        """The check `_mark_assigned` could not make, at the partition's first record: suspect
        (a dead process's mark), or marked at this record. A read that fails again is an
        outage: the batch stops at `rec` (False) and the breaker opens."""
        tp = (rec.topic, rec.partition)
        try:
            position = self.source.committed([tp], self.options.shutdown_deadline_s)[tp]
        except SinkFailure as exc:
            reason = f"could not read the committed offset of {tp[0]}/{tp[1]}: {exc.error.reason}"
            self._delivery_failed(reason)
            self._interrupt(rec, reason)
            return False
        self._unchecked.discard(tp)
        guard.assigned(tp, position.offset, position.metadata)
        if not guard.is_suspect(tp):
            guard.unmarked.add(tp)  # marked at this record, its first
        return True

    def _one_at_a_time(self, rec: SourceRecord) -> None:
        """A record of a suspect partition: mark it, route it and make it durable (or
        dead-letter it as `crashed`) before the next record of the batch. No seek and no
        re-read in between: a re-fetch after a seek waits out the fetch in flight (up to
        `fetch.wait.max.ms`), which held a suspect partition to about 2 records/s."""
        assert self.crashes is not None
        tp = (rec.topic, rec.partition)
        # What came before is durable first: its refusal is not this record's, and the mark
        # below is never overwritten by a commit of the positions before it.
        if not self._settle_now():
            return
        verdict = self.crashes.before(tp, rec.offset)
        if verdict.crashed:
            routed = self.handler.crashed(rec, verdict.attempts, self.wall())
            log.error(
                "%s/%d/%d killed the worker %d times in a row: dead-lettered as crashed",
                rec.topic,
                rec.partition,
                rec.offset,
                verdict.attempts,
            )
            self._send(rec, routed)
            done = not self._interrupted and self._settle_now()
        else:
            done = self._commit_mark(rec, verdict.metadata) and self._alone(rec)
        if done:
            self.crashes.after(tp)

    def _commit_mark(self, rec: SourceRecord, metadata: str) -> bool:
        """Mark `rec`'s offset before it runs. A mark the group coordinator refuses is an
        outage: a death while running the record would go unrecorded (or be credited to the
        record marked before), so the batch stops at `rec` (False) and the breaker opens."""
        tp, offset = (rec.topic, rec.partition), rec.offset
        try:
            self.delivery.commit_marks({tp: Committed(offset, metadata)})
        except SinkFailure as exc:
            reason = f"could not mark {tp[0]}/{tp[1]} at {offset}: {exc.error.reason}"
            self._delivery_failed(reason)
            self._interrupt(rec, reason)
            return False
        self._marks[tp] = offset
        return True

    def _mark_assigned(self, tps: list[TP]) -> None:
        """Read the committed positions of new partitions: a mark left there means a process
        died before committing past it (the partition is suspect); else mark where we start."""
        if self.crashes is None or not tps:
            return
        try:
            committed = self.source.committed(tps, self.options.shutdown_deadline_s)
        except SinkFailure as exc:
            log.warning(
                "could not read committed offsets to check for crashes (checking at each "
                "partition's first record instead): %s",
                exc.error.reason,
            )
            self._unchecked.update(tps)
            self.crashes.unmarked.update(tps)  # so their records go through `_guarded`
            return
        marks: dict[TP, Committed] = {}
        for tp, position in committed.items():
            metadata = self.crashes.assigned(tp, position.offset, position.metadata)
            if metadata is not None:
                marks[tp] = Committed(position.offset, metadata)
            elif self.crashes.is_suspect(tp):
                log.warning(
                    "%s/%d: another worker died (or lost the partition in an outage) before "
                    "committing past offset %d (%d time(s) in a row); processing the next %d "
                    "records one at a time",
                    tp[0],
                    tp[1],
                    position.offset,
                    self.crashes.suspects[tp].attempts,
                    self.crashes.careful_records,
                )
        if marks:
            try:
                self.delivery.commit_marks(marks)
                self._marks.update({tp: c.offset for tp, c in marks.items()})
            except SinkFailure as exc:
                # No record may run unmarked (a death there would be credited to none): each
                # partition is marked at its first record, which waits while that is refused.
                self.crashes.unmarked.update(marks)
                log.warning(
                    "could not mark the start positions (marking each at its first record "
                    "instead): %s",
                    exc.error.reason,
                )

    def _clear_marks(self, tps: list[TP]) -> None:
        """A clean stop: no mark may stay behind to make the next member suspicious. A progress
        commit past a mark replaced it already; a mark with no progress since is committed
        again without its metadata (no read from the broker: the member knows both), except
        the deaths counted on a suspect record not handled yet (`CrashGuard.left_behind`)."""
        guard = self.crashes
        if guard is None:
            return
        unmoved = {
            tp: Committed(offset, guard.left_behind(tp, offset))
            for tp, offset in self._marks.items()
            if tp in tps and self.delivery.last_committed.get(tp, -1) <= offset
        }
        if unmoved:
            try:
                self.delivery.commit_marks(unmoved)
            except SinkFailure as exc:
                log.warning("could not clear the crash marks: %s", exc.error.reason)
        self._forget_marks(tps)

    def _forget_marks(self, tps: list[TP]) -> None:
        """Partitions gone (revoked, or lost without a commit: another member owns them and
        their committed offset now): no mark of ours there is ours to clear any more. A mark
        left behind is known as this process's if the partition comes back (`CrashGuard`)."""
        if self.crashes is None:
            return
        for tp in tps:
            self._marks.pop(tp, None)
            self._unchecked.discard(tp)
            self.crashes.revoked(tp)

    def _send(self, rec: SourceRecord, routed: Routed, *, shrink: bool = True) -> None:
        """Produce the route and count it. A record refused as too large is re-routed once
        without its value or as a dead letter (a property of the record); any other refusal,
        or a second one, is an outage: the batch stops at `rec`."""
        try:
            self.delivery.send(rec, routed)
        except SinkFailure as exc:
            self._refused(rec, routed, exc, shrink)
            return
        self._account(rec, routed)

    def _refused(self, rec: SourceRecord, routed: Routed, exc: SinkFailure, shrink: bool) -> None:
        """`rec`'s route refused at once by `Delivery.send` (`_send`)."""
        error = exc.error
        if not (error.too_large and shrink):
            self._delivery_failed(error.reason)
            self._interrupt(rec, error.reason)
            return
        where = f"{rec.topic}/{rec.partition}/{rec.offset}"
        log.warning("%s refused as too large: %s", where, error.reason)
        if isinstance(exc, TornRoute):
            # The transaction held some of its outputs and was aborted: no record routed since
            # it began counts, every partition rewinds (not an outage: the breaker stays
            # closed), and the record is dead-lettered alone when read again (`_plain`).
            self._oversize[(rec.topic, rec.partition)] = rec.offset
            self._tally.outcomes.clear()
            self._tally.dead_letters.clear()
            self._interrupt(rec, "reading it again to dead-letter it alone")
            return
        smaller = self.handler.too_large(
            rec, routed, self.wall(), error.reason, atomic=self.delivery.atomic
        )
        if self.flood is not None and routed.failure is None:
            # An output turned dead letter (`_route` counted an output): a dead letter for the
            # flood guard too. It may pause only while nothing of the record is out (its only
            # output refused): at-least-once cannot take back outputs produced before.
            if len(routed.outputs) == 1 and self.flood.would_flood(self.clock()):
                self._flood_pause(rec)
                return
            self.flood.record(True)
        self._send(rec, smaller, shrink=False)

    def _account(self, rec: SourceRecord, routed: Routed) -> None:
        failure = routed.failure
        tally = self._tally
        if failure is None:
            tally.outcomes[routed.outcome] += 1
            return
        category = failure.category  # a StrEnum: counts under its value
        tally.outcomes["held" if failure.category is Category.HELD else routed.outcome] += 1
        tally.dead_letters[category] += 1
        self.dead_log.record(rec, routed, self.clock())

    def _react(self, state: Polled, now: float) -> None:
        """Act on one fold of acknowledgements: a failure opens the breaker (a too-large
        refusal only stops the batch: it is a record's, found by reading it again), progress
        closes a half-open one."""
        if state.failure is not None:
            if state.too_large:
                self._size_owed(state.failure)
            else:
                self._delivery_failed(state.failure)
        elif state.progress:
            self.breaker.record_success(now)

    def _tick(self, now: float) -> None:
        """Once a second: metrics into prometheus-client, aggregated log lines, the hook."""
        if now - self._last_tick < 1.0:
            return
        self._last_tick = now
        self.metrics.in_flight.labels(self.options.pipeline).set(self.delivery.pending())
        self.metrics.flush()
        self.dead_log.flush(now)
        if self.on_tick is not None:
            self.on_tick()

    # -- retries, outages, floods -------------------------------------------------------------
    def _retry_wait(self, rec: SourceRecord, retry: RetryAfter) -> bool:
        """Wait out a retry delay while polling (group membership and `max.poll.interval.ms`
        stay healthy). False when the dependency is judged down: the record is set aside."""
        self._tally.retries += 1
        self.breaker.record_failure(self.clock(), retry.error)
        if self.breaker.state is BreakerState.OPEN:
            self._interrupt(rec, f"dependency failing: {retry.error}")
            return False
        self._checkpoint()  # exactly-once: no transaction open across a wait
        self._pause_all()
        deadline = self.clock() + retry.delay_s
        while self.clock() < deadline and not self._stopping:
            self._poll_idle(min(0.1, max(0.0, deadline - self.clock())))
        if self._stopping or self._interrupted or self._breaker_open():
            self._interrupt(rec, "stopping" if self._stopping else "outage during a retry wait")
            return False
        self._resume_all()
        return True

    def _checkpoint(self) -> None:
        """End the batch so far (its records are delivered and counted) and start another."""
        now = self.clock()
        tally, self._tally = self._tally, Tally()
        self._react(self.delivery.end(now, tally), now)
        self.delivery.begin(now)

    def _breaker_open(self) -> bool:
        """Read afresh: acknowledgements served while waiting may have tripped it."""
        return self.breaker.state is BreakerState.OPEN

    def _flood_pause(self, rec: SourceRecord) -> None:
        assert self.flood is not None
        self.flood.trip(self.clock())
        self.metrics.flood_trips.labels(self.options.pipeline).inc()
        self.metrics.flood_paused.labels(self.options.pipeline).set(1)
        log.error(
            "flood guard: dead letters crossed %.0f%% of the last records; pausing instead of "
            "draining the topic into the DLQ",
            self.flood.ratio * 100,
            extra={"pipeline": self.options.pipeline, "topic": rec.topic},
        )
        self._interrupt(rec, "flood guard")

    def _interrupt(self, rec: SourceRecord, reason: str) -> None:
        """Stop the batch at `rec`: it and everything after it will be read again."""
        self._interrupted = True
        tp = (rec.topic, rec.partition)
        if not (self._revoked and tp in self._gone):  # else no longer ours to resume
            self.gate.remember(tp, rec.offset)
        self._pause_all()
        log.info("pausing at %s/%d/%d: %s", rec.topic, rec.partition, rec.offset, reason)

    def _delivery_failed(self, reason: str) -> None:
        if self.breaker.state is not BreakerState.OPEN:
            self.breaker.trip(self.clock(), reason)
            log.error("delivery failed, opening the circuit: %s", reason)
        self._interrupted = True
        self._pause_all()

    def _watch(self, now: float) -> None:
        """A delivery pending too long is an outage even before librdkafka reports an error."""
        reason = self.delivery.stalled(now)
        if reason is not None and self.breaker.state is not BreakerState.OPEN:
            self.breaker.trip(now, reason)
            log.error("deliveries stalled, opening the circuit: %s", reason)
            self._pause_all()

    def _gate_open(self) -> bool:
        """Closed while the breaker is open or the flood guard pauses. Reopening it first drains
        in-flight deliveries and seeks every partition back to its first unfinished offset."""
        now = self.clock()
        if self.flood is not None and self.flood.paused(now):
            return False
        if self.breaker.state is BreakerState.OPEN:
            if self.delivery.in_flight() > 0 or not self.breaker.allow(now):
                return False
        elif not self.gate.paused:
            return True
        if self.delivery.in_flight() > 0:
            return False
        self._rewind()
        if not self._resume_all():
            return False
        self.metrics.flood_paused.labels(self.options.pipeline).set(0)
        return True

    def _rewind(self) -> None:
        """Add the delivery mode's rewind points (failed deliveries, an aborted transaction) to
        the gate's; `_resume_all` seeks to each."""
        points = self.delivery.take_rewind()
        if self._sizing_owed:  # the partitions read again go one record at a time
            self._sizing_owed = False
            self._sizing.update(dict.fromkeys(points, self.options.batch_size))
        for tp, offset in points.items():
            self.gate.remember(tp, offset)

    def _idle(self) -> None:
        self._poll_idle(self.options.poll_timeout_s)

    def _poll_idle(self, timeout: float) -> None:
        """Poll with every partition paused; anything still returned is set aside, not lost."""
        for rec in self.source.consume(self.options.batch_size, timeout):
            self.gate.remember((rec.topic, rec.partition), rec.offset)
        now = self.clock()
        self._react(self.delivery.poll(now), now)
        self._tick(now)

    def _pause_all(self) -> None:
        self.gate.paused = True
        self.source.pause(self.assigned)

    def _resume_all(self) -> bool:
        """Seek each partition back to its first record read but not handled, then resume them
        all. A partition the consumer cannot seek yet (just assigned, its committed offset still
        being fetched) keeps the gate closed until the next loop seeks it: resuming without the
        seek would skip the records it still owes."""
        resume_at = self.gate.resume_at
        for tp, offset in list(resume_at.items()):
            if tp in self.assigned:
                if not self.source.seek(tp, offset):
                    if self._unseekable != tp:
                        self._unseekable = tp
                        log.info("%s/%d cannot seek yet; staying paused", tp[0], tp[1])
                    return False
                self._tally.rewinds += 1
                log.info("resuming %s/%d at offset %d", tp[0], tp[1], offset)
            del resume_at[tp]
        self._unseekable = None
        self.gate.paused = False
        self.source.resume(self.assigned)
        return True

    # -- rebalances (the Source calls these) and shutdown --------------------------------------
    def on_assign(self, tps: list[TP]) -> None:
        self._joined = True
        self._mark_assigned(tps)
        self.assigned.update(tps)
        self.delivery.assign(tps)
        self._fresh.extend(tps)
        self.metrics.assigned.labels(self.options.pipeline).set(len(self.assigned))
        log.info("assigned %s", _names(tps))

    def _settle_fresh(self) -> None:
        """Give newly assigned partitions the gate's state. librdkafka keeps a partition's pause
        flag across a lost and re-gained assignment, so a resume is as necessary as a pause."""
        if not self._fresh:
            return
        fresh, self._fresh = self._fresh, []
        if self.gate.paused:
            self.source.pause(fresh)
        else:
            self.source.resume(fresh)

    def on_revoke(self, tps: list[TP]) -> None:
        """Finish and commit what is done for the partitions leaving this member, all within
        one deadline."""
        self.delivery.revoke(tps, self.clock() + self.options.shutdown_deadline_s)
        self._clear_marks(tps)
        self._forget(tps)
        log.info("revoked %s", _names(tps))

    def on_lost(self, tps: list[TP]) -> None:
        self.delivery.lost(tps)
        self._forget_marks(tps)
        self._forget(tps)
        if self.assigned:  # the gate's reopening rewinds them if the delivery mode says so
            self._pause_all()  # (exactly-once: the aborted transaction held their records)
        log.warning("lost %s (another member owns them now)", _names(tps))

    def _forget(self, tps: list[TP]) -> None:
        self._revoked = True
        self._gone.update(tps)
        for tp in tps:
            self.assigned.discard(tp)
            self.gate.resume_at.pop(tp, None)
            self._sizing.pop(tp, None)
            self._oversize.pop(tp, None)
        self.metrics.assigned.labels(self.options.pipeline).set(len(self.assigned))

    def _shutdown(self) -> None:
        """Drain in-flight work, commit, and leave the group within the deadline."""
        self.delivery.close(self.clock() + self.options.shutdown_deadline_s)
        self._clear_marks(sorted(self.assigned))
        self.dead_log.flush(self.clock(), force=True)
        self.metrics.flush()
        self.source.close()
        log.info("worker stopped")


def _names(tps: list[TP]) -> str:
    return ", ".join(f"{t}/{p}" for t, p in tps) or "nothing"
