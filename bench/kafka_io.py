"""The harness's own Kafka clients: topics, the pre-produced backlog, the offset watcher and
the live-rate latency probe. Contenders never share a client with the harness."""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

PARTITIONS = 4
FAST_PRODUCER: dict[str, Any] = {
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
}


class BenchError(Exception):
    """A run could not finish (timeout, a contender that died, a failed produce)."""


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})


def create_topics(
    bootstrap: str, names: Iterable[str], config: dict[str, str] | None = None
) -> None:
    client = admin(bootstrap)  # referenced until the futures resolve
    new = [NewTopic(n, PARTITIONS, 1, config=config or {}) for n in names]
    futures = client.create_topics(new)
    for future in futures.values():
        future.result(timeout=60)


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    client = admin(bootstrap)
    existing = set(client.list_topics(timeout=30).topics)
    doomed = [n for n in names if n in existing]
    if doomed:
        for future in client.delete_topics(doomed).values():
            with contextlib.suppress(Exception):  # clean-up only
                future.result(timeout=30)


def send(producer: Producer, topic: str, key: Any, value: Any, headers: Any = None) -> None:
    """Produce, polling while librdkafka's queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


def produce_backlog(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, **FAST_PRODUCER})
    n = 0
    for n, (key, value) in enumerate(records, 1):
        send(producer, topic, key, value)
        if n % 5000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise BenchError(f"could not produce the backlog to {topic}")
    return n


class Watcher:
    """Reads watermarks and a group's committed offsets (a consumer that never subscribes)."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self.admin = admin(bootstrap)

    def produced(self, topics: list[str]) -> int:
        """The sum of the end offsets of `topics`, in one ListOffsets request (transaction
        markers included)."""
        # confluent-kafka's OffsetSpec.latest() has no annotations (untyped library code)
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        asked = {TopicPartition(t, p): latest for t in topics for p in range(PARTITIONS)}
        futures = self.admin.list_offsets(asked, request_timeout=10)
        return sum(f.result().offset for f in futures.values())

    def ends(self, topic: str) -> dict[int, int]:
        get = self.consumer.get_watermark_offsets
        return {p: get(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}

    def committed_reached(self, topic: str, ends: dict[int, int]) -> bool:
        asked = [TopicPartition(topic, p) for p in ends]
        got = self.consumer.committed(asked, timeout=10)
        return all(tp.offset >= ends[tp.partition] for tp in got)

    def committed_total(self, topic: str) -> int:
        asked = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(max(tp.offset, 0) for tp in self.consumer.committed(asked, timeout=10))

    def close(self) -> None:
        self.consumer.close()


# -- latency at a fixed live rate ---------------------------------------------------------------
def stamp_key(seq: int) -> bytes:
    """A key carrying its produce time: 8 bytes of `time.time_ns()`, then the sequence number.
    Every contender forwards (or dead-letters) the key unchanged."""
    return struct.pack(">qq", time.time_ns(), seq)


class LatencyReader(threading.Thread):
    """Reads the output and DLQ topics from their ends (read_committed) and keeps, per record,
    arrival time minus the produce time in its key, in milliseconds."""

    def __init__(self, bootstrap: str, topics: list[str], starts: dict[str, dict[int, int]]):
        super().__init__(name="latency-reader", daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-latency-reader",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        self.consumer.assign(
            [TopicPartition(t, p, starts[t][p]) for t in topics for p in range(PARTITIONS)]
        )
        self.latencies_ms: list[float] = []
        self.seen: set[int] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for msg in self.consumer.consume(1000, 0.05):
                now = time.time_ns()
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        continue
                    continue
                key = msg.key()
                if key is None or len(key) != 16:
                    continue
                sent, seq = struct.unpack(">qq", key)
                if seq not in self.seen:  # at-least-once may deliver twice: first arrival
                    self.seen.add(seq)
                    self.latencies_ms.append((now - sent) / 1e6)
        self.consumer.close()


def produce_at_rate(
    bootstrap: str, topic: str, values: list[bytes], rate: float, seconds: float
) -> int:
    """Produce `rate` records a second for `seconds`, keys stamped at produce time."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    total = int(rate * seconds)
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            send(producer, topic, stamp_key(sent), values[sent % len(values)])
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)
    return total
