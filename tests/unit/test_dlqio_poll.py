"""`TopicReader._poll`: a poll takes what librdkafka holds without waiting, and waits (up to
POLL_S) only for a first record when it holds none. `consume(n, timeout)` waits for `n` records
or the whole timeout, so a poll asking for a full batch while fewer are queued would sit idle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Consumer

from pipeline.kafka.dlqio import BATCH, POLL_S, TopicReader


@dataclass
class QueueConsumer:
    """A consumer whose queue holds `queued` now and receives `arriving` when a call waits."""

    queued: list[int]
    arriving: list[int] = field(default_factory=list)
    calls: list[tuple[int, float]] = field(default_factory=list)

    def consume(self, num_messages: int, timeout: float) -> list[int]:
        self.calls.append((num_messages, timeout))
        if not self.queued and timeout > 0:
            self.queued, self.arriving = self.arriving, []
        taken, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return taken


def poll(consumer: QueueConsumer) -> list[int]:
    reader = object.__new__(TopicReader)
    reader._consumer = cast(Consumer, consumer)
    return cast("list[int]", reader._poll())


def waited(consumer: QueueConsumer) -> list[tuple[int, float]]:
    return [call for call in consumer.calls if call[1] > 0]


def test_a_partial_batch_is_taken_without_waiting() -> None:
    consumer = QueueConsumer(queued=[1, 2, 3], arriving=[4])
    assert poll(consumer) == [1, 2, 3]
    assert waited(consumer) == []


def test_a_poll_takes_at_most_a_batch_in_queue_order() -> None:
    consumer = QueueConsumer(queued=list(range(BATCH + 5)))
    assert poll(consumer) == list(range(BATCH))
    assert poll(consumer) == list(range(BATCH, BATCH + 5))
    assert waited(consumer) == []


def test_an_empty_queue_waits_for_one_record_then_takes_the_rest() -> None:
    consumer = QueueConsumer(queued=[], arriving=[7, 8, 9])
    assert poll(consumer) == [7, 8, 9]
    assert waited(consumer) == [(1, POLL_S)]


def test_nothing_arriving_returns_empty_after_one_wait() -> None:
    consumer = QueueConsumer(queued=[])
    assert poll(consumer) == []
    assert waited(consumer) == [(1, POLL_S)]
