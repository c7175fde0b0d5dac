"""The reprocessor's Kafka I/O: reading DLQ and ledger topics, and the transactional producer that
writes replayed copies and their ledger entries together.

Reading never joins a consumer group and never commits: partitions are `assign()`ed, and a read
stops at the end offsets captured when it starts (librdkafka answers a `read_committed` consumer's
watermark query with the last stable offset), so a growing DLQ cannot make a command run forever.
Transaction markers take offsets, so offsets are not dense: a partition is done when the
consumer's position reaches its captured end, not when a record with offset `end - 1` arrives.

Every failure leaves as a `LazarusError`: `ConfigError` for what the operator can fix (an unknown
topic, a property librdkafka rejects), `Fenced` when another run took over the transactional id,
`TransactionAborted` when a transaction had to be rolled back, `RuntimeFailure` otherwise.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NoReturn, TypeVar, cast

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from pipeline.core.contract import Header, SourceRecord, format_coordinates
from pipeline.errors import ConfigError, RuntimeFailure
from pipeline.kafka import admin
from pipeline.kafka.clients import consumer_config, error_text, producer_config, take_ready

KafkaConf = Mapping[str, str | int | float | bool]
_T = TypeVar("_T")
Isolation = Literal["read_committed", "read_uncommitted"]

READER_GROUP = "lazarus-dlq-reader"
"""librdkafka wants a group.id even for assign(); this one is never joined nor committed to."""
BATCH = 1000
POLL_S = 0.5
"""How long a poll waits for a first record when librdkafka holds none."""
STALL_S = 60.0
"""A partition whose position has not moved for this long, short of its end, fails the read."""
_DENIED_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)
_WHY_ELSEWHERE = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._STATE})
"""Delivery failures whose cause is the transaction's own error (e.g. a refused partition)."""
_WHY_LATER = frozenset({KafkaError._STATE, KafkaError._FATAL})
"""Errors of a call that only say the transaction or the producer failed earlier."""
_FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    }
)
TSTYPES = {TIMESTAMP_CREATE_TIME: "create", TIMESTAMP_LOG_APPEND_TIME: "logappend"}


class Fenced(RuntimeFailure):
    """Another run initialised the same transactional id: this one must stop (exit 1)."""


class TransactionAborted(RuntimeFailure):
    """A transaction failed and was rolled back: nothing of it is visible to read_committed."""


@dataclass(frozen=True, slots=True)
class Consumed:
    """One record read from a topic, and kcat's name for its timestamp type."""

    record: SourceRecord
    tstype: str


def as_consumed(topic: str, msg: Message, partition: int, offset: int) -> Consumed:
    """A fetched record (at `partition`, `offset`) as `dlq` shows it, with kcat's name for its
    timestamp type."""
    kind, timestamp = msg.timestamp()
    record = SourceRecord(
        topic,
        partition,
        offset,
        timestamp if timestamp >= 0 else 0,
        msg.key(),
        msg.value(),
        # consumed headers are a list of (str, bytes | None): no per-header conversion; the
        # cast's type is a string, not a generic alias built again for every record
        cast("tuple[Header, ...]", tuple(msg.headers() or ())),
    )
    return Consumed(record, TSTYPES.get(kind, "unknown"))


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """The records of one poll, column by column (record `i` is index `i` of every column), in
    the order read: what a reader that works a batch at a time takes instead of one `Consumed`
    per record. Timestamps are never negative (a missing one is 0); a record without headers
    has an empty list."""

    topic: str
    partitions: list[int]
    offsets: list[int]
    timestamps: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[list[Header]]

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def of(cls, topic: str, records: Sequence[SourceRecord]) -> RecordBatch:
        """The batch of these records (of `topic`)."""
        return cls(
            topic,
            [r.partition for r in records],
            [r.offset for r in records],
            [r.timestamp_ms for r in records],
            [r.key for r in records],
            [r.value for r in records],
            [list(r.headers) for r in records],
        )


@dataclass(frozen=True, slots=True)
class ReadSpec:
    """Where a read starts: every partition's beginning by default, its last `tail` records,
    the first record at or after `since_ms` (by timestamp), `offset`, or per partition
    `starts` ((partition, offset) pairs). It always ends at the end offsets captured when the
    read starts."""

    tail: int | None = None
    since_ms: int | None = None
    partitions: tuple[int, ...] | None = None
    offset: int | None = None
    isolation: Isolation = "read_committed"
    starts: tuple[tuple[int, int], ...] = ()


def topic_partitions(conf: KafkaConf, topic: str, timeout_s: float = 15.0) -> int:
    """The topic's partition count; `ConfigError` when the cluster has no such topic."""
    count = admin.existing_topics(shared_admin(conf), timeout_s).get(topic)
    if count is None:
        raise ConfigError(f"topic {topic} does not exist on {conf.get('bootstrap.servers')}")
    return count


def missing_topics(conf: KafkaConf, topics: Sequence[str], timeout_s: float = 15.0) -> list[str]:
    """The names among `topics` that the cluster does not have."""
    known = admin.existing_topics(shared_admin(conf), timeout_s)
    return [name for name in topics if name not in known]


def ensure_compacted(conf: KafkaConf, topic: str, partitions: int = 1) -> bool:
    """Create `topic` compacted when it is missing (a ledger of a DLQ that never had one);
    True when it was created. An existing topic is left as it is."""
    client = shared_admin(conf)
    if topic in admin.existing_topics(client):
        return False
    spec = admin.NewTopicSpec(topic, partitions, {"cleanup.policy": "compact"})
    try:
        admin.create(client, [spec])
    except RuntimeFailure:
        if topic not in admin.existing_topics(client):  # lost a race with another run: fine
            raise
    return True


ConfKey = tuple[tuple[str, str | int | float | bool], ...]


def conf_key(conf: KafkaConf) -> ConfKey | None:
    """`conf` as a cache key for a client shared by a command's calls with the same
    configuration; None when a value cannot be one (then each call has a client of its own)."""
    key = tuple(sorted(conf.items(), key=lambda item: item[0]))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def shared_admin(conf: KafkaConf) -> Any:
    """An admin client for `conf`, the same one for the same configuration: a command asks
    several questions (does the ledger exist, how many partitions, does the target exist, the
    cluster's id and topic ids: `follow.Cluster`) and each new client costs a connection and a
    metadata round trip (~50 ms)."""
    key = conf_key(conf)
    return configured(lambda: admin.admin_client(conf) if key is None else _shared_admin(key))


@functools.lru_cache(maxsize=4)
def _shared_admin(conf: ConfKey) -> Any:
    return admin.admin_client(dict(conf))


def configured(make: Callable[[], _T]) -> _T:
    """`make()`, a client; a configuration librdkafka refuses (KafkaException, or the binding's
    ValueError / TypeError for a value of the wrong kind) as the `dlq` commands' ConfigError."""
    try:
        return make()
    except (KafkaException, ValueError, TypeError) as exc:
        raise ConfigError(f"librdkafka rejected the configuration: {error_text(exc)}") from exc


def _consumer(conf: KafkaConf, isolation: Isolation, tuning: KafkaConf) -> Consumer:
    props = consumer_config({**tuning, **conf}, READER_GROUP)
    props["isolation.level"] = isolation
    props["enable.partition.eof"] = False
    return configured(lambda: Consumer(props))


class TopicReader:
    """Reads one topic from assigned partitions up to the end offsets captured at `open()`.

    Use as a context manager; iterate `records()` once. Blocks on the broker; raises
    `RuntimeFailure` when a partition makes no progress for `stall_s` (the cluster went away)."""

    def __init__(
        self,
        conf: KafkaConf,
        topic: str,
        spec: ReadSpec = ReadSpec(),
        tuning: KafkaConf | None = None,
    ) -> None:
        """`tuning`: consumer properties `conf` overrides (e.g. how far to fetch ahead), kept
        out of the admin client's configuration so that the command's shared one serves."""
        self.topic = topic
        self._spec = spec
        self._partitions = topic_partitions(conf, topic)
        self._consumer = _consumer(conf, spec.isolation, tuning or {})
        self.ends: dict[int, int] = {}
        self.starts: dict[int, int] = {}
        self._todo: set[int] = set()

    def __enter__(self) -> TopicReader:
        self._open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._consumer.close()

    def _open(self) -> None:
        wanted = self._spec.partitions or tuple(range(self._partitions))
        for p in wanted:
            if not 0 <= p < self._partitions:
                raise ConfigError(f"topic {self.topic} has no partition {p}")
            low, high = self._watermarks(p)
            self.starts[p], self.ends[p] = self._start(p, low, high), high
        self._consumer.assign(
            [TopicPartition(self.topic, p, o) for p, o in self.starts.items() if o < self.ends[p]]
        )

    def _watermarks(self, partition: int) -> tuple[int, int]:
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=15
            )
        except KafkaException as exc:
            raise RuntimeFailure(f"cannot read the end of {self.topic}: {error_text(exc)}") from exc
        return int(low), int(high)

    def _start(self, partition: int, low: int, high: int) -> int:
        spec = self._spec
        start = low
        if spec.since_ms is not None:
            found = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, partition, spec.since_ms)], timeout=15
            )[0].offset
            start = high if found < 0 else max(low, found)
        if spec.tail is not None:
            start = max(start, high - spec.tail)
        if spec.offset is not None:
            start = max(start, spec.offset)
        for wanted, offset in spec.starts:
            if wanted == partition:
                start = max(start, offset)
        return start

    @property
    def expected(self) -> int:
        """An upper bound of the records this read returns (markers take offsets too)."""
        return sum(max(0, self.ends[p] - self.starts[p]) for p in self.ends)

    def records(self) -> Iterator[Consumed]:
        """Every record between the start and the captured end, partition order kept."""
        todo = self._todo = {p for p in self.ends if self.starts[p] < self.ends[p]}
        progress = _Progress(self._consumer, self.topic, self.ends)
        while todo:
            batch = self._poll()
            for msg in batch:
                consumed = self._accept(msg, todo)
                if consumed is not None:
                    yield consumed
            progress.check(todo, bool(batch))

    def batches(self) -> Iterator[RecordBatch]:
        """`records()` a poll at a time, as columns: the same records in the same order, with no
        object per record. `finish()` takes effect from the next poll."""
        todo = self._todo = {p for p in self.ends if self.starts[p] < self.ends[p]}
        progress = _Progress(self._consumer, self.topic, self.ends)
        while todo:
            msgs = self._poll()
            if msgs:
                batch = self._batch(msgs, todo)
                if batch is not None:
                    yield batch
            progress.check(todo, bool(msgs))

    def _poll(self) -> list[Message]:
        """What librdkafka holds now, up to BATCH records, waiting up to POLL_S only when it holds
        none (`clients.take_ready`). A poll asking for a full BATCH sat out the timeout whenever
        fewer were queued: a read's tail, or a reader ahead of its fetches (about 2 s of a
        100,000-record replay's 7)."""
        return take_ready(self._consumer, BATCH, POLL_S)

    def _batch(self, msgs: list[Message], todo: set[int]) -> RecordBatch | None:
        """The records of `msgs` that `_accept` would return, as columns."""
        if any(map(Message.error, msgs)):  # rare: an error or an EOF event, read one by one
            accepted = [c.record for m in msgs if (c := self._accept(m, todo)) is not None]
            return RecordBatch.of(self.topic, accepted) if accepted else None
        partitions = cast("list[int]", list(map(Message.partition, msgs)))
        offsets = cast("list[int]", list(map(Message.offset, msgs)))
        ends, kept = self.ends, []
        for i, (partition, offset) in enumerate(zip(partitions, offsets, strict=True)):
            if partition not in todo or offset >= ends[partition]:
                todo.discard(partition)
                continue
            if offset + 1 >= ends[partition]:
                todo.discard(partition)
            kept.append(i)
        if not kept:
            return None
        if len(kept) < len(msgs):
            msgs = [msgs[i] for i in kept]
            partitions, offsets = [partitions[i] for i in kept], [offsets[i] for i in kept]
        stamps = [ts if ts >= 0 else 0 for _, ts in map(Message.timestamp, msgs)]
        return RecordBatch(
            self.topic,
            partitions,
            offsets,
            stamps,
            list(map(Message.key, msgs)),
            list(map(Message.value, msgs)),
            # consumed headers are lists of (str, bytes | None), as in `as_consumed`
            cast("list[list[Header]]", [h or [] for h in map(Message.headers, msgs)]),
        )

    def finish(self, partition: int) -> None:
        """Read no more of `partition` (the caller has what it wanted from it): it is paused,
        and `records()` ends once the other partitions reach their ends."""
        if partition in self._todo:
            self._todo.discard(partition)
            self._consumer.pause([TopicPartition(self.topic, partition)])

    def _accept(self, msg: Message, todo: set[int]) -> Consumed | None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return None
            raise RuntimeFailure(f"reading {self.topic} failed: {err.str()}")
        partition, offset = msg.partition() or 0, msg.offset() or 0
        if partition not in todo or offset >= self.ends[partition]:
            todo.discard(partition)
            return None
        if offset + 1 >= self.ends[partition]:
            todo.discard(partition)
        return as_consumed(self.topic, msg, partition, offset)


@dataclass
class _Progress:
    """Marks partitions done when their position reaches the captured end (past markers), and
    fails the read when nothing moves for STALL_S."""

    consumer: Consumer
    topic: str
    ends: dict[int, int]
    last_move: float = field(default_factory=time.monotonic)
    positions: dict[int, int] = field(default_factory=dict)

    def check(self, todo: set[int], received: bool) -> None:
        now = time.monotonic()
        if received:
            self.last_move = now
            return
        tps = self.consumer.position([TopicPartition(self.topic, p) for p in todo])
        for tp in tps:
            if tp.offset >= self.ends[tp.partition]:
                todo.discard(tp.partition)
            if self.positions.get(tp.partition) != tp.offset:
                self.positions[tp.partition] = tp.offset
                self.last_move = now
        if todo and now - self.last_move > STALL_S:
            where = ", ".join(f"{p}@{self.positions.get(p)}/{self.ends[p]}" for p in sorted(todo))
            raise RuntimeFailure(f"reading {self.topic} stalled (partition@position/end: {where})")


def read_one(conf: KafkaConf, topic: str, partition: int, offset: int) -> Consumed | None:
    """The record at exactly `topic/partition/offset`, or None when there is none (deleted by
    retention, not written yet, aborted, or a transaction marker)."""
    spec = ReadSpec(partitions=(partition,), offset=offset)
    with TopicReader(conf, topic, spec) as reader:
        for consumed in reader.records():
            return consumed if consumed.record.offset == offset else None
    return None


class TxnProducer:
    """A transactional producer: `init()` once (fencing any earlier producer of the same id),
    then per chunk `begin()`, `send()`, `flush()` (the copies' coordinates, from the delivery
    reports), more `send()`s, `commit()`.

    Raises `Fenced` when another run took over the id (stop: exit 1), `TransactionAborted` when a
    transaction failed and was rolled back (nothing of it is visible), `RuntimeFailure` else."""

    def __init__(self, conf: KafkaConf, transactional_id: str, timeout_s: float = 60.0) -> None:
        self.transactional_id = transactional_id
        self._topics: set[str] = set()
        self.timeout_s = timeout_s
        self._producer = configured(lambda: Producer(producer_config(conf, transactional_id)))
        self._reports: list[Message | KafkaError | None] = []
        self._sent: list[str] = []  # each report's topic

    def init(self) -> None:
        """Register the id with the coordinator; blocks until an earlier producer of this id is
        fenced and its open transaction aborted."""
        self._call(lambda: self._producer.init_transactions(self.timeout_s), "init")

    def begin(self) -> None:
        self._reports, self._sent = [], []
        self._call(self._producer.begin_transaction, "begin")

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Header]
    ) -> int:
        """Queue one record in the open transaction; returns its index among this chunk's
        sends (for `flush()`'s answer)."""
        self.send_chunk([topic], [key], [value], [headers])
        return len(self._reports) - 1

    def send_chunk(
        self,
        topics: Sequence[str],
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        headers: Sequence[list[Header]],
    ) -> None:
        """Queue records in the open transaction, in order, each with a delivery report:
        `flush()` answers their coordinates in send order. One call per chunk, and a report
        only keeps the delivered message (formatted by `flush()`), since the per-record
        Python work here is a measurable share of a replay's CPU."""
        reports, sent = self._reports, self._sent
        first = len(reports)
        reports.extend([None] * len(topics))
        sent.extend(topics)
        self._topics.update(topics)

        produce = self._producer.produce
        wires = cast("Sequence[list[tuple[str, str | bytes | None]]]", headers)  # not rebuilt
        rows = zip(topics, values, keys, wires, strict=True)
        for index, (topic, value, key, wire) in enumerate(rows, first):
            # a Python function, not a `functools.partial`: librdkafka may serve reports while
            # an error is pending (a fenced producer), which a C callable turns into SystemError
            def on_delivery(err: KafkaError | None, msg: Message, index: int = index) -> None:
                reports[index] = msg if err is None else err

            try:  # the common case without a lambda; a full queue or an error: `_call` decides
                produce(topic, value, key, headers=wire, on_delivery=on_delivery)
            except (BufferError, KafkaException):
                self._call(
                    functools.partial(
                        produce, topic, value, key, headers=wire, on_delivery=on_delivery
                    ),
                    "produce",
                )
            if index % 256 == 255:  # serve delivery reports now and then; flush() the rest
                self._call(lambda: self._producer.poll(0), "produce")

    def send_all(self, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
        """Queue `(key, value)` records in the open transaction without delivery reports (no
        callback per record): a record that fails fails the transaction, so `commit()` raises
        (`TransactionAborted`, `Fenced`) and nothing of the chunk is visible. For records
        whose coordinates nobody needs, such as ledger entries."""
        self._topics.add(topic)
        produce = self._producer.produce
        for key, value in records:
            try:
                produce(topic, value, key)
            except (BufferError, KafkaException):
                self._call(functools.partial(produce, topic, value, key), "produce")  # rare

    def flush(self) -> list[str]:
        """Wait for every send of the chunk; their `topic/partition/offset`s in send order."""
        left = self._call(lambda: self._producer.flush(self.timeout_s), "flush")
        failed = [r for r in self._reports if isinstance(r, KafkaError)]
        reasons = [self._cause(e) if e.code() in _WHY_ELSEWHERE else e.str() for e in failed[:1]]
        denied = [e for e in failed if e.code() in _DENIED_CODES]
        if denied or any("authoriz" in r.lower() for r in reasons):
            self.abort()
            raise RuntimeFailure(self._denied_message(denied[0].str() if denied else reasons[0]))
        if any(self._is_fenced(err) for err in failed):
            raise Fenced(self._fenced_message())
        if left or failed or any(r is None for r in self._reports):
            reason = failed[0].str() if failed else f"{left} records not delivered in time"
            self.abort()
            raise TransactionAborted(
                f"delivery failed ({reason}); the chunk was rolled back: run again to continue"
            )
        return [
            format_coordinates(topic, msg.partition() or 0, msg.offset() or 0)
            for topic, msg in zip(self._sent, cast("list[Message]", self._reports), strict=True)
        ]

    def commit(self) -> None:
        self._call(lambda: self._producer.commit_transaction(self.timeout_s), "commit")

    def abort(self) -> None:
        """Roll back the open transaction; a failure to abort is reported, never raised, since
        the coordinator aborts it anyway when the transaction times out or the id is re-used."""
        try:
            self._producer.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and self._is_fenced(err):
                raise Fenced(self._fenced_message()) from exc

    def close(self) -> None:
        self._producer.flush(0)

    def _call(self, action: Callable[[], _T], what: str) -> _T:
        """Run a producer call, retrying what librdkafka says is retriable; any other failure
        leaves as `Fenced`, `TransactionAborted` or `RuntimeFailure`."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return action()
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError):
                    raise RuntimeFailure(f"transaction {what} failed: {exc}") from exc
                if not err.retriable() or time.monotonic() > deadline:
                    self._fail(err, what, exc)
                time.sleep(0.1)
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"transaction {what} timed out")

    def _fail(self, err: KafkaError, what: str, exc: KafkaException) -> NoReturn:
        if err.code() in _WHY_LATER:  # the transaction's or the producer's own error says why
            err = self._cause_error(err)
        reason = str(err.str())
        if err.code() in _DENIED_CODES or "authoriz" in reason.lower():
            self.abort()
            raise RuntimeFailure(self._denied_message(reason)) from exc
        if self._is_fenced(err):
            raise Fenced(self._fenced_message()) from exc
        if err.fatal():
            raise RuntimeFailure(f"transaction {what} failed fatally: {reason}") from exc
        if err.txn_requires_abort():
            self.abort()
            raise TransactionAborted(
                f"transaction {what} failed ({err.str()}); the chunk was rolled back: "
                "run again to continue"
            ) from exc
        raise RuntimeFailure(f"transaction {what} failed: {err.str()}") from exc

    def _cause(self, err: KafkaError) -> str:
        return str(self._cause_error(err).str())

    def _cause_error(self, err: KafkaError) -> KafkaError:
        """librdkafka answers "Erroneous state" once the transaction failed, and "Local: Fatal
        error" to a produce once the producer is fatal (e.g. fenced by a second run of the same
        plan); a transactional call then raises the transaction's or the producer's own error
        (a topic authorization failure adding a partition, PRODUCER_FENCED), which says why."""
        try:
            self._producer.commit_transaction(1)
        except KafkaException as exc:
            cause = exc.args[0] if exc.args else None
            if isinstance(cause, KafkaError) and cause.code() not in _WHY_LATER:
                return cause
        return err

    def _denied_message(self, reason: str) -> str:
        topics = ", ".join(sorted(self._topics)) or "the target"
        return (
            f"not authorized to write to {topics} (or to use transactional id "
            f"{self.transactional_id}): {reason}; nothing was replayed and the ledger is unchanged"
        )

    @staticmethod
    def _is_fenced(err: KafkaError) -> bool:
        """Fenced by a newer producer with our id; other fatal errors say what they are."""
        if err.code() in _FENCED_CODES:
            return True
        return bool(err.fatal()) and "fenced" in str(err.str()).lower()

    def _fenced_message(self) -> str:
        return (
            f"fenced: another run took over transactional id {self.transactional_id} "
            "(a concurrent `dlq replay` or `dlq discard` on this DLQ); this run stopped, and "
            "everything it committed is in the ledger"
        )


__all__ = [
    "Consumed",
    "Fenced",
    "ReadSpec",
    "RecordBatch",
    "TopicReader",
    "TransactionAborted",
    "TxnProducer",
    "ensure_compacted",
    "missing_topics",
    "read_one",
    "topic_partitions",
]
