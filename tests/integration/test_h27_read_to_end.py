"""`clients.read_to_end`, the whole-topic read behind the demo's accounting and the tests'
`read_all`, on the real broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from pipeline.kafka.clients import read_to_end
from tests.conftest import TopicFactory


def _produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, count in counts.items():
        for i in range(count):
            producer.produce(topic, f"v{partition}-{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


def test_every_partition_to_its_end_and_an_empty_one_skipped(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=3)
    _produce(bootstrap, topic, {0: 5, 1: 3})  # partition 2 stays empty
    msgs = read_to_end({"bootstrap.servers": bootstrap}, topic, timeout_s=30)
    got = sorted((m.partition(), m.offset(), m.value()) for m in msgs)
    assert got == [(0, i, f"v0-{i}".encode()) for i in range(5)] + [
        (1, i, f"v1-{i}".encode()) for i in range(3)
    ]


def test_read_committed_ends_at_an_open_transaction(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    """The high watermark counts the open transaction's records; read_committed stops at the
    last stable offset (partition EOF), read_uncommitted reads them. Neither waits out its
    timeout: that would raise TimeoutError."""
    topic = topic_factory(partitions=1)
    _produce(bootstrap, topic, {0: 2})
    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": uuid.uuid4().hex})
    txn.init_transactions(30)
    txn.begin_transaction()
    try:
        txn.produce(topic, b"open-1", partition=0)
        txn.produce(topic, b"open-2", partition=0)
        assert txn.flush(30) == 0
        conf = {"bootstrap.servers": bootstrap}
        committed = read_to_end(conf, topic, "read_committed", timeout_s=30)
        everything = read_to_end(conf, topic, "read_uncommitted", timeout_s=30)
    finally:
        txn.abort_transaction(30)
    assert [m.value() for m in committed] == [b"v0-0", b"v0-1"]
    assert [m.value() for m in everything] == [b"v0-0", b"v0-1", b"open-1", b"open-2"]


def test_a_read_that_cannot_reach_the_end_says_so(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=1)
    conf = {"bootstrap.servers": bootstrap}
    assert read_to_end(conf, topic, timeout_s=0) == []  # an empty topic: nothing to wait for
    _produce(bootstrap, topic, {0: 1})
    with pytest.raises(TimeoutError, match=f"reading {topic} did not reach its end in 0s"):
        read_to_end(conf, topic, timeout_s=0)
