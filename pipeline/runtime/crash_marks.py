"""The crash-loop guard's marks: where a member starts, and each record of a suspect partition.

`core/crashes.py` decides, purely, which partition is suspect and which record killed too many
processes; this module writes and reads the marks around the loop. At assignment it reads the
committed positions (a mark left there: a process died before committing past it) and marks
where it starts; it routes a suspect partition's records one at a time, each marked before it
runs and made durable after; a clean stop clears its marks, except the deaths counted on a
suspect record it had not handled yet (they stay behind, in a mark no process owns). README, "A
record that kills the process".

A rare path, kept apart so that `worker.py` holds the loop. `CrashMarks` is a mixin of `Worker`:
its state lives on the worker, and it calls the loop's own steps (declared for mypy at the top of
the class), routing one record alone through `too_large.py`'s `_alone` and `_settle_now`. The
loop calls into it at rebalances and at stop, and for the records of the partitions the guard
watches (`Worker._special`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.core.contract import SourceRecord
from pipeline.core.crashes import CrashGuard
from pipeline.core.handler import Handler, Routed
from pipeline.kafka.seam import TP, Committed, SinkFailure, Source

if TYPE_CHECKING:
    from pipeline.runtime.delivery import Delivery
    from pipeline.runtime.worker import WorkerOptions

log = logging.getLogger("lazarus.worker")


class CrashMarks:
    """The worker's side of the crash-loop guard (a mixin of `Worker`)."""

    if TYPE_CHECKING:  # the loop's, in worker.py, and too_large.py's
        options: WorkerOptions
        source: Source
        delivery: Delivery
        handler: Handler
        crashes: CrashGuard | None
        wall: Callable[[], float]
        _interrupted: bool
        _sizing: dict[TP, int]

        def _send(self, rec: SourceRecord, routed: Routed, *, shrink: bool = True) -> None: ...
        def _checkpoint(self) -> None: ...
        def _interrupt(self, rec: SourceRecord, reason: str) -> None: ...
        def _delivery_failed(self, reason: str) -> None: ...
        def _plain(self, rec: SourceRecord) -> None: ...
        def _sized(self, rec: SourceRecord) -> None: ...
        def _alone(self, rec: SourceRecord) -> bool: ...
        def _settle_now(self) -> bool: ...
        def _settled_before(self, rec: SourceRecord) -> bool: ...

    def __init__(self) -> None:
        self._marks: dict[TP, int] = {}  # crash marks this member wrote, by partition
        self._unchecked: set[TP] = set()
        """Partitions whose committed position (a dead process's mark?) could not be read at
        assignment: read at their first record, which waits while that fails."""

    def _guarded(self, rec: SourceRecord, guard: CrashGuard) -> None:
        """Route `rec` of a partition not checked or not marked yet (it may be being sized)."""
        tp = (rec.topic, rec.partition)
        if tp in self._unchecked and not self._check_late(rec, guard):
            return
        if tp in guard.suspects:
            self._one_at_a_time(rec)
            return
        if tp in guard.unmarked:
            # What came before ends first, counted: the mark's transaction would commit it
            # (exactly-once) with none of its counts, which a later abort would then drop.
            self._checkpoint()
            if self._interrupted:
                self._interrupt(rec, "the records before its mark failed")
                return
            if not self._commit_mark(rec, guard.first_seen(tp, rec.offset)):
                guard.unmarked.add(tp)  # marked when it is read again
                return
        if tp in self._sizing:
            self._sized(rec)
        else:
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
        if guard.is_suspect(tp):
            guard.unmarked.discard(tp)  # marked record by record (`_one_at_a_time`)
        else:
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
        if not self._settled_before(rec):
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
