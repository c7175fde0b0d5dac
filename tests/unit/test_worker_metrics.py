"""The worker's metrics in both delivery modes, on the in-memory fake (the worker rig of
test_worker.py): records in flight are exported in exactly-once mode too, the batch and
acknowledgement histograms are observed once per batch (never per record), dead letters are
counted once acknowledged, and the last commit's time is exported."""

from __future__ import annotations

import pytest

from tests.unit.test_worker import BAD, SOURCE, Clock, good, rig

MODES = pytest.mark.parametrize(
    "exactly_once", [False, True], ids=["at-least-once", "exactly-once"]
)


@MODES
def test_records_in_flight_are_exported_in_both_modes(exactly_once: bool) -> None:
    r = rig(exactly_once=exactly_once)
    r.sink.stalled = True  # produced, never acknowledged
    r.cluster.append(SOURCE, good(1))
    r.steps(1)
    r.clock.advance(1.5)  # metrics are flushed once a second
    r.steps(1)
    assert r.sample("lazarus_in_flight_records") == 1


@MODES
def test_histograms_are_observed_per_batch_and_counters_per_acknowledged_record(
    exactly_once: bool,
) -> None:
    r = rig(exactly_once=exactly_once)  # batches of at most 100 records
    for i in range(250):
        r.cluster.append(SOURCE, BAD if i % 5 == 0 else good(i))
    r.steps(6)
    r.clock.advance(1.5)
    r.steps(1)
    r.flush_metrics()
    batches = r.sample("lazarus_batch_duration_seconds_count")
    assert 3 <= batches <= 7, batches  # 250 records in batches of 100, plus empty polls at most
    assert 3 <= r.sample("lazarus_produce_ack_latency_seconds_count") <= batches
    assert r.sample("lazarus_records_total", outcome="forwarded") == 200
    assert r.sample("lazarus_dead_letters_total", category="validation") == 50
    assert r.sample("lazarus_produce_failures_total", target="dlq") == 0
    assert 1000 < r.sample("lazarus_last_commit_timestamp_seconds") <= r.clock.now
    assert r.sample("lazarus_commits_total") >= 1


@MODES
def test_ack_latency_counts_from_the_end_of_routing_in_both_modes(exactly_once: bool) -> None:
    """Routing that takes 2 s a record (a slow processor) is batch duration, not ack latency:
    the fake acknowledges at once, so the latency stays 0 in both modes (exactly-once counted
    from the transaction's start, routing included)."""
    clocks: list[Clock] = []

    def slow(event: object, ctx: object) -> object:
        clocks[0].advance(2.0)
        return event

    r = rig(exactly_once=exactly_once, processor=slow)
    clocks.append(r.clock)
    for i in range(3):
        r.cluster.append(SOURCE, good(i))
    r.steps(1)
    r.clock.advance(1.5)
    r.steps(1)
    r.flush_metrics()
    assert r.sample("lazarus_batch_duration_seconds_sum") >= 6.0
    assert r.sample("lazarus_produce_ack_latency_seconds_count") >= 1
    assert r.sample("lazarus_produce_ack_latency_seconds_sum") < 1.0
