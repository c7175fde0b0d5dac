"""The worker loop: poll -> decode -> process -> route -> produce -> commit.

One `Worker.step()` reads a batch, asks the handler where each record goes, produces it, and
commits what is safe. The guarantees (nothing lost, nothing silent) live in three places:

* at-least-once: an offset is committed only when every record before it was acknowledged by
  the broker in the output or the DLQ (`offsets.OffsetTracker`);
* exactly-once: outputs, dead letters and consumed offsets go in one transaction per batch
  (`delivery.Transactions`); an abortable error aborts and rewinds to the committed position;
* a downstream outage is not a bad record: a failed or stalled delivery, or too many dependency
  errors, open the circuit breaker; the worker pauses, drains what is in flight, seeks back to
  the first unacknowledged offset and probes again later. Nothing is dead-lettered or skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Handler, RetryAfter, Routed
from pipeline.core.policy import BreakerState, CircuitBreaker, FloodGuard
from pipeline.kafka.clients import Consumer, Message, TopicPartition, to_record
from pipeline.runtime.delivery import Delivery
from pipeline.runtime.metrics import WorkerMetrics

log = logging.getLogger("lazarus.worker")
TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    pipeline: str
    topics: tuple[str, ...]
    batch_size: int = 500
    poll_timeout_s: float = 0.1
    shutdown_deadline_s: float = 30.0


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
        consumer: Consumer,
        delivery: Delivery,
        handler: Handler,
        metrics: WorkerMetrics,
        breaker: CircuitBreaker,
        flood: FloodGuard | None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.consumer = consumer
        self.delivery = delivery
        self.handler = handler
        self.metrics = metrics
        self.breaker = breaker
        self.flood = flood
        self.clock = clock
        self.wall = wall
        self.gate = Gate()
        self.assigned: set[TP] = set()
        self._stopping = False
        self._interrupted = False
        self.on_tick: Callable[[], None] | None = None
        self._fresh: list[TopicPartition] = []
        self._last_tick = 0.0
        delivery.on_failure = self._delivery_failed
        delivery.on_success = lambda: self.breaker.record_success(self.clock())

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until stopped, then drain, commit and leave the group."""
        self.consumer.subscribe(
            list(self.options.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not self._stopping:
                self.step()
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stopping = True

    def step(self) -> None:
        """One turn: if the gate is open, read a batch and route every record in it."""
        self._tick()
        self._settle_fresh()
        if not self._gate_open():
            self._idle()
            return
        messages = self.consumer.consume(self.options.batch_size, self.options.poll_timeout_s)
        self._interrupted = False
        self.delivery.begin()
        for msg in messages:
            if self._interrupted or self._stopping:
                self._set_aside(msg)
            elif msg.error() is None:
                self._route(to_record(msg))
            else:
                log.warning("consumer error: %s", msg.error())
        self.delivery.end(self.clock())
        self._watch(self.clock())

    def _route(self, rec: SourceRecord) -> None:
        """Handle one record, retrying in place with the partitions paused; produce its route."""
        attempt, first_at = 1, self.wall()
        while True:
            outcome = self.handler.handle(rec, attempt, first_at, self.wall())
            if isinstance(outcome, Routed):
                break
            if not self._retry_wait(rec, outcome):
                return
            attempt += 1
        if self.flood is not None:
            if outcome.outcome == "dead_lettered" and self.flood.would_flood(self.clock()):
                self._flood_pause(rec)
                return
            self.flood.record(outcome.outcome == "dead_lettered")
        self.delivery.send(rec, outcome, self.clock())
        self._account(rec, outcome)

    def _account(self, rec: SourceRecord, outcome: Routed) -> None:
        failure = outcome.failure
        self.metrics.record(outcome.outcome, failure.category.value if failure else None)
        if failure is not None:
            log.warning(
                "dead-lettered: %s: %s",
                failure.category.value,
                failure.message,
                extra={
                    "pipeline": self.options.pipeline,
                    "topic": rec.topic,
                    "partition": rec.partition,
                    "offset": rec.offset,
                    "fingerprint": outcome.fingerprint,
                    "category": failure.category.value,
                },
            )

    def _tick(self) -> None:
        now = self.clock()

        if self.on_tick is not None and now - self._last_tick >= 1.0:
            self._last_tick = now
            self.on_tick()

    # -- retries, outages, floods -------------------------------------------------------------
    def _retry_wait(self, rec: SourceRecord, retry: RetryAfter) -> bool:
        """Wait out a retry delay while polling (group membership and `max.poll.interval.ms`
        stay healthy). False when the dependency is judged down: the record is set aside."""
        self.metrics.retries.labels(self.options.pipeline).inc()
        self.breaker.record_failure(self.clock(), retry.error)
        if self.breaker.state is BreakerState.OPEN:
            self._interrupt(rec, f"dependency failing: {retry.error}")
            return False
        self.delivery.checkpoint(self.clock())  # exactly-once: no transaction open across a wait
        self._pause_all()
        deadline = self.clock() + retry.delay_s
        while self.clock() < deadline and not self._stopping:
            self._poll_idle(min(0.1, max(0.0, deadline - self.clock())))
        if self._stopping or self._interrupted or self._breaker_open():
            self._interrupt(rec, "stopping" if self._stopping else "outage during a retry wait")
            return False
        self._resume_all()
        return True

    def _breaker_open(self) -> bool:
        """Read afresh: delivery callbacks served while waiting may have tripped it."""
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
        self.gate.remember((rec.topic, rec.partition), rec.offset)
        self._pause_all()
        log.info("pausing at %s/%d/%d: %s", rec.topic, rec.partition, rec.offset, reason)

    def _set_aside(self, msg: Message) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if (
            msg.error() is None
            and topic is not None
            and partition is not None
            and offset is not None
        ):
            self.gate.remember((topic, partition), offset)

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
        self.metrics.flood_paused.labels(self.options.pipeline).set(0)
        self._resume_all()
        return True

    def _rewind(self) -> None:
        """Add the delivery mode's rewind points (failed deliveries, an aborted transaction) to
        the gate's; `_resume_all` seeks to each."""
        for tp, offset in self.delivery.rewind_points(self.consumer).items():
            self.gate.remember(tp, offset)
        for (topic, partition), offset in self.gate.resume_at.items():
            self.metrics.rewinds.labels(self.options.pipeline).inc()
            log.info("resuming %s/%d at offset %d", topic, partition, offset)

    def _idle(self) -> None:
        self._poll_idle(self.options.poll_timeout_s)
        self.delivery.poll()

    def _poll_idle(self, timeout: float) -> None:
        """Poll with every partition paused; anything still returned is set aside, not lost."""
        msg = self.consumer.poll(timeout)
        if msg is not None:
            self._set_aside(msg)
        self.delivery.poll()

    def _pause_all(self) -> None:
        self.gate.paused = True
        parts = [TopicPartition(t, p) for t, p in self.assigned]
        if parts:
            self.consumer.pause(parts)

    def _resume_all(self) -> None:
        """Resume every partition, first seeking back to any record read but not handled."""
        for (topic, partition), offset in self.gate.resume_at.items():
            if (topic, partition) in self.assigned:
                self.consumer.seek(TopicPartition(topic, partition, offset))
                self.delivery.forget_from((topic, partition), offset)
        self.gate.resume_at.clear()
        self.gate.paused = False
        parts = [TopicPartition(t, p) for t, p in self.assigned]
        if parts:
            self.consumer.resume(parts)

    # -- rebalances and shutdown ----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        for tp in parts:
            self.assigned.add((tp.topic, tp.partition))
            self.delivery.assign((tp.topic, tp.partition))
        self._fresh.extend(parts)
        log.info("assigned %s", _names(parts))

    def _settle_fresh(self) -> None:
        """Give newly assigned partitions the gate's state. librdkafka keeps a partition's pause
        flag across a lost and re-gained assignment, so a resume is as necessary as a pause."""
        if not self._fresh:
            return
        fresh = [TopicPartition(tp.topic, tp.partition) for tp in self._fresh]
        self._fresh.clear()
        if self.gate.paused:
            self.consumer.pause(fresh)
        else:
            self.consumer.resume(fresh)

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Finish and commit what is done for the partitions leaving this member."""
        keys = [(tp.topic, tp.partition) for tp in parts]
        self.delivery.revoke(keys, self.consumer, self.options.shutdown_deadline_s)
        for key in keys:
            self.assigned.discard(key)
            self.gate.resume_at.pop(key, None)
        log.info("revoked %s", _names(parts))

    def _on_lost(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in parts]
        self.delivery.lost(keys)
        for key in keys:
            self.assigned.discard(key)
            self.gate.resume_at.pop(key, None)
        log.warning("lost %s (another member owns them now)", _names(parts))

    def _shutdown(self) -> None:
        """Drain in-flight work, commit, and leave the group within the deadline."""
        self.delivery.close(self.consumer, self.options.shutdown_deadline_s)
        self.consumer.close()
        log.info("worker stopped")


def _names(parts: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in parts) or "nothing"
