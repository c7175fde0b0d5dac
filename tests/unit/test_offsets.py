"""OffsetTracker: what may be committed from output and dead-letter acks, failures that block the
commit until a rewind, and where to rewind to."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.offsets import OffsetTracker

TP = ("orders", 0)
OTHER = ("orders", 1)


def tracked(*outputs: int, start: int = 0, tp: tuple[str, int] = TP) -> OffsetTracker:
    """A tracker that read offsets start, start+1, ... producing `outputs[i]` records each."""
    tracker = OffsetTracker()
    tracker.assign(tp)
    for i, count in enumerate(outputs):
        tracker.track(tp, start + i, count, now=100.0 + i)
    return tracker


# --- committable -------------------------------------------------------------------------------


def test_a_fresh_partition_has_nothing_to_commit() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    assert tracker.committable() == {}
    assert tracker.partitions() == [TP]


def test_records_with_no_outputs_are_finished_at_once() -> None:
    tracker = tracked(0, 0, 0, start=40)  # e.g. dropped events
    assert tracker.committable() == {TP: 43}
    assert tracker.in_flight() == 0


def test_committable_stops_at_the_first_unacknowledged_offset() -> None:
    tracker = tracked(1, 1, 1, start=10)
    assert tracker.committable() == {TP: 10}
    tracker.ack(TP, 11)  # a later offset finishing first does not move the commit
    assert tracker.committable() == {TP: 10}
    tracker.ack(TP, 10)
    assert tracker.committable() == {TP: 12}
    tracker.ack(TP, 12)
    assert tracker.committable() == {TP: 13}


def test_an_offset_with_several_outputs_waits_for_every_ack() -> None:
    tracker = tracked(3)
    tracker.ack(TP, 0)
    tracker.ack(TP, 0)
    assert tracker.committable() == {TP: 0}
    assert tracker.in_flight() == 1
    tracker.ack(TP, 0)
    assert tracker.committable() == {TP: 1}
    assert tracker.in_flight() == 0


def test_a_dropped_record_after_a_pending_one_does_not_pass_it() -> None:
    tracker = tracked(1, 0, 0)
    assert tracker.committable() == {TP: 0}
    tracker.ack(TP, 0)
    assert tracker.committable() == {TP: 3}


def test_committable_reports_only_what_changed_since_the_last_commit() -> None:
    tracker = tracked(1, 1)
    tracker.ack(TP, 0)
    assert tracker.committable() == {TP: 1}
    tracker.mark_committed({TP: 1})
    assert tracker.committable() == {}
    tracker.ack(TP, 1)
    assert tracker.committable() == {TP: 2}


def test_partitions_are_independent() -> None:
    tracker = tracked(1, 1)
    tracker.assign(OTHER)
    tracker.track(OTHER, 7, 0, now=1.0)
    tracker.track(OTHER, 8, 1, now=1.0)
    tracker.ack(OTHER, 8)
    assert tracker.committable() == {TP: 0, OTHER: 9}
    tracker.ack(TP, 0)
    assert tracker.committable() == {TP: 1, OTHER: 9}


def test_track_assigns_an_unknown_partition_implicitly() -> None:
    tracker = OffsetTracker()
    tracker.track(TP, 5, 0, now=1.0)
    assert tracker.partitions() == [TP]
    assert tracker.committable() == {TP: 6}


def test_unknown_and_duplicate_acks_are_ignored() -> None:
    tracker = tracked(1, 1)
    tracker.ack(TP, 99)  # never tracked
    tracker.ack(OTHER, 0)  # never assigned
    assert tracker.committable() == {TP: 0}
    tracker.ack(TP, 0)
    tracker.ack(TP, 0)  # a second ack for a finished offset must not touch offset 1
    assert tracker.committable() == {TP: 1}
    assert tracker.in_flight() == 1


# --- revocation ----------------------------------------------------------------------------------


def test_revoke_forgets_the_partition_and_its_late_acks() -> None:
    tracker = tracked(1)
    tracker.revoke(TP)
    tracker.ack(TP, 0)  # arrives after the revocation: someone else owns the position now
    tracker.fail(TP, 0)
    assert tracker.partitions() == []
    assert tracker.committable() == {}
    assert tracker.in_flight() == 0


def test_reassignment_starts_from_scratch() -> None:
    tracker = tracked(1, 1)
    tracker.ack(TP, 0)
    tracker.mark_committed({TP: 1})
    tracker.revoke(TP)
    tracker.assign(TP)
    assert tracker.committable() == {}
    tracker.track(TP, 1, 0, now=5.0)
    assert tracker.committable() == {TP: 2}


def test_mark_committed_ignores_revoked_partitions() -> None:
    tracker = tracked(0)
    tracker.mark_committed({OTHER: 12})
    assert tracker.partitions() == [TP]
    assert tracker.committable() == {TP: 1}


def test_assign_keeps_an_already_tracked_partition() -> None:
    tracker = tracked(1)
    tracker.assign(TP)
    assert tracker.committable() == {TP: 0}
    assert tracker.in_flight() == 1


# --- failures and rewinds ------------------------------------------------------------------------


def test_a_failed_produce_blocks_the_commit_even_after_its_other_acks() -> None:
    tracker = tracked(2, 1)
    tracker.fail(TP, 0)
    tracker.ack(TP, 0)
    tracker.ack(TP, 0)
    tracker.ack(TP, 1)
    assert tracker.has_failures()
    assert tracker.committable() == {TP: 0}
    assert tracker.rewind_points() == {TP: 0}


def test_fail_for_an_unknown_or_finished_offset_is_ignored() -> None:
    tracker = tracked(1, 1)
    tracker.ack(TP, 0)
    tracker.fail(TP, 0)  # already finished
    tracker.fail(TP, 42)
    tracker.fail(OTHER, 0)
    assert not tracker.has_failures()
    assert tracker.committable() == {TP: 1}


def test_rewind_points_name_the_first_unfinished_offset_per_partition() -> None:
    tracker = tracked(1, 1, 1, start=20)
    tracker.track(OTHER, 3, 0, now=1.0)
    tracker.ack(TP, 20)
    tracker.fail(TP, 22)
    assert tracker.rewind_points() == {TP: 21}  # OTHER has nothing unfinished


def test_rewind_forgets_from_the_offset_on_and_reprocessing_completes() -> None:
    tracker = tracked(1, 1, 1)
    tracker.ack(TP, 0)
    tracker.fail(TP, 1)
    tracker.ack(TP, 2)
    point = tracker.rewind_points()[TP]
    assert point == 1
    tracker.rewind(TP, point)
    assert not tracker.has_failures()
    assert tracker.in_flight() == 0
    assert tracker.committable() == {TP: 1}  # nothing past the lost record
    tracker.track(TP, 1, 1, now=9.0)
    tracker.track(TP, 2, 1, now=9.0)
    tracker.ack(TP, 2)
    assert tracker.committable() == {TP: 1}
    tracker.ack(TP, 1)
    assert tracker.committable() == {TP: 3}


def test_rewind_keeps_pending_work_before_the_offset() -> None:
    tracker = tracked(1, 1, 1)
    tracker.fail(TP, 2)
    tracker.rewind(TP, 2)
    assert tracker.in_flight() == 2
    assert tracker.committable() == {TP: 0}
    tracker.ack(TP, 0)
    tracker.ack(TP, 1)
    assert tracker.committable() == {TP: 2}


def test_rewind_of_an_unknown_partition_is_ignored() -> None:
    tracker = tracked(1)
    tracker.rewind(OTHER, 0)
    assert tracker.partitions() == [TP]


# --- stall detection ---------------------------------------------------------------------------


def test_oldest_pending_since_is_the_earliest_unacknowledged_produce() -> None:
    tracker = OffsetTracker()
    assert tracker.oldest_pending_since() is None
    tracker.track(TP, 0, 1, now=10.0)
    tracker.track(TP, 1, 1, now=11.0)
    tracker.track(OTHER, 0, 1, now=10.5)
    assert tracker.oldest_pending_since() == 10.0
    tracker.ack(TP, 0)
    assert tracker.oldest_pending_since() == 10.5
    tracker.ack(OTHER, 0)
    assert tracker.oldest_pending_since() == 11.0
    tracker.ack(TP, 1)
    assert tracker.oldest_pending_since() is None


def test_records_without_outputs_never_count_as_in_flight() -> None:
    tracker = tracked(0, 0)
    assert tracker.oldest_pending_since() is None
    assert tracker.in_flight() == 0


# --- properties --------------------------------------------------------------------------------


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[int, list[int], list[int]]:
    """(first offset, outputs per record, a schedule of ack events).

    Each record must be tracked before its acks arrive; the schedule lists, step by step, either
    -1 ("track the next record") or the offset of one outstanding ack, in any order."""
    start = draw(st.integers(0, 10**12))
    outputs = draw(st.lists(st.integers(0, 3), min_size=1, max_size=25))
    outstanding: list[int] = []
    schedule: list[int] = []
    next_index = 0
    while next_index < len(outputs) or outstanding:
        can_track = next_index < len(outputs)
        if can_track and (not outstanding or draw(st.booleans())):
            schedule.append(-1)
            outstanding += [start + next_index] * outputs[next_index]
            next_index += 1
        else:
            schedule.append(outstanding.pop(draw(st.integers(0, len(outstanding) - 1))))
    return start, outputs, schedule


@settings(max_examples=300)
@given(interleavings())
def test_committable_never_passes_an_unacknowledged_offset(
    case: tuple[int, list[int], list[int]],
) -> None:
    start, outputs, schedule = case
    tracker = OffsetTracker()
    tracker.assign(TP)
    remaining: dict[int, int] = {}
    read = 0
    last = None
    for step in schedule:
        if step == -1:
            offset = start + read
            tracker.track(TP, offset, outputs[read], now=float(read))
            remaining[offset] = outputs[read]
            read += 1
        else:
            tracker.ack(TP, step)
            remaining[step] -= 1
        unfinished = [o for o, left in remaining.items() if left > 0]
        expected = min(unfinished) if unfinished else start + read
        assert tracker.committable() == {TP: expected}
        assert last is None or expected >= last  # never moves backwards
        last = expected
        assert tracker.in_flight() == len(unfinished)
    assert tracker.committable() == {TP: start + len(outputs)}
    assert tracker.rewind_points() == {}
    assert tracker.oldest_pending_since() is None


@settings(max_examples=200)
@given(
    outputs=st.lists(st.integers(1, 3), min_size=1, max_size=15),
    failed=st.data(),
)
def test_a_failure_holds_the_commit_until_rewound_and_redone(
    outputs: list[int], failed: st.DataObject
) -> None:
    tracker = tracked(*outputs)
    lost = failed.draw(st.integers(0, len(outputs) - 1))
    tracker.fail(TP, lost)
    for offset, count in enumerate(outputs):
        for _ in range(count):
            tracker.ack(TP, offset)
    assert tracker.committable() == {TP: lost}
    assert tracker.rewind_points() == {TP: lost}
    tracker.rewind(TP, lost)
    for offset in range(lost, len(outputs)):
        tracker.track(TP, offset, outputs[offset], now=50.0)
        assert tracker.committable() == {TP: lost}
    for offset in reversed(range(lost, len(outputs))):
        for _ in range(outputs[offset]):
            assert tracker.committable() == {TP: lost}
            tracker.ack(TP, offset)
    assert tracker.committable() == {TP: len(outputs)}
    assert not tracker.has_failures()
