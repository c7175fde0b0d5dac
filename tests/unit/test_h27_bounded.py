"""`KafkaSink`'s transactional calls are bounded by their own timeout plus `STUCK_GRACE_S`:
librdkafka's send_offsets_to_transaction can wait past its timeout (librdkafka #5456), and a
call that overruns must end as a fatal `SinkFailure` (the worker then renews the producer),
never as a worker hanging with it. The producer here is a stand-in whose calls block until the
test lets them go, so "stuck" is a state the test holds, not a duration it guesses."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.kafka import confluent
from pipeline.kafka.confluent import KafkaSink
from pipeline.kafka.seam import Committed, SinkFailure


class _Producer:
    """Answers the transactional calls as told: block until released, raise, or return."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.raises: KafkaException | None = None
        self.stuck = False
        self.calls: list[tuple[str, float]] = []

    def _answer(self, name: str, timeout_s: float) -> None:
        self.calls.append((name, timeout_s))
        if self.stuck:  # until the test lets go; 30 s at most, so a missing bound fails the
            self.release.wait(30)  # test (no SinkFailure) rather than hanging it
        if self.raises is not None:
            raise self.raises

    def send_offsets_to_transaction(self, parts: object, group: object, timeout_s: float) -> None:
        self._answer("send_offsets", timeout_s)

    def commit_transaction(self, timeout_s: float) -> None:
        self._answer("commit", timeout_s)

    def abort_transaction(self, timeout_s: float) -> None:
        self._answer("abort", timeout_s)


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Producer]:
    monkeypatch.setattr(confluent, "STUCK_GRACE_S", 0.0)
    stand_in = _Producer()
    yield stand_in
    stand_in.release.set()  # let a call the test left stuck return (its thread is a daemon)


def _sink(producer: _Producer) -> KafkaSink:
    sink = KafkaSink({"bootstrap.servers": "127.0.0.1:1"})
    # a stand-in whose calls can be held: confluent-kafka's C Producer cannot be made to hang
    sink._producer = producer  # type: ignore[assignment]
    return sink


CALLS: dict[str, Callable[[KafkaSink, float], None]] = {
    "send_offsets": lambda sink, t: sink.send_offsets({("t", 0): Committed(5)}, object(), t),
    "commit": lambda sink, t: sink.commit_transaction(t),
    "abort": lambda sink, t: sink.abort_transaction(t),
}


@pytest.mark.parametrize("name", CALLS)
def test_a_call_that_does_not_return_is_a_fatal_failure(producer: _Producer, name: str) -> None:
    producer.stuck = True
    with pytest.raises(SinkFailure) as failed:
        CALLS[name](_sink(producer), 0.05)
    assert failed.value.error.fatal
    assert "did not return within" in failed.value.error.reason
    assert producer.calls == [(name, 0.05)]  # librdkafka got the timeout; it did not return


@pytest.mark.parametrize("name", CALLS)
def test_librdkafkas_own_error_reaches_the_caller_as_it_was(producer: _Producer, name: str) -> None:
    producer.raises = KafkaException(
        KafkaError(KafkaError._TIMED_OUT, "Timed out waiting for operation", retriable=True)
    )
    with pytest.raises(SinkFailure) as failed:
        CALLS[name](_sink(producer), 5.0)
    error = failed.value.error
    assert not error.fatal and error.retriable
    assert "Timed out waiting for operation" in error.reason
    assert isinstance(failed.value.__cause__, KafkaException)


@pytest.mark.parametrize("name", CALLS)
def test_a_call_that_returns_in_time_returns(producer: _Producer, name: str) -> None:
    CALLS[name](_sink(producer), 5.0)
    assert producer.calls == [(name, 5.0)]
