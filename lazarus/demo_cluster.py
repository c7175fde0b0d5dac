"""Kafka I/O of the demo: the mock cluster, topics, producing the stream, re-reading topics and
the final accounting (which always re-reads the topics, never trusts counters)."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from lazarus.demo_data import DemoRecord
from pipeline.app.settings import Settings
from pipeline.core import contract
from pipeline.errors import RuntimeFailure
from pipeline.kafka.clients import KAFKA_LOG, error_text, is_retriable, read_to_end, with_logger

if TYPE_CHECKING:
    from lazarus.demo import Names

MOCK_LINE = re.compile(r"replaced with (\S+)")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.bootstrap: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = MOCK_LINE.search(record.getMessage())
        if found:
            self.bootstrap = found.group(1)


@contextmanager
def mock_cluster() -> Iterator[str]:
    """librdkafka's mock cluster, alive while the context lasts; yields its bootstrap address.

    The cluster belongs to the client that asked for it; librdkafka logs the address it listens
    on, which other clients in this process then use like any broker."""
    capture = _Capture()
    logger = logging.getLogger("lazarus.kafka.mock")
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    conf: dict[str, object] = {"test.mock.num.brokers": 1, "logger": logger, "log_level": 6}
    host = Producer(conf)
    deadline = time.monotonic() + 10
    while capture.bootstrap is None and time.monotonic() < deadline:
        host.poll(0.05)
    if capture.bootstrap is None:
        raise RuntimeFailure("librdkafka's mock cluster did not start")
    try:
        yield capture.bootstrap
    finally:
        host.flush(1)


def touch_topics(bootstrap: str, names: Sequence[str]) -> None:
    """The mock cluster creates topics (4 partitions) when a client first asks for them."""
    producer = Producer({"bootstrap.servers": bootstrap, "logger": KAFKA_LOG})
    for name in names:
        producer.list_topics(name, timeout=10)


def create_sources(bootstrap: str, names: Sequence[str], partitions: int = 3) -> list[str]:
    """Create the topics of `names` that do not exist yet; returns those created."""
    admin = AdminClient(with_logger({"bootstrap.servers": bootstrap}))
    existing = admin.list_topics(timeout=15).topics
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions) for n in missing])
    for future in futures.values():
        future.result(30)
    return missing


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Delete the named topics (those that exist), waiting for the deletions."""
    admin = AdminClient(with_logger({"bootstrap.servers": bootstrap}))
    existing = admin.list_topics(timeout=15).topics
    doomed = [n for n in names if n in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result(60)


def produce(bootstrap: str, topics: Mapping[str, str], records: Sequence[DemoRecord]) -> None:
    """Produce the stream; `topics` maps the stream's "orders"/"payments" to real topic names."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "logger": KAFKA_LOG}
    )
    for rec in records:
        topic = topics[rec.topic]
        producer.produce(topic, rec.value, rec.key, headers=[("demo.cause", rec.cause.encode())])
    if producer.flush(30) != 0:
        raise RuntimeFailure("could not produce the demo stream")


@dataclass(frozen=True, slots=True)
class Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    def header(self, name: str) -> bytes | None:
        found = [v for k, v in self.headers if k == name]
        return found[-1] if found else None


def read_topic(bootstrap: str, topic: str) -> list[Read]:
    """Every committed record of `topic` up to the end captured now (assign(), no group)."""
    conf = {"bootstrap.servers": bootstrap, "group.id": "lazarus-demo-reader", "logger": KAFKA_LOG}
    try:
        msgs = read_to_end(conf, topic, timeout_s=30)
    except KafkaException as exc:
        raise RuntimeFailure(f"reading {topic} failed: {error_text(exc)}") from exc
    except TimeoutError as exc:
        raise RuntimeFailure(str(exc)) from exc
    return [
        Read(msg.partition(), msg.offset(), msg.key(), msg.value(), list(msg.headers() or []))  # type: ignore[arg-type]
        for msg in msgs
    ]


def wait_committed(
    settings: Settings, topics: Sequence[str], timeout_s: float, alive: Callable[[], bool]
) -> None:
    """Until the pipeline's group has committed past the last record of every partition."""
    targets: dict[tuple[str, int], int] = {}
    for topic in topics:
        for rec in read_topic(settings.bootstrap, topic):
            key = (topic, rec.partition)
            targets[key] = max(targets.get(key, 0), rec.offset + 1)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": settings.pipeline,
            "logger": KAFKA_LOG,
        }
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and alive():
            asked = [TopicPartition(t, p) for t, p in targets]
            try:
                got = consumer.committed(asked, timeout=10)
            except KafkaException as exc:  # the coordinator moves or loads: ask again
                if not is_retriable(exc):
                    raise
                time.sleep(0.2)
                continue
            done = {(tp.topic, tp.partition): tp.offset for tp in got}
            if all(done.get(k, -1) >= v for k, v in targets.items()):
                return
            time.sleep(0.2)
    finally:
        consumer.close()
    raise RuntimeFailure(f"the worker did not finish {', '.join(topics)} within {timeout_s:.0f}s")


def final_accounting(
    console: Console, names: Names, bootstrap: str, records: Sequence[DemoRecord]
) -> bool:
    """Re-read every topic and check the story's promises; print a table of checks."""
    outputs = read_topic(bootstrap, names.output)
    dead = read_topic(bootstrap, names.dlq)
    redrive = read_topic(bootstrap, names.redrive)
    ledger = read_topic(bootstrap, f"{names.dlq}.ledger")
    first_dead = [r for r in dead if r.header(contract.SOURCE_TOPIC) != names.redrive.encode()]
    first_out = [r for r in outputs if r.header(contract.REPLAY_OF) is None]
    replay_out = [
        r.header(contract.REPLAY_OF) or b"" for r in outputs if r.header(contract.REPLAY_OF)
    ]
    replay_in = [r.header(contract.REPLAY_OF) or b"" for r in redrive]
    replayed = {r.key for r in ledger if b'"replayed"' in (r.value or b"")}
    expected = Counter(r.expect for r in records)
    got = Counter(
        str((contract.parse_dead_letter(r.headers) or contract.DeadLetterMeta()).category)
        for r in first_dead
    )
    got["forwarded"] = len(first_out)
    checks = [
        (
            "every input was forwarded or dead-lettered",
            len(first_out) + len(first_dead) == len(records),
        ),
        ("each failure landed in its expected category", got == expected),
        ("every replay arrived once in the redrive topic", len(redrive) == len(replayed) > 0),
        (
            "every replay was forwarded exactly once",
            sorted(replay_out) == sorted(replay_in) and len(set(replay_out)) == len(replay_out),
        ),
        ("no dead letter was created by the replays", len(dead) == len(first_dead)),
    ]
    depth = len(first_dead) - len(replayed)
    table = Table(title="Final accounting, re-read from the topics", show_edge=False)
    table.add_column("check")
    table.add_column("", justify="center")
    for text, ok in checks:
        table.add_row(text, "[green]✓[/]" if ok else "[red]✗[/]")
    console.print()
    console.print(table)
    console.print(
        f"inputs {len(records)} · forwarded {len(first_out)} · dead-lettered {len(first_dead)} · "
        f"replayed {len(replayed)} · DLQ depth now {depth} (the unfixable ones)"
    )
    if not all(ok for _, ok in checks):
        console.print("[red bold]accounting mismatch[/]: see the failed checks above")
        console.print(f"expected {dict(expected)}, got {dict(got)}")
    return all(ok for _, ok in checks)
