"""`clients.read_to_end` when a read_committed partition's last stable offset lags its end: the
markers of a transaction whose commit already returned are still being written (a replay's
copies read right after it came back short, 707 of 1,500, in the soak run), or a transaction
is still open. A scripted consumer plays the broker; the real broker's cases are in
tests/integration/test_h27_read_to_end.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from pipeline.kafka import clients


@dataclass
class _Msg:
    partition_: int
    offset_: int
    error_: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self.error_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_


def _eof(partition: int, offset: int) -> _Msg:
    return _Msg(partition, offset, KafkaError(KafkaError._PARTITION_EOF))


@dataclass
class _Scripted:
    """One partition ending at `end`: each poll plays the next step, a message or None (with
    the position the consumer then holds); past the script, polls return None."""

    end: int
    steps: list[tuple[_Msg | None, int]]
    position_now: int = 0
    polls: Iterator[tuple[_Msg | None, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.polls = iter(self.steps)

    stable: int | None = None
    """What a read_committed client is answered for the high watermark (the last stable
    offset, lagging the end right after a commit); None: the end."""
    isolation: str = "read_committed"

    def __call__(self, conf: dict[str, Any]) -> _Scripted:
        self.isolation = conf.get("isolation.level", "read_committed")
        return self

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions={0: None})})

    def get_watermark_offsets(self, _tp: TopicPartition, timeout: float) -> tuple[int, int]:
        committed = self.isolation == "read_committed" and self.stable is not None
        return 0, self.stable if committed and self.stable is not None else self.end

    def assign(self, _parts: list[TopicPartition]) -> None:
        pass

    def poll(self, _timeout: float) -> _Msg | None:
        msg, self.position_now = next(self.polls, (None, self.position_now))
        return msg

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.position_now) for tp in parts]

    def close(self) -> None:
        pass


def test_a_stable_offset_that_catches_up_is_read_past(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition EOF at offset 1 while the end is 4 (the markers of the transaction holding
    offsets 1-2 not yet written): the read goes on and returns all three records, then ends at
    the trailing commit marker (offset 3), which no record shows."""
    consumer = _Scripted(
        end=4,
        steps=[
            (_Msg(0, 0), 1),
            (_eof(0, 1), 1),
            (None, 1),
            (_Msg(0, 1), 2),
            (_Msg(0, 2), 3),
            (None, 4),
        ],
    )
    monkeypatch.setattr(clients, "Consumer", consumer)
    msgs = clients.read_to_end({}, "t", timeout_s=5, settle_s=5)
    assert [m.offset() for m in msgs] == [0, 1, 2]


def test_an_open_transaction_ends_the_read_after_settle_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stable offset never moves (a transaction still open): the read ends `settle_s` after
    it stopped the partition short, without its records and without a TimeoutError."""
    consumer = _Scripted(end=5, steps=[(_Msg(0, 0), 1), (_Msg(0, 1), 2), (_eof(0, 2), 2)])
    monkeypatch.setattr(clients, "Consumer", consumer)
    msgs = clients.read_to_end({}, "t", timeout_s=30, settle_s=0.05)
    assert [m.offset() for m in msgs] == [0, 1]


def test_a_read_short_of_its_end_within_the_timeout_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = _Scripted(end=5, steps=[(_Msg(0, 0), 1), (_eof(0, 1), 1)])
    monkeypatch.setattr(clients, "Consumer", consumer)
    with pytest.raises(TimeoutError, match="reading t did not reach its end"):
        clients.read_to_end({}, "t", timeout_s=0.3, settle_s=10)


def test_the_end_is_the_high_watermark_not_a_lagging_stable_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Right after a commit a read_committed client is answered the last stable offset (0
    here) for the high watermark: the partition looked empty and nothing was read."""
    consumer = _Scripted(
        end=3,
        stable=0,
        steps=[(_eof(0, 0), 0), (None, 0), (_Msg(0, 0), 1), (_Msg(0, 1), 2), (None, 3)],
    )
    monkeypatch.setattr(clients, "Consumer", consumer)
    msgs = clients.read_to_end({}, "t", timeout_s=5, settle_s=5)
    assert [m.offset() for m in msgs] == [0, 1]
