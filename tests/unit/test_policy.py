"""The worker's pure decisions: retry backoff and budget, circuit breaker, flood guard, stalls."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.policy import BreakerState, CircuitBreaker, FloodGuard, RetryPolicy, stalled
from pipeline.errors import ConfigError

# --- RetryPolicy -------------------------------------------------------------------------------


def policy(**overrides: float) -> RetryPolicy:
    values: dict[str, float] = {
        "max_attempts": 5,
        "initial_backoff_s": 0.1,
        "max_backoff_s": 2.0,
        "budget_s": 10.0,
    }
    values.update(overrides)
    return RetryPolicy(
        max_attempts=int(values["max_attempts"]),
        initial_backoff_s=values["initial_backoff_s"],
        max_backoff_s=values["max_backoff_s"],
        budget_s=values["budget_s"],
        multiplier=values.get("multiplier", 2.0),
    )


def test_backoff_cap_grows_exponentially_then_caps() -> None:
    p = policy()
    assert [p.backoff_cap(a) for a in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0])
    assert p.backoff_cap(10_000) == 2.0  # no OverflowError for huge attempt numbers


def test_backoff_is_full_jitter_and_deterministic_with_a_seed() -> None:
    p = policy()
    first = [p.backoff(3, random.Random(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    draws = [p.backoff(3, random.Random(seed)) for seed in range(200)]
    assert all(0.0 <= d <= 0.4 for d in draws)
    assert min(draws) < 0.05 and max(draws) > 0.35  # spread over the whole range, not +-10%


def test_next_retry_stops_when_attempts_are_exhausted() -> None:
    p = policy(max_attempts=3)
    rng = random.Random(1)
    assert p.next_retry(1, first_attempt_at=100.0, now=100.0, rng=rng) is not None
    assert p.next_retry(2, first_attempt_at=100.0, now=100.5, rng=rng) is not None
    assert p.next_retry(3, first_attempt_at=100.0, now=101.0, rng=rng) is None


def test_single_attempt_policy_never_retries() -> None:
    assert policy(max_attempts=1).next_retry(1, 0.0, 0.0, random.Random(0)) is None


def test_next_retry_stops_when_the_budget_is_spent() -> None:
    p = policy(max_attempts=100, budget_s=10.0)
    assert p.next_retry(4, first_attempt_at=50.0, now=60.0, rng=random.Random(0)) is None
    assert p.next_retry(4, first_attempt_at=50.0, now=75.0, rng=random.Random(0)) is None


def test_a_delay_past_the_budget_is_clipped_to_its_end() -> None:
    p = policy(max_attempts=100, initial_backoff_s=5.0, max_backoff_s=5.0, budget_s=10.0)
    rng = random.Random(3)
    delays = [p.next_retry(2, first_attempt_at=0.0, now=9.9, rng=rng) for _ in range(50)]
    assert all(d is not None and 0.0 <= d <= 10.0 - 9.9 for d in delays)
    assert max(d for d in delays if d is not None) == 10.0 - 9.9


@given(
    attempt=st.integers(min_value=1, max_value=5_000),
    initial=st.floats(min_value=0.0, max_value=100.0),
    extra=st.floats(min_value=0.0, max_value=1_000.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_always_within_zero_and_cap(
    attempt: int, initial: float, extra: float, multiplier: float, seed: int
) -> None:
    p = RetryPolicy(5, initial, initial + extra, 60.0, multiplier)
    delay = p.backoff(attempt, random.Random(seed))
    assert 0.0 <= delay <= p.backoff_cap(attempt) <= p.max_backoff_s


@given(
    budget=st.floats(min_value=0.0, max_value=100.0),
    max_backoff=st.floats(min_value=0.0, max_value=50.0),
    seed=st.integers(min_value=0, max_value=2**32),
    failure_durations=st.lists(st.floats(min_value=0.0, max_value=20.0), max_size=40),
)
def test_no_attempt_ever_starts_after_the_budget(
    budget: float, max_backoff: float, seed: int, failure_durations: list[float]
) -> None:
    p = RetryPolicy(1_000, 0.0, max_backoff, budget)
    rng, start, now = random.Random(seed), 1_000.0, 1_000.0
    for attempt, duration in enumerate(failure_durations, start=1):
        assert now <= start + budget or attempt == 1
        now += duration  # the attempt runs, then fails
        delay = p.next_retry(attempt, start, now, rng)
        if delay is None:
            return
        assert delay >= 0.0
        now += delay
        assert now <= start + budget + 1e-9


def test_validate_accepts_a_budget_that_fits() -> None:
    policy(budget_s=60.0, max_backoff_s=5.0).validate(300.0, 60.5)
    policy(budget_s=299.0).validate(300.0, None)


def test_validate_refuses_a_budget_longer_than_max_poll_interval() -> None:
    with pytest.raises(ConfigError, match=r"budget 300.0s must be < max.poll.interval 300.0s"):
        policy(budget_s=300.0).validate(300.0, None)


def test_validate_lists_every_transaction_timeout_problem_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        policy(budget_s=90.0, max_backoff_s=70.0).validate(300.0, 60.0)
    message = str(info.value)
    assert "\n" not in message
    assert "max backoff 70.0s must be < transaction timeout 60.0s" in message
    assert "budget 90.0s must be < transaction timeout 60.0s" in message


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_attempts": 0},
        {"initial_backoff_s": -1.0},
        {"max_backoff_s": 0.01},
        {"multiplier": 0.5},
    ],
)
def test_nonsense_policies_are_config_errors(overrides: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        policy(**overrides)


# --- CircuitBreaker ----------------------------------------------------------------------------


class Transitions:
    """A typed on_change hook that remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[BreakerState, BreakerState, str]] = []

    def __call__(self, old: BreakerState, new: BreakerState, reason: str) -> None:
        self.seen.append((old, new, reason))


def state(b: CircuitBreaker) -> BreakerState:
    """Read the state through a call, so mypy does not keep a narrowing across method calls."""
    return b.state


def breaker(hook: Transitions | None = None) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, open_s=10.0, max_open_s=35.0, on_change=hook)


def test_opens_after_threshold_consecutive_failures() -> None:
    b = breaker()
    b.record_failure(1.0, "timeout")
    b.record_failure(2.0, "timeout")
    assert state(b) is BreakerState.CLOSED and b.allow(2.0)
    b.record_failure(3.0, "db down")
    assert state(b) is BreakerState.OPEN
    assert (b.reason, b.opened_at, b.open_until) == ("db down", 3.0, 13.0)


def test_a_success_resets_the_consecutive_count() -> None:
    b = breaker()
    for now in (1.0, 2.0):
        b.record_failure(now, "x")
    b.record_success(2.5)
    for now in (3.0, 4.0):
        b.record_failure(now, "x")
    assert state(b) is BreakerState.CLOSED


def test_stays_open_until_the_delay_then_half_opens() -> None:
    b = breaker()
    b.trip(100.0, "delivery failed")
    assert not b.allow(100.0)
    assert not b.allow(109.999)
    assert state(b) is BreakerState.OPEN
    assert b.allow(110.0)
    assert state(b) is BreakerState.HALF_OPEN
    assert b.allow(110.5)  # half-open keeps allowing probes


def test_failure_in_half_open_reopens_with_doubled_delay_up_to_the_cap() -> None:
    b = breaker()
    b.trip(0.0, "down")
    expected_delays = [20.0, 35.0, 35.0]
    now = 10.0
    for delay in expected_delays:
        assert b.allow(now) and state(b) is BreakerState.HALF_OPEN
        b.record_failure(now, "still down")
        assert state(b) is BreakerState.OPEN
        assert b.open_until == now + delay
        now += delay


def test_success_in_half_open_closes_and_resets_the_delay() -> None:
    b = breaker()
    b.trip(0.0, "down")
    assert b.allow(10.0)
    b.record_failure(10.0, "still down")  # delay now 20
    assert b.allow(30.0)
    b.record_success(30.0)
    assert state(b) is BreakerState.CLOSED
    assert b.opened_at is None and b.open_until is None
    b.trip(40.0, "down again")
    assert b.open_until == 50.0  # back to open_s


def test_late_answers_while_open_change_nothing() -> None:
    b = breaker()
    b.trip(0.0, "down")
    b.record_success(1.0)
    b.record_failure(2.0, "late failure")
    b.trip(3.0, "stalled again")
    assert (state(b), b.reason, b.open_until) == (BreakerState.OPEN, "down", 10.0)


def test_on_change_sees_each_transition() -> None:
    hook = Transitions()
    b = breaker(hook)
    for now in (1.0, 2.0, 3.0):
        b.record_failure(now, "db down")
    b.allow(13.0)
    b.record_failure(13.0, "probe failed")
    b.allow(33.0)
    b.record_success(33.0)
    closed, open_, half = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
    assert hook.seen == [
        (closed, open_, "db down"),
        (open_, half, "db down"),
        (half, open_, "probe failed"),
        (open_, half, "probe failed"),
        (half, closed, "probe succeeded"),
    ]
    assert b.transitions == 5


def test_breaker_refuses_nonsense_settings() -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(failure_threshold=0, open_s=1.0, max_open_s=2.0)
    with pytest.raises(ConfigError):
        CircuitBreaker(failure_threshold=1, open_s=3.0, max_open_s=2.0)


# --- FloodGuard --------------------------------------------------------------------------------


def test_below_min_records_never_floods() -> None:
    guard = FloodGuard(ratio=0.5, window=10, min_records=5, pause_s=30.0)
    for _ in range(4):
        assert not guard.would_flood(0.0)
        guard.record(True)
    assert guard.ratio_now == 1.0
    assert guard.would_flood(0.0)  # the 5th outcome reaches min_records


def test_crossing_the_ratio_floods_counting_the_candidate() -> None:
    guard = FloodGuard(ratio=0.5, window=10, min_records=4, pause_s=30.0)
    for outcome in (False, False, True):
        guard.record(outcome)
    assert guard.would_flood(0.0)  # 2 dead of 4 = 0.5
    guard.record(False)
    assert not guard.would_flood(0.0)  # 2 dead of 5 = 0.4


def test_would_flood_accounts_for_the_evicted_outcome() -> None:
    guard = FloodGuard(ratio=0.5, window=4, min_records=4, pause_s=1.0)
    for outcome in (True, False, False, False):
        guard.record(outcome)
    assert not guard.would_flood(0.0)  # the True is evicted: 1 of 4
    guard = FloodGuard(ratio=0.5, window=4, min_records=4, pause_s=1.0)
    for outcome in (False, True, False, False):
        guard.record(outcome)
    assert guard.would_flood(0.0)  # the False is evicted: 2 of 4


def test_relabel_turns_the_newest_good_outcome_dead_without_counting_one_more() -> None:
    """A record counted good and found too large is one outcome, dead: the window's size
    stays, its dead count grows (the newest good one relabeled, or a dead one recorded when
    there is no good one); `would_flood_relabeling` asks the same of that change."""
    guard = FloodGuard(ratio=0.5, window=10, min_records=4, pause_s=30.0)
    for outcome in (False, True, False, True, True):
        guard.record(outcome)
    guard.relabel()
    assert guard.outcomes == (False, True, True, True, True)
    assert (len(guard.outcomes), guard.dead_count) == (5, 4)
    guard = FloodGuard(ratio=0.5, window=10, min_records=4, pause_s=30.0)
    for outcome in (False, False, False, True):
        guard.record(outcome)
    assert not guard.would_flood(0.0)  # one more dead: 2 of 5
    assert guard.would_flood_relabeling(0.0)  # a good one relabeled: 2 of 4
    guard.trip(0.0)
    guard.relabel()  # nothing to relabel: a dead one
    assert guard.outcomes == (True,)


def test_trip_pauses_until_the_right_time_and_clears_the_window() -> None:
    guard = FloodGuard(ratio=0.5, window=10, min_records=3, pause_s=30.0)
    for _ in range(5):
        guard.record(True)
    guard.trip(100.0)
    assert guard.tripped_count == 1
    assert guard.paused(100.0) and guard.paused(129.999)
    assert guard.would_flood(110.0)  # no dead-lettering while paused
    assert not guard.paused(130.0)
    assert (guard.outcomes, guard.dead_count, guard.ratio_now) == ((), 0, 0.0)
    assert not guard.would_flood(130.0)


def test_a_sustained_flood_trickles_min_records_minus_one_per_pause() -> None:
    guard = FloodGuard(ratio=0.2, window=100, min_records=10, pause_s=60.0)
    now, leaked_per_pause = 0.0, []
    for _ in range(3):
        leaked = 0
        while not guard.would_flood(now):
            guard.record(True)
            leaked += 1
        guard.trip(now)
        now += 60.0
        leaked_per_pause.append(leaked)
    assert leaked_per_pause == [9, 9, 9]
    assert guard.tripped_count == 3


@given(
    window=st.integers(min_value=1, max_value=20),
    outcomes=st.lists(st.one_of(st.booleans(), st.none()), max_size=200),
)
def test_the_running_count_always_equals_the_window_sum(
    window: int, outcomes: list[bool | None]
) -> None:
    guard = FloodGuard(ratio=0.5, window=window, min_records=1, pause_s=1.0)
    shadow: list[bool] = []
    for step, outcome in enumerate(outcomes):
        if outcome is None:  # None stands for a trip
            guard.trip(float(step))
            shadow.clear()
        else:
            expected_dead = sum(([*shadow, True])[-window:])
            expected_len = len(([*shadow, True])[-window:])
            expected = expected_dead / expected_len >= 0.5
            assert guard.would_flood(float(step) + 1.0) == expected
            guard.record(outcome)
            shadow.append(outcome)
        assert guard.outcomes == tuple(shadow[-window:])
        assert guard.dead_count == sum(guard.outcomes)


@pytest.mark.parametrize(
    ("ratio", "window", "min_records", "pause_s"),
    [(0.0, 10, 1, 1.0), (1.5, 10, 1, 1.0), (0.5, 10, 0, 1.0), (0.5, 10, 11, 1.0), (0.5, 1, 1, -1)],
)
def test_flood_guard_refuses_nonsense_settings(
    ratio: float, window: int, min_records: int, pause_s: float
) -> None:
    with pytest.raises(ConfigError):
        FloodGuard(ratio, window, min_records, pause_s)


# --- stalled -----------------------------------------------------------------------------------


def test_stalled() -> None:
    assert not stalled(None, now=1_000.0, limit_s=5.0)
    assert not stalled(100.0, now=105.0, limit_s=5.0)
    assert stalled(100.0, now=105.001, limit_s=5.0)
