"""Test helpers for pipelines on the real broker: configs, sample records, workers as processes,
and the accounting that always re-reads the topics (never the worker's counters)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from fastavro import parse_schema, schemaless_writer

from pipeline.core.contract import Headers
from pipeline.kafka.clients import is_retriable, read_to_end
from tests.conftest import create_topics

REPO = Path(__file__).resolve().parent.parent
ORDER_V1 = parse_schema(json.loads((REPO / "schemas/avro/orders-value/1.avsc").read_text()))
SEQ = "test.seq"
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive loopback ports free now, below the kernel's ephemeral
    range (`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 by default): a port the kernel
    hands out (`bind(0)`), and the ones after it, are the ones other processes' outgoing
    connections (the Kafka clients') take meanwhile ("Address already in use" for `port + 1`)."""
    try:
        ephemeral = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    low = 20000 if ephemeral > 21000 else 1024
    bases = range(low, min(ephemeral, 32000) - count + 1, count)
    for base in random.Random().sample(bases, min(200, len(bases))):
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise AssertionError(f"no {count} consecutive free ports below the ephemeral range")


def good_order(i: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{i}",
        "customer": {"id": f"c-{i % 7}", "email": f"user{i}@example.com"},
        "items": [{"sku": f"sku-{i % 5}", "qty": 1 + i % 3}],
        "amount": 10.0 + i,
        "currency": "EUR",
        "created_at": 1_760_000_000_000 + i,
    }


def avro_framed(record: dict[str, Any], schema_id: int = 1) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, ORDER_V1, record)
    return b"\x00" + struct.pack(">I", schema_id) + buf.getvalue()


def good_payment(i: int) -> dict[str, Any]:
    return {
        "payment_id": f"p-{i}",
        "order_id": f"o-{i}",
        "amount": 5.0 + i,
        "currency": "EUR",
        "status": "captured",
    }


@dataclass
class Pipeline:
    """Unique topics and a config file for one test's pipeline."""

    bootstrap: str
    workdir: Path
    name: str = field(default_factory=lambda: f"p{uuid.uuid4().hex[:10]}")
    partitions: int = 2
    extra: str = ""  # tables appended at the end
    top: str = ""  # top-level keys, before the first table
    delivery: str = "at-least-once"

    @property
    def orders(self) -> str:
        return f"{self.name}.orders"

    @property
    def payments(self) -> str:
        return f"{self.name}.payments"

    @property
    def output(self) -> str:
        return f"{self.name}.valid"

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def redrive(self) -> str:
        return f"{self.name}.redrive"

    @property
    def config(self) -> Path:
        return self.workdir / f"{self.name}.toml"

    def create(self, dlq_config: dict[str, str] | None = None) -> Pipeline:
        create_topics(self.bootstrap, [self.orders, self.payments, self.output], self.partitions)
        room = {"max.message.bytes": str(1_048_588 + 32 * 1024)}
        create_topics(self.bootstrap, [self.dlq], self.partitions, {**room, **(dlq_config or {})})
        create_topics(self.bootstrap, [self.redrive], self.partitions)
        create_topics(self.bootstrap, [f"{self.dlq}.ledger"], 1, {"cleanup.policy": "compact"})
        self.write()
        return self

    def write(self) -> None:
        self.config.write_text(
            f'''pipeline = "{self.name}"
bootstrap = "{self.bootstrap}"
delivery = "{self.delivery}"
schema_dir = "{REPO / "schemas/avro"}"
python_path = ["{REPO}"]
commit_interval_ms = 200
batch_size = 100
{self.top}

[sources."{self.orders}"]
format = "avro"
model = "schemas.orders:Order"

[sources."{self.payments}"]
format = "json"
model = "schemas.orders:Payment"

[output]
topic = "{self.output}"

[dlq]
topic = "{self.dlq}"

[consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[producer]
"transaction.timeout.ms" = 10000
"message.timeout.ms" = 10000
{self.extra}
'''
        )


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[tuple[bytes | None, bytes | None]],
    headers: list[tuple[str, bytes | None]] | None = None,
) -> int:
    """Produce (key, value) pairs, each with a unique `test.seq` header; returns the count."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    count = 0
    for key, value in values:
        seq = f"{topic}#{count}".encode()
        producer.produce(topic, value, key, headers=[*(headers or []), (SEQ, seq)])
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return count


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int = 0  # CreateTime: when the producer took the record in hand

    def header(self, name: str) -> bytes | None:
        found = [v for k, v in self.headers if k == name]
        return found[-1] if found else None

    def text(self, name: str) -> str | None:
        value = self.header(name)
        return value.decode() if value is not None else None


def read_all(bootstrap: str, topic: str, isolation: str = "read_committed") -> list[Rec]:
    """Every record of `topic` up to its current end (assign(), no group), sorted by partition
    and offset; `clients.read_to_end` reads. A read_committed reader ends at the last stable
    offset: records of an open transaction are not (yet) there."""
    conf = {"bootstrap.servers": bootstrap, "group.id": "unused"}
    try:
        msgs = read_to_end(conf, topic, isolation, timeout_s=60)
    except KafkaException as exc:
        raise AssertionError(exc.args[0]) from None
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None
    out = [as_rec(topic, msg) for msg in msgs]
    return sorted(out, key=lambda r: (r.partition, r.offset))


def as_rec(topic: str, msg: Message) -> Rec:
    """A consumed message as a `Rec`. A consumed record always has its partition and offset,
    and its headers are (str, bytes | None) pairs: the stubs' types are the producer side's
    too (None before delivery; a dict or str values)."""
    partition, offset, headers = msg.partition(), msg.offset(), msg.headers() or []
    assert partition is not None and offset is not None, "a consumed record has a position"
    pairs = headers.items() if isinstance(headers, dict) else headers
    return Rec(
        topic,
        partition,
        offset,
        msg.key(),
        msg.value(),
        [(name, v.encode() if isinstance(v, str) else v) for name, v in pairs],
        msg.timestamp()[1],
    )


@dataclass
class Accounting:
    """Where every input went: re-read from the topics."""

    inputs: list[Rec]
    outputs: list[Rec]
    dead: list[Rec]

    def seqs(self, recs: list[Rec]) -> list[bytes]:
        return [r.header(SEQ) or b"" for r in recs]

    @property
    def missing(self) -> set[bytes]:
        return (
            set(self.seqs(self.inputs)) - set(self.seqs(self.outputs)) - set(self.seqs(self.dead))
        )

    @property
    def duplicates(self) -> int:
        routed = self.seqs(self.outputs) + self.seqs(self.dead)
        return len(routed) - len(set(routed))


def account(
    bootstrap: str, inputs: list[str], output: str, dlq: str, isolation: str = "read_committed"
) -> Accounting:
    ins = [r for t in inputs for r in read_all(bootstrap, t)]
    return Accounting(
        ins, read_all(bootstrap, output, isolation), read_all(bootstrap, dlq, isolation)
    )


def wait_until(
    predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class WorkerProcess:
    """`lazarus worker` as a real process (so tests can kill -9 it)."""

    def __init__(self, config: Path, log: Path, *args: str, env: dict[str, str] | None = None):
        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lazarus.cli", "worker", "--config", str(config), *args],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> bool:
        """True while running; a worker that exited unexpectedly fails the test with its log."""
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker exited with {self.proc.returncode}:\n{self.text()[-3000:]}"
            )
        return True

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.out.close()

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.out.close()
        return code

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets; retried while the coordinator moves or loads (a fresh
    broker answers NOT_COORDINATOR for a moment)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        for _ in range(30):
            try:
                got = consumer.committed(
                    [TopicPartition(topic, p) for p in range(partitions)], timeout=15
                )
                return {tp.partition: tp.offset for tp in got}
            except KafkaException as exc:
                if not is_retriable(exc):
                    raise
                time.sleep(0.5)
        raise AssertionError(f"no committed offsets for group {group} after 30 tries")
    finally:
        consumer.close()
