"""The worker's retry, breaker, flood and stall decisions: pure functions of values and `now`.

Nothing here reads a clock, sleeps, or talks to Kafka. Every method that depends on time takes
`now` (float seconds) from the caller, and every random draw comes from an injected
`random.Random`, so the same inputs always give the same decision and tests need no sleeping.
`now` may come from any clock as long as one object only ever sees one clock; the worker uses
`time.monotonic()`, which never jumps when the wall clock is adjusted.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pipeline.errors import ConfigError

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "FloodGuard",
    "RetryPolicy",
    "TransitionHook",
    "stalled",
]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a record whose processing raised `Retryable` is retried before it is dead-lettered.

    `max_attempts` counts every attempt, the first included (1 means "never retry").
    `budget_s` is the wall time, measured from the start of the first attempt, after which no new
    attempt starts: whichever of attempts and budget runs out first ends the retries, and the
    record goes to the DLQ as `retries_exhausted`.
    """

    max_attempts: int
    initial_backoff_s: float
    max_backoff_s: float
    budget_s: float
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        problems = []
        if self.max_attempts < 1:
            problems.append(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.initial_backoff_s < 0:
            problems.append(f"initial_backoff_s must be >= 0, not {self.initial_backoff_s}")
        if self.max_backoff_s < self.initial_backoff_s:
            problems.append("max_backoff_s must be >= initial_backoff_s")
        if self.budget_s < 0:
            problems.append(f"budget_s must be >= 0, not {self.budget_s}")
        if self.multiplier < 1:
            problems.append(f"multiplier must be >= 1, not {self.multiplier}")
        if problems:
            raise ConfigError("retry policy: " + "; ".join(problems))

    def backoff_cap(self, attempt: int) -> float:
        """The upper bound of the jittered delay after failed attempt number `attempt` (1-based):
        `min(max_backoff_s, initial_backoff_s * multiplier ** (attempt - 1))`, overflow-safe."""
        try:
            grown = self.initial_backoff_s * self.multiplier ** max(attempt - 1, 0)
        except OverflowError:
            return self.max_backoff_s
        return min(self.max_backoff_s, grown)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The delay after failed attempt `attempt`, with FULL jitter: uniform in [0, cap].

        Full jitter (AWS's "exponential backoff and jitter") spreads the retries of many workers
        that failed together, so a recovering dependency is not hit by a synchronised wave.
        """
        return rng.uniform(0.0, self.backoff_cap(attempt))

    def next_retry(
        self, attempt: int, first_attempt_at: float, now: float, rng: random.Random
    ) -> float | None:
        """The delay before the next attempt, after attempt number `attempt` failed at `now`.

        None when no attempt may follow: `attempt >= max_attempts`, or the budget has run out
        (`now >= first_attempt_at + budget_s`). A drawn delay that would end past the budget is
        CLIPPED to the budget's end rather than turned into None: whether a record gets its last
        chance must not depend on the luck of the jitter draw. So the next attempt never starts
        after `first_attempt_at + budget_s`, and the call after it returns None.
        """
        if attempt >= self.max_attempts:
            return None
        remaining = first_attempt_at + self.budget_s - now
        if remaining <= 0:
            return None
        return min(self.backoff(attempt, rng), remaining)

    def validate(self, max_poll_interval_s: float, transaction_timeout_s: float | None) -> None:
        """Raise `ConfigError` (one line, every problem) when the budget cannot fit the clients.

        While a record waits between attempts the worker pauses its partitions and keeps
        polling, so waiting alone does not break `max.poll.interval.ms`. But the budget bounds
        how long one record can hold the loop in the worst case (an attempt that hangs until the
        budget's end), and the consumer is expelled from its group when that outlives
        `max.poll.interval.ms`: so `budget_s < max_poll_interval_s`.

        In exactly-once mode (`transaction_timeout_s` given) the record's transaction stays open
        across its retries, and the broker aborts a transaction older than
        `transaction.timeout.ms`: so `max_backoff_s` and `budget_s` must both be below it.
        """
        problems = []
        if self.budget_s >= max_poll_interval_s:
            problems.append(
                f"retry budget {self.budget_s}s must be < max.poll.interval {max_poll_interval_s}s"
            )
        if transaction_timeout_s is not None:
            for name, value in (("max backoff", self.max_backoff_s), ("budget", self.budget_s)):
                if value >= transaction_timeout_s:
                    problems.append(
                        f"retry {name} {value}s must be < transaction timeout "
                        f"{transaction_timeout_s}s"
                    )
        if problems:
            raise ConfigError("retry policy does not fit: " + "; ".join(problems))


class BreakerState(StrEnum):
    """The states of `CircuitBreaker` (also the values of its exported state label)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


TransitionHook = Callable[[BreakerState, BreakerState, str], None]
"""Called as `hook(old, new, reason)` on every state change, so the worker can log and export it."""


class CircuitBreaker:
    """Stops processing while a dependency (the handler's backend, the DLQ or output producer)
    is failing, instead of burning every record's retry budget against it.

    `closed`: work flows; `failure_threshold` consecutive `record_failure` calls open it.
    `open`: `allow` says False until `open_until`, then the breaker turns `half_open`.
    `half_open`: work is allowed as a probe; one success closes it and resets the delay to
    `open_s`, one failure re-opens it with the delay doubled (capped at `max_open_s`).
    `trip` opens it at once, whatever the count: for failures that need no second opinion, such
    as a failed or stalled delivery to the DLQ.

    Mutable, but pure with respect to time: the caller passes `now` to every method.
    """

    def __init__(
        self,
        failure_threshold: int,
        open_s: float,
        max_open_s: float,
        on_change: TransitionHook | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError(f"breaker failure_threshold must be >= 1, not {failure_threshold}")
        if not 0 <= open_s <= max_open_s:
            raise ConfigError("breaker delays must satisfy 0 <= open_s <= max_open_s")
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.max_open_s = max_open_s
        self.on_change = on_change
        self._state = BreakerState.CLOSED
        self.reason = ""
        self.opened_at: float | None = None
        self.open_until: float | None = None
        self.delay_s = open_s
        """The delay of the current opening (or of the next, while closed or half-open)."""
        self.failures = 0
        """Consecutive failures counted while closed."""
        self.transitions = 0

    @property
    def state(self) -> BreakerState:
        """The current state (changed only by the methods below, each change seen by the hook)."""
        return self._state

    def allow(self, now: float) -> bool:
        """May work proceed at `now`? An open breaker whose delay has passed turns half-open."""
        if self.state is BreakerState.OPEN:
            assert self.open_until is not None
            if now < self.open_until:
                return False
            self._move(BreakerState.HALF_OPEN, self.reason)
        return True

    def record_success(self, now: float) -> None:
        """A call to the dependency succeeded. Closes a half-open breaker and resets the delay.

        Ignored while open: a success then is a late answer to a call made before the trip, not
        evidence that the dependency recovered.
        """
        if self.state is BreakerState.OPEN:
            return
        self.failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self.delay_s = self.open_s
            self.opened_at = self.open_until = None
            self._move(BreakerState.CLOSED, "probe succeeded")

    def record_failure(self, now: float, reason: str) -> None:
        """A call to the dependency failed. Opens after `failure_threshold` consecutive failures
        while closed, at once while half-open (with the delay doubled); ignored while open (a
        late failure does not extend the delay that already runs)."""
        if self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self._open(now, reason)
        elif self.state is BreakerState.HALF_OPEN:
            self._open(now, reason)

    def trip(self, now: float, reason: str) -> None:
        """Open now, whatever the failure count (no-op when already open: the delay runs)."""
        if self.state is not BreakerState.OPEN:
            self._open(now, reason)

    def _open(self, now: float, reason: str) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self.delay_s = min(self.delay_s * 2, self.max_open_s)
        self.failures = 0
        self.opened_at = now
        self.open_until = now + self.delay_s
        self._move(BreakerState.OPEN, reason)

    def _move(self, new: BreakerState, reason: str) -> None:
        old, self._state, self.reason = self._state, new, reason
        self.transitions += 1
        if self.on_change is not None:
            self.on_change(old, new, reason)


class FloodGuard:
    """Caps dead-lettering so a bad deploy pauses the worker instead of draining into the DLQ.

    Keeps the last `window` record outcomes (True = dead-lettered) with a running count, so every
    update is O(1). Before dead-lettering a record the worker asks `would_flood(now)`; when it
    says True the worker calls `trip(now)`, leaves the record undecided, and stops consuming until
    `paused(now)` turns False.

    `trip` clears the window, so after the pause the guard re-learns from scratch: a sustained
    flood trips again after at most `min_records - 1` more dead letters. A broken deploy thus
    leaks a slow trickle into the DLQ (at most `min_records - 1` per `pause_s`), never a drain,
    and a healthy stream resumes at full speed without waiting for old failures to age out.
    """

    def __init__(self, ratio: float, window: int, min_records: int, pause_s: float) -> None:
        if not 0 < ratio <= 1:
            raise ConfigError(f"flood ratio must be in (0, 1], not {ratio}")
        if not 1 <= min_records <= window:
            raise ConfigError("flood guard needs 1 <= min_records <= window")
        if pause_s < 0:
            raise ConfigError(f"flood pause must be >= 0, not {pause_s}")
        self.ratio = ratio
        self.window = window
        self.min_records = min_records
        self.pause_s = pause_s
        self._outcomes: deque[bool] = deque()
        self._dead = 0
        self.paused_until: float | None = None
        self.tripped_count = 0

    def would_flood(self, now: float) -> bool:
        """Would dead-lettering one more record make the dead-letter share of the window (that
        record included, the oldest evicted if the window is full) reach `ratio`, with at least
        `min_records` outcomes counted (that record included)? Always True while paused."""
        if self.paused(now):
            return True
        full = len(self._outcomes) == self.window
        count = len(self._outcomes) + (0 if full else 1)
        dead = self._dead + 1 - (1 if full and self._outcomes[0] else 0)
        return count >= self.min_records and dead / count >= self.ratio

    def record(self, dead_lettered: bool) -> None:
        """Add one record's outcome, evicting the oldest when the window is full."""
        if len(self._outcomes) == self.window and self._outcomes.popleft():
            self._dead -= 1
        self._outcomes.append(dead_lettered)
        if dead_lettered:
            self._dead += 1

    def would_flood_relabeling(self, now: float) -> bool:
        """`would_flood` for a record counted already as a good outcome that turns out a dead
        letter (`relabel`): the window's count stays, its dead letters grow by one."""
        if self.paused(now):
            return True
        count = len(self._outcomes)
        if count == self._dead:  # no good outcome to relabel (a `trip` cleared the window)
            return self.would_flood(now)
        return count >= self.min_records and (self._dead + 1) / count >= self.ratio

    def relabel(self) -> None:
        """A record counted as a good outcome is a dead letter after all (the broker refused
        its output as too large): the most recent good outcome becomes a dead one (the window
        is a count; which good one does not matter), or a dead one is recorded when the window
        holds no good one. O(1) when the last outcome is that record's; a scan from the newest
        otherwise (a rare path, at most `window`)."""
        outcomes = self._outcomes
        if len(outcomes) == self._dead:
            self.record(True)
            return
        i = len(outcomes) - 1
        while outcomes[i]:
            i -= 1
        outcomes[i] = True
        self._dead += 1

    def trip(self, now: float) -> None:
        """Pause until `now + pause_s` and forget the window (see the class docstring)."""
        self.paused_until = now + self.pause_s
        self._outcomes.clear()
        self._dead = 0
        self.tripped_count += 1

    def paused(self, now: float) -> bool:
        """True from a `trip` until its pause has elapsed."""
        return self.paused_until is not None and now < self.paused_until

    @property
    def ratio_now(self) -> float:
        """The dead-letter share of the current window (0.0 when empty)."""
        return self._dead / len(self._outcomes) if self._outcomes else 0.0

    @property
    def dead_count(self) -> int:
        """The running count of dead-lettered outcomes in the window."""
        return self._dead

    @property
    def outcomes(self) -> tuple[bool, ...]:
        """A copy of the window, oldest first."""
        return tuple(self._outcomes)


def stalled(oldest_unacked_at: float | None, now: float, limit_s: float) -> bool:
    """True when the oldest produce still awaiting its delivery report was sent more than
    `limit_s` ago (None: nothing in flight, never stalled).

    librdkafka retries silently until `message.timeout.ms`, so a producer with no error yet is
    not a healthy one: the worker trips its breaker on a stall instead of waiting for the error.
    """
    return oldest_unacked_at is not None and now - oldest_unacked_at > limit_s
