"""Kafka clients as Lazarus uses them: the only place consumers and producers are configured.

Every producer uses librdkafka's `murmur2_random` partitioner (the Java client's default), so the
failures of one key stay in order and a replay to the source topic lands where a Java producer
would put that key. Consumers never auto-commit: offsets are committed by the worker from its
offset tracker, or inside a transaction.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipeline.core.contract import SourceRecord

KafkaConf = Mapping[str, str | int | float | bool]

PRODUCER_DEFAULTS: dict[str, str | int | float | bool] = {
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "lz4",
}

TRANSACTIONAL_DEFAULTS: dict[str, str | int | float | bool] = {"retry.backoff.ms": 10}
"""A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS while the coordinator
still writes the previous one's markers; librdkafka retries after `retry.backoff.ms`, 100 ms by
default, so every transaction lasted at least 100 ms (measured here: `send_offsets_to_transaction`
88-104 ms median, 14 ms at 10 ms). The Java client waits 20 ms for this error (KAFKA-5477);
librdkafka has no separate setting, and its backoff still doubles up to `retry.backoff.max.ms`
for requests that keep failing. A `kafka` setting in the config overrides it."""

CONSUMER_DEFAULTS: dict[str, str | int | float | bool] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "enable.partition.eof": False,
}


KAFKA_LOG = logging.getLogger("lazarus.kafka")


class _Quieter(logging.Filter):
    """librdkafka logs a refused login or a dead connection once per client, broker and retry
    (a worker with wrong credentials printed the same line 40 times before its one error):
    keep the first line of each text (client names aside) per `every_s`, and drop refused
    logins altogether, since `error_cb` records them and the command reports them in one line."""

    _CLIENT = re.compile(r"\[rdkafka#[a-z]+-\d+\] ")

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:  # `-X debug=...` asked for every line
            return True
        text = record.getMessage()
        if "SASL authentication error" in text or "Authentication failed" in text:
            return False
        key, now = self._CLIENT.sub("", text), time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last < self.every_s:
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = now
        return True


KAFKA_LOG.addFilter(_Quieter())


_AUTHENTICATION_CODES = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
)
_authentication_failures: list[str] = []


def _record_error(err: KafkaError) -> None:
    """Every client's `error_cb`: librdkafka reports a refused login here (and only here: the
    call that then fails says "transport failure" or times out)."""
    if err.code() in _AUTHENTICATION_CODES:
        _authentication_failures[:] = [err.str()]


def authentication_failure() -> str | None:
    """The last authentication failure any client of this process reported (served by polls)."""
    return _authentication_failures[-1] if _authentication_failures else None


def with_logger(conf: dict[str, Any]) -> dict[str, Any]:
    """librdkafka's own log lines go through Python logging, not straight to stderr, and its
    errors through `_record_error`."""
    conf.setdefault("logger", KAFKA_LOG)
    conf.setdefault("error_cb", _record_error)
    return conf


def producer_config(base: KafkaConf, transactional_id: str | None = None) -> dict[str, Any]:
    transactional = TRANSACTIONAL_DEFAULTS if transactional_id is not None else {}
    conf: dict[str, Any] = with_logger({**PRODUCER_DEFAULTS, **transactional, **base})
    conf["partitioner"] = "murmur2_random"  # the contract's partitioner, whatever was passed
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
    return conf


def consumer_config(base: KafkaConf, group_id: str) -> dict[str, Any]:
    conf: dict[str, Any] = with_logger({**CONSUMER_DEFAULTS, **base})
    conf["group.id"] = group_id
    conf["enable.auto.commit"] = False
    conf["enable.auto.offset.store"] = False
    return conf


def make_producer(base: KafkaConf, transactional_id: str | None = None) -> Producer:
    return Producer(producer_config(base, transactional_id))


def make_consumer(
    base: KafkaConf, group_id: str, on_commit: Callable[..., object] | None = None
) -> Consumer:
    conf = consumer_config(base, group_id)
    if on_commit is not None:
        conf["on_commit"] = on_commit
    return Consumer(conf)


def take_ready(consumer: Consumer, max_records: int, timeout_s: float) -> list[Message]:
    """Up to `max_records` of what `consumer` holds now, waiting up to `timeout_s` only when it
    holds none. `Consumer.consume(n, timeout)` alone returns when `n` records are there or the
    timeout has passed: below `n` records per timeout every record waited in it (the worker's
    p50 latency at 3,000 records/s was 279 ms, 72 ms with this; `bench_peers` latency runs). On
    a backlog librdkafka holds a full batch and the first call takes it."""
    consume = consumer.consume
    msgs = consume(max_records, 0)
    if not msgs:
        msgs = consume(1, timeout_s)
        if msgs and max_records > 1:
            msgs += consume(max_records - 1, 0)
    return msgs


def read_to_end(
    conf: Mapping[str, Any],
    topic: str,
    isolation: str = "read_committed",
    timeout_s: float = 60.0,
    settle_s: float = 5.0,
) -> list[Message]:
    """Every record of a small `topic`, in the order consumed, from each partition's start up
    to its end captured now (assign(); the group.id `conf` names is never joined nor
    committed to). For the demo's accounting and the tests; `dlq` reads a DLQ with
    `dlqio.TopicReader`.

    The end is each partition's high watermark. A read_committed reader stops at the last
    stable offset, which lags it for two reasons it cannot tell apart: a transaction still
    open (its records are not there yet), and one whose commit returned while the coordinator
    still writes its markers (they are, a moment later: a replay's 1,500 copies read right
    after it were found short, 707 and 0 of them, in the soak run and on a fresh broker). A
    partition ends when its position reaches the captured end, or `settle_s` after its stable
    offset last stopped it short (an open transaction).

    Raises `KafkaException` on a consume error, `TimeoutError` when the end is not reached
    within `timeout_s`."""
    consumer = Consumer(
        {
            "group.id": "lazarus-reader",
            **conf,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    try:
        parts = list(consumer.list_topics(topic, timeout=15).topics[topic].partitions)
        ends = _watermarks(conf, topic, parts)
        todo = {p for p in parts if ends[p][1] > ends[p][0]}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        out: list[Message] = []
        short: dict[int, float] = {}  # partition -> when its stable offset stopped it short
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            err = None if msg is None else msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(err)
            if msg is None or err is not None:  # nothing new, or at the last stable offset
                stopped = None if msg is None else msg.partition()
                if stopped is not None:
                    short.setdefault(stopped, time.monotonic())
                todo -= _ended(consumer, topic, todo, ends, short, settle_s)
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            out.append(msg)
            short.pop(partition, None)
            if offset + 1 >= ends[partition][1]:
                todo.discard(partition)  # the end captured at the start: never chase writers
    finally:
        consumer.close()
    if todo:
        raise TimeoutError(f"reading {topic} did not reach its end in {timeout_s:.0f}s")
    return out


def _watermarks(
    conf: Mapping[str, Any], topic: str, parts: list[int]
) -> dict[int, tuple[int, int]]:
    """Each partition's low and high watermarks. Asked by a read_uncommitted client: a
    read_committed one is answered the last stable offset instead of the high watermark, which
    right after a commit can still lag it, and then a partition full of committed records
    looked empty (seen on a fresh broker: 1,500 replayed copies read as none)."""
    asking = Consumer({"group.id": "lazarus-reader", **conf, "isolation.level": "read_uncommitted"})
    try:
        return {
            p: asking.get_watermark_offsets(TopicPartition(topic, p), timeout=15) for p in parts
        }
    finally:
        asking.close()


def _ended(
    consumer: Consumer,
    topic: str,
    todo: set[int],
    ends: Mapping[int, tuple[int, int]],
    short: Mapping[int, float],
    settle_s: float,
) -> set[int]:
    """The partitions of `todo` read to their captured end: the position is there (past a
    trailing commit marker too, which no record shows), or the stable offset has held the
    partition short for `settle_s`."""
    now = time.monotonic()
    positions = consumer.position([TopicPartition(topic, p) for p in todo])
    return {
        tp.partition
        for tp in positions
        if tp.offset >= ends[tp.partition][1]
        or (tp.partition in short and now - short[tp.partition] >= settle_s)
    }


def to_record(msg: Message) -> SourceRecord:
    """A consumed message as the pure core sees it (built positionally: one per record)."""
    _, timestamp = msg.timestamp()
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    key, value, raw = msg.key(), msg.value(), msg.headers()
    return SourceRecord(
        topic,
        partition,
        offset,
        timestamp if timestamp >= 0 else 0,
        key if not isinstance(key, str) else key.encode(),
        value if not isinstance(value, str) else value.encode(),
        _headers(raw) if raw else (),
    )


def _headers(
    raw: list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None],
) -> tuple[tuple[str, bytes | None], ...]:
    """Headers as (name, bytes | None) pairs: what librdkafka hands out for consumed records."""
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple((name, v.encode() if isinstance(v, str) else v) for name, v in pairs)


COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._WAIT_COORD,
    }
)
"""Errors librdkafka does not flag retriable but that pass once the coordinator settles (a
fresh broker answers NOT_COORDINATOR for a moment)."""


def is_retriable(exc: BaseException) -> bool:
    """Worth asking again: librdkafka says so, or the group coordinator is moving or loading."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        err = exc.args[0]
        return bool(err.retriable()) or err.code() in COORDINATOR_MOVING
    return isinstance(exc, BufferError)


def kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def error_text(exc: BaseException) -> str:
    """An exception as one line for a message: librdkafka's own text when it carries a
    `KafkaError` (a `KafkaException`'s, or an admin future's), else its message, else (an
    empty message, e.g. a future's `TimeoutError()`) its type's name."""
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else (str(exc) or type(exc).__name__)


def partitions(pairs: Mapping[tuple[str, int], int]) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for (t, p), o in pairs.items()]


__all__ = [
    "Consumer",
    "KafkaError",
    "KafkaException",
    "Message",
    "Producer",
    "TopicPartition",
    "consumer_config",
    "error_text",
    "is_retriable",
    "kafka_error",
    "make_consumer",
    "make_producer",
    "partitions",
    "producer_config",
    "read_to_end",
    "to_record",
]
