"""Guarantees the adversarial suite left open, on the in-memory fake: a record with several
outputs of which one is refused as too large (exactly-once writes all its outputs or its dead
letter, never both), a crash mark the coordinator refuses at assignment, a clean stop while a
suspect partition's record is unhandled, and the flood guard counting a too-large record's dead
letter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.core import contract
from pipeline.core.crashes import mark, parse_mark
from pipeline.core.policy import BreakerState, FloodGuard
from pipeline.kafka.fake import FakeCluster
from pipeline.kafka.seam import Committed, SinkError, SinkFailure
from tests.unit.test_guarantees_adversarial import P0, P1, dead_offsets, ids, survivor
from tests.unit.test_worker import BAD, DLQ, OUTPUT, SOURCE, Crash, Rig, good, rig

HUGE = "o" * 5000


def split(event: Any, ctx: Any) -> object:
    """p-1 becomes three outputs, the second one too large for the output topic."""
    if event.payment_id == "p-1":
        return [
            event.model_copy(update={"payment_id": "p-1-a"}),
            event.model_copy(update={"payment_id": "p-1-huge", "order_id": HUGE}),
            event.model_copy(update={"payment_id": "p-1-c"}),
        ]
    return event


def refuse_huge_at_once(r: Rig, huge: str = HUGE) -> None:
    """librdkafka's own `message.max.bytes` check: an output holding `huge` is refused by
    `produce`."""
    original = r.sink.produce

    def produce(out: Any, batch: int) -> None:
        if out.topic == OUTPUT and huge.encode() in (out.value or b""):
            raise SinkFailure(SinkError("produce refused: too large", OUTPUT, too_large=True))
        original(out, batch)

    r.sink.produce = produce  # type: ignore[method-assign]


def split_rig(how: str, *, exactly_once: bool, linger_s: float = 0.0) -> Rig:
    r = rig(exactly_once=exactly_once, processor=split, linger_s=linger_s)
    for i in range(4):
        r.cluster.append(SOURCE, good(i))
    if how == "at once":
        refuse_huge_at_once(r)
    else:  # the output topic's max.message.bytes: refused in the delivery report
        r.sink.max_bytes[OUTPUT] = 2000
    return r


# -- 1. several outputs, one refused as too large ----------------------------------------------
@pytest.mark.parametrize("linger_s", [0.0, 60.0])
@pytest.mark.parametrize("how", ["at once", "in the delivery report"])
def test_exactly_once_writes_all_outputs_of_a_record_or_its_dead_letter_never_both(
    how: str, linger_s: float
) -> None:
    """A read_committed reader sees each input exactly once in output or DLQ. The record's first
    output was in the transaction already when the second was refused: it must not be committed
    beside the dead letter (it was, for a refusal at once)."""
    r = split_rig(how, exactly_once=True, linger_s=linger_s)
    r.steps(6)
    r.clock.advance(61.0)
    r.steps(6)
    seen = ids(r)
    assert not {"p-1-a", "p-1-huge", "p-1-c"} & set(seen), seen
    assert seen == Counter({"p-0": 1, "p-2": 1, "p-3": 1})
    assert dead_offsets(r) == Counter({(0, 1): 1})
    assert r.cluster.committed[P0].offset == 4
    assert r.worker.breaker.state is BreakerState.CLOSED
    r.flush_metrics()
    assert r.sample("lazarus_breaker_opens_total") == 0
    assert r.sample("lazarus_records_total", outcome="processed") == 3
    assert r.sample("lazarus_records_total", outcome="dead_lettered") == 1
    (dead,) = [rec for rec in r.cluster.records("payments.dlq")]
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.error_type == "lazarus.RecordTooLarge"
    assert "may have been written" not in (meta.message or "")


def test_a_torn_route_on_a_suspect_partition_is_dead_lettered_alone() -> None:
    """The same in careful mode (another process's mark: one record at a time, each marked in
    a transaction of its own before it runs): the aborted transaction held only the record's
    first output; read again, it is marked again and dead-lettered alone."""
    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    cluster.committed[P0] = Committed(0, mark(0, 1, "0123456789abcdef"))
    r = rig(exactly_once=True, processor=split, cluster=cluster, crash_limit=3)
    refuse_huge_at_once(r)
    r.steps(6)
    assert ids(r) == Counter({"p-0": 1, "p-2": 1, "p-3": 1})
    assert dead_offsets(r) == Counter({(0, 1): 1})
    assert cluster.committed[P0].offset == 4
    assert r.worker.breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("how", ["at once", "in the delivery report"])
def test_at_least_once_keeps_a_record_s_earlier_outputs_and_its_dead_letter_says_so(
    how: str,
) -> None:
    """At-least-once cannot take back an output already produced, and dropping the dead letter
    would lose the refused one: the record is in the output and the DLQ, and the dead letter
    says that other outputs of it may have been written (a replay writes them again)."""
    r = split_rig(how, exactly_once=False)
    r.steps(6)
    r.clock.advance(10.0)
    r.steps(6)
    seen = ids(r)
    assert {"p-0", "p-2", "p-3", "p-1-a"} <= set(seen) and "p-1-huge" not in seen
    assert dead_offsets(r) == Counter({(0, 1): 1})
    assert r.cluster.committed[P0].offset == 4
    r.flush_metrics()
    assert r.sample("lazarus_breaker_opens_total") == 0
    (dead,) = [rec for rec in r.cluster.records("payments.dlq")]
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.error_type == "lazarus.RecordTooLarge"
    assert "one of 3 outputs" in (meta.message or ""), meta.message


# -- 2. a crash mark refused at assignment -------------------------------------------------------
def died(r: Rig, steps: int) -> bool:
    """Run `steps` steps; True when the process "died" (`Crash`) in one."""
    try:
        r.steps(steps)
    except Crash:
        return True
    return False


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_start_mark_the_coordinator_refuses_at_assignment_is_an_outage(
    exactly_once: bool,
) -> None:
    """The mark of the start position is refused (the coordinator away) when the partition is
    assigned. No record may run before a mark is committed: a death there is credited to no
    record, and the next process starts unsuspecting (it used to: the refusal was only logged).
    The first record waits, the breaker open; once the coordinator is back it is marked, and a
    death then makes the next process suspect the partition."""

    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    cluster.committed[P0] = Committed(0)  # a clean stop's position: no mark
    r = rig(exactly_once=exactly_once, processor=deadly, cluster=cluster, crash_limit=3)
    r.source.failing_commits = True
    r.sink.fail_commit = SinkError("coordinator not available", retriable=True, abortable=True)
    assert not died(r, 3), "a record ran without its crash mark"
    assert r.worker.breaker.state is BreakerState.OPEN
    r.source.failing_commits = False
    r.sink.fail_commit = None
    r.clock.advance(10.0)
    assert died(r, 6)
    assert parse_mark(cluster.committed[P0].metadata) is not None
    again = rig(exactly_once=exactly_once, cluster=cluster, crash_limit=3)
    again.steps(1)
    assert again.worker.crashes is not None and P0 in again.worker.crashes.suspects


def deadly(event: Any, ctx: Any) -> object:
    """Kills the process on p-1."""
    if event.payment_id == "p-1":
        raise Crash()
    return event


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_committed_position_unreadable_at_assignment_is_checked_before_the_first_record(
    exactly_once: bool,
) -> None:
    """Two processes died on offset 1, and the coordinator does not answer when the partition
    is assigned: the check for their mark cannot be made. The partition's records used to run
    unchecked and unmarked (a third death left the count at two); now the first record waits
    for the check, and that death dead-letters the record at the next process."""
    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    cluster.committed[P0] = Committed(1, mark(1, 2, "0123456789abcdef"))
    r = rig(exactly_once=exactly_once, processor=deadly, cluster=cluster, crash_limit=3)
    r.source.failing_committed = True
    r.source.failing_commits = True
    assert not died(r, 1), "a record ran before its partition was checked"
    r.source.failing_committed = False
    assert not died(r, 2), "a record ran unmarked"
    assert r.worker.breaker.state is BreakerState.OPEN
    r.source.failing_commits = False
    r.clock.advance(10.0)
    assert died(r, 6)
    last, deaths = survivor(cluster, exactly_once, deadly)
    assert deaths == 0
    assert dead_offsets(last) == Counter({(0, 1): 1})
    assert set(ids(last)) == {"p-2", "p-3"}  # p-0 was before the committed offset


# -- 3. a clean stop while a suspect record is unhandled ------------------------------------------
def stopped_at(payment_id: str, exactly_once: bool) -> FakeCluster:
    """Two processes died on offset 1 (another process's mark says so). A new one works through
    the suspect partition and is stopped cleanly (SIGTERM in a retry wait) at `payment_id`."""
    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    cluster.committed[P0] = Committed(1, mark(1, 2, "0123456789abcdef"))

    def stopped(event: Any, ctx: Any) -> object:
        if event.payment_id == payment_id:
            r.worker.stop()
            raise TimeoutError("backend slow")
        return event

    r = rig(exactly_once=exactly_once, processor=stopped, cluster=cluster, crash_limit=3)
    r.steps(2)
    assert r.worker.crashes is not None and P0 in r.worker.crashes.suspects
    r.worker.run()  # stopping: drains, commits, clears its marks
    return cluster


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_clean_stop_before_the_suspect_record_is_handled_keeps_its_deaths(
    exactly_once: bool,
) -> None:
    """The stopped process had marked offset 1 (its third attempt) and not handled it yet.
    Clearing that mark erased both deaths: a record that kills every other run never reached
    `crash_limit`. The stop leaves the two deaths behind, owned by no process: one more death
    dead-letters it."""
    cluster = stopped_at("p-1", exactly_once)
    assert cluster.committed[P0].offset == 1
    last, deaths = survivor(cluster, exactly_once, deadly)
    assert deaths == 1
    assert dead_offsets(last) == Counter({(0, 1): 1})
    assert set(ids(last)) == {"p-2", "p-3"}


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_clean_stop_after_the_suspect_record_was_handled_leaves_no_mark(
    exactly_once: bool,
) -> None:
    """The other side: once the suspect record is handled, a clean stop leaves no mark (the
    next process is not suspicious)."""
    cluster = stopped_at("p-2", exactly_once)
    assert cluster.committed[P0] == Committed(2)
    again = rig(exactly_once=exactly_once, cluster=cluster, crash_limit=3)
    again.steps(1)
    assert again.worker.crashes is not None and not again.worker.crashes.suspects


# -- 4. the flood guard and a record found too large --------------------------------------------
@pytest.mark.parametrize("exactly_once", [False, True])
@pytest.mark.parametrize("how", ["at once", "in the delivery report"])
def test_records_dead_lettered_as_too_large_count_toward_the_flood_guard(
    how: str, exactly_once: bool
) -> None:
    """Every record too large for the output (its topic's `max.message.bytes`, or the
    producer's, set too low: a bad deploy): each one's dead letter is a dead letter like any
    other, and the flood guard pauses instead of draining the topic into the DLQ (it counted
    only the outputs it was routed to first)."""
    flood = FloodGuard(ratio=0.5, window=10, min_records=3, pause_s=60.0)
    r = rig(exactly_once=exactly_once, flood=flood)
    if how == "at once":
        r.sink.refuse_at_once[OUTPUT] = SinkError("too large", OUTPUT, too_large=True)
    else:
        r.sink.max_bytes[OUTPUT] = 10
    for i in range(12):
        r.cluster.append(SOURCE, good(i))
    for _ in range(8):
        r.steps(4)
        r.clock.advance(2.0)
    assert flood.tripped_count >= 1
    assert len(dead_offsets(r)) < 12
    r.worker.flood = None  # the deploy fixed, or the guard switched off: the rest goes
    r.clock.advance(61.0)
    for _ in range(8):
        r.steps(4)
        r.clock.advance(2.0)
    dead = dead_offsets(r)
    assert set(dead) == {(0, i) for i in range(12)} and not ids(r)
    if exactly_once:
        assert set(dead.values()) == {1}
    assert r.cluster.committed[P0].offset == 12
    r.flush_metrics()
    assert r.sample("lazarus_breaker_opens_total") == 0


# -- 5. each input record is one outcome for the flood guard (helper-36's review) ----------------
BIG = "x" * 5000


def bloated(most: bool) -> Callable[[Any, Any], object]:
    """A processing function giving the records whose id ends in 3 (one in ten) an output too
    large for the output topic, or (`most`) every other record."""

    def bloat(event: Any, ctx: Any) -> object:
        if event.payment_id.endswith("3") != most:
            return event.model_copy(update={"order_id": BIG})
        return event

    return bloat


def flooding(how: str, exactly_once: bool, most: bool, records: int) -> tuple[Rig, FloodGuard]:
    """`records` records through the default flood guard, some too large (`bloated`), refused
    at once or in the delivery report."""
    flood = FloodGuard(ratio=0.5, window=200, min_records=50, pause_s=30.0)  # the defaults
    r = rig(exactly_once=exactly_once, processor=bloated(most), flood=flood)
    if how == "at once":
        refuse_huge_at_once(r, BIG)
    else:
        r.sink.max_bytes[OUTPUT] = 2000
    for i in range(records):
        r.cluster.append(SOURCE, good(i))
    for _ in range(records // 4):
        r.steps(2)
        r.clock.advance(0.5)
    return r, flood


@pytest.mark.parametrize("exactly_once", [False, True])
@pytest.mark.parametrize("how", ["at once", "in the delivery report"])
def test_a_record_found_too_large_counts_once_for_the_flood_guard(
    how: str, exactly_once: bool
) -> None:
    """90% of the records are too large for the output topic: the default flood guard (ratio
    0.5) pauses. Each such record counted as a good outcome (routed to the output) AND a dead
    letter (refused, dead-lettered), and the records read again one at a time to find it
    counted again as good: at most 50% dead, every record drained into the DLQ (540 of 600)."""
    r, flood = flooding(how, exactly_once, True, 600)
    assert flood.tripped_count >= 1, f"{len(dead_offsets(r))} of 600 dead-lettered, no pause"


@pytest.mark.parametrize("exactly_once", [False, True])
@pytest.mark.parametrize("how", ["at once", "in the delivery report"])
def test_the_flood_guard_counts_each_input_record_once_whatever_is_read_again(
    how: str, exactly_once: bool
) -> None:
    """100 records, 10 too large for the output: the flood guard's window holds exactly 100
    outcomes, 10 of them dead letters, though records are read again (sizing, one at a time
    after a refusal in a delivery report) and the refused ones routed twice."""
    r, flood = flooding(how, exactly_once, False, 100)
    assert len(dead_offsets(r)) == 10 and len(ids(r)) == 90
    assert (len(flood.outcomes), flood.dead_count) == (100, 10)


# -- 6. a record found too large whose processing is retried (helper-36's review) --------------
@pytest.mark.parametrize(
    ("how", "exactly_once"),
    [("at once", True), ("in the delivery report", False), ("in the delivery report", True)],
)
def test_a_record_found_too_large_whose_first_call_is_retried_is_dead_lettered(
    how: str, exactly_once: bool
) -> None:
    """The processing function fails its first call on p-1 at each read (a cold connection, a
    token refresh) and succeeds at the second. Read again to be dead-lettered, the record was
    retried through `_route`, which sent its full route again: exactly-once tore it again,
    aborted and read it again, for good (200 aborts, offset 1 committed); a refusal in the
    delivery report was taken for the smaller route's, an outage (the breaker flapping)."""
    calls = Counter[str]()

    def flaky_first(event: Any, ctx: Any) -> object:
        calls[event.payment_id] += 1
        if event.payment_id == "p-1" and calls["p-1"] % 2 == 1:
            raise TimeoutError("cold")
        return split(event, ctx)

    r = split_rig(how, exactly_once=exactly_once)
    r.worker.handler.processor = flaky_first
    for _ in range(40):
        r.steps(1)
        r.clock.advance(2.0)
    assert dead_offsets(r) == Counter({(0, 1): 1})
    assert r.cluster.committed[P0].offset == 4


# -- 7. a transaction being aborted is never committed (helper-36's review) ---------------------
@pytest.mark.parametrize("how", ["stop", "revoke"])
def test_a_transaction_whose_abort_is_unconfirmed_is_never_committed(how: str) -> None:
    """Exactly-once: a torn route's transaction (p-0 and p-1's first output) is aborted, and
    the abort times out. A clean stop or a revoke then committed that transaction (`end` on
    the still-open one): p-1-a in the output, and p-1 dead-lettered by the next process: both.
    (librdkafka refuses that commit, a state error: the worker exited 1 in its shutdown.)"""
    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    r = rig(exactly_once=True, processor=split, cluster=cluster)
    refuse_huge_at_once(r)
    r.sink.fail_abort = SinkError("abort timed out", retriable=True)
    r.steps(1)
    assert r.worker.delivery.in_flight() == 1  # the abort is not confirmed
    if how == "stop":
        r.worker.stop()
        r.worker.run()  # the shutdown: Transactions.close
    else:
        r.source.revoke_on_next_consume([P0])
        r.steps(1)  # Transactions.revoke
    again = rig(exactly_once=True, processor=split, cluster=cluster)
    refuse_huge_at_once(again)
    for _ in range(8):
        again.steps(1)
        again.clock.advance(2.0)
    assert ids(again) == Counter({"p-0": 1, "p-2": 1, "p-3": 1})
    assert dead_offsets(again) == Counter({(0, 1): 1})


# -- 8. counts of the records committed by a crash mark's transaction (helper-36's review) -------
def marked_late(cluster: FakeCluster) -> None:
    """P0 starts clean (a committed offset with no mark); P1 has none: unmarked, its first
    record is marked in a transaction of its own, which ends the open one first."""
    for i in (10, 11, 12, 13):
        cluster.append(SOURCE, good(i), partition=0)
    cluster.committed[P0] = Committed(0)


def test_counts_of_records_committed_before_a_mark_survive_a_later_torn_route() -> None:
    """Exactly-once: P0's records are routed, then P1's first record is marked: the mark's
    transaction committed P0's records with an empty tally while the worker's still held their
    counts, and a torn route later in the batch cleared those: 2 processed counted, not 6."""
    cluster = FakeCluster(partitions=2)
    marked_late(cluster)
    for i in (20, 1, 21):  # p-1: three outputs, one refused at once as too large
        cluster.append(SOURCE, good(i), partition=1)
    r = rig(exactly_once=True, processor=split, cluster=cluster, crash_limit=3)
    refuse_huge_at_once(r)
    for _ in range(8):
        r.steps(1)
        r.clock.advance(2.0)
    assert ids(r) == Counter({f"p-{i}": 1 for i in (10, 11, 12, 13, 20, 21)})
    assert dead_offsets(r) == Counter({(1, 1): 1})
    r.flush_metrics()
    assert r.sample("lazarus_records_total", outcome="dead_lettered") == 1
    assert r.sample("lazarus_records_total", outcome="processed") == 6


def test_counts_of_records_aborted_with_a_mark_s_commit_are_counted_once() -> None:
    """Exactly-once: P1's first record's mark ends the open transaction (P0's records), whose
    commit fails and is aborted. The worker's tally still held P0's counts and handed them to
    the next transaction; P0's records, read again, were counted again: 10 processed, not 6."""
    cluster = FakeCluster(partitions=2)
    marked_late(cluster)
    for i in (20, 21):
        cluster.append(SOURCE, good(i), partition=1)
    r = rig(exactly_once=True, processor=split, cluster=cluster, crash_limit=3)
    original = r.sink.commit_transaction
    commits = [0]

    def commit(timeout_s: float) -> None:
        commits[0] += 1
        if commits[0] == 2:  # 1: P0's start mark at assignment; 2: P0's records
            r.sink.abort_transaction(timeout_s)
            raise SinkFailure(SinkError("coordinator moved", abortable=True))
        original(timeout_s)

    r.sink.commit_transaction = commit  # type: ignore[method-assign]
    for _ in range(10):
        r.steps(1)
        r.clock.advance(5.0)
    assert ids(r) == Counter({f"p-{i}": 1 for i in (10, 11, 12, 13, 20, 21)})
    r.flush_metrics()
    assert r.sample("lazarus_records_total", outcome="processed") == 6


# -- 9. a partition being sized is checked and marked first (helper-36's review) -----------------
def test_a_partition_being_sized_is_checked_and_marked_before_its_first_record() -> None:
    """Exactly-once: the committed positions cannot be read at assignment (P0, P1 checked at
    their first record). P0's first output is refused in a delivery report: every assigned
    partition is read again one record at a time, P1 (not read yet) too. P1's records went
    through sizing with no check and no mark: two processes died on P1/0 (another process's
    mark), and a third death there was credited to no one (the mark stayed 0:2)."""
    cluster = FakeCluster(partitions=2)
    cluster.append(SOURCE, good(0), partition=0)
    cluster.committed[P1] = Committed(0, mark(0, 2, "0123456789abcdef"))

    def deadly_50(event: Any, ctx: Any) -> object:
        if event.payment_id == "p-50":
            raise Crash()
        return event

    r = rig(exactly_once=True, processor=deadly_50, cluster=cluster, crash_limit=3)
    r.sink.max_bytes[OUTPUT] = 10  # p-0's output refused in its delivery report
    r.source.failing_committed = True
    r.steps(1)  # assignment: committed() fails
    r.source.failing_committed = False
    for _ in range(3):
        r.steps(1)
        r.clock.advance(2.0)
    assert P1 in r.worker._sizing and P1 in r.worker._unchecked
    cluster.append(SOURCE, good(50), partition=1)  # P1's first record arrives now
    assert died(r, 12)
    assert parse_mark(cluster.committed[P1].metadata) == (0, 3), cluster.committed[P1]


# -- 10. review nits ----------------------------------------------------------------------------
def huge_first(event: Any, ctx: Any) -> object:
    """p-1 becomes three outputs, the FIRST one too large for the output topic."""
    if event.payment_id == "p-1":
        return [
            event.model_copy(update={"payment_id": "p-1-huge", "order_id": HUGE}),
            event.model_copy(update={"payment_id": "p-1-b"}),
        ]
    return event


def test_a_record_whose_first_output_is_refused_at_once_aborts_nothing() -> None:
    """Exactly-once: nothing of the record is in the transaction when its first output is
    refused at once: it is dead-lettered in place, no abort and no rewind (it used to abort
    the transaction, every partition reading again from its committed offset)."""
    r = rig(exactly_once=True, processor=huge_first)
    for i in range(4):
        r.cluster.append(SOURCE, good(i))
    refuse_huge_at_once(r)
    r.steps(3)
    assert ids(r) == Counter({"p-0": 1, "p-2": 1, "p-3": 1})
    assert dead_offsets(r) == Counter({(0, 1): 1})
    assert r.sink.aborts == 0
    assert r.cluster.committed[P0].offset == 4


def test_a_partition_found_suspect_at_its_first_record_is_not_left_unmarked() -> None:
    """The committed position unreadable at assignment, the late check at the first record
    finds another process's mark (suspect): the partition is marked record by record, and no
    longer waits for a start mark (it stayed in `unmarked`: one more mark after the careful
    records)."""
    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    cluster.committed[P0] = Committed(1, mark(1, 1, "0123456789abcdef"))
    r = rig(cluster=cluster, crash_limit=3)
    r.source.failing_committed = True
    r.steps(1)  # the first record waits for the check: an outage
    r.source.failing_committed = False
    r.clock.advance(10.0)
    r.steps(3)  # the check, then records 1-3 one at a time
    guard = r.worker.crashes
    assert guard is not None and P0 in guard.suspects and P0 not in guard.unmarked
    assert ids(r) == Counter({"p-1": 1, "p-2": 1, "p-3": 1})


# -- 11. a record of a partition handled one at a time, when what came before fails ------------
def test_a_suspect_partition_s_record_is_read_again_when_another_partition_s_delivery_fails() -> (
    None
):
    """At-least-once: P0's dead letters are refused (an outage) and the refusal is seen while
    P1's first record (a suspect partition: one record at a time, what came before made
    durable first) waits. The batch stopped there without remembering that record, and only
    P0's batch rewound: P1 resumed after it, committed past it, and p-10 was lost."""
    cluster = FakeCluster(partitions=2)
    for _ in range(3):
        cluster.append(SOURCE, BAD, partition=0)
    for i in (10, 11, 12):
        cluster.append(SOURCE, good(i), partition=1)
    cluster.committed[P0] = Committed(0)
    cluster.committed[P1] = Committed(0, mark(0, 1, "0123456789abcdef"))
    r = rig(cluster=cluster, crash_limit=3)
    r.sink.refuse[DLQ] = SinkError("broker down", DLQ, retriable=True)
    r.steps(1)
    r.sink.refuse.clear()
    for _ in range(10):
        r.clock.advance(10.0)
        r.steps(2)
    assert set(ids(r)) == {"p-10", "p-11", "p-12"}
    assert set(dead_offsets(r)) == {(0, 0), (0, 1), (0, 2)}
    assert cluster.committed[P1].offset == 3
