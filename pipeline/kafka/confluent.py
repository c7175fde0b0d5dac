"""`Source` and `Sink` (pipeline.kafka.seam) on confluent-kafka / librdkafka.

Delivery reports arrive through one bound method per batch (`_BatchAcks.report`), created when
the batch's first record is produced, never a lambda or a partial per record; `poll` hands the
counts back as `Ack` values.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Output
from pipeline.kafka.clients import (
    KafkaConf,
    is_retriable,
    kafka_error,
    make_consumer,
    make_producer,
    take_ready,
    to_record,
)
from pipeline.kafka.seam import (
    OFFSET_BEGINNING,
    TP,
    Ack,
    Committed,
    RebalanceListener,
    SinkError,
    SinkFailure,
)

log = logging.getLogger("lazarus.worker")
T = TypeVar("T")
_Headers = list[tuple[str, str | bytes | None]]

STUCK_GRACE_S = 5.0
"""How long past its own timeout a transactional call may take before it counts as stuck."""

_NOT_SEEKABLE_YET = frozenset({KafkaError._STATE, KafkaError._PREV_IN_PROGRESS})
"""librdkafka's seek refuses a partition whose fetcher has not started (assigned, its committed
offset still being fetched) or is stopping (leaving in a rebalance)."""
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})


def sink_error(err: KafkaError | None, what: str, topic: str | None = None) -> SinkError:
    """librdkafka's error flags as the project's `SinkError`."""
    if err is None:
        return SinkError(what, topic)
    code = err.code()
    return SinkError(
        f"{what}: {err.str()}",
        topic,
        fatal=bool(err.fatal()),
        abortable=bool(err.txn_requires_abort()),
        retriable=bool(err.retriable()),
        too_large=code in _TOO_LARGE,
    )


def _tps(parts: Iterable[TopicPartition]) -> list[TP]:
    return [(tp.topic, tp.partition) for tp in parts]


def _committed_parts(offsets: Mapping[TP, Committed]) -> list[TopicPartition]:
    """Offsets to commit (by the consumer, or in a transaction), with their metadata if any."""
    return [
        TopicPartition(t, p, c.offset, metadata=c.metadata)
        if c.metadata
        else TopicPartition(t, p, c.offset)
        for (t, p), c in offsets.items()
    ]


class KafkaSource:
    """A `Source` on a confluent-kafka `Consumer` (auto-commit off, read_committed)."""

    def __init__(self, base: KafkaConf, group_id: str) -> None:
        self._commit_failures: list[TP] = []
        self._consumer = make_consumer(base, group_id, on_commit=self.on_commit)

    @property
    def consumer(self) -> Consumer:
        return self._consumer

    def on_commit(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        """The consumer's `on_commit` callback: remembered for `commit_failures`."""
        if err is not None:
            log.warning("offset commit failed (will retry): %s", err.str())
            self._commit_failures.extend(_tps(parts))

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._consumer.subscribe(
            list(topics),
            on_assign=lambda _c, parts: listener.on_assign(_tps(parts)),
            on_revoke=lambda _c, parts: listener.on_revoke(_tps(parts)),
            on_lost=lambda _c, parts: listener.on_lost(_tps(parts)),
        )

    def consume(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        records = []
        for msg in take_ready(self._consumer, max_records, timeout_s):
            if msg.error() is None:
                records.append(to_record(msg))
            else:
                log.warning("consumer error: %s", msg.error())
        return records

    def pause(self, tps: Iterable[TP]) -> None:
        parts = [TopicPartition(t, p) for t, p in tps]
        if parts:
            self._consumer.pause(parts)

    def resume(self, tps: Iterable[TP]) -> None:
        parts = [TopicPartition(t, p) for t, p in tps]
        if parts:
            self._consumer.resume(parts)

    def seek(self, tp: TP, offset: int) -> bool:
        try:
            self._consumer.seek(TopicPartition(tp[0], tp[1], offset))
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is not None and err.code() in _NOT_SEEKABLE_YET:
                return False
            raise
        return True

    def commit(self, offsets: Mapping[TP, Committed], *, wait: bool) -> None:
        parts = _committed_parts(offsets)
        try:
            if wait:
                self._consumer.commit(offsets=parts, asynchronous=False)
            else:
                self._consumer.commit(offsets=parts, asynchronous=True)
        except KafkaException as exc:
            raise SinkFailure(sink_error(kafka_error(exc), "offset commit failed")) from exc

    def commit_failures(self) -> list[TP]:
        failed, self._commit_failures = self._commit_failures, []
        return failed

    def committed(self, tps: Sequence[TP], timeout_s: float) -> dict[TP, Committed]:
        asked = [TopicPartition(t, p) for t, p in tps]
        found = retry_kafka(
            lambda: self._consumer.committed(asked, timeout=timeout_s),
            timeout_s,
            "reading the committed offsets",
        )
        return {
            (tp.topic, tp.partition): Committed(
                tp.offset if tp.offset >= 0 else OFFSET_BEGINNING, tp.metadata or ""
            )
            for tp in found
        }

    def group_metadata(self) -> object:
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        self._consumer.close()


class _BatchAcks:
    """Delivery-report counts of one batch, between two polls."""

    __slots__ = ("acked", "batch", "error", "failed", "owner")

    def __init__(self, batch: int, owner: KafkaSink) -> None:
        self.batch = batch
        self.owner = owner
        self.acked = 0
        self.failed = 0
        self.error: SinkError | None = None

    def report(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed += 1
            if self.error is None:
                self.error = sink_error(err, "delivery failed", msg.topic())
        self.owner.changed.add(self)


DELIVERY_REPORT_ONLY_ERROR = "delivery.report.only.error"


class KafkaSink:
    """A `Sink` on a confluent-kafka `Producer` (idempotent; transactional when configured)."""

    def __init__(self, base: KafkaConf, transactional_id: str | None = None) -> None:
        if transactional_id is not None:
            # The transaction's commit is its acknowledgement: a delivery report per record
            # (a Message built, its 17 headers copied for a dead letter, a Python call) only
            # served failures, which librdkafka still reports (the Sink protocol's `poll`).
            base = {DELIVERY_REPORT_ONLY_ERROR: True, **base}
        self._base = base
        self._transactional_id = transactional_id
        self._producer = make_producer(base, transactional_id)
        self._batch: _BatchAcks | None = None
        self._report: Callable[[KafkaError | None, Message], None] | None = None
        self.changed: set[_BatchAcks] = set()

    def produce(self, out: Output, batch: int) -> None:
        if self._batch is None or self._batch.batch != batch:
            self._batch = _BatchAcks(batch, self)
            self._report = self._batch.report
        report = self._report
        # confluent-kafka takes a list (a dead letter's is one already, 17 headers) or None:
        # no headers is None, not an empty list for it to convert (same record)
        raw = out.headers
        headers = cast(_Headers, raw if type(raw) is list else list(raw)) if raw else None
        while True:
            try:
                self._producer.produce(
                    out.topic, out.value, out.key, headers=headers, on_delivery=report
                )
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise SinkFailure(
                    sink_error(kafka_error(exc), "produce refused", out.topic)
                ) from exc

    def poll(self, timeout_s: float) -> list[Ack]:
        self._call(lambda: self._producer.poll(timeout_s), "polling the producer")
        return self._collect()

    def pending(self) -> int:
        return len(self._producer)

    def flush(self, timeout_s: float) -> list[Ack]:
        self._call(lambda: self._producer.flush(timeout_s), "flushing the producer")
        return self._collect()

    def reset(self, timeout_s: float) -> None:
        with contextlib.suppress(KafkaException):  # a fatal producer may refuse; it goes anyway
            self._producer.purge()
        self.changed.clear()
        self._batch = None
        self._producer = make_producer(self._base, self._transactional_id)
        self.init_transactions(timeout_s)

    def _collect(self) -> list[Ack]:
        if not self.changed:
            return []
        acks = []
        for counts in self.changed:
            acks.append(Ack(counts.batch, counts.acked, counts.failed, counts.error))
            counts.acked = counts.failed = 0
            counts.error = None
        self.changed.clear()
        return acks

    def init_transactions(self, timeout_s: float) -> None:
        retry_kafka(
            lambda: self._producer.init_transactions(timeout_s),
            timeout_s,
            "initialising transactions",
        )

    def begin_transaction(self) -> None:
        self._call(self._producer.begin_transaction, "beginning a transaction")

    def send_offsets(
        self, offsets: Mapping[TP, Committed], group: object, timeout_s: float
    ) -> None:
        parts = _committed_parts(offsets)
        producer = self._producer
        self._bounded(
            lambda: producer.send_offsets_to_transaction(parts, group, timeout_s),
            "sending offsets to the transaction",
            timeout_s,
        )

    def commit_transaction(self, timeout_s: float) -> None:
        producer = self._producer
        self._bounded(lambda: producer.commit_transaction(timeout_s), "committing", timeout_s)

    def abort_transaction(self, timeout_s: float) -> None:
        producer = self._producer
        self._bounded(lambda: producer.abort_transaction(timeout_s), "aborting", timeout_s)

    def _bounded(self, call: Callable[[], object], what: str, timeout_s: float) -> None:
        """A transactional call that must return within its own timeout (plus a grace); one
        that overruns is a fatal `SinkFailure`: the caller starts a new producer (which fences
        the stuck one) instead of hanging with it. The call runs in a thread of its own, since
        librdkafka's timeout does not bound every one of these calls:

        - send_offsets_to_transaction: seen here waiting for minutes after a broker restart
          (the fault suite's broker restart, 8381af0). librdkafka (rdkafka_txnmgr.c, 2.15 and
          master of 2026-07) waits for its result with RD_POLL_INFINITE, leaving the timeout
          to the group coordinator request, whose deadline (`creq_ts_timeout`) nothing checks:
          librdkafka issue #5456, its fix (PR #5457) not merged.
        - commit_transaction / abort_transaction: librdkafka bounds each of their waits by the
          timeout (a retriable _TIMED_OUT comes back first) except the last, the
          acknowledgement step, which waits with RD_POLL_INFINITE on librdkafka's main thread.
          Bounded as well: the thread costs ~54 us a call (a bounded no-op against a direct
          one), next to a transaction's ~14 ms send_offsets alone (`TRANSACTIONAL_DEFAULTS`).

        tests/unit/test_h27_bounded.py holds each call stuck and checks the fatal failure."""
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                self._call(call, what)
                outcome.append(None)
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append(exc)

        worker = threading.Thread(target=run, name=f"txn-{what}", daemon=True)
        worker.start()
        worker.join(timeout_s + STUCK_GRACE_S)
        if not outcome:
            raise SinkFailure(
                SinkError(
                    f"{what} did not return within {timeout_s + STUCK_GRACE_S:.0f}s", fatal=True
                )
            )
        if outcome[0] is not None:
            raise outcome[0]

    @staticmethod
    def _call(call: Callable[[], object], what: str) -> None:
        try:
            call()
        except KafkaException as exc:
            raise SinkFailure(sink_error(kafka_error(exc), what)) from exc


def retry_kafka(call: Callable[[], T], timeout_s: float, what: str) -> T:
    """Call until it succeeds, retrying what `is_retriable` allows until `timeout_s`; then
    `SinkFailure`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            if is_retriable(exc) and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise SinkFailure(sink_error(kafka_error(exc), f"{what} failed")) from exc
