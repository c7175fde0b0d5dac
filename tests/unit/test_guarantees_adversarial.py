"""Adversarial interleavings against the worker's guarantees, on the in-memory fake: rebalances
in the middle of a batch (during a retry wait, a breaker or flood pause, a suspect partition's
careful mode), partial refusals, shutdown at each of these. Each test asserts the invariant, not
the mechanism: every input offset ends in output or DLQ (exactly once in exactly-once mode), no
committed offset passes an unacknowledged record, nothing is dead-lettered for an outage."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.core import contract
from pipeline.core.crashes import mark, parse_mark
from pipeline.core.policy import BreakerState, FloodGuard
from pipeline.kafka.fake import FakeCluster
from pipeline.kafka.seam import Committed, SinkError, SinkFailure
from tests.kit import good_payment
from tests.unit.test_worker import (
    BAD,
    DLQ,
    OUTPUT,
    SOURCE,
    Crash,
    Rig,
    breaker_state,
    good,
    rig,
)

P0, P1 = (SOURCE, 0), (SOURCE, 1)


def ids(r: Rig, topic: str = OUTPUT) -> Counter[str]:
    """How many times each input (by payment id) reached `topic`."""
    return Counter(json.loads(rec.value or b"{}")["payment_id"] for rec in r.cluster.records(topic))


def dead_offsets(r: Rig) -> Counter[tuple[int, int]]:
    """How many dead letters each (partition, offset) of the input got."""
    found: Counter[tuple[int, int]] = Counter()
    for rec in r.cluster.records(DLQ):
        meta = contract.parse_dead_letter(rec.headers)
        assert meta is not None
        assert meta.source_partition is not None and meta.source_offset is not None
        found[meta.source_partition, meta.source_offset] += 1
    return found


def once_each(r: Rig, n: int, *, exactly: bool) -> None:
    """Inputs p-0 .. p-(n-1) each reached the output: exactly once, or at least once."""
    seen = ids(r)
    assert set(seen) == {f"p-{i}" for i in range(n)}, sorted(seen)
    if exactly:
        assert all(c == 1 for c in seen.values()), {k: c for k, c in seen.items() if c > 1}


# -- a rebalance during a retry wait ----------------------------------------------------------
@pytest.mark.parametrize("exactly_once", [False, True])
@pytest.mark.parametrize("rebalance", ["revoked", "lost"])
def test_a_partition_taken_and_given_back_during_a_retry_wait_is_read_again_not_routed(
    exactly_once: bool, rebalance: str
) -> None:
    """An eager rebalance revokes every partition and may hand the same ones back at once (and
    a session timeout loses them, then the member joins again). The consumer then reads them
    again from the committed offset, so the old batch's records of those partitions (the one
    being retried included) must not be routed: exactly-once would write them twice."""
    tries: list[int] = []

    def flaky(event: object, ctx: Any) -> object:
        if ctx.offset == 2 and ctx.attempt == 1 and not tries:
            tries.append(ctx.offset)
            if rebalance == "revoked":
                r.source.revoke_on_next_consume([P0])
            else:
                r.source.lose_on_next_consume([P0])
            r.source.pending_assign = [P0]
            raise TimeoutError("backend slow")
        return event

    r = rig(exactly_once=exactly_once, processor=flaky)
    for i in range(6):
        r.cluster.append(SOURCE, good(i))
    r.steps(6)
    assert tries == [2] and P0 in r.worker.assigned
    once_each(r, 6, exactly=True)  # even at-least-once: nothing needs doing twice here
    assert r.cluster.committed[P0].offset == 6


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_revoked_partition_leaves_no_resume_point_behind_for_its_next_assignment(
    exactly_once: bool,
) -> None:
    """A retry wait that ends with the breaker open sets the rest of the batch aside. Records of
    a partition revoked during that wait must not be set aside: when the partition comes back
    later (here after another member moved it on), a stale resume point would seek it back
    (duplicates) or forward past records never routed (loss)."""
    state = {"armed": True}

    def down(event: object, ctx: Any) -> object:
        if ctx.partition == 0 and state["armed"]:
            if not r.source.pending_revoke and P1 in r.worker.assigned:
                r.source.revoke_on_next_consume([P1])  # another member takes partition 1
            raise TimeoutError("backend down")
        return event

    r = rig(exactly_once=exactly_once, processor=down, partitions=2)
    r.worker.breaker.failure_threshold = 2  # opens on the second try, after one retry wait
    r.cluster.append(SOURCE, good(0), partition=0)
    for i in range(1, 6):
        r.cluster.append(SOURCE, good(i), partition=1)
    r.steps(3)
    assert r.worker.breaker.state is BreakerState.OPEN and P1 not in r.worker.assigned
    # the other member routes partition 1 up to offset 3 (p-1, p-2, p-3) and commits
    for i in range(1, 4):
        r.cluster.append(OUTPUT, good(i))
    r.cluster.committed[P1] = Committed(3)
    state["armed"] = False
    r.source.pending_assign = [P1]
    r.steps(1)  # the breaker still open: assigned back while the gate is closed
    assert P1 in r.worker.assigned and r.worker.gate.paused
    r.clock.advance(10.0)
    r.steps(6)
    assert breaker_state(r) is BreakerState.CLOSED
    once_each(r, 6, exactly=True)
    assert r.cluster.committed[P1].offset == 5


# -- a partial refusal ------------------------------------------------------------------------
@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_later_output_refused_as_too_large_neither_stops_commits_nor_loses_the_record(
    exactly_once: bool,
) -> None:
    """A processing function returning two events, the second too large for the output topic:
    it is dead-lettered (a property of the record, not an outage). The first event was produced
    already; whatever the record's route, the partition's commits must go on."""

    def split(event: Any, ctx: Any) -> object:
        if event.payment_id == "p-1":
            return [event, event.model_copy(update={"payment_id": "p-1-huge"})]
        return event

    r = rig(exactly_once=exactly_once, processor=split)
    for i in range(4):
        r.cluster.append(SOURCE, good(i))
    original = r.sink.produce

    def produce(out: Any, batch: int) -> None:
        if out.topic == OUTPUT and b"p-1-huge" in (out.value or b""):
            from pipeline.kafka.seam import SinkFailure

            raise SinkFailure(SinkError("too large", OUTPUT, too_large=True))
        original(out, batch)

    r.sink.produce = produce  # type: ignore[method-assign]
    r.steps(4)
    assert r.worker.breaker.state is BreakerState.CLOSED
    assert dead_offsets(r) == Counter({(0, 1): 1})
    for i in range(4, 6):
        r.cluster.append(SOURCE, good(i))
    r.steps(4)
    assert r.cluster.committed[P0].offset == 6  # commits go on past the record
    assert ids(r)["p-5"] == 1


# -- careful mode (a suspect partition) and a slow broker --------------------------------------
@pytest.mark.parametrize("trouble", ["unacknowledged", "refused in the flush"])
def test_a_suspect_partition_never_marks_past_an_unfinished_record(trouble: str) -> None:
    """One record at a time on a suspect partition: each is marked (its offset committed) before
    it runs. A record the broker did not acknowledge within the flush's time, or refused in that
    flush (not in the poll before it), stops the batch: the next record's mark would commit past
    it (a death then loses it), and a failed batch would hold every later commit back."""
    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    cluster.committed[P0] = Committed(0, mark(0, 1, "0123456789abcdef"))
    r = rig(cluster=cluster, crash_limit=3)
    if trouble == "unacknowledged":
        r.sink.stalled = True
    else:
        polls = r.sink.poll
        r.sink.poll = lambda timeout_s: [] if timeout_s == 0 else polls(timeout_s)  # type: ignore[method-assign]
        r.sink.flush = polls  # type: ignore[method-assign]
        r.sink.refuse[OUTPUT] = SinkError("broker away", OUTPUT, retriable=True)
    r.steps(1)
    assert cluster.committed[P0].offset == 0  # no mark past offset 0
    assert r.worker.breaker.state is BreakerState.OPEN
    assert not r.cluster.records(OUTPUT)
    r.sink.stalled = False
    r.sink.refuse.clear()
    r.clock.advance(10.0)
    r.steps(6)
    once_each(r, 4, exactly=False)
    assert cluster.committed[P0].offset == 4


# -- a lost assignment ------------------------------------------------------------------------
@pytest.mark.parametrize("abort_fails", [False, True])
def test_a_lost_assignment_aborts_the_lingering_transaction_and_counts_nothing_of_it(
    abort_fails: bool,
) -> None:
    """The session timed out while a transaction lingered: it is aborted (its partitions are
    another member's now), nothing of it counts, and when the partitions come back their records
    are read again and written once. An abort that does not come back at once keeps every new
    record out of the doomed transaction until it does."""
    r = rig(exactly_once=True, linger_s=60.0)
    for i in range(5):
        r.cluster.append(SOURCE, good(i))
    r.steps(1)
    assert r.sink.transactions == 0 and r.sink.in_transaction
    if abort_fails:
        r.sink.fail_abort = SinkError("timed out", retriable=True)
    r.source.lose_on_next_consume([P0])
    r.source.pending_assign = [P0]
    r.steps(2)
    r.sink.fail_abort = None
    r.clock.advance(10.0)
    r.steps(4)
    r.clock.advance(61.0)
    r.steps(2)
    once_each(r, 5, exactly=True)
    assert r.cluster.committed[P0].offset == 5
    r.flush_metrics()
    assert r.sample("lazarus_records_total", outcome="forwarded") == 5
    assert r.sample("lazarus_transaction_aborts_total") == 1


def test_partitions_still_assigned_after_a_partial_loss_rewind_to_their_committed_offsets() -> None:
    """Only some partitions lost (an incremental rebalance): the aborted transaction also held
    records of the partitions that stay, which are read again from their committed offsets."""
    r = rig(exactly_once=True, linger_s=60.0, partitions=2)
    for i in range(3):
        r.cluster.append(SOURCE, good(i), partition=0)
    for i in range(3, 6):
        r.cluster.append(SOURCE, good(i), partition=1)
    r.steps(1)
    assert r.sink.transactions == 0 and r.sink.in_transaction
    r.source.lose_on_next_consume([P1])
    r.steps(3)
    r.clock.advance(61.0)
    r.steps(2)
    assert set(ids(r)) == {"p-0", "p-1", "p-2"}
    assert all(c == 1 for c in ids(r).values())
    assert r.cluster.committed[P0].offset == 3 and P1 not in r.cluster.committed


def test_a_failed_commit_at_revoke_leaves_no_rewind_for_a_later_pause() -> None:
    """The transaction committed on revoke fails and is aborted; the same partition comes back
    (an eager rebalance) and is read again from its committed offset in a new transaction, still
    open when the flood guard pauses. The pause's rewind must not take the committed offset of
    back then: that would read the open transaction's records again and write them twice."""
    flood = FloodGuard(ratio=0.5, window=10, min_records=2, pause_s=1.0)
    r = rig(exactly_once=True, linger_s=60.0, flood=flood)
    for i in range(3):
        r.cluster.append(SOURCE, good(i))
    r.steps(1)
    r.sink.fail_commit = SinkError("coordinator moved", abortable=True)
    r.source.revoke_on_next_consume([P0])
    r.source.pending_assign = [P0]
    r.steps(1)
    r.sink.fail_commit = None
    assert r.sink.aborts == 1
    for _ in range(8):
        r.cluster.append(SOURCE, BAD)
    r.steps(2)
    assert flood.tripped_count == 1 and r.sink.in_transaction
    r.clock.advance(2.0)
    r.steps(3)
    r.clock.advance(61.0)
    r.steps(3)
    once_each(r, 3, exactly=True)


# -- a stop (SIGTERM) at each interruption point, then a new process ---------------------------
def finish(cluster: FakeCluster, exactly_once: bool, n: int, crash_limit: int = 0) -> Rig:
    """A new worker on the same cluster reads to the end and stops cleanly."""
    again = rig(exactly_once=exactly_once, cluster=cluster, crash_limit=crash_limit)
    again.steps(8)
    again.worker.stop()
    again.worker.run()
    assert cluster.committed[P0].offset == n
    return again


def stopped_during(where: str, exactly_once: bool) -> tuple[FakeCluster, int, set[int]]:
    """Run a worker over good and bad records until `where`, then stop it (as SIGTERM does)
    and let it drain and commit. Returns the cluster, the number of inputs, the bad offsets."""
    cluster = FakeCluster()
    n, bad = 8, {5}
    if where == "careful mode":
        cluster.committed[P0] = Committed(0, mark(0, 1, "0123456789abcdef"))
    flood = None
    if where == "flood pause":
        flood = FloodGuard(ratio=0.5, window=10, min_records=2, pause_s=30.0)
        bad = {3, 4, 5, 6, 7}
    for i in range(n):
        value = good(i)
        if where == "sizing" and i == 3:  # too large for the output, even encoded again
            value = json.dumps({**good_payment(i), "order_id": "o" * 5000}).encode()
        cluster.append(SOURCE, BAD if i in bad else value)

    def processor(event: Any, ctx: Any) -> object:
        if where == "sizing" and r.worker._sizing:
            r.worker.stop()  # while the refused batch is read again one record at a time
        if where in ("retry wait", "careful mode") and ctx.offset == 2 and ctx.attempt == 1:
            r.worker.stop()
            raise TimeoutError("backend slow")
        if where == "mid batch" and ctx.offset == 4:
            r.worker.stop()  # the rest of the batch is set aside
        return event

    r = rig(
        exactly_once=exactly_once,
        processor=processor,
        cluster=cluster,
        flood=flood,
        crash_limit=3 if where == "careful mode" else 0,
    )
    if where == "breaker pause" or (where == "abort pending" and not exactly_once):
        r.sink.refuse[OUTPUT] = SinkError("broker away", OUTPUT, retriable=True)
    elif where == "abort pending":
        r.sink.fail_commit = SinkError("coordinator moved", abortable=True)
        r.sink.fail_abort = SinkError("timed out", retriable=True)
    elif where == "sizing":
        r.sink.max_bytes[OUTPUT] = 2000  # the new process's producer takes it
    r.steps(3)
    if where == "abort pending":
        assert r.worker.delivery.in_flight() == int(exactly_once)
    if where == "breaker pause":
        assert r.worker.breaker.state is BreakerState.OPEN
    if where == "flood pause":
        assert flood is not None and flood.tripped_count == 1
    if where == "careful mode":
        assert r.worker.crashes is not None and r.worker.crashes.suspects
    if where == "sizing":
        assert r.worker._sizing and (0, 3) not in dead_offsets(r)  # stopped before finding it
    r.worker.stop()
    r.worker.run()
    r.sink.refuse.clear()
    assert cluster.committed.get(P0, Committed(0)).offset < n  # it did stop short
    return cluster, n, bad


@pytest.mark.parametrize("exactly_once", [False, True])
@pytest.mark.parametrize(
    "where",
    [
        "retry wait",
        "breaker pause",
        "flood pause",
        "careful mode",
        "mid batch",
        "abort pending",
        "sizing",
    ],
)
def test_a_stop_anywhere_loses_nothing_and_exactly_once_duplicates_nothing(
    where: str, exactly_once: bool
) -> None:
    cluster, n, bad = stopped_during(where, exactly_once)
    again = finish(cluster, exactly_once, n, crash_limit=3 if where == "careful mode" else 0)
    once_each_route(again, n, bad, exactly=exactly_once)


def once_each_route(r: Rig, n: int, bad: set[int], *, exactly: bool) -> None:
    """Offsets 0..n-1 of partition 0: the bad ones dead-lettered, the others forwarded."""
    seen, dead = ids(r), dead_offsets(r)
    assert set(seen) == {f"p-{i}" for i in range(n) if i not in bad}
    assert set(dead) == {(0, i) for i in bad}
    if exactly:
        assert set(seen.values()) <= {1} and set(dead.values()) <= {1}, (seen, dead)


# -- offsets that are not dense (a transactional input: a commit marker after each record) ------
def transactional_input(cluster: FakeCluster, first: int, last: int) -> None:
    for i in range(first, last):
        cluster.append(SOURCE, good(i), key=f"k{i}".encode())
        cluster.skip(SOURCE)


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_rewind_over_offsets_that_are_not_dense_loses_and_duplicates_nothing(
    exactly_once: bool,
) -> None:
    r = rig(exactly_once=exactly_once)
    transactional_input(r.cluster, 0, 6)
    r.sink.refuse[OUTPUT] = SinkError("broker away", OUTPUT, retriable=True)
    r.steps(2)
    assert r.worker.breaker.state is BreakerState.OPEN
    r.sink.refuse.clear()
    r.clock.advance(2.0)
    r.steps(4)
    once_each(r, 6, exactly=exactly_once)
    assert r.cluster.committed[P0].offset == 11  # after the last record: its marker


def survivor(
    cluster: FakeCluster, exactly_once: bool, processor: Callable[[Any, Any], object]
) -> tuple[Rig, int]:
    """New processes on `cluster` until one is not killed by `processor` (`Crash`): that one,
    and how many died before it."""
    for deaths in range(8):
        r = rig(exactly_once=exactly_once, processor=processor, cluster=cluster, crash_limit=3)
        try:
            r.steps(10)
            return r, deaths
        except Crash:
            pass
    raise AssertionError("every process died")


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_poison_pill_right_after_a_commit_marker_kills_no_more_than_the_limit(
    exactly_once: bool,
) -> None:
    """The committed offset of a transactional input points at a commit marker, and the record
    after it kills every process. The marks say a process died at the marker's offset: the first
    record read from there is the one it died on, so `crash_limit` deaths dead-letter it."""

    def deadly(event: Any, ctx: Any) -> object:
        if event.payment_id == "p-4":
            raise Crash()
        return event

    cluster = FakeCluster()
    transactional_input(cluster, 0, 4)
    first = rig(exactly_once=exactly_once, cluster=cluster)
    first.steps(2)
    first.worker.stop()
    first.worker.run()
    assert cluster.committed[P0].offset == 7 and 7 in cluster.control[P0]  # a marker
    transactional_input(cluster, 4, 8)
    r, deaths = survivor(cluster, exactly_once, deadly)
    assert deaths == 3
    assert dead_offsets(r) == Counter({(0, 8): 1})
    assert set(ids(r)) == {f"p-{i}" for i in range(8) if i != 4}


@pytest.mark.parametrize("exactly_once", [False, True])
def test_no_record_of_a_suspect_partition_runs_before_its_mark_is_committed(
    exactly_once: bool,
) -> None:
    """Careful mode's promise: the next death pins the exact offset. While the group
    coordinator refuses commits, a record run without its mark would die unrecorded (and its
    death be credited to the record before): an outage, so the worker pauses instead."""
    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i))
    cluster.committed[P0] = Committed(0, mark(0, 1, "0123456789abcdef"))
    unmarked: list[int] = []

    def check(event: Any, ctx: Any) -> object:
        found = parse_mark(cluster.committed[P0].metadata)
        if found is None or found[0] != ctx.offset:
            unmarked.append(ctx.offset)
        return event

    r = rig(exactly_once=exactly_once, processor=check, cluster=cluster, crash_limit=3)
    r.steps(1)  # assigned, its start checked; offset 0 marked and run
    refusal = SinkError("coordinator not available", retriable=True, abortable=True)
    r.source.failing_commits = True
    r.sink.fail_commit = refusal
    cluster.append(SOURCE, good(4))
    r.steps(3)
    r.source.failing_commits = False
    r.sink.fail_commit = None
    r.clock.advance(10.0)
    r.steps(6)
    assert unmarked == []
    once_each(r, 5, exactly=exactly_once)
    assert cluster.committed[P0].offset == 5


def test_the_first_record_of_a_partition_never_committed_runs_only_once_marked() -> None:
    """A partition with no committed offset is marked at its first record: while the
    coordinator refuses that mark, the record waits (a death there would go unrecorded)."""
    cluster = FakeCluster()
    for i in range(3):
        cluster.append(SOURCE, good(i))
    marks_seen: list[str] = []

    def check(event: Any, ctx: Any) -> object:
        if ctx.offset == 0:
            marks_seen.append(cluster.committed.get(P0, Committed(-1)).metadata)
        return event

    r = rig(processor=check, cluster=cluster, crash_limit=3)
    r.source.failing_commits = True
    r.steps(3)
    assert marks_seen == [] and r.worker.breaker.state is BreakerState.OPEN
    r.source.failing_commits = False
    r.clock.advance(10.0)
    r.steps(4)
    assert r.worker.crashes is not None
    assert marks_seen == [mark(0, 1, r.worker.crashes.process)]
    once_each(r, 3, exactly=True)


# -- exactly-once: an abort, then a rebalance before the rewind --------------------------------
@pytest.mark.parametrize("abort_confirmed", [True, False])
@pytest.mark.parametrize("rebalance", ["revoked", "lost"])
def test_an_abort_then_a_rebalance_before_the_rewind_writes_everything_once(
    abort_confirmed: bool, rebalance: str
) -> None:
    r = rig(exactly_once=True, partitions=2)
    for i in range(4):
        r.cluster.append(SOURCE, good(i), partition=i % 2)
    r.sink.fail_commit = SinkError("coordinator moved", abortable=True)
    if not abort_confirmed:
        r.sink.fail_abort = SinkError("timed out", retriable=True)
    r.steps(1)
    assert r.worker.breaker.state is BreakerState.OPEN
    r.sink.fail_commit = None
    if rebalance == "revoked":
        r.source.revoke_on_next_consume([P0, P1])
    else:
        r.source.lose_on_next_consume([P0, P1])
    r.source.pending_assign = [P1]  # the other member takes partition 0
    r.steps(1)
    r.sink.fail_abort = None
    r.clock.advance(10.0)
    r.steps(4)
    assert set(ids(r)) == {"p-1", "p-3"} and set(ids(r).values()) == {1}
    assert r.cluster.committed[P1].offset == 2 and P0 not in r.cluster.committed


# -- a seek refused, then a rebalance ----------------------------------------------------------
@pytest.mark.parametrize("exactly_once", [False, True])
@pytest.mark.parametrize("back", [True, False])
def test_a_refused_seek_then_a_revoke_neither_skips_nor_repeats(
    exactly_once: bool, back: bool
) -> None:
    """A rewind whose seek librdkafka refuses (the partition not started yet) keeps the gate
    closed; a rebalance then moves the partition away (and maybe back): the pending seek is
    dropped, the partition read from its committed offset, by this member or the next."""
    r = rig(exactly_once=exactly_once)
    for i in range(4):
        r.cluster.append(SOURCE, good(i))
    r.sink.refuse[OUTPUT] = SinkError("broker away", OUTPUT, retriable=True)
    r.steps(1)
    r.sink.refuse.clear()
    r.source.refused_seeks[P0] = 100
    r.clock.advance(2.0)
    r.steps(2)
    assert r.worker.gate.paused and P0 in r.worker.gate.resume_at
    r.source.revoke_on_next_consume([P0])
    if back:
        r.source.pending_assign = [P0]
    r.steps(1)
    assert P0 not in r.worker.gate.resume_at
    r.source.refused_seeks.clear()
    r.clock.advance(10.0)
    r.steps(4)
    if not back:  # the next owner
        assert not r.cluster.records(OUTPUT)  # all refused, none routed since
        finish(r.cluster, exactly_once, 4)
    once_each(r, 4, exactly=exactly_once)
    assert r.cluster.committed[P0].offset == 4


# -- a record the broker refuses as too large in its delivery report ---------------------------
@pytest.mark.parametrize("exactly_once", [False, True])
def test_an_output_the_broker_refuses_as_too_large_is_dead_lettered_not_an_outage(
    exactly_once: bool,
) -> None:
    """The output topic's `max.message.bytes` is below the producer's `message.max.bytes`: the
    broker refuses the record in its delivery report, after the batch was routed. A property of
    the record (README, "Too large"): it is dead-lettered and the partition goes on; it used to
    open the breaker, rewind and produce it again, for good."""
    r = rig(exactly_once=exactly_once, partitions=2)
    r.sink.max_bytes[OUTPUT] = 2000
    for i in range(6):
        value = good(i) + (b" " * 5000 if i == 2 else b"")
        r.cluster.append(SOURCE, value, partition=i % 2)
    r.steps(4)
    r.clock.advance(10.0)
    r.steps(6)
    assert set(ids(r)) == {f"p-{i}" for i in range(6) if i != 2}
    assert dead_offsets(r) == Counter({(0, 1): 1})
    if exactly_once:
        assert set(ids(r).values()) == {1}
    assert r.cluster.committed[P0].offset == 3 and r.cluster.committed[P1].offset == 3
    r.flush_metrics()
    assert r.sample("lazarus_breaker_opens_total") == 0


@pytest.mark.parametrize("exactly_once", [False, True])
def test_a_too_large_refusal_on_a_suspect_partition_is_dead_lettered_once_found(
    exactly_once: bool,
) -> None:
    """Careful mode already routes one record at a time: the refused record is found at once,
    dead-lettered when read again, and the partition's marks and commits go on."""
    cluster = FakeCluster()
    for i in range(4):
        cluster.append(SOURCE, good(i) + (b" " * 5000 if i == 1 else b""))
    cluster.committed[P0] = Committed(0, mark(0, 1, "0123456789abcdef"))
    r = rig(exactly_once=exactly_once, cluster=cluster, crash_limit=3)
    r.sink.max_bytes[OUTPUT] = 2000
    r.steps(8)
    assert set(ids(r)) == {"p-0", "p-2", "p-3"} and set(ids(r).values()) == {1}
    assert dead_offsets(r) == Counter({(0, 1): 1})
    assert cluster.committed[P0].offset == 4
    r.flush_metrics()
    assert r.sample("lazarus_breaker_opens_total") == 0


# -- commit failures (at-least-once) ------------------------------------------------------------
@pytest.mark.parametrize("then", ["recovers", "revoked while failing"])
def test_failed_offset_commits_are_retried_and_never_pass_a_record(then: str) -> None:
    """Asynchronous commits that fail are committed again once the coordinator is back; a
    revoke while they fail leaves the offset behind (the next owner reads again: duplicates at
    least once allows, never a loss)."""
    r = rig(partitions=1)
    for i in range(6):
        r.cluster.append(SOURCE, good(i))
    r.source.failing_commits = True
    r.steps(3)
    assert P0 not in r.cluster.committed and len(ids(r)) == 6
    if then == "revoked while failing":
        r.source.revoke_on_next_consume([P0])
        r.steps(1)
        r.source.failing_commits = False
        assert P0 not in r.cluster.committed
        finish(r.cluster, False, 6)
    else:
        r.source.failing_commits = False
        r.steps(2)
    once_each(r, 6, exactly=then == "recovers")
    assert r.cluster.committed[P0].offset == 6


# -- a rebalance during a pause ------------------------------------------------------------------
@pytest.mark.parametrize("exactly_once", [False, True])
@pytest.mark.parametrize("pause", ["breaker", "flood guard"])
@pytest.mark.parametrize("back", [True, False])
def test_a_rebalance_during_a_pause_neither_skips_nor_repeats(
    exactly_once: bool, pause: str, back: bool
) -> None:
    """Paused with records set aside (their resume points kept by the gate), the partition is
    revoked and given back (or not) before the pause ends: it is read from its committed offset,
    by this member or the next; the set-aside points die with the assignment."""
    flood = FloodGuard(ratio=0.5, window=10, min_records=2, pause_s=5.0)
    r = rig(exactly_once=exactly_once, flood=flood if pause == "flood guard" else None)
    bad = {2, 3, 4} if pause == "flood guard" else set()
    for i in range(8):
        r.cluster.append(SOURCE, BAD if i in bad else good(i))
    if pause == "breaker":
        r.sink.refuse[OUTPUT] = SinkError("broker away", OUTPUT, retriable=True)
    r.steps(2)
    assert r.worker.gate.paused
    r.source.revoke_on_next_consume([P0])
    if back:
        r.source.pending_assign = [P0]
    r.steps(1)
    r.sink.refuse.clear()
    flood.paused_until = None
    flood.window = flood.min_records = 10  # no second pause: the rest goes through
    r.clock.advance(10.0)
    r.steps(4)
    finish(r.cluster, exactly_once, 8)
    once_each_route(r, 8, bad, exactly=exactly_once)


# -- a producer fenced at the commit ----------------------------------------------------------
@pytest.mark.parametrize("at", ["send_offsets", "commit_transaction"])
def test_a_producer_fenced_at_the_commit_is_renewed_not_a_crash(at: str) -> None:
    """After a broker restart the coordinator may have aborted a transaction that outlived
    `transaction.timeout.ms` and bumped the epoch: the producer fails fatally (fenced) at the
    commit, and every later poll of it raises that error again. The worker starts a new
    producer and rewinds; it ended with exit 1 (the soak run of the fault suite) when the
    poll that reads the commit's late refusals raised out of `end`."""
    r = rig(exactly_once=True)
    for i in range(4):
        r.cluster.append(SOURCE, good(i))
    fenced = SinkError("Failed to add offsets to transaction: fenced", fatal=True)
    real = getattr(r.sink, at)

    def fenced_once(*args: Any, **kwargs: Any) -> None:
        setattr(r.sink, at, real)  # the new producer commits
        r.sink.fatal = fenced
        raise SinkFailure(fenced)

    setattr(r.sink, at, fenced_once)
    r.steps(2)
    assert r.sink.resets == 1  # a new producer, and the breaker open: an outage
    r.clock.advance(10.0)  # the breaker's probe
    r.steps(6)
    once_each(r, 4, exactly=True)
    assert r.cluster.committed[P0].offset == 4
