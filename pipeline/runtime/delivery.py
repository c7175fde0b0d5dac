"""How routed records reach the broker and when offsets count as done: the two delivery modes.

`AtLeastOnce` produces asynchronously and commits, per partition, only the offset below which
every record was acknowledged in its output or the DLQ (from `offsets.OffsetTracker`).
`Transactions` (exactly-once) puts a batch's outputs, dead letters and consumed offsets in one
Kafka transaction; an abortable failure aborts it and rewinds to the committed offsets.
"""

from __future__ import annotations

import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Output, Routed
from pipeline.core.offsets import OffsetTracker
from pipeline.errors import RuntimeFailure
from pipeline.kafka.clients import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
    is_retriable,
    kafka_error,
    partitions,
)
from pipeline.runtime.metrics import WorkerMetrics

log = logging.getLogger("lazarus.worker")
TP = tuple[str, int]
OFFSET_BEGINNING = -2


def _noop_failure(reason: str) -> None:
    del reason


def _noop_success() -> None:
    return None


class Delivery(ABC):
    """What the worker loop needs from a delivery mode."""

    on_failure: Callable[[str], None] = staticmethod(_noop_failure)
    on_success: Callable[[], None] = staticmethod(_noop_success)

    def __init__(self, producer: Producer, metrics: WorkerMetrics, clock: Callable[[], float]):
        self.producer = producer
        self.metrics = metrics
        self.clock = clock

    def produce(self, out: Output, callback: Callable[[KafkaError | None, Any], None]) -> None:
        """Produce, waiting for room when librdkafka's queue is full. A produce refused at once
        (e.g. larger than `message.max.bytes`) is reported like a failed delivery: an outage to
        fix, never a record to skip."""
        while True:
            try:
                self.producer.produce(
                    out.topic, out.value, out.key, headers=list(out.headers), on_delivery=callback
                )
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                callback(kafka_error(exc), None)
                return

    def poll(self) -> None:
        self.producer.poll(0)

    def in_flight(self) -> int:
        return len(self.producer)

    # The hooks below are specialised by the two modes.
    def begin(self) -> None:  # noqa: B027 - optional hook; both modes need nothing here yet
        """A batch starts (transactions begin lazily, on the first record produced)."""

    @abstractmethod
    def send(self, rec: SourceRecord, routed: Routed, now: float) -> None: ...
    @abstractmethod
    def end(self, now: float) -> None: ...
    @abstractmethod
    def checkpoint(self, now: float) -> None: ...
    @abstractmethod
    def stalled(self, now: float) -> str | None: ...
    @abstractmethod
    def rewind_points(self, consumer: Consumer) -> dict[TP, int]: ...
    @abstractmethod
    def forget_from(self, tp: TP, offset: int) -> None: ...
    @abstractmethod
    def assign(self, tp: TP) -> None: ...
    @abstractmethod
    def revoke(self, keys: list[TP], consumer: Consumer, deadline_s: float) -> None: ...
    @abstractmethod
    def lost(self, keys: list[TP]) -> None: ...
    @abstractmethod
    def close(self, consumer: Consumer, deadline_s: float) -> None: ...


class AtLeastOnce(Delivery):
    """Asynchronous produce with delivery reports; commits only fully acknowledged prefixes."""

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        metrics: WorkerMetrics,
        clock: Callable[[], float],
        *,
        commit_interval_s: float,
        stall_s: float,
    ) -> None:
        super().__init__(producer, metrics, clock)
        self.consumer = consumer
        self.tracker = OffsetTracker()
        self.commit_interval_s = commit_interval_s
        self.stall_s = stall_s
        self._last_commit = clock()

    def send(self, rec: SourceRecord, routed: Routed, now: float) -> None:
        tp = (rec.topic, rec.partition)
        self.tracker.track(tp, rec.offset, len(routed.outputs), now)
        report = functools.partial(self._report, tp, rec.offset)
        for out in routed.outputs:
            self.produce(out, report)

    def _report(self, tp: TP, offset: int, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.tracker.ack(tp, offset)
            self.on_success()
        else:
            self.tracker.fail(tp, offset)
            self.on_failure(f"delivery of {tp[0]}/{tp[1]}/{offset} failed: {err.str()}")

    def end(self, now: float) -> None:
        self.producer.poll(0)
        self.metrics.in_flight.labels(self.metrics.pipeline).set(len(self.producer))
        if now - self._last_commit >= self.commit_interval_s:
            self.commit()

    def commit(self, only: list[TP] | None = None, *, wait: bool = False) -> None:
        """Commit what is safe. Asynchronous in the loop (a coordinator outage must not block
        it: `committed` confirms or un-marks); synchronous on revoke and shutdown."""
        offsets = self.tracker.committable()
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        self._last_commit = self.clock()
        if not offsets:
            return
        try:
            if wait:
                self.consumer.commit(offsets=partitions(offsets), asynchronous=False)
            else:
                self.consumer.commit(offsets=partitions(offsets), asynchronous=True)
        except KafkaException as exc:
            log.warning("offset commit failed (will retry): %s", exc)
            return
        self.tracker.mark_committed(offsets)
        self.metrics.commits.labels(self.metrics.pipeline).inc()

    def committed(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        """The consumer's `on_commit` callback: a failed commit is tried again next interval."""
        if err is not None:
            log.warning("offset commit failed (will retry): %s", err.str())
            self.tracker.mark_committed({(tp.topic, tp.partition): -1 for tp in parts})

    def checkpoint(self, now: float) -> None:
        self.producer.poll(0)

    def stalled(self, now: float) -> str | None:
        oldest = self.tracker.oldest_pending_since()
        if oldest is not None and now - oldest > self.stall_s:
            return f"a produced record has waited {now - oldest:.1f}s for its acknowledgement"
        return None

    def rewind_points(self, consumer: Consumer) -> dict[TP, int]:
        return self.tracker.rewind_points()

    def forget_from(self, tp: TP, offset: int) -> None:
        self.tracker.rewind(tp, offset)

    def assign(self, tp: TP) -> None:
        self.tracker.assign(tp)

    def revoke(self, keys: list[TP], consumer: Consumer, deadline_s: float) -> None:
        self.producer.flush(deadline_s)
        self.commit(only=keys, wait=True)
        for tp in keys:
            self.tracker.revoke(tp)

    def lost(self, keys: list[TP]) -> None:
        for tp in keys:
            self.tracker.revoke(tp)

    def close(self, consumer: Consumer, deadline_s: float) -> None:
        left = self.producer.flush(deadline_s)
        if left:
            log.error(
                "%d records still unacknowledged at shutdown; their offsets stay uncommitted", left
            )
        self.commit()


class Transactions(Delivery):
    """Exactly-once: one transaction per batch holding outputs, dead letters and offsets."""

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        metrics: WorkerMetrics,
        clock: Callable[[], float],
        *,
        timeout_s: float,
    ) -> None:
        super().__init__(producer, metrics, clock)
        self.consumer = consumer
        self.timeout_s = timeout_s
        self.positions: dict[TP, int] = {}
        self.assigned: set[TP] = set()
        self._open = False
        self._rewind_all = False
        self._abort_pending = False
        self._guard(lambda: producer.init_transactions(timeout_s), "initialising transactions")

    def send(self, rec: SourceRecord, routed: Routed, now: float) -> None:
        if self._abort_pending:
            return
        if not self._open:
            self._guard(self.producer.begin_transaction, "beginning a transaction")
            self._open = True
        for out in routed.outputs:
            self.produce(out, self._report)
        self.positions[(rec.topic, rec.partition)] = rec.offset + 1

    def _report(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.on_failure(f"transactional produce failed: {err.str()}")

    def end(self, now: float) -> None:
        if not self._open:
            return
        offsets = partitions(self.positions)
        try:
            self.producer.send_offsets_to_transaction(
                offsets, self.consumer.consumer_group_metadata(), self.timeout_s
            )
            self.producer.commit_transaction(self.timeout_s)
        except KafkaException as exc:
            self._failed(exc)
            return
        self._open = False
        self.positions.clear()
        self.metrics.commits.labels(self.metrics.pipeline).inc()
        self.on_success()

    def checkpoint(self, now: float) -> None:
        self.end(now)

    def _failed(self, exc: KafkaException) -> None:
        err = kafka_error(exc)
        if err is not None and (err.fatal() or not (err.txn_requires_abort() or err.retriable())):
            raise RuntimeFailure(f"transactional producer failed fatally (fenced?): {err.str()}")
        reason = f"transaction failed, aborting: {err.str() if err else exc}"
        self._abort_pending = True
        self._rewind_all = True
        self.on_failure(reason)
        self._try_abort()

    def _try_abort(self) -> None:
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is not None and err.fatal():
                raise RuntimeFailure(f"transactional producer failed fatally: {err.str()}") from exc
            log.warning("abort not confirmed yet (will retry): %s", exc)
            return
        self._abort_pending = False
        self._open = False
        self.positions.clear()
        self.metrics.aborts.labels(self.metrics.pipeline).inc()

    def poll(self) -> None:
        self.producer.poll(0)
        if self._abort_pending:
            self._try_abort()

    def in_flight(self) -> int:
        """Non-zero while an abort is unconfirmed: the worker's gate stays closed until then."""
        return 1 if self._abort_pending else 0

    def stalled(self, now: float) -> str | None:
        return None  # a stalled transaction fails its commit within `timeout_s`

    def rewind_points(self, consumer: Consumer) -> dict[TP, int]:
        """After an abort, every assigned partition goes back to its committed offset."""
        if not self._rewind_all or not self.assigned:
            return {}
        asked = [TopicPartition(t, p) for t, p in self.assigned]
        committed: list[TopicPartition] = []
        self._guard(
            lambda: committed.extend(consumer.committed(asked, timeout=self.timeout_s)),
            "reading the committed offsets",
        )
        self._rewind_all = False
        return {
            (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            for tp in committed
        }

    def forget_from(self, tp: TP, offset: int) -> None:
        self.positions.pop(tp, None)

    def assign(self, tp: TP) -> None:
        self.assigned.add(tp)

    def revoke(self, keys: list[TP], consumer: Consumer, deadline_s: float) -> None:
        self.end(self.clock())
        for tp in keys:
            self.assigned.discard(tp)
            self.positions.pop(tp, None)

    def lost(self, keys: list[TP]) -> None:
        if self._open:
            self._try_abort()
        for tp in keys:
            self.assigned.discard(tp)

    def close(self, consumer: Consumer, deadline_s: float) -> None:
        self.end(self.clock())
        if self._open:
            self._try_abort()

    def _guard(self, call: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                err = kafka_error(exc)
                if is_retriable(exc) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise RuntimeFailure(f"{what} failed: {err.str() if err else exc}") from exc
