"""Which offsets are safe to commit, from the acknowledgements of outputs and dead letters (pure).

A record read at offset `o` is *finished* when every record it produced (outputs or one dead
letter, possibly none for a dropped event) was acknowledged by the broker. The committable offset
of a partition is the lowest unfinished offset, or one past the highest finished offset when none
is pending: every record before it reached its output or its DLQ. Nothing else in Lazarus decides
what to commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TopicPartitionKey = tuple[str, int]


@dataclass(slots=True)
class _Pending:
    remaining: int
    started_at: float
    failed: bool = False


@dataclass(slots=True)
class PartitionTrack:
    """Offsets of one partition, in the order they were read (ascending)."""

    pending: dict[int, _Pending] = field(default_factory=dict)
    next_offset: int | None = None  # one past the highest offset handed to `track`
    committed: int | None = None  # the last offset actually committed

    def committable(self) -> int | None:
        if self.pending:
            return min(self.pending)
        return self.next_offset


class OffsetTracker:
    """Tracks produced-but-unacknowledged work per partition and answers "what may be committed".

    Dicts keep insertion order, and offsets are tracked in the order they are read, so the first
    pending entry is the lowest: `committable` is O(1) in the common case.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, PartitionTrack] = {}

    def assign(self, tp: TopicPartitionKey) -> None:
        self._parts.setdefault(tp, PartitionTrack())

    def revoke(self, tp: TopicPartitionKey) -> None:
        self._parts.pop(tp, None)

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._parts)

    def track(self, tp: TopicPartitionKey, offset: int, outputs: int, now: float) -> None:
        """Record that `offset` was read and `outputs` records were produced for it."""
        part = self._parts.setdefault(tp, PartitionTrack())
        if outputs > 0:
            part.pending[offset] = _Pending(outputs, now)
        part.next_offset = offset + 1

    def ack(self, tp: TopicPartitionKey, offset: int) -> None:
        """One output of `offset` was acknowledged by the broker."""
        part = self._parts.get(tp)
        if part is None:
            return  # the partition was revoked meanwhile; its position is someone else's now
        pending = part.pending.get(offset)
        if pending is None:
            return
        pending.remaining -= 1
        if pending.remaining <= 0 and not pending.failed:
            del part.pending[offset]

    def fail(self, tp: TopicPartitionKey, offset: int) -> None:
        """A produce for `offset` failed: the offset stays unfinished until a rewind."""
        part = self._parts.get(tp)
        if part is not None and offset in part.pending:
            part.pending[offset].failed = True

    def committable(self) -> dict[TopicPartitionKey, int]:
        """Offsets that may be committed now and differ from what was committed last."""
        out: dict[TopicPartitionKey, int] = {}
        for tp, part in self._parts.items():
            offset = part.committable()
            if offset is not None and offset != part.committed:
                out[tp] = offset
        return out

    def mark_committed(self, offsets: dict[TopicPartitionKey, int]) -> None:
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = offset

    def in_flight(self) -> int:
        return sum(len(p.pending) for p in self._parts.values())

    def has_failures(self) -> bool:
        return any(pend.failed for p in self._parts.values() for pend in p.pending.values())

    def oldest_pending_since(self) -> float | None:
        """When the oldest unacknowledged record was produced (for stall detection)."""
        starts = [
            next(iter(p.pending.values())).started_at for p in self._parts.values() if p.pending
        ]
        return min(starts) if starts else None

    def rewind_points(self) -> dict[TopicPartitionKey, int]:
        """Per partition with unfinished work, the first unfinished offset: where to seek back to
        after a failed delivery (resuming alone would continue past the lost record)."""
        return {tp: min(p.pending) for tp, p in self._parts.items() if p.pending}

    def rewind(self, tp: TopicPartitionKey, offset: int) -> None:
        """Forget everything at or after `offset`: it will be read and produced again."""
        part = self._parts.get(tp)
        if part is None:
            return
        part.pending = {o: p for o, p in part.pending.items() if o < offset}
        part.next_offset = offset
