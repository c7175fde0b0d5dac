"""What the Kafka shell treats as worth asking again."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException

from pipeline.kafka.clients import _Quieter, is_retriable, producer_config


def test_a_moving_or_loading_coordinator_is_retriable() -> None:
    for code in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS):
        assert is_retriable(KafkaException(KafkaError(code)))
    assert is_retriable(BufferError())


def test_fatal_and_fencing_errors_are_not() -> None:
    assert not is_retriable(KafkaException(KafkaError(KafkaError._FENCED)))
    assert not is_retriable(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    assert not is_retriable(ValueError("x"))


def test_every_producer_uses_the_java_partitioner() -> None:
    conf = producer_config({"bootstrap.servers": "x", "partitioner": "consistent_random"})
    assert conf["partitioner"] == "murmur2_random"
    assert producer_config({}, "tx-1")["transactional.id"] == "tx-1"


def _line(text: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("lazarus.kafka", level, __file__, 1, text, None, None)


def test_a_transactional_producer_retries_a_busy_coordinator_soon() -> None:
    """CONCURRENT_TRANSACTIONS after each commit was retried after librdkafka's 100 ms, which
    bound every exactly-once transaction to 100 ms or more."""
    assert producer_config({}, "tx-1")["retry.backoff.ms"] == 10
    assert "retry.backoff.ms" not in producer_config({})  # idempotent only: librdkafka's own
    assert producer_config({"retry.backoff.ms": 50}, "tx-1")["retry.backoff.ms"] == 50


def test_librdkafka_repeats_are_logged_once_and_refused_logins_not_at_all() -> None:
    quieter = _Quieter(every_s=60)
    refused = "FAIL [rdkafka#producer-1] [thrd:b]: SASL authentication error: Authentication failed"
    down = "FAIL [rdkafka#producer-{n}] [thrd:b]: b: Connect to ipv4#127.0.0.1:9 failed"
    assert not quieter.filter(_line(refused))
    assert [quieter.filter(_line(down.format(n=n))) for n in (1, 1, 2)] == [True, False, False]
    assert quieter.filter(_line("FAIL [rdkafka#consumer-3] [thrd:b]: another text"))
    assert quieter.filter(_line(down.format(n=1), logging.DEBUG))  # -X debug=...: every line
