"""`clients.error_text`: the one line an exception gives the `dlq` commands' messages (dlqio,
follow and admin all use it)."""

from __future__ import annotations

import concurrent.futures

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline.errors import ConfigError
from pipeline.kafka import dlqio, follow
from pipeline.kafka.clients import error_text


def test_a_kafka_exception_gives_librdkafkas_text() -> None:
    err = KafkaError(KafkaError._TRANSPORT, "broker down")
    assert error_text(KafkaException(err)) == err.str() == "broker down"


def test_another_exception_gives_its_message() -> None:
    assert error_text(ValueError("Invalid value for configuration property")) == (
        "Invalid value for configuration property"
    )


def test_an_exception_without_a_message_gives_its_type() -> None:
    # an admin future's result(timeout) raises a bare TimeoutError
    assert error_text(concurrent.futures.TimeoutError()) == "TimeoutError"
    assert error_text(KafkaException()) == "KafkaException"


@pytest.mark.parametrize(
    "open_reader",
    [
        lambda conf: dlqio._consumer(conf, "read_committed", {}),
        lambda conf: follow._consumer(conf),
    ],
    ids=["dlqio", "follow"],
)
def test_both_readers_name_what_librdkafka_rejected(open_reader: object) -> None:
    conf = {"bootstrap.servers": "127.0.0.1:1", "no.such.property": "x"}
    with pytest.raises(ConfigError) as failed:
        open_reader(conf)  # type: ignore[operator]
    message = str(failed.value)
    assert message.startswith("librdkafka rejected the configuration: ")
    assert "no.such.property" in message
