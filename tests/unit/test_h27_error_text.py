"""`clients.error_text`: the one line an exception gives the `dlq` commands' messages (dlqio,
follow and admin all use it)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

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


OPENERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "dlqio reader": lambda conf: dlqio._consumer(conf, "read_committed", {}),
    "follow reader": lambda conf: follow._consumer(conf),
    "transactional producer": lambda conf: dlqio.TxnProducer(conf, "h27-tid"),
    "shared admin": lambda conf: dlqio.shared_admin(conf),
}


@pytest.mark.parametrize("client", OPENERS)
def test_every_client_of_the_dlq_commands_names_what_librdkafka_rejected(client: str) -> None:
    conf = {"bootstrap.servers": "127.0.0.1:1", "no.such.property": "x"}
    with pytest.raises(ConfigError) as failed:
        OPENERS[client](conf)
    message = str(failed.value)
    assert message.startswith("librdkafka rejected the configuration: ")
    assert "no.such.property" in message


@pytest.mark.parametrize("client", OPENERS)
def test_a_value_the_binding_refuses_is_a_configuration_error_too(client: str) -> None:
    # confluent-kafka raises TypeError for a callback that is not callable
    conf = {"bootstrap.servers": "127.0.0.1:1", "error_cb": 5}
    with pytest.raises(ConfigError, match=r"librdkafka rejected the configuration: .*error_cb"):
        OPENERS[client](conf)
