"""`clients.take_ready`, the worker's poll: it takes what librdkafka holds without waiting for a
full batch, and waits only for a first record when it holds none. `consume(n, timeout)` alone
returns when `n` records are there or the timeout has passed, so at a live rate every record
sat in it (the worker's p50 latency was 279 ms at 3,000 records/s)."""

from __future__ import annotations

from typing import cast

from confluent_kafka import Consumer

from pipeline.kafka.clients import take_ready
from pipeline.kafka.confluent import KafkaSource


class Broker:
    """A consumer over a queue: what is `held` now, and what `later` arrives while a call
    waits (`consume(n, timeout)` semantics: up to n records, waiting only if a timeout is
    given and none are held)."""

    def __init__(self, held: list[int], later: list[int] | None = None) -> None:
        self.held, self.later = held, later or []
        self.timeouts: list[float] = []

    def consume(self, num_messages: int, timeout: float) -> list[int]:
        self.timeouts.append(timeout)
        if not self.held and timeout > 0:
            self.held, self.later = self.later, []
        taken, self.held = self.held[:num_messages], self.held[num_messages:]
        return taken


def take(broker: Broker, max_records: int = 500, timeout_s: float = 0.1) -> list[int]:
    return cast("list[int]", take_ready(cast(Consumer, broker), max_records, timeout_s))


def test_fewer_records_than_a_batch_are_taken_at_once() -> None:
    broker = Broker(held=[1, 2, 3], later=[4])
    assert take(broker) == [1, 2, 3]
    assert broker.timeouts == [0]  # never waited for the batch to fill


def test_a_backlog_gives_full_batches_in_order() -> None:
    broker = Broker(held=list(range(1005)))
    assert take(broker) == list(range(500))
    assert take(broker) == list(range(500, 1000))
    assert take(broker) == [1000, 1001, 1002, 1003, 1004]
    assert all(timeout == 0 for timeout in broker.timeouts)


def test_an_empty_queue_waits_for_a_first_record_then_takes_what_came() -> None:
    broker = Broker(held=[], later=[7, 8, 9])
    assert take(broker, timeout_s=0.25) == [7, 8, 9]
    assert broker.timeouts == [0, 0.25, 0]


def test_nothing_arriving_returns_nothing_after_one_wait() -> None:
    broker = Broker(held=[])
    assert take(broker, timeout_s=0.25) == []
    assert broker.timeouts == [0, 0.25]


def test_a_batch_of_one_never_asks_twice() -> None:
    broker = Broker(held=[], later=[7, 8])
    assert take(broker, max_records=1) == [7]
    assert take(broker, max_records=1) == [8]


class Held:
    """A consumed message as confluent-kafka hands it out (the calls `to_record` makes)."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_760_000_000_000

    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> None:
        return None


def test_the_worker_source_reads_what_is_held_without_waiting_for_a_batch() -> None:
    broker = Broker(held=[cast(int, Held(0)), cast(int, Held(1))])
    source = object.__new__(KafkaSource)
    source._consumer = cast(Consumer, broker)
    assert [rec.offset for rec in source.consume(500, 0.1)] == [0, 1]
    assert broker.timeouts == [0]
