"""Discards (`Run.discard`) and replays (`replay_batches`) against a recording sink: they stream
their input a chunk at a time (never the whole selection in memory), and each chunk's ledger
entries are the codec's."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import pytest

from pipeline.core.contract import Failure, Header, SourceRecord, build_dead_letter
from pipeline.core.ledger_codec import decode_ledger_entry
from pipeline.errors import Category
from pipeline.kafka.dlqio import TransactionAborted
from reprocessor.deadletters import DeadLetter, from_record
from reprocessor.index_rows import fast_row, letter_of
from reprocessor.ledger import Ledger
from reprocessor.payloads import Fixed
from reprocessor.replay import (
    CHUNK,
    Copy,
    Pacer,
    Recipe,
    Refused,
    Run,
    Target,
    TargetMode,
    prepare,
)
from reprocessor.replay_batches import Copies, replay_batches
from reprocessor.replay_run import _letter, slim

Sent = tuple[str, bytes | None, bytes | None]  # topic, key, value


class RecordingSink:
    """A TxnSink that logs what happens, and how many inputs had been pulled at each commit."""

    def __init__(self, pulled: list[int]) -> None:
        self.pulled = pulled
        self.events: list[tuple[str, Sent | int | None]] = []  # kind, what
        self.open: list[str] = []

    def init(self) -> None:
        self.events.append(("init", None))

    def begin(self) -> None:
        self.open = []

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Header]
    ) -> int:
        self.events.append(("send", (topic, key, value)))
        self.open.append(topic)
        return len(self.open) - 1

    def send_chunk(
        self,
        topics: Sequence[str],
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        headers: Sequence[list[Header]],
    ) -> None:
        for row in zip(topics, keys, values, headers, strict=True):
            self.send(*row)

    def send_all(self, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
        for key, value in records:
            self.send(topic, key, value, [])

    def flush(self) -> list[str]:
        return [f"{topic}/0/{i}" for i, topic in enumerate(self.open)]

    def commit(self) -> None:
        self.events.append(("commit", self.pulled[0]))


def letter(offset: int) -> DeadLetter:
    record = SourceRecord("orders", 0, offset, 1_000, b"k", b"{}", ())
    why = Failure(Category.VALIDATION, "E", "bad", 5_000, "orders-app")
    headers = build_dead_letter(record, why)
    return from_record("orders.dlq", offset % 2, offset, 6_000, b"k", b"v", headers)


def counted(count: int, pulled: list[int]) -> Iterator[DeadLetter]:
    for offset in range(count):
        pulled[0] += 1
        yield letter(offset)


def ignore(count: int) -> None:
    """A progress callback that shows nothing."""


def commits(sink: RecordingSink) -> list[int]:
    return [pulled for kind, pulled in sink.events if kind == "commit" and isinstance(pulled, int)]


def sent_by(sink: RecordingSink) -> list[Sent]:
    return [sent for kind, sent in sink.events if kind == "send" and isinstance(sent, tuple)]


def test_a_discard_pulls_at_most_one_chunk_ahead_of_its_transactions() -> None:
    pulled = [0]
    sink = RecordingSink(pulled)
    run = Run(sink, "orders.dlq.ledger", "r-1", "ops", clock=lambda: 7)
    tally = run.discard(counted(2 * CHUNK + 5, pulled), "never valid", Ledger("orders.dlq"), ignore)
    assert tally.done == 2 * CHUNK + 5
    assert commits(sink) == [CHUNK, 2 * CHUNK, 2 * CHUNK + 5]


class Hooks:
    def refused(self, refusal: object) -> None:
        raise AssertionError(refusal)

    def check_targets(self, topics: set[str]) -> None:
        assert topics == {"out"}


def one_by_one(
    count: int, pulled: list[int], recipe: Recipe
) -> Iterator[tuple[Copies, list[Refused]]]:
    """Batches of one copy each, counted as they are pulled."""
    for dl in counted(count, pulled):
        result = prepare(dl, recipe)
        assert isinstance(result, Copy)
        batch = Copies()
        batch.add(result)
        yield batch, []


def test_a_replay_writes_a_chunk_then_its_ledger_entries_one_chunk_behind_the_reading() -> None:
    """Each transaction holds its chunk's copies, then their ledger entries; it is committed
    while the next chunk is read, and before that chunk's transaction begins: at most two
    chunks are ever held."""
    pulled = [0]
    sink = RecordingSink(pulled)
    run = Run(sink, "orders.dlq.ledger", "r-1", "ops", clock=lambda: 7)
    recipe = Recipe(run="r-1", target=Target(TargetMode.TO, "out"), fix_description=("set a",))
    batches = one_by_one(3 * CHUNK + 3, pulled, recipe)
    tally = replay_batches(
        run, batches, Ledger("orders.dlq"), Pacer(None), ignore, Hooks(), ("set a",)
    )
    assert tally.done == 3 * CHUNK + 3
    # chunk i is sent once (i + 1) * CHUNK dead letters are pulled, and committed before the
    # next chunk is sent (the last two once all 3 * CHUNK + 3 are)
    sent = [CHUNK, 2 * CHUNK, 3 * CHUNK, 3 * CHUNK + 3, 3 * CHUNK + 3]
    done = commits(sink)
    assert len(done) == 4
    assert all(sent[i] <= pulled_at <= sent[i + 1] for i, pulled_at in enumerate(done)), done
    sends = sent_by(sink)
    assert [topic for topic, _, _ in sends[: 2 * CHUNK]] == ["out"] * CHUNK + [
        "orders.dlq.ledger"
    ] * CHUNK
    key, value = sends[CHUNK][1], sends[CHUNK][2]
    assert key == b"orders.dlq/0/0" and value is not None
    decoded = decode_ledger_entry(value)
    assert (decoded.action, decoded.target, decoded.fix, decoded.at) == (
        "replayed",
        "out/0/0",
        ("set a",),
        7,
    )
    assert (decoded.failed_at, decoded.fingerprint) == (5_000, letter(0).fingerprint)


@pytest.mark.parametrize("error", [RuntimeError("reading failed"), KeyboardInterrupt()])
def test_a_failed_read_commits_the_open_transaction_then_fails(error: BaseException) -> None:
    """The chunk whose copies were sent is committed with its ledger entries (it is good work);
    what was read of the next chunk is not written; the reader's error (or Ctrl-C) goes on."""
    pulled = [0]
    sink = RecordingSink(pulled)
    run = Run(sink, "orders.dlq.ledger", "r-1", "ops", clock=lambda: 7)
    recipe = Recipe(run="r-1", target=Target(TargetMode.TO, "out"))

    def failing() -> Iterator[tuple[Copies, list[Refused]]]:
        yield from one_by_one(CHUNK + 5, pulled, recipe)
        raise error

    with pytest.raises(type(error)):
        replay_batches(run, failing(), Ledger("orders.dlq"), Pacer(None), ignore, Hooks())
    [committed] = commits(sink)  # the chunk sent at CHUNK, committed before the error left
    assert CHUNK <= committed <= CHUNK + 5
    sends = sent_by(sink)
    assert len(sends) == 2 * CHUNK  # the first chunk's copies and ledger entries, no more


def test_a_fix_summary_keeps_no_payloads() -> None:
    """Past the first ten records, `dlq fix` keeps only what its summary reads."""
    fixed = Fixed({"qty": 0}, {"qty": 1}, b'{"qty":1}', ["~ qty: 0 → 1"], None, True)
    dl, kept = slim((letter(3), fixed))
    assert (dl.key, dl.value, dl.headers) == (None, None, ())
    assert (kept.before, kept.after, kept.value) == (None, None, None)
    assert (dl.coordinates, kept.diff, kept.error, kept.checked) == (
        "orders.dlq/1/3",
        ["~ qty: 0 → 1"],
        None,
        True,
    )


@pytest.mark.parametrize("rule", [None, "hold-eu"])
def test_a_replayed_record_reads_as_the_index_letter_with_its_payload(rule: str | None) -> None:
    """The replay's one-call dead letter equals the index's letter completed with the record's
    key, value and headers (what it replaced), held ones (a policy rule) included."""
    record = SourceRecord("orders", 2, 9, 1_000, b"k", b"{}", (("trace", b"t"),))
    why = Failure(Category.VALIDATION, "E", "bad", 5_000, "orders-app", policy_rule=rule)
    headers = tuple(build_dead_letter(record, why))
    dlq_record = SourceRecord("orders.dlq", 1, 4, 6_000, b"k", b"{}", headers)
    row = fast_row(1, 4, 6_000, b"{}", headers)
    assert row is not None
    expected = replace(letter_of("orders.dlq", row), key=b"k", value=b"{}", headers=headers)
    assert _letter(dlq_record) == expected
    assert (expected.meta is None) == (rule is None)


class SlowCommits(RecordingSink):
    """Commits that wait (as the broker's do), log begins, and may fail the first commit."""

    def __init__(self, pulled: list[int], fail: BaseException | None = None) -> None:
        super().__init__(pulled)
        self.fail = fail

    def begin(self) -> None:
        super().begin()
        self.events.append(("begin", None))

    def commit(self) -> None:
        time.sleep(0.01)  # the reading goes on meanwhile
        if self.fail is not None:
            raise self.fail
        super().commit()


def test_a_transaction_begins_only_after_the_one_before_it_committed() -> None:
    pulled = [0]
    sink = SlowCommits(pulled)
    run = Run(sink, "orders.dlq.ledger", "r-1", "ops", clock=lambda: 7)
    recipe = Recipe(run="r-1", target=Target(TargetMode.TO, "out"))
    batches = one_by_one(3 * CHUNK + 3, pulled, recipe)
    tally = replay_batches(run, batches, Ledger("orders.dlq"), Pacer(None), ignore, Hooks())
    assert tally.done == 3 * CHUNK + 3
    assert [kind for kind, _ in sink.events if kind != "send"] == ["begin", "commit"] * 4


def test_a_commit_failing_in_the_background_stops_the_replay() -> None:
    """The failure is raised where the next transaction would begin: none does, nothing more
    is counted as done."""
    pulled = [0]
    sink = SlowCommits(pulled, fail=TransactionAborted("rolled back"))
    run = Run(sink, "orders.dlq.ledger", "r-1", "ops", clock=lambda: 7)
    recipe = Recipe(run="r-1", target=Target(TargetMode.TO, "out"))
    done: list[int] = []
    with pytest.raises(TransactionAborted):
        replay_batches(
            run, one_by_one(3 * CHUNK, pulled, recipe), Ledger("orders.dlq"), Pacer(None),
            done.append, Hooks(),
        )  # fmt: skip
    assert [kind for kind, _ in sink.events if kind == "begin"] == ["begin"]
    assert done == []
