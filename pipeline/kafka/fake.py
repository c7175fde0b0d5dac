"""An in-memory `Source` and `Sink` (pipeline.kafka.seam) for unit tests of the worker and the
delivery modes: one group member, topics as lists, acknowledgements when the test says so.

Not a Kafka emulator: partitions are fixed, one consumer owns them all, and transactions keep
produced records apart until committed. What it does model is what the worker's guarantees
depend on: records are acknowledged (or refused) only on `FakeSink.poll`/`flush`, the committed
positions are only what was committed, and a rebalance calls the listener from inside
`consume`, as librdkafka does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Output
from pipeline.kafka.seam import (
    OFFSET_BEGINNING,
    TP,
    Ack,
    Committed,
    RebalanceListener,
    SinkError,
    SinkFailure,
)


@dataclass
class FakeCluster:
    """Topics as lists of records per partition, and the group's committed positions."""

    partitions: int = 1
    topics: dict[str, dict[int, list[SourceRecord]]] = field(default_factory=dict)
    committed: dict[TP, Committed] = field(default_factory=dict)
    control: dict[TP, set[int]] = field(default_factory=dict)
    """Offsets that hold no record a read_committed consumer returns (transaction markers,
    aborted records): offsets are not dense."""

    def append(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int = 0,
        headers: tuple[tuple[str, bytes | None], ...] = (),
        timestamp_ms: int = 1_700_000_000_000,
    ) -> SourceRecord:
        log = self.topics.setdefault(topic, {}).setdefault(partition, [])
        rec = SourceRecord(topic, partition, len(log), timestamp_ms, key, value, headers)
        log.append(rec)
        return rec

    def skip(self, topic: str, n: int = 1, *, partition: int = 0) -> None:
        """Take `n` offsets that no consumer returns (a transaction's commit marker, say)."""
        log = self.topics.setdefault(topic, {}).setdefault(partition, [])
        hidden = self.control.setdefault((topic, partition), set())
        for _ in range(n):
            hidden.add(len(log))
            log.append(SourceRecord(topic, partition, len(log), 0, None, None, ()))

    def records(self, topic: str) -> list[SourceRecord]:
        return [
            r
            for p, part in self.topics.get(topic, {}).items()
            for r in part
            if r.offset not in self.control.get((topic, p), ())
        ]


class FakeSource:
    """A `Source` owning every partition of the subscribed topics."""

    def __init__(
        self, cluster: FakeCluster, on_wait: Callable[[float], None] | None = None
    ) -> None:
        self.cluster = cluster
        self.on_wait = on_wait
        """Called with each `consume` timeout: a test's clock advances by it."""
        self.listener: RebalanceListener | None = None
        self.positions: dict[TP, int] = {}
        self.paused: set[TP] = set()
        self.pending_revoke: list[TP] = []
        self.pending_lost: list[TP] = []
        self.pending_assign: list[TP] = []
        self.commits: list[dict[TP, Committed]] = []
        self.failing_commits = False
        self.failing_committed = False
        """`committed` raises (the group coordinator away), as confluent-kafka's does."""
        self.refused_seeks: dict[TP, int] = {}
        """How many more seeks of a partition to refuse, as librdkafka does before it starts one."""
        self.closed = False
        self._commit_failures: list[TP] = []

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self.listener = listener
        self.pending_assign = [(t, p) for t in topics for p in range(self.cluster.partitions) if t]

    def revoke_on_next_consume(self, tps: list[TP]) -> None:
        """Make the next `consume` call the listener's `on_revoke`, as a rebalance would."""
        self.pending_revoke.extend(tps)

    def lose_on_next_consume(self, tps: list[TP]) -> None:
        """Make the next `consume` call the listener's `on_lost` (the session timed out: the
        partitions belong to another member already, nothing may be committed for them)."""
        self.pending_lost.extend(tps)

    def _rebalance(self) -> None:
        assert self.listener is not None
        if self.pending_lost:
            gone, self.pending_lost = self.pending_lost, []
            self.listener.on_lost(gone)
            for tp in gone:
                self.positions.pop(tp, None)
        if self.pending_revoke:
            gone, self.pending_revoke = self.pending_revoke, []
            self.listener.on_revoke(gone)
            for tp in gone:
                self.positions.pop(tp, None)
        if self.pending_assign:
            fresh, self.pending_assign = self.pending_assign, []
            for tp in fresh:
                found = self.cluster.committed.get(tp)
                self.positions[tp] = 0 if found is None else max(0, found.offset)
            self.listener.on_assign(fresh)

    def consume(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        if self.on_wait is not None:
            self.on_wait(timeout_s)
        self._rebalance()
        out: list[SourceRecord] = []
        for tp, position in self.positions.items():
            if tp in self.paused:
                continue
            log = self.cluster.topics.get(tp[0], {}).get(tp[1], [])
            taken = log[position : position + max_records - len(out)]
            self.positions[tp] = position + len(taken)
            hidden = self.cluster.control.get(tp)
            if hidden:
                taken = [r for r in taken if r.offset not in hidden]
            out.extend(taken)
            if len(out) >= max_records:
                break
        return out

    def pause(self, tps: Iterable[TP]) -> None:
        self.paused.update(tps)

    def resume(self, tps: Iterable[TP]) -> None:
        self.paused.difference_update(tps)

    def seek(self, tp: TP, offset: int) -> bool:
        if self.refused_seeks.get(tp, 0) > 0:  # a partition librdkafka has not started yet
            self.refused_seeks[tp] -= 1
            return False
        self.positions[tp] = 0 if offset == OFFSET_BEGINNING else offset
        return True

    def commit(self, offsets: Mapping[TP, Committed], *, wait: bool) -> None:
        if self.failing_commits:
            if wait:
                raise SinkFailure(SinkError("offset commit failed", retriable=True))
            self._commit_failures.extend(offsets)
            return
        self.commits.append(dict(offsets))
        self.cluster.committed.update(offsets)

    def commit_failures(self) -> list[TP]:
        failed, self._commit_failures = self._commit_failures, []
        return failed

    def committed(self, tps: Sequence[TP], timeout_s: float) -> dict[TP, Committed]:
        if self.failing_committed:
            raise SinkFailure(SinkError("coordinator not available", retriable=True))
        return {tp: self.cluster.committed.get(tp, Committed(OFFSET_BEGINNING)) for tp in tps}

    def group_metadata(self) -> object:
        return "fake-group"

    def close(self) -> None:
        self.closed = True


@dataclass
class _Produced:
    out: Output
    batch: int


class FakeSink:
    """A `Sink` whose records are acknowledged on `poll`/`flush`, refused for the topics in
    `refuse` (with `refusal`), and held back entirely while `stalled`."""

    def __init__(self, cluster: FakeCluster, *, transactional: bool = False) -> None:
        self.cluster = cluster
        self.transactional = transactional
        self.queue: list[_Produced] = []
        self.refuse: dict[str, SinkError] = {}
        self.refuse_at_once: dict[str, SinkError] = {}
        self.max_bytes: dict[str, int] = {}
        """A topic's `max.message.bytes`: a larger value is refused by the broker, so in its
        delivery report (too large), not at once as librdkafka's own size check does."""
        self.stalled = False
        self.in_transaction = False
        self.txn_records: list[Output] = []
        self.txn_offsets: dict[TP, Committed] = {}
        self.fail_commit: SinkError | None = None
        self.fail_abort: SinkError | None = None
        self.fail_reset: SinkError | None = None
        self.fatal: SinkError | None = None
        """A producer that failed fatally (fenced): every later poll raises it, as
        confluent-kafka's does, until a new producer (`reset`)."""
        self.doomed: SinkError | None = None
        self.aborting = False
        """An abort failed (timed out, say): the transaction is being aborted, and librdkafka
        refuses to commit it or add offsets to it (a state error) until an abort succeeds."""
        self._late: list[Ack] = []  # refusals served by a commit's flush, for the next poll
        """An abortable error ended the open transaction: only an abort (or a new producer)
        clears it, as in librdkafka, whose later commits fail with the same error."""
        self.transactions = 0
        self.aborts = 0
        self.resets = 0

    def produce(self, out: Output, batch: int) -> None:
        refusal = self.refuse_at_once.get(out.topic)
        if refusal is not None:
            raise SinkFailure(refusal)
        if self.transactional and not self.in_transaction:
            raise SinkFailure(SinkError("produce outside a transaction", fatal=True))
        self.queue.append(_Produced(out, batch))

    def poll(self, timeout_s: float) -> list[Ack]:
        if self.fatal is not None:
            raise SinkFailure(self.fatal)
        if self.stalled:
            return []
        if self._late:
            late, self._late = self._late, []
            return late + self.poll(timeout_s)
        counts: dict[int, list[int]] = {}
        errors: dict[int, SinkError] = {}
        for item in self.queue:
            tally = counts.setdefault(item.batch, [0, 0])
            refusal = self.refuse.get(item.out.topic)
            if refusal is None and self.max_bytes:
                refusal = self._too_large(item.out)
            if refusal is None:
                tally[0] += 1
                self._deliver(item.out)
            else:
                tally[1] += 1
                errors.setdefault(item.batch, refusal)
        self.queue.clear()
        if self.transactional:  # refusals only, as a transactional `KafkaSink` reports them
            return [Ack(b, 0, f, errors[b]) for b, (_, f) in counts.items() if f]
        return [Ack(b, a, f, errors.get(b)) for b, (a, f) in counts.items()]

    def _too_large(self, out: Output) -> SinkError | None:
        limit = self.max_bytes.get(out.topic)
        if limit is None or len(out.value or b"") <= limit:
            return None
        return SinkError("Broker: Message size too large", out.topic, too_large=True)

    def _deliver(self, out: Output) -> None:
        if self.transactional:
            self.txn_records.append(out)
        else:
            self._append(out)

    def _append(self, out: Output) -> None:
        self.cluster.append(out.topic, out.value, key=out.key, headers=tuple(out.headers))

    def pending(self) -> int:
        return len(self.queue)

    def flush(self, timeout_s: float) -> list[Ack]:
        return self.poll(timeout_s)

    def init_transactions(self, timeout_s: float) -> None:
        return None

    def begin_transaction(self) -> None:
        self.in_transaction = True

    def send_offsets(
        self, offsets: Mapping[TP, Committed], group: object, timeout_s: float
    ) -> None:
        self._not_aborting()
        self.txn_offsets.update(offsets)

    def _not_aborting(self) -> None:
        if self.aborting:
            raise SinkFailure(SinkError("Operation not valid in state AbortingTransaction"))

    def reset(self, timeout_s: float) -> None:
        if self.fail_reset is not None:
            raise SinkFailure(self.fail_reset)
        self.queue.clear()
        self._end()
        self.fail_commit = None
        self.fatal = None
        self.resets += 1

    def commit_transaction(self, timeout_s: float) -> None:
        self._not_aborting()
        acks = self.poll(timeout_s)
        self._late.extend(a for a in acks if a.failed)
        if self.doomed is not None:
            raise SinkFailure(self.doomed)
        if self.fail_commit is not None or any(a.failed for a in acks):
            error = self.fail_commit or SinkError("delivery failed", abortable=True)
            if error.abortable:
                self.doomed = error
            raise SinkFailure(error)
        for out in self.txn_records:
            self._append(out)
        self.cluster.committed.update(self.txn_offsets)
        self._end()
        self.transactions += 1

    def abort_transaction(self, timeout_s: float) -> None:
        if self.fail_abort is not None:
            self.aborting = True
            raise SinkFailure(self.fail_abort)
        self.queue.clear()
        self._end()
        self.aborts += 1

    def _end(self) -> None:
        self.in_transaction = False
        self.aborting = False
        self.doomed = None
        self.txn_records = []
        self.txn_offsets = {}
