"""Records the broker refuses as too large: found, then routed again smaller.

A route the broker refuses at once (`Delivery.send` raises) is an outage, unless it was refused
as too large: then it is routed again without its value, or as a dead letter (`_refused`); under
exactly-once a refusal that tore a transaction's route rewinds, and the record is dead-lettered
alone when read again. A refusal in a delivery report names only its batch: the batch stops, its
partitions are read again one record at a time until the refused record is found (`_sized`), and
that record is dead-lettered when read again (`_plain`, `_shrink`). README, "Too large".

A rare path, kept apart so that `worker.py` holds the loop. `TooLargeRecords` is a mixin of
`Worker`: its state lives on the worker, and it calls the loop's own steps (declared for mypy at
the top of the class). The loop calls into it only when a route is refused, and for the records
of a partition being sized or holding a record found too large (`Worker._special`). Routing one
record alone and making it durable (`_alone`, `_settle_now`) serves the crash guard's suspect
partitions too (`crash_marks.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Handler, RetryAfter, Routed
from pipeline.errors import Category
from pipeline.kafka.seam import TP, SinkFailure
from pipeline.runtime.delivery import TornRoute

if TYPE_CHECKING:
    from pipeline.core.policy import FloodGuard
    from pipeline.runtime.delivery import Delivery, Polled
    from pipeline.runtime.metrics import Tally
    from pipeline.runtime.worker import WorkerOptions

log = logging.getLogger("lazarus.worker")


class TooLargeRecords:
    """The worker's handling of records the broker refuses as too large (a mixin of `Worker`)."""

    if TYPE_CHECKING:  # the loop's, in worker.py
        options: WorkerOptions
        delivery: Delivery
        handler: Handler
        flood: FloodGuard | None
        clock: Callable[[], float]
        wall: Callable[[], float]
        _tally: Tally
        _interrupted: bool
        _revoked: bool
        _gone: set[TP]

        def _route(self, rec: SourceRecord) -> None: ...
        def _send(self, rec: SourceRecord, routed: Routed, *, shrink: bool = True) -> None: ...
        def _checkpoint(self) -> None: ...
        def _retried(
            self, rec: SourceRecord, retry: RetryAfter, first_at: float
        ) -> Routed | None: ...
        def _react(self, state: Polled, now: float) -> None: ...
        def _flood_pause(self, rec: SourceRecord) -> None: ...
        def _interrupt(self, rec: SourceRecord, reason: str) -> None: ...
        def _delivery_failed(self, reason: str) -> None: ...
        def _pause_all(self) -> None: ...

    def __init__(self) -> None:
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
        self._recounted: dict[TP, int] = {}
        """Partitions read again after a too-large refusal (sizing, a torn route's abort) while
        a flood guard counts, and one past the last record the guard counted on its first read:
        the records below it are not counted again, and the one found too large among them is
        relabeled a dead letter (`_shrink`). Each input record is one outcome for the guard."""
        self._recount_owed = False  # the next rewind reads again records counted already

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
            # closed), and the record is dead-lettered alone when read again (`_plain`). The
            # flood guard counted it (and the others read again) once already.
            tp = (rec.topic, rec.partition)
            self._oversize[tp] = rec.offset
            self._owe_recount(tp, rec.offset + 1)
            self._tally.outcomes.clear()
            self._tally.dead_letters.clear()
            self._interrupt(rec, "reading it again to dead-letter it alone")
            return
        smaller = self.handler.too_large(
            rec, routed, self.wall(), error.reason, atomic=self.delivery.atomic
        )
        if self.flood is not None and routed.failure is None:
            # An output turned dead letter: `_route` counted a good outcome (the guard's last),
            # relabeled a dead one. It may pause only while nothing of the record is out (its
            # only output refused): at-least-once cannot take back outputs produced before.
            if len(routed.outputs) == 1 and self.flood.would_flood_relabeling(self.clock()):
                self._flood_pause(rec)
                return
            self.flood.relabel()
        self._send(rec, smaller, shrink=False)

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
        if not (self._settled_before(rec) and self._alone(rec)):
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
        if not isinstance(outcome, Routed):
            # Retried in place, never through `_route`: its full route would be refused again
            # (exactly-once: torn again, aborted, read again, for good).
            retried = self._retried(rec, outcome, now)
            if retried is None:
                return
            outcome = retried
            now = self.wall()
        reason = "refused by the broker as too large"
        smaller = self.handler.too_large(rec, outcome, now, reason, atomic=self.delivery.atomic)
        if self.flood is not None and not _held(smaller):
            # A dead letter is a dead letter: the flood guard counts it, relabeling the good
            # outcome counted when it was read first (`_recounted`).
            counted = rec.offset < self._recounted.get((rec.topic, rec.partition), 0)
            at = self.clock()
            if self.flood.would_flood_relabeling(at) if counted else self.flood.would_flood(at):
                self._flood_pause(rec)  # the record stays undecided, found again after the pause
                return
            if counted:
                self.flood.relabel()
            else:
                self.flood.record(True)
        self._send(rec, smaller, shrink=False)

    def _settled_before(self, rec: SourceRecord) -> bool:
        """`_settle_now` before `rec` runs. When that fails, `rec` is read again: the failure
        may be another partition's, whose rewind (at-least-once) would not cover `rec`."""
        if self._settle_now():
            return True
        self._interrupt(rec, "the records before it failed")
        return False

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
        self._recount_owed = self.flood is not None
        self._interrupted = True
        self._pause_all()
        log.warning(
            "the broker refused a record as too large (%s): reading it again one record at a "
            "time to dead-letter it",
            reason,
        )

    # -- the flood guard: each input record counts once, read again or not ---------------------
    def _owe_recount(self, tp: TP, through: int) -> None:
        """The next rewind reads again records the flood guard counted (up to `through` in
        `tp`, and to the delivery mode's `reread` in the partitions it rewinds)."""
        if self.flood is not None:
            self._recount_owed = True
            self._recounted[tp] = max(self._recounted.get(tp, through), through)

    def _recount(self, points: dict[TP, int]) -> None:
        """At a rewind after a too-large refusal: the partitions read again, up to where the
        flood guard counted their records already."""
        if not self._recount_owed:
            return
        self._recount_owed = False
        for tp, through in self.delivery.reread.items():
            if tp in points:
                self._recounted[tp] = max(self._recounted.get(tp, through), through)

    def _uncounted(self, rec: SourceRecord, route: Callable[[SourceRecord], None]) -> None:
        """`route(rec)`, not counted by the flood guard when the guard counted it on its first
        read (`_recounted`), except the record found too large among them (`_shrink`)."""
        tp = (rec.topic, rec.partition)
        through = self._recounted.get(tp)
        if through is None:
            route(rec)
        elif rec.offset >= through:
            del self._recounted[tp]
            route(rec)
        elif self._oversize.get(tp) == rec.offset:
            route(rec)
        else:
            flood, self.flood = self.flood, None
            try:
                route(rec)
            finally:
                self.flood = flood


def _held(routed: Routed) -> bool:
    """Holds are deliberate: they never count for the flood guard."""
    return routed.failure is not None and routed.failure.category is Category.HELD
