"""`replay.Pacer` for `--rate N/s`: the wait comes before the next chunk, never after the last."""

from __future__ import annotations

import pytest

from reprocessor.replay import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("reprocessor.replay.time.monotonic", fake.monotonic)
    monkeypatch.setattr("reprocessor.replay.time.sleep", fake.sleep)
    return fake


def test_the_last_chunk_is_not_followed_by_a_wait(clock: Clock) -> None:
    pacer = Pacer(0.01, started=clock.now)  # one dead letter per 100 s
    pacer.before()
    pacer.after(1)
    assert clock.slept == []  # done: nothing left to pace


def test_chunks_are_spaced_to_average_the_rate(clock: Clock) -> None:
    pacer = Pacer(8.0, started=clock.now)
    assert pacer.chunk == 2
    for _ in range(3):
        pacer.before()
        pacer.after(pacer.chunk)
    assert clock.slept == [pytest.approx(0.25), pytest.approx(0.25)]
    assert clock.now - 100.0 == pytest.approx(0.5)  # 6 sent, the last 2 not waited for


def test_full_speed_never_waits(clock: Clock) -> None:
    pacer = Pacer(None, started=clock.now)
    for _ in range(3):
        pacer.before()
        pacer.after(2000)
    assert clock.slept == []
