"""Following topics incrementally, and what the broker says about them: the Kafka side of the
reprocessor's on-disk index and of `dlq exporter`.

`Follower` reads a topic from stored positions (partition -> next offset) with `assign()` and a
seek, `read_committed`, up to the last stable offsets captured when the read starts, in batches:
the caller stores each batch and its positions in one transaction, so a crash resumes where the
last stored batch ended. Transaction markers and aborted records take offsets and are never
returned: a partition is done when the consumer's position reaches its captured end.

`describe_cluster` and `describe_topics` give what the index checks before it trusts itself: the
cluster id, each topic's id (a deleted and recreated topic gets a new one), partition count, low
watermark and last stable offset, and the retention configs. `Fetcher` reads the records at given
coordinates (the payloads of selected dead letters). Every failure leaves as `RuntimeFailure`
(cluster unreachable) or `ConfigError` (a property librdkafka rejects).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Generic, TypeAlias, TypeVar, cast

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import ConfigResource, OffsetSpec, ResourceType

from pipeline.errors import RuntimeFailure
from pipeline.kafka import admin
from pipeline.kafka.clients import (
    authentication_failure,
    consumer_config,
    error_text,
    is_retriable,
    take_ready,
)
from pipeline.kafka.dlqio import POLL_S, Consumed, as_consumed, configured, shared_admin

T = TypeVar("T")
KafkaConf = Mapping[str, str | int | float | bool]
Fetched: TypeAlias = tuple[
    int, int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]] | None
]
"""One record as followed: (partition, offset, timestamp ms, key, value, headers). A plain tuple:
at a million records, a dataclass per record costs more than reading the headers."""

FOLLOWER_GROUP = "lazarus-dlq-index"
"""librdkafka wants a group.id even for assign(); this one is never joined nor committed to."""
BATCH = 2000
STALL_S = 60.0
_TIMEOUT_S = 15.0
_UNSET = -1001  # librdkafka's OFFSET_INVALID: no committed offset
_ERROR, _PARTITION, _OFFSET = Message.error, Message.partition, Message.offset
_TIMESTAMP, _KEY, _VALUE, _HEADERS = Message.timestamp, Message.key, Message.value, Message.headers
_STAMP = itemgetter(1)


@dataclass(frozen=True, slots=True)
class TopicMeta:
    """A topic as the broker describes it now. `retention_ms`/`retention_bytes` are None when
    unlimited (-1); `delete_retention_ms` is how long a compacted topic keeps tombstones."""

    name: str
    topic_id: str
    partitions: int
    retention_ms: int | None
    retention_bytes: int | None
    delete_retention_ms: int | None


@dataclass(frozen=True, slots=True)
class Marks:
    """A partition's low watermark and last stable offset (a read_committed reader's end)."""

    low: int
    end: int


class Cluster:
    """One admin client for one cluster: describe it, its topics and their offsets."""

    def __init__(self, conf: KafkaConf, timeout_s: float = _TIMEOUT_S) -> None:
        self.conf = conf
        self.timeout_s = timeout_s
        self._admin = shared_admin(conf)  # the command's one client for this configuration

    def cluster_id(self) -> str:
        """The cluster id (KRaft's, or ZooKeeper's), from a metadata request: every broker,
        librdkafka's mock cluster included, answers one; RuntimeFailure when unreachable."""
        return str(self._metadata().cluster_id or "unknown")

    def _metadata(self) -> Any:
        return self._call(
            lambda: self._admin.list_topics(timeout=self.timeout_s), "describe the cluster"
        )

    def topics(self, names: Iterable[str]) -> dict[str, TopicMeta]:
        """The named topics that exist, with their ids and retention configs.

        librdkafka's mock cluster names a controller that is not one of its brokers and never
        answers the controller's requests (describe topics and configs): there, topics have no
        id (recreation goes unnoticed) and no retention settings."""
        wanted = list(dict.fromkeys(names))
        meta = self._metadata()
        known = {n: len(t.partitions) for n, t in meta.topics.items() if t.error is None}
        present = [n for n in wanted if n in known]
        if not present:
            return {}
        if meta.controller_id not in meta.brokers:
            return {n: TopicMeta(n, "unknown", known[n], None, None, None) for n in present}
        described = self._call(
            lambda: {
                n: f.result(timeout=self.timeout_s)
                for n, f in self._admin.describe_topics(
                    TopicCollection(present), request_timeout=self.timeout_s
                ).items()
            },
            "describe topics",
        )
        resources = [ConfigResource(ResourceType.TOPIC, n) for n in present]
        configs = self._call(
            lambda: {
                r.name: f.result(timeout=self.timeout_s)
                for r, f in self._admin.describe_configs(
                    resources, request_timeout=self.timeout_s
                ).items()
            },
            "describe topic configs",
        )
        return {
            n: TopicMeta(
                n,
                str(described[n].topic_id),
                len(described[n].partitions),
                _limit(configs[n], "retention.ms"),
                _limit(configs[n], "retention.bytes"),
                _limit(configs[n], "delete.retention.ms"),
            )
            for n in present
        }

    def marks(self, topic: str, partitions: int) -> dict[int, Marks]:
        """Low watermark and last stable offset of every partition."""
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        low = self._offsets({tp: OffsetSpec.earliest() for tp in tps})  # type: ignore[no-untyped-call]
        end = self._offsets({tp: OffsetSpec.latest() for tp in tps})  # type: ignore[no-untyped-call]
        return {p: Marks(low[p], max(low[p], end[p])) for p in range(partitions)}

    def _offsets(self, specs: dict[TopicPartition, Any]) -> dict[int, int]:
        def ask() -> dict[int, int]:
            futures = self._admin.list_offsets(
                specs,
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=self.timeout_s,
            )
            return {
                tp.partition: int(f.result(timeout=self.timeout_s).offset)
                for tp, f in futures.items()
            }

        found: dict[int, int] = self._call(ask, "list offsets")
        return found

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int | None]:
        """The group's committed offsets on `topic` (None where it has none); never joins."""
        request = [
            ConsumerGroupTopicPartitions(
                group, [TopicPartition(topic, p) for p in range(partitions)]
            )
        ]

        def ask() -> dict[int, int | None]:
            futures = self._admin.list_consumer_group_offsets(
                request, request_timeout=self.timeout_s
            )
            found = next(iter(futures.values())).result(timeout=self.timeout_s)
            return {
                tp.partition: (None if tp.offset < 0 else int(tp.offset))
                for tp in found.topic_partitions
            }

        found: dict[int, int | None] = self._call(ask, f"read the committed offsets of {group}")
        return found

    def _call(self, action: Any, what: str) -> Any:
        """Run an admin call, retrying while the coordinator moves; RuntimeFailure otherwise."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return action()
            except Exception as exc:  # futures raise KafkaException, or a timeout
                self._admin.poll(0)  # serve error callbacks: a refused login ends the retries
                refused = authentication_failure() is not None
                if is_retriable(exc) and not refused and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                if refused:
                    raise admin.unreachable(self._admin, error_text(exc)) from exc
                raise RuntimeFailure(f"cannot {what}: {error_text(exc)}") from exc


def _limit(config: Mapping[str, Any], name: str) -> int | None:
    entry = config.get(name)
    if entry is None or entry.value is None:
        return None
    try:
        value = int(entry.value)
    except ValueError:
        return None
    return None if value < 0 else value


def _consumer(conf: KafkaConf, partitions: int = 0) -> Consumer:
    """A read_committed consumer that prefetches at most 8 MiB (RSS), per partition and per
    fetch, not librdkafka's 64 and 50 MiB. Reading one partition (`partitions` 1), a fetch
    brings 8 MiB of it, not librdkafka's 1 MiB: a ledger has one partition, and its catch-up
    waited a round trip per MiB (2.7 against 2.1-2.3 s for 100,000 entries). More than 1 MiB
    of each of several partitions only added RSS (50-100 MB over 300,000 dead letters of 4
    partitions, with 2 or 8 MiB each), not speed. A partition over these bounds is fetched
    again after 10 ms, not librdkafka's default second (`fetch.queue.backoff.ms`, which its
    documentation says to lower with low bounds; the replay's reader sat idle for it)."""
    props = consumer_config(conf, FOLLOWER_GROUP)
    props["isolation.level"] = "read_committed"
    props["enable.partition.eof"] = False
    props.setdefault("queued.max.messages.kbytes", 8192)
    props.setdefault("fetch.max.bytes", 8 << 20)
    props.setdefault("max.partition.fetch.bytes", 8 << 20 if partitions == 1 else 1 << 20)
    props.setdefault("fetch.queue.backoff.ms", 10)
    return configured(lambda: Consumer(props))


class Follower:
    """Reads `topic` from `start` (partition -> next offset) to `ends` (partition -> last stable
    offset captured by the caller), `batch` records at a time. Use as a context manager.

    `batches()` yields (records, positions): the records of one consume call and, per partition
    read so far, the next offset to read (past markers when a partition is done). Raises
    RuntimeFailure when no partition moves for `stall_s`."""

    def __init__(
        self,
        conf: KafkaConf,
        topic: str,
        start: Mapping[int, int],
        ends: Mapping[int, int],
        batch: int = BATCH,
        stall_s: float = STALL_S,
    ) -> None:
        self.topic = topic
        self._todo = {p for p, end in ends.items() if start.get(p, 0) < end}
        self._start = dict(start)
        self._ends = dict(ends)
        self._batch = batch
        self._stall_s = stall_s
        self._consumer = _consumer(conf, len(self._todo))

    def __enter__(self) -> Follower:
        self._consumer.assign(
            [TopicPartition(self.topic, p, self._start.get(p, 0)) for p in sorted(self._todo)]
        )
        return self

    def __exit__(self, *_: object) -> None:
        self._consumer.close()

    def batches(self) -> Iterator[tuple[list[Fetched], dict[int, int]]]:
        todo, consumer = self._todo, self._consumer
        last_move = time.monotonic()
        while todo:
            messages = take_ready(consumer, self._batch, POLL_S)
            out, positions = self._kept(messages, todo)
            done = self._finished(todo, positions)
            if out or done:
                last_move = time.monotonic()
                positions.update(done)
                yield out, positions
            elif time.monotonic() - last_move > self._stall_s:
                raise RuntimeFailure(f"reading {self.topic} stalled short of its end")

    def _kept(
        self, messages: list[Message], todo: set[int]
    ) -> tuple[list[Fetched], dict[int, int]]:
        """The records of one consume call before their partitions' ends, and the next offset
        per partition read. Column by column (each a loop in C, a scan's largest saving) when
        no message is an error and every partition's last offset is before its end (offsets
        grow within a partition), else record by record."""
        if messages and not any(map(_ERROR, messages)):
            partitions = cast(list[int], list(map(_PARTITION, messages)))  # no error: set
            offsets = cast(list[int], list(map(_OFFSET, messages)))
            last = dict(zip(partitions, offsets, strict=True))
            ends = self._ends
            if all(p in todo and o < ends[p] for p, o in last.items()):
                stamps = map(_STAMP, map(_TIMESTAMP, messages))
                keys, values = map(_KEY, messages), map(_VALUE, messages)
                headers = cast(
                    Iterator[list[tuple[str, bytes | None]] | None], map(_HEADERS, messages)
                )
                out = list(zip(partitions, offsets, stamps, keys, values, headers, strict=True))
                return out, {p: o + 1 for p, o in last.items()}
        return self._kept_one_by_one(messages, todo)

    def _kept_one_by_one(
        self, messages: list[Message], todo: set[int]
    ) -> tuple[list[Fetched], dict[int, int]]:
        ends = self._ends
        out: list[Fetched] = []
        positions: dict[int, int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeFailure(f"reading {self.topic} failed: {err.str()}")
            p, o = msg.partition() or 0, msg.offset() or 0
            if p not in todo:
                continue
            if o >= ends[p]:
                # a record past the end: the partition is done, even when a marker sat
                # just before the end (a topic written to meanwhile never polls idle)
                positions[p] = ends[p]
                continue
            positions[p] = o + 1
            headers = cast(list[tuple[str, bytes | None]] | None, msg.headers())
            out.append((p, o, msg.timestamp()[1], msg.key(), msg.value(), headers))
        return out, positions

    def _finished(self, todo: set[int], positions: dict[int, int]) -> dict[int, int]:
        """Partitions that reached their end in this batch: their next offset is the end, so a
        marker at the end is never read again. A partition without a record in this batch asks
        where the consumer stands (a local call): only markers may be left before its end."""
        done = {p: ends for p, o in positions.items() if o >= (ends := self._ends[p])}
        quiet = [TopicPartition(self.topic, p) for p in todo if p not in positions]
        if quiet:
            done.update(
                {
                    tp.partition: self._ends[tp.partition]
                    for tp in self._consumer.position(quiet)
                    if tp.offset >= self._ends[tp.partition]
                }
            )
        todo.difference_update(done)
        return done


class Fetcher:
    """Reads the records at given coordinates of one topic, `read_committed`, with one consumer
    for as many calls as its caller makes: nearby offsets are read in one pass, farther ones
    (more than `gap` ahead) after a seek. Asked in partition then offset order, as the index
    lists them, every record is read once; an offset behind the read position seeks back.
    Offsets that hold no record (deleted by retention, a marker, aborted) are skipped. Use as a
    context manager; RuntimeFailure when a read stalls short of its partition's end."""

    def __init__(self, conf: KafkaConf, topic: str, gap: int = 500) -> None:
        self.topic, self.gap = topic, gap
        self._consumer = _consumer(conf, 1)  # one partition at a time
        self._marks: dict[int, tuple[int, int]] = {}
        self._partition = -1
        self._start = self._read_to = 0  # offset assigned; offset after the last one read
        self._buffer: list[Message] = []  # the last batch read, in offset order
        self._next = 0  # index of the first buffered message not yet passed

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *_: object) -> None:
        self._consumer.close()

    def consumed(self, coordinates: Iterable[tuple[int, int]]) -> Iterator[Consumed]:
        """The records at (partition, offset) `coordinates`, as `dlq` shows them."""
        for msg in self._messages(coordinates):
            yield as_consumed(self.topic, msg, msg.partition() or 0, msg.offset() or 0)

    def fetched(self, coordinates: Iterable[tuple[int, int]]) -> Iterator[Fetched]:
        """The records at (partition, offset) `coordinates`, without their headers (None):
        what a fix reads of a dead letter the index already knows."""
        for msg in self._messages(coordinates):
            ts = msg.timestamp()[1]
            yield (msg.partition() or 0, msg.offset() or 0, ts, msg.key(), msg.value(), None)

    def _messages(self, coordinates: Iterable[tuple[int, int]]) -> Iterator[Message]:
        at = self._at
        for partition, offset in coordinates:
            low, high = self._watermarks(partition)
            if low <= offset < high and (msg := at(partition, offset, high)) is not None:
                yield msg

    def _watermarks(self, partition: int) -> tuple[int, int]:
        marks = self._marks.get(partition)
        if marks is None:
            tp = TopicPartition(self.topic, partition)
            low, high = self._consumer.get_watermark_offsets(tp, timeout=_TIMEOUT_S)
            marks = self._marks[partition] = (low, high)
        return marks

    def _at(self, partition: int, offset: int, high: int) -> Message | None:
        """The message at `offset`, or None when that offset holds no record."""
        if (
            partition != self._partition
            or offset < self._start
            or (offset - self._read_to > self.gap)
        ):
            self._seek(partition, offset)
        while True:
            buffer, index = self._buffer, self._next
            while index < len(buffer):
                found = buffer[index].offset() or 0
                if found >= offset:
                    self._next = index + 1 if found == offset else index
                    return buffer[index] if found == offset else None
                index += 1
            if not self._read(high):
                return None

    def _seek(self, partition: int, offset: int) -> None:
        self._consumer.assign([TopicPartition(self.topic, partition, offset)])
        self._partition, self._start, self._read_to = partition, offset, offset
        self._buffer, self._next = [], 0

    def _read(self, high: int) -> bool:
        """The next batch of the assigned partition into the buffer; False at its end."""
        tp = TopicPartition(self.topic, self._partition)
        last_move = time.monotonic()
        while True:
            messages = [m for m in take_ready(self._consumer, BATCH, POLL_S) if not m.error()]
            if messages:
                self._buffer, self._next = messages, 0
                self._read_to = (messages[-1].offset() or 0) + 1
                return True
            if self._consumer.position([tp])[0].offset >= high:
                self._buffer, self._next, self._read_to = [], 0, high
                return False
            if time.monotonic() - last_move > STALL_S:
                raise RuntimeFailure(f"reading {self.topic}/{self._partition} stalled")


Wanted = Iterator[tuple[int, T]]
"""One partition's wanted offsets, increasing, each with what the caller tags it with."""


def fetch_scattered(
    conf: KafkaConf, topic: str, wanted: Mapping[int, Wanted[T]], gap: int = 500
) -> Iterator[tuple[T, Fetched]]:
    """The records at the `wanted` offsets of every partition at once, each with its tag, as
    they arrive (partitions interleaved; offsets in order within one), without headers (None).
    Every partition is read at the same time, as a scan reads them (one partition after the
    other took twice as long: each fetch brought one partition's records); one moving more
    than `gap` ahead of where it reads seeks. Offsets that hold no record (deleted by
    retention, a marker, aborted) are skipped; the offsets are pulled as needed, so memory
    stays bounded. RuntimeFailure when no partition moves for STALL_S."""
    consumer = _consumer(conf, len(wanted))
    try:
        yield from _Scattered(consumer, topic, wanted, gap).run()
    finally:
        consumer.close()


class _Scattered(Generic[T]):
    """`fetch_scattered`'s state: per partition, the next wanted (offset, tag) and its end."""

    def __init__(
        self, consumer: Consumer, topic: str, wanted: Mapping[int, Wanted[T]], gap: int
    ) -> None:
        self.consumer, self.topic, self.gap = consumer, topic, gap
        self.streams = dict(wanted)
        self.heads: dict[int, tuple[int, T]] = {}
        self.marks: dict[int, tuple[int, int]] = {}
        for partition in self.streams:
            tp = TopicPartition(topic, partition)
            self.marks[partition] = consumer.get_watermark_offsets(tp, timeout=_TIMEOUT_S)
            self._advance(partition, -1)

    def _advance(self, partition: int, past: int) -> tuple[int, T] | None:
        """The partition's next wanted offset above `past` within its marks (None: done)."""
        low, high = self.marks[partition]
        for offset, tag in self.streams[partition]:
            if offset >= high:
                break
            if offset > past and offset >= low:
                self.heads[partition] = (offset, tag)
                return offset, tag
        self.heads.pop(partition, None)
        return None

    def run(self) -> Iterator[tuple[T, Fetched]]:
        heads, consumer = self.heads, self.consumer
        consumer.assign([TopicPartition(self.topic, p, o) for p, (o, _) in heads.items()])
        read_to = {p: o for p, (o, _) in heads.items()}
        last_move = time.monotonic()
        while heads:
            messages = [m for m in take_ready(consumer, BATCH, POLL_S) if not m.error()]
            for msg in messages:
                p, o = msg.partition() or 0, msg.offset() or 0
                head = heads.get(p)
                if head is None or o < head[0]:
                    continue  # a partition done, or read before its seek
                read_to[p] = o + 1
                if o > head[0]:  # no record at the wanted offsets before this one
                    head = self._advance(p, o - 1)
                if head is not None and head[0] == o:
                    yield head[1], (p, o, msg.timestamp()[1], msg.key(), msg.value(), None)
                    self._advance(p, o)
            if messages:
                last_move = time.monotonic()
            elif time.monotonic() - last_move > STALL_S:
                raise RuntimeFailure(f"reading {self.topic} stalled short of its end")
            self._steer(read_to)

    def _steer(self, read_to: dict[int, int]) -> None:
        """Seek partitions whose next wanted offset is far ahead of where they read; finish
        (pause) those that reached their end or have nothing more wanted."""
        heads, consumer = self.heads, self.consumer
        done = [p for p in read_to if p not in heads]
        for p, (offset, _) in list(heads.items()):
            if offset - read_to[p] > self.gap:
                consumer.seek(TopicPartition(self.topic, p, offset))
                read_to[p] = offset
        quiet = [TopicPartition(self.topic, p) for p in heads]
        for tp in consumer.position(quiet) if quiet else ():
            if tp.offset >= self.marks[tp.partition][1]:  # only markers were left
                heads.pop(tp.partition, None)
                done.append(tp.partition)
        if done:
            consumer.pause([TopicPartition(self.topic, p) for p in done])
            for p in done:
                read_to.pop(p, None)


def next_timestamps(
    conf: KafkaConf, topic: str, starts: Mapping[int, int], ends: Mapping[int, int]
) -> dict[int, int | None]:
    """Per partition, the timestamp (ms) of the first record a read_committed reader gets at or
    after `starts[p]` and before `ends[p]`; None when there is none (only markers or aborted
    records are left: a caught-up group). One consumer, one pass, at most STALL_S."""
    todo = {p for p in starts if starts[p] < ends.get(p, 0)}
    found: dict[int, int | None] = {p: None for p in starts}
    if not todo:
        return found
    consumer = _consumer(conf)
    try:
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(todo)])
        deadline = time.monotonic() + STALL_S
        while todo and time.monotonic() < deadline:
            messages = take_ready(consumer, len(todo), POLL_S)
            for msg in messages:
                p, o = msg.partition() or 0, msg.offset() or 0
                if msg.error() is None and p in todo:
                    if o < ends[p]:
                        found[p] = msg.timestamp()[1]
                    todo.discard(p)
                    consumer.pause([TopicPartition(topic, p)])
            if not messages and todo:
                for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                    if tp.offset >= ends[tp.partition]:
                        todo.discard(tp.partition)
    finally:
        consumer.close()
    return found


__all__ = [
    "Cluster", "Fetched", "Fetcher", "Follower", "Marks", "TopicMeta", "fetch_scattered",
    "next_timestamps",
]  # fmt: skip
