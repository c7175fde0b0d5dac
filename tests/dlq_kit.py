"""Helpers for the `dlq` integration tests: dead letters of every dialect (Lazarus's own built with
`pipeline.core.contract`, foreign ones as golden header bytes built the way the upstream tools build
them), DLQs filled with them, and `dlq` run in-process (click's runner) or as a real process."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from confluent_kafka import Producer

from pipeline.core import contract
from pipeline.errors import Category
from reprocessor.cli import main
from tests.kit import REPO, Rec, read_all

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Letter:
    """A record to put in a DLQ."""

    key: bytes | None
    value: bytes | None
    headers: Headers


QTY_MESSAGE = "1 validation error for Order: items.0.qty (greater_than)"
QTY_DETAILS = (
    {"loc": "items.0.qty", "msg": "Input should be greater than 0", "type": "greater_than"},
)


def failure(
    category: Category = Category.VALIDATION,
    error_type: str = "pydantic_core.ValidationError",
    message: str = QTY_MESSAGE,
    details: Sequence[dict[str, str]] = QTY_DETAILS,
    *,
    pipeline: str = "orders-pipeline",
    failed_at_ms: int | None = None,
    attempts: int = 1,
) -> contract.Failure:
    return contract.Failure(
        category=category,
        error_type=error_type,
        message=message,
        failed_at_ms=failed_at_ms or int(time.time() * 1000),
        pipeline=pipeline,
        details=tuple(details),
        stacktrace=f'Traceback (most recent call last):\n  File "handler.py"\n{error_type}',
        attempts=attempts,
    )


def lazarus_letter(
    source: str,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    why: contract.Failure,
    *,
    partition: int = 0,
    headers: Sequence[tuple[str, bytes | None]] = (),
) -> Letter:
    """A dead letter exactly as a Lazarus worker builds it."""
    record = contract.SourceRecord(
        source, partition, offset, 1_760_000_000_000, key, value, tuple(headers)
    )
    return Letter(key, value, contract.build_dead_letter(record, why))


# Golden foreign headers, as the upstream code paths write them.
# Kafka Connect's DeadLetterQueueReporter.populateContextHeaders: numbers as decimal UTF-8 text.
def connect_headers(topic: str, partition: int, offset: int) -> Headers:
    return [
        ("__connect.errors.topic", topic.encode()),
        ("__connect.errors.partition", str(partition).encode()),
        ("__connect.errors.offset", str(offset).encode()),
        ("__connect.errors.connector.name", b"jdbc-sink"),
        ("__connect.errors.task.id", b"0"),
        ("__connect.errors.stage", b"VALUE_CONVERTER"),
        ("__connect.errors.class.name", b"io.confluent.connect.avro.AvroConverter"),
        ("__connect.errors.exception.class.name", b"org.apache.kafka.connect.errors.DataException"),
        (
            "__connect.errors.exception.message",
            b"Failed to deserialize data for topic orders to Avro",
        ),
        (
            "__connect.errors.exception.stacktrace",
            b"org.apache.kafka.connect.errors.DataException: ...",
        ),
    ]


# Spring's DeadLetterPublishingRecoverer: partition ByteBuffer.putInt (4 bytes big-endian),
# offset and timestamp putLong (8 bytes); a second hop appends its original-* headers again.
SPRING_PARTITION_2 = bytes.fromhex("00000002")
SPRING_OFFSET_41 = bytes.fromhex("0000000000000029")
SPRING_TIMESTAMP = bytes.fromhex("00000199a6d2e000")


def spring_headers(topic: str, *, hops: int = 1) -> Headers:
    hop: Headers = [
        ("kafka_dlt-original-topic", topic.encode()),
        ("kafka_dlt-original-partition", SPRING_PARTITION_2),
        ("kafka_dlt-original-offset", SPRING_OFFSET_41),
        ("kafka_dlt-original-timestamp", SPRING_TIMESTAMP),
        ("kafka_dlt-original-timestamp-type", b"CreateTime"),
        ("kafka_dlt-original-consumer-group", b"billing"),
        (
            "kafka_dlt-exception-fqcn",
            b"org.springframework.kafka.listener.ListenerExecutionFailedException",
        ),
        ("kafka_dlt-exception-cause-fqcn", b"java.lang.IllegalStateException"),
        ("kafka_dlt-exception-message", b"Listener failed; nested exception is order 17 not found"),
        ("kafka_dlt-exception-stacktrace", b"java.lang.IllegalStateException: order 17 not found"),
    ]
    later: Headers = [
        ("kafka_dlt-original-topic", f"{topic}-retry".encode()),
        ("kafka_dlt-original-partition", struct.pack(">i", 0)),
        ("kafka_dlt-original-offset", struct.pack(">q", 7)),
    ]
    return hop + later * (hops - 1)


# Kafka Streams (KIP-1034) ExceptionHandlerUtils: UTF-8 strings.
def streams_headers(topic: str, partition: int, offset: int) -> Headers:
    return [
        ("__streams.errors.exception", b"org.apache.kafka.common.errors.SerializationException"),
        ("__streams.errors.message", b"Size of data received by LongDeserializer is not 8"),
        ("__streams.errors.stacktrace", b"org.apache.kafka.common.errors.SerializationException"),
        ("__streams.errors.topic", topic.encode()),
        ("__streams.errors.partition", str(partition).encode()),
        ("__streams.errors.offset", str(offset).encode()),
    ]


# arroyo's KafkaDlqProducer: str(partition).encode(), str(offset).encode(); no topic, no error.
def arroyo_headers(partition: int, offset: int) -> Headers:
    return [
        ("original_partition", str(partition).encode()),
        ("original_offset", str(offset).encode()),
    ]


def fill(bootstrap: str, topic: str, letters: Iterable[Letter]) -> int:
    """Produce the letters in order (murmur2_random, like every Lazarus producer)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20}
    )
    count = 0
    for letter in letters:
        while True:
            try:
                producer.produce(topic, letter.value, letter.key, headers=list(letter.headers))
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return count


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def dlq(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `dlq ARGS` in this process through its real entry point (exit codes included)."""
    runner = CliRunner()
    code: int | str | None = 0
    with runner.isolation(input=input, env=env) as (out, err, _):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
    return Result(
        int(code or 0),
        out.getvalue().decode(errors="replace"),
        err.getvalue().decode(errors="replace"),
    )


class DlqProcess:
    """`dlq ARGS` as a real process, so a test can kill -9 it."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115 - closed in wait()/kill9()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reprocessor.cli", *args],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.out.close()

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        self.out.close()
        return code

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def replays_of(bootstrap: str, target: str) -> dict[str, list[Rec]]:
    """Copies in `target` (read_committed) by the dead letter they replay (`dlq.replay.of`)."""
    out: dict[str, list[Rec]] = {}
    for rec in read_all(bootstrap, target):
        out.setdefault(rec.text(contract.REPLAY_OF) or "", []).append(rec)
    return out


def ledger_of(bootstrap: str, dlq_topic: str) -> dict[str, dict[str, Any]]:
    """The ledger's latest entry per key, read_committed."""
    out: dict[str, dict[str, Any]] = {}
    for rec in read_all(bootstrap, contract.ledger_topic(dlq_topic)):
        assert rec.key is not None and rec.value is not None
        out[rec.key.decode()] = json.loads(rec.value)
    return out


def assert_exactly_once(bootstrap: str, dlq_topic: str, target: str, selected: set[str]) -> None:
    """Every selected dead letter has exactly one copy in `target` and a ledger entry naming it."""
    copies = replays_of(bootstrap, target)
    assert set(copies) == selected, (len(copies), len(selected))
    doubles = {k: len(v) for k, v in copies.items() if len(v) != 1}
    assert not doubles, f"duplicated replays: {doubles}"
    ledger = ledger_of(bootstrap, dlq_topic)
    assert set(ledger) == selected
    for coordinates, entry in ledger.items():
        copy = copies[coordinates][0]
        assert entry["action"] == "replayed"
        assert entry["target"] == f"{copy.topic}/{copy.partition}/{copy.offset}", coordinates
