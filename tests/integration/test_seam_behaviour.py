"""One behaviour suite, two backends (shared/STYLE.md habit 14): what the worker relies on from
a `Source` and a `Sink`, checked on the in-memory fake and on the real broker alike."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka import TopicPartition

from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Output
from pipeline.kafka.confluent import KafkaSink, KafkaSource
from pipeline.kafka.fake import FakeCluster, FakeSink, FakeSource
from pipeline.kafka.seam import TP, Ack, Committed, Sink, SinkError, Source
from tests.conftest import TopicFactory


@dataclass
class Listener:
    assigned: list[TP] = field(default_factory=list)
    revoked: list[TP] = field(default_factory=list)

    def on_assign(self, tps: list[TP]) -> None:
        self.assigned.extend(tps)

    def on_revoke(self, tps: list[TP]) -> None:
        self.revoked.extend(tps)

    def on_lost(self, tps: list[TP]) -> None:
        self.revoked.extend(tps)


@dataclass
class Backend:
    name: str
    topic: Callable[[], str]
    source: Callable[[], Source]
    sink: Callable[[bool], Sink]
    wait_s: float
    refusing: Callable[[Sink], str]
    """A topic whose broker refuses a 20,000-byte record after accepting its produce."""


@pytest.fixture(params=["fake", "kafka"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        cluster = FakeCluster(partitions=1)
        names = iter(f"t{i}" for i in range(100))
        yield Backend(
            "fake",
            lambda: next(names),
            lambda: FakeSource(cluster),
            lambda txn: FakeSink(cluster, transactional=txn),
            0.0,
            lambda sink: _refused_by(sink, next(names)),
        )
        return
    bootstrap: str = request.getfixturevalue("bootstrap")
    topic_factory = request.getfixturevalue("topic_factory")
    base = {"bootstrap.servers": bootstrap}
    closers: list[Callable[[], None]] = []

    def source() -> Source:
        made = KafkaSource({**base, "session.timeout.ms": 6000}, f"g-{uuid.uuid4().hex[:8]}")
        closers.append(made.close)
        return made

    def sink(txn: bool) -> Sink:
        return KafkaSink(base, transactional_id=f"tx-{uuid.uuid4().hex[:8]}" if txn else None)

    def refusing(_sink: Sink) -> str:
        name: str = topic_factory(partitions=1, config={"max.message.bytes": "1000"})
        return name

    yield Backend("kafka", lambda: topic_factory(partitions=1), source, sink, 10.0, refusing)
    for close in closers:
        close()


def _refused_by(sink: Sink, topic: str) -> str:
    assert isinstance(sink, FakeSink)
    sink.refuse[topic] = SinkError("Broker: Message size too large", topic, too_large=True)
    return topic


def produce(sink: Sink, topic: str, values: list[bytes], batch: int = 1) -> list[Ack]:
    for value in values:
        sink.produce(Output(topic, b"k", value, (("h", b"1"),)), batch)
    return sink.flush(10)


def read(source: Source, want: int, wait_s: float) -> list[SourceRecord]:
    got: list[SourceRecord] = []
    deadline = time.monotonic() + max(wait_s, 0.1)
    while len(got) < want and time.monotonic() < deadline:
        got.extend(source.consume(100, 0.1 if wait_s else 0))
    return got


def test_acknowledgements_come_back_per_batch(backend: Backend) -> None:
    topic = backend.topic()
    sink = backend.sink(False)
    acks = produce(sink, topic, [b"a", b"b", b"c"], batch=7)
    assert sum(a.acked for a in acks if a.batch == 7) == 3
    assert all(a.failed == 0 for a in acks)
    assert sink.pending() == 0


def test_a_transactional_sink_reports_refusals_only(backend: Backend) -> None:
    """Its records count when the transaction commits: no acknowledgement per record (a
    delivery report each, which the exactly-once worker never used), but a refusal still
    comes back from `poll`/`flush`, which is how the worker learns to abort."""
    topic, sink = backend.topic(), backend.sink(True)
    sink.init_transactions(10)
    sink.begin_transaction()
    acks = produce(sink, topic, [b"a", b"b", b"c"], batch=4)
    assert acks == []
    assert sink.pending() == 0
    sink.commit_transaction(10)
    refusing = backend.refusing(sink)
    sink.begin_transaction()
    sink.produce(Output(topic, b"k", b"fits", ()), 5)
    sink.produce(Output(refusing, b"k", os.urandom(20_000), ()), 5)
    acks = sink.flush(10)
    assert [(a.batch, a.acked, a.failed) for a in acks] == [(5, 0, 1)]
    assert acks[0].error is not None and acks[0].error.topic == refusing
    sink.abort_transaction(10)


def test_a_subscribed_source_is_assigned_and_reads_in_order(backend: Backend) -> None:
    topic = backend.topic()
    produce(backend.sink(False), topic, [b"1", b"2", b"3"])
    source, listener = backend.source(), Listener()
    source.subscribe([topic], listener)
    records = read(source, 3, backend.wait_s)
    assert listener.assigned == [(topic, 0)]
    assert [r.value for r in records] == [b"1", b"2", b"3"]
    assert [r.offset for r in records] == [0, 1, 2]
    assert records[0].headers == (("h", b"1"),) and records[0].key == b"k"


def test_pause_seek_and_resume(backend: Backend) -> None:
    topic = backend.topic()
    produce(backend.sink(False), topic, [b"1", b"2", b"3"])
    source = backend.source()
    source.subscribe([topic], Listener())
    assert len(read(source, 3, backend.wait_s)) == 3
    source.pause([(topic, 0)])
    assert source.seek((topic, 0), 1)
    assert read(source, 1, min(backend.wait_s, 1.0)) == []
    source.resume([(topic, 0)])
    assert [r.value for r in read(source, 2, backend.wait_s)] == [b"2", b"3"]


def test_a_partition_whose_fetch_has_not_started_refuses_a_seek(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    """Right after an assignment librdkafka is still fetching the committed offset and refuses
    a seek (`_STATE`); the Source says so instead of raising, and the worker seeks again later
    (a worker crashed on this after a broker restart)."""
    topic = topic_factory(partitions=1)
    source = KafkaSource({"bootstrap.servers": bootstrap}, f"g-{uuid.uuid4().hex[:8]}")
    try:
        source.consumer.assign([TopicPartition(topic, 0)])
        assert source.seek((topic, 0), 0) is False
        deadline = time.monotonic() + 10
        while not source.seek((topic, 0), 0):
            assert time.monotonic() < deadline, "the partition's fetch never started"
            source.consume(10, 0.1)
    finally:
        source.close()


def test_commits_are_what_committed_returns(backend: Backend) -> None:
    topic = backend.topic()
    produce(backend.sink(False), topic, [b"1", b"2"])
    source = backend.source()
    source.subscribe([topic], Listener())
    read(source, 2, backend.wait_s)
    source.commit({(topic, 0): Committed(2, "lazarus")}, wait=True)
    assert source.committed([(topic, 0)], 10) == {(topic, 0): Committed(2, "lazarus")}


def test_a_committed_transaction_publishes_records_and_offsets(backend: Backend) -> None:
    topic, out = backend.topic(), backend.topic()
    produce(backend.sink(False), topic, [b"in"])
    source = backend.source()
    source.subscribe([topic], Listener())
    assert len(read(source, 1, backend.wait_s)) == 1
    sink = backend.sink(True)
    sink.init_transactions(10)
    sink.begin_transaction()
    sink.produce(Output(out, None, b"kept", ()), 1)
    sink.send_offsets({(topic, 0): Committed(1, "lazarus")}, source.group_metadata(), 10)
    sink.commit_transaction(10)
    sink.begin_transaction()
    sink.produce(Output(out, None, b"aborted", ()), 2)
    sink.flush(10)
    sink.abort_transaction(10)
    reader = backend.source()
    reader.subscribe([out], Listener())
    assert [r.value for r in read(reader, 2, min(backend.wait_s, 3.0))] == [b"kept"]
    assert source.committed([(topic, 0)], 10)[(topic, 0)] == Committed(1, "lazarus")
