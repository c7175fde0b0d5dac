"""What the Kafka shell treats as worth asking again."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from pipeline.kafka.clients import is_retriable, producer_config


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
