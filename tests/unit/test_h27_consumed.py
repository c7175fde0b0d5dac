"""`dlqio.as_consumed`: a fetched record as `dlq` shows it, the one builder behind
`TopicReader` (reading a DLQ) and `follow.Fetcher` (fetching dead letters the index points at)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    Message,
)

from pipeline.core.contract import SourceRecord
from pipeline.kafka.dlqio import Consumed, TopicReader, as_consumed
from pipeline.kafka.follow import Fetcher

HEADERS = [("dlq.error.category", b"validation"), ("empty", None)]


def message(offset: int, kind: int = TIMESTAMP_CREATE_TIME, ts: int = 1_760_000_000_000) -> Message:
    return Message(
        topic="t.dlq",
        partition=2,
        offset=offset,
        key=b"k",
        value=b"v",
        headers=list(HEADERS),
        timestamp=(kind, ts),
    )


@pytest.mark.parametrize(
    ("kind", "ts", "tstype", "stamp"),
    [
        (TIMESTAMP_CREATE_TIME, 1_760_000_000_000, "create", 1_760_000_000_000),
        (TIMESTAMP_LOG_APPEND_TIME, 5, "logappend", 5),
        (TIMESTAMP_NOT_AVAILABLE, -1, "unknown", 0),
    ],
)
def test_a_record_with_kcats_timestamp_type(kind: int, ts: int, tstype: str, stamp: int) -> None:
    got = as_consumed("t.dlq", message(7, kind, ts), 2, 7)
    assert got == Consumed(SourceRecord("t.dlq", 2, 7, stamp, b"k", b"v", tuple(HEADERS)), tstype)


def test_the_reader_and_the_fetcher_show_a_record_alike() -> None:
    reader = object.__new__(TopicReader)
    reader.topic, reader.ends = "t.dlq", {2: 100}
    from_reader = reader._accept(message(7), {2})

    class _Fetcher(Fetcher):
        def _messages(self, coordinates: Iterable[tuple[int, int]]) -> Iterator[Message]:
            return iter([message(o) for _, o in coordinates])

    fetcher = object.__new__(_Fetcher)
    fetcher.topic = "t.dlq"
    expected = as_consumed("t.dlq", message(7), 2, 7)
    assert list(fetcher.consumed([(2, 7)])) == [from_reader] == [expected]
