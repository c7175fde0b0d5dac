"""The test broker itself: a real Kafka that keeps bytes, runs transactions and restarts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from scripts.kafka_broker import Broker, BrokerError
from tests.conftest import TopicFactory

BINARY_HEADERS = [
    ("trace", b"\x00\x01\xfe\xff"),
    ("empty", b""),
    ("none", None),
    ("trace", b"second value, same name"),
    ("utf8", "zürich €".encode()),
]


def consume_all(bootstrap: str, topic: str, count: int, **conf: str) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **conf,
        }
    )
    consumer.subscribe([topic])
    got: list[Message] = []
    try:
        for _ in range(300):
            msg = consumer.poll(0.2)
            if msg is None:
                if len(got) >= count:
                    break
                continue
            error = msg.error()
            if error:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(error)
            got.append(msg)
    finally:
        consumer.close()
    return got


def test_binary_headers_and_null_key_round_trip(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory()
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    value = bytes(range(256))
    producer.produce(topic, key=None, value=value, headers=list(BINARY_HEADERS))
    assert producer.flush(30) == 0

    (msg,) = consume_all(bootstrap, topic, 1)
    assert msg.key() is None
    assert msg.value() == value
    assert msg.headers() == BINARY_HEADERS


def test_transactional_produce_with_consumed_offsets(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    source, sink = topic_factory(), topic_factory()
    seed = Producer({"bootstrap.servers": bootstrap})
    for i in range(5):
        seed.produce(source, key=str(i).encode(), value=f"v{i}".encode())
    assert seed.flush(30) == 0

    group = f"g-{uuid.uuid4().hex}"
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([source])
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"tx-{uuid.uuid4().hex}",
            "transaction.timeout.ms": 10000,
        }
    )
    producer.init_transactions(30)
    seen = 0
    while seen < 5:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        if seen == 0:
            producer.begin_transaction()
        value = msg.value()
        assert value is not None
        producer.produce(sink, key=msg.key(), value=value.upper())
        seen += 1
    producer.send_offsets_to_transaction(
        consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
    )
    producer.commit_transaction(30)

    # An aborted transaction's records stay invisible to read_committed readers.
    producer.begin_transaction()
    producer.produce(sink, key=b"aborted", value=b"never")
    producer.flush(30)
    producer.abort_transaction(30)

    committed = consumer.committed([TopicPartition(source, 0)], timeout=30)
    consumer.close()
    assert committed[0].offset == 5

    got = consume_all(bootstrap, sink, 5, **{"isolation.level": "read_committed"})
    assert sorted(m.value() or b"" for m in got) == [f"V{i}".encode() for i in range(5)]
    raw = consume_all(bootstrap, sink, 6, **{"isolation.level": "read_uncommitted"})
    assert b"never" in [m.value() for m in raw]


def test_restart_keeps_ports_and_data(broker_factory: Callable[..., Broker]) -> None:
    broker = broker_factory()
    address = broker.bootstrap
    from tests.conftest import create_topics

    create_topics(address, ["kept"])
    producer = Producer({"bootstrap.servers": address})
    producer.produce("kept", value=b"survives a restart")
    assert producer.flush(30) == 0

    broker.restart()
    assert broker.bootstrap == address
    (msg,) = consume_all(address, "kept", 1)
    assert msg.value() == b"survives a restart"


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is in use"):
            Broker(tmp_path, port=port)


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).resolve().parents[2] / "scripts" / "kafka_broker.py"
    return subprocess.run(
        [sys.executable, str(script), "--name", f"t{uuid.uuid4().hex[:6]}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_script_without_java_says_so(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mvn").symlink_to(os.environ.get("MVN", "/usr/bin/mvn"))
    env = {**os.environ, "PATH": str(bin_dir)}
    result = run_script("start", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("kafka-broker: error: `java` not found on PATH"), result.stderr
    assert "Traceback" not in result.stderr


def test_script_reports_mvn_failure(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LAZARUS_KAFKA_CACHE": str(tmp_path / "cache"),
        "LAZARUS_KAFKA_VERSION": "0.0.0-does-not-exist",
    }
    result = run_script("fetch", env=env)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "kafka-broker: error: mvn failed fetching kafka_2.13 0.0.0-does-not-exist"
    )
    assert "Traceback" not in result.stderr
