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
from pipeline.kafka.seam import TP, SinkFailure, Source
from pipeline.runtime.crash_marks import CrashMarks
from pipeline.runtime.deadletter_log import DeadLetterLog
from pipeline.runtime.delivery import Delivery, Polled
from pipeline.runtime.metrics import Tally, WorkerMetrics
from pipeline.runtime.too_large import TooLargeRecords

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


class Worker(TooLargeRecords, CrashMarks):
    """Runs one group member of a pipeline until `stop()` (SIGTERM/SIGINT) is called.

    Two rare paths live in modules of their own, mixed in: records the broker refuses as too
    large (`too_large.py`) and the crash-loop guard's marks (`crash_marks.py`)."""

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
        CrashMarks.__init__(self)  # the rare paths' state first: nothing below may need it unset
        TooLargeRecords.__init__(self)
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
        # The partitions the crash guard watches (and those of the too-large path: being sized,
        # holding a record found too large, or read again after one), taken once per batch (a
        # redrive partition that never gets a record stays unmarked all run): within a batch
        # the guard only forgets partitions, and `_careful` then routes plainly; an assignment
        # during a retry wait (`_fresh` until the next step) sends the rest of the batch
        # through `_special`.
        watched = {*guard.suspects, *guard.unmarked} if guard is not None else set()
        slow = guard is not None
        if self._sizing or self._oversize or self._recounted:
            watched.update(self._sizing, self._oversize, self._recounted)
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
        first_at = self.wall()
        outcome = self.handler.handle(rec, 1, first_at, first_at)
        if not isinstance(outcome, Routed):
            retried = self._retried(rec, outcome, first_at)
            if retried is None:
                return
            outcome = retried
        failure = outcome.failure
        if self.flood is not None:
            dead = failure is not None and failure.category is not Category.HELD
            if dead and self.flood.would_flood(self.clock()):
                self._flood_pause(rec)
                return
            self.flood.record(dead)
        self._send(rec, outcome)

    def _retried(self, rec: SourceRecord, retry: RetryAfter, first_at: float) -> Routed | None:
        """`rec`'s route once its processing, asking for `retry`, is retried in place (each
        delay waited out with the partitions paused). None when the batch stops at `rec`, or
        its partition was revoked during a wait (the new assignment reads it again)."""
        attempt = 1
        while True:
            if not self._retry_wait(rec, retry):
                return None
            if self._revoked and (rec.topic, rec.partition) in self._gone:
                return None
            attempt += 1
            outcome = self.handler.handle(rec, attempt, first_at, self.wall())
            if isinstance(outcome, Routed):
                return outcome
            retry = outcome

    def _special(self, rec: SourceRecord) -> None:
        """A record of a partition in careful mode (a crash suspect, or not yet marked), being
        sized (a too-large refusal to pin down), holding a record found too large, or read
        again after one (its records counted by the flood guard already: `_uncounted`)."""
        if self._recounted:
            self._uncounted(rec, self._careful)
        else:
            self._careful(rec)

    def _careful(self, rec: SourceRecord) -> None:
        """The crash guard's checks and marks come first, sizing after (`_guarded` ends in
        `_sized`): a partition being sized may not be checked or marked yet."""
        guard = self.crashes
        tp = (rec.topic, rec.partition)
        if guard is not None and tp in guard.suspects:
            self._one_at_a_time(rec)
        elif guard is not None and (tp in self._unchecked or tp in guard.unmarked):
            self._guarded(rec, guard)
        elif tp in self._sizing:
            self._sized(rec)
        else:
            self._plain(rec)

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
        self._recounted.clear()  # the guard forgot what it counted: read again, they count
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
        self._recount(points)
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
            self._recounted.pop(tp, None)
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
