"""BatchTracker: what may be committed from per-batch acknowledgements; a refused record blocks
its batch until the rewind, which sends every partition of it back to its first offset."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.offsets import Batch, BatchTracker

A = ("orders", 0)
B = ("orders", 1)


def batch(tracker: BatchTracker, *records: tuple[tuple[str, int], int, int]) -> Batch:
    """Open a batch and add (tp, offset, outputs) records to it, not yet closed."""
    opened = tracker.open(0.0)
    for tp, offset, outputs in records:
        opened.add(tp, offset, outputs)
    return opened


def test_nothing_is_committable_before_the_batch_is_closed_and_acknowledged() -> None:
    tracker = BatchTracker()
    first = batch(tracker, (A, 0, 1), (A, 1, 1))
    assert tracker.committable() == {}
    assert tracker.apply(first.id, 2, 0) == []  # acknowledged but still open
    assert tracker.committable() == {}
    assert tracker.close(first) == [first]
    assert tracker.committable() == {A: 2}


def test_a_partly_acknowledged_batch_commits_nothing() -> None:
    tracker = BatchTracker()
    first = batch(tracker, (A, 0, 1), (B, 0, 1))
    tracker.close(first)
    tracker.apply(first.id, 1, 0)
    assert tracker.committable() == {}
    assert tracker.in_flight() == 1


def test_records_without_outputs_finish_at_once() -> None:
    tracker = BatchTracker()
    dropped = batch(tracker, (A, 5, 0), (A, 6, 0))
    assert tracker.close(dropped) == [dropped]
    assert tracker.committable() == {A: 7}


def test_batches_finish_in_order() -> None:
    tracker = BatchTracker()
    first = batch(tracker, (A, 0, 1))
    tracker.close(first)
    second = batch(tracker, (A, 1, 1), (B, 0, 1))
    tracker.close(second)
    assert tracker.apply(second.id, 2, 0) == []  # waits behind the first
    assert tracker.committable() == {}
    assert tracker.apply(first.id, 1, 0) == [first, second]
    assert tracker.committable() == {A: 2, B: 1}


def test_committed_positions_are_not_offered_again_unless_the_commit_failed() -> None:
    tracker = BatchTracker()
    tracker.close(batch(tracker, (A, 0, 0)))
    tracker.mark_committed({A: 1})
    assert tracker.committable() == {}
    tracker.commit_failed([A])
    assert tracker.committable() == {A: 1}


def test_a_refused_record_blocks_its_batch_and_every_later_one() -> None:
    tracker = BatchTracker()
    first = batch(tracker, (A, 0, 1), (A, 1, 1))
    tracker.close(first)
    second = batch(tracker, (A, 2, 1), (B, 0, 1))
    tracker.close(second)
    tracker.apply(second.id, 2, 0)
    tracker.apply(first.id, 1, 1)
    assert tracker.committable() == {}
    assert tracker.has_failures()


def test_rewind_goes_back_to_the_first_offset_of_the_failed_batch() -> None:
    tracker = BatchTracker()
    tracker.close(batch(tracker, (A, 0, 1)))
    tracker.apply(1, 1, 0)
    failed = batch(tracker, (A, 1, 1), (A, 2, 1))
    tracker.close(failed)
    later = batch(tracker, (A, 3, 1), (B, 7, 1))
    tracker.close(later)
    tracker.apply(failed.id, 1, 1)
    tracker.apply(later.id, 2, 0)
    assert tracker.take_rewind() == {A: 1}
    # the later batch keeps only B: A's records there are read again after the seek
    assert tracker.committable() == {A: 1, B: 8}
    assert not tracker.has_failures()


def test_revoked_partitions_are_forgotten() -> None:
    tracker = BatchTracker()
    first = batch(tracker, (A, 0, 1), (B, 0, 1))
    tracker.close(first)
    tracker.revoke(A)
    tracker.apply(first.id, 2, 0)
    assert tracker.committable() == {B: 1}


def test_acknowledgements_of_forgotten_batches_are_ignored() -> None:
    tracker = BatchTracker()
    first = batch(tracker, (A, 0, 1))
    tracker.close(first)
    tracker.forget()
    assert tracker.apply(first.id, 1, 0) == []
    assert tracker.committable() == {}


def test_stall_detection_sees_the_oldest_unacknowledged_batch() -> None:
    tracker = BatchTracker()
    first = tracker.open(5.0)
    first.add(A, 0, 1)
    tracker.close(first)
    assert tracker.oldest_started_at() == 5.0
    tracker.apply(first.id, 1, 0)
    assert tracker.oldest_started_at() is None


@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from([A, B]), st.integers(0, 2)), min_size=1, max_size=6),
        min_size=1,
        max_size=8,
    ),
    st.data(),
)
def test_never_commits_past_an_unacknowledged_record(
    batches: list[list[tuple[tuple[str, int], int]]], data: st.DataObject
) -> None:
    """Whatever order acknowledgements arrive in, a committable position never passes a record
    whose outputs are not all acknowledged."""
    tracker = BatchTracker()
    next_offset = {A: 0, B: 0}
    opened: list[tuple[Batch, list[tuple[tuple[str, int], int, int]]]] = []
    for records in batches:
        b = tracker.open(0.0)
        added = []
        for tp, outputs in records:
            b.add(tp, next_offset[tp], outputs)
            added.append((tp, next_offset[tp], outputs))
            next_offset[tp] += 1
        tracker.close(b)
        opened.append((b, added))
    acked: set[int] = set()
    for index in data.draw(st.permutations(range(len(opened)))):
        b, added = opened[index]
        if data.draw(st.booleans()):
            tracker.apply(b.id, sum(o for _, _, o in added), 0)
            acked.add(index)
        for tp, position in tracker.committable().items():
            for i, (_b, recs) in enumerate(opened):
                for rtp, offset, outputs in recs:
                    if rtp == tp and offset < position and outputs:
                        assert i in acked, f"committed {tp}@{position} past unacked {offset}"
