"""Which offsets are safe to commit, from per-batch acknowledgements (pure).

The worker reads a batch, routes each record and produces its outputs or its dead letter, all
tagged with the batch's id. A batch is *finished* when it is closed (nothing more will be
produced for it) and the broker acknowledged every record produced for it. Batches finish in
order: the committable position of a partition is where the last batch of the finished prefix
left it, so every record before a committed offset reached its output or its DLQ.

A refused record fails its whole batch; the batch then stays unfinished until the worker rewinds
(`take_rewind`), which seeks each partition of the failed batches back to their first offset in
them. Acknowledgements are folded once per poll (`apply`), never per record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

TP = tuple[str, int]


@dataclass(slots=True)
class Batch:
    """One consumed batch as far as delivery goes. `ranges[tp]` is `[first, next]`: the first
    offset routed in this batch and one past the last. `tag` is the caller's (e.g. what to count
    in metrics once the batch is finished)."""

    id: int
    started_at: float
    ranges: dict[TP, list[int]] = field(default_factory=dict)
    expected: int = 0
    acked: int = 0
    failed: bool = False
    closed: bool = False
    tag: object = None

    def add(self, tp: TP, offset: int, outputs: int) -> None:
        """Record that `offset` of `tp` was routed here with `outputs` records produced."""
        span = self.ranges.get(tp)
        if span is None:
            self.ranges[tp] = [offset, offset + 1]
        else:
            span[1] = offset + 1
        self.expected += outputs

    @property
    def finished(self) -> bool:
        return self.closed and not self.failed and self.acked >= self.expected

    @property
    def in_flight(self) -> int:
        return max(0, self.expected - self.acked) if not self.failed else 0


class BatchTracker:
    """Open batches in the order they were read, and the positions finished batches reached."""

    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()
        self._by_id: dict[int, Batch] = {}
        self._next_id = 0
        self._reached: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    def open(self, now: float) -> Batch:
        self._next_id += 1
        batch = Batch(self._next_id, now)
        self._batches.append(batch)
        self._by_id[batch.id] = batch
        return batch

    def close(self, batch: Batch) -> list[Batch]:
        """No more records will be produced for `batch`; the batches this finished, in order."""
        batch.closed = True
        return self._advance()

    def apply(self, batch_id: int, acked: int, failed: int) -> list[Batch]:
        """Fold one poll's counts for one batch; returns the batches finished by it, in order.
        Counts for a batch already forgotten (rewound, revoked) are ignored."""
        batch = self._by_id.get(batch_id)
        if batch is None:
            return []
        batch.acked += acked
        if failed:
            batch.failed = True
        return self._advance()

    def _advance(self) -> list[Batch]:
        done = []
        while self._batches and self._batches[0].finished:
            batch = self._batches.popleft()
            del self._by_id[batch.id]
            for tp, (_first, next_offset) in batch.ranges.items():
                self._reached[tp] = next_offset
            done.append(batch)
        return done

    def committable(self) -> dict[TP, int]:
        """Positions that may be committed now and differ from what was committed last."""
        return {tp: o for tp, o in self._reached.items() if self._committed.get(tp) != o}

    def mark_committed(self, offsets: dict[TP, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._reached:
                self._committed[tp] = offset

    def commit_failed(self, tps: Iterable[TP]) -> None:
        """An asynchronous commit failed: commit these again next time."""
        for tp in tps:
            self._committed.pop(tp, None)

    def in_flight(self) -> int:
        """Records produced and neither acknowledged nor refused."""
        return sum(b.in_flight for b in self._batches)

    def has_failures(self) -> bool:
        return any(b.failed for b in self._batches)

    def oldest_started_at(self) -> float | None:
        """When the oldest unfinished batch started (for stall detection)."""
        for batch in self._batches:
            if batch.closed and batch.in_flight:
                return batch.started_at
        return None

    def routed_through(self) -> dict[TP, int]:
        """Per partition, the offset after the last record the unfinished batches hold: how far
        the records read again after a rewind were routed once already."""
        routed: dict[TP, int] = {}
        for batch in self._batches:
            for tp, (_first, next_offset) in batch.ranges.items():
                routed[tp] = max(routed.get(tp, next_offset), next_offset)
        return routed

    def take_rewind(self) -> dict[TP, int]:
        """Forget the failed batches; per partition of theirs, the first offset to read again.
        Later batches forget those partitions too (they are read again after the seek), so no
        commit can pass a refused record."""
        points: dict[TP, int] = {}
        kept: deque[Batch] = deque()
        for batch in self._batches:
            if batch.failed:
                for tp, (first, _next) in batch.ranges.items():
                    points.setdefault(tp, first)
                del self._by_id[batch.id]
                continue
            for tp in points:
                batch.ranges.pop(tp, None)
            kept.append(batch)
        self._batches = kept
        self._advance()
        return points

    def revoke(self, tp: TP) -> None:
        """The partition left this member: forget it everywhere."""
        for batch in self._batches:
            batch.ranges.pop(tp, None)
        self._reached.pop(tp, None)
        self._committed.pop(tp, None)

    def forget(self) -> None:
        """Forget every batch (an aborted transaction, a lost assignment)."""
        self._batches.clear()
        self._by_id.clear()
