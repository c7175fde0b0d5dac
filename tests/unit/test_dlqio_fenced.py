"""`TxnProducer` says "fenced" when a second run of the same plan took over the DLQ's
transactional id, whichever call meets it: a produce on the fenced producer only raises
"Local: Fatal error", the producer's own error (PRODUCER_FENCED) says why."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from pipeline.errors import RuntimeFailure
from pipeline.kafka.dlqio import Fenced, TxnProducer


class FatalProducer:
    """A producer that a newer one with the same transactional id fenced."""

    def __init__(self, cause: KafkaError) -> None:
        self.cause = cause

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._FATAL, "Local: Fatal error", fatal=True))

    def commit_transaction(self, _timeout: float) -> None:
        raise KafkaException(self.cause)

    def abort_transaction(self, _timeout: float) -> None:
        raise KafkaException(self.cause)


def producer(cause: KafkaError) -> TxnProducer:
    sink = object.__new__(TxnProducer)
    sink.transactional_id = "lazarus-dlq-orders.dlq"
    sink.timeout_s = 5.0
    sink._producer = cast(Producer, FatalProducer(cause))
    sink._topics = {"orders.redrive"}
    return sink


def test_a_produce_on_a_fenced_producer_says_fenced() -> None:
    fenced = KafkaError(KafkaError.PRODUCER_FENCED, "fenced by a newer producer", fatal=True)
    sink = producer(fenced)
    with pytest.raises(Fenced, match="another run took over transactional id"):
        sink._call(lambda: sink._producer.produce("orders.redrive", b"v", b"k"), "produce")


def test_another_fatal_error_names_its_own_cause() -> None:
    cause = KafkaError(KafkaError.INVALID_CONFIG, "the broker refused a setting", fatal=True)
    sink = producer(cause)
    with pytest.raises(RuntimeFailure, match="failed fatally: the broker refused a setting"):
        sink._call(lambda: sink._producer.produce("t", b"v"), "produce")
