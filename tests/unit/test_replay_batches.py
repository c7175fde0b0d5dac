"""The batch replay (`reprocessor.replay_batches`) writes exactly what the contract's replay writes
record by record (the former per-record path, kept here as the reference): the same copies
(topic, key, value, headers) and ledger records in the same transactions, the
same refusals and tally, over a DLQ mixing well-formed, held, foreign, malformed and tombstone
dead letters, loop protection, changed and vanished dead letters, records the plan did not
select, ledger entries (valid and stale) and batches of every size."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.core import contract
from pipeline.core.contract import Failure, Header, SourceRecord, build_dead_letter
from pipeline.core.dialects import CONNECT_PREFIX
from pipeline.errors import Category
from pipeline.kafka.dlqio import RecordBatch
from reprocessor import plans
from reprocessor.deadletters import DeadLetter, from_record
from reprocessor.ledger import Ledger, Plan, ledger_record, replayed_entry
from reprocessor.replay import (
    Copy,
    Pacer,
    Recipe,
    Refusal,
    Refused,
    Run,
    Tally,
    Target,
    TargetMode,
)
from reprocessor.replay_batches import Copies, PlanMatch, Slow, copies_of, replay_batches
from reprocessor.replay_columns import uniform_lineage
from reprocessor.replay_run import _checked, _letter

TOPIC = "orders.dlq"


class Sink:
    """A TxnSink that records every transaction's sends."""

    def __init__(self) -> None:
        self.transactions: list[list[tuple[str, bytes | None, bytes | None, list[Header]]]] = []
        self.open: list[tuple[str, bytes | None, bytes | None, list[Header]]] = []

    def init(self) -> None:
        pass

    def begin(self) -> None:
        self.open = []

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[Header]
    ) -> int:
        self.open.append((topic, key, value, list(headers)))
        return len(self.open) - 1

    def send_chunk(self, topics: Any, keys: Any, values: Any, headers: Any) -> None:
        for row in zip(topics, keys, values, headers, strict=True):
            self.send(*row)

    def send_all(self, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
        for key, value in records:
            self.send(topic, key, value, [])

    def flush(self) -> list[str]:
        return [f"{topic}/0/{i}" for i, (topic, *_) in enumerate(self.open)]

    def commit(self) -> None:
        self.transactions.append(self.open)


class Hooks:
    def __init__(self) -> None:
        self.refusals: list[tuple[str, str]] = []
        self.checked: list[set[str]] = []

    def refused(self, refusal: Refusal | Refused) -> None:
        self.refusals.append((refusal.coordinates, refusal.reason))

    def check_targets(self, topics: set[str]) -> None:
        self.checked.append(topics)


def ignore(count: int) -> None:
    """Progress that shows nothing."""


class Sevens(Pacer):
    """Full speed, in chunks of 7 copies (many transactions, chunks across batches)."""

    @property
    def chunk(self) -> int:
        return 7


UNIFORM_KINDS = (0, 1, 2, 4, 5)
"""Dead letters of one header layout: well-formed, of another pipeline, loop-protected."""


def dead_letter(offset: int, uniform: bool = False) -> tuple[bytes | None, list[Header]]:
    """The value and headers of the DLQ record at `offset`, of a kind chosen by the offset;
    `uniform`: of `UNIFORM_KINDS` only, every one with an original header (one layout)."""
    kind = UNIFORM_KINDS[offset % 5] if uniform else offset % 9
    traced = uniform or offset % 2
    originals: tuple[Header, ...] = (("trace", b"t-%d" % offset),) if traced else ()
    record = SourceRecord("orders", offset % 3, offset, 1_000, b"k", b"{}", originals)
    why = Failure(
        Category.VALIDATION,
        "E",
        f"bad {offset % 4}",
        5_000 + offset,
        "orders-app" if kind != 4 else "other-app",
        policy_rule="hold-eu" if kind == 3 else None,
    )
    headers = list(build_dead_letter(record, why))
    if kind == 5:  # replayed three times already: loop protection
        headers = [(n, b"3" if n == contract.REPLAY_COUNT else v) for n, v in headers]
    if kind == 6:  # foreign (Kafka Connect)
        headers = [("trace", b"x"), (f"{CONNECT_PREFIX}topic", b"orders")]
    if kind == 7:  # malformed: a fingerprint that is not one
        headers = [(n, b"zz" if n == contract.ERROR_FINGERPRINT else v) for n, v in headers]
    value = None if kind == 8 else b'{"n": %d}' % offset  # a tombstone
    return value, headers


def records(partition: int, offsets: Sequence[int], uniform: bool = False) -> list[SourceRecord]:
    out = []
    for offset in offsets:
        value, headers = dead_letter(offset, uniform)
        ts = 6_000 + offset
        out.append(
            SourceRecord(TOPIC, partition, offset, ts, b"k%d" % offset, value, tuple(headers))
        )
    return out


def as_letter(r: SourceRecord) -> DeadLetter:
    return from_record(TOPIC, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)


def write_plan(folder: Path, dlq: list[SourceRecord], hashed: bool) -> plans.StoredPlan:
    """Plan most records (every seventh is left out), a few with another fingerprint than the
    DLQ now holds (changed), and offsets the DLQ no longer has (gone)."""
    plan = Plan("r-1", TOPIC, 1, "ops", "to", "out", ())
    held = {(r.partition, r.offset) for r in dlq}
    with plans.PlanWriter(folder, plan) as writer:
        for r in sorted(dlq, key=lambda r: (r.partition, r.offset)):
            if r.offset % 7 == 3:
                continue
            dl = as_letter(r)
            if r.offset % 11 == 5:
                dl = replace(dl, fingerprint="0123456789abcdef")
            writer.add(dl, r.value, "out", hashed=hashed)
            if (r.partition, r.offset + 1) not in held and r.offset % 2:  # a gap of the DLQ
                gone = replace(dl, offset=r.offset + 1)
                writer.add(gone, r.value, "out", hashed=hashed)
        tail = replace(as_letter(dlq[-1]), offset=dlq[-1].offset + 10)
        writer.add(tail, None, "out", hashed=hashed)  # gone after the end of the read
    return plans.load(folder, "r-1")


def per_record(
    stored: plans.StoredPlan, dlq: list[SourceRecord], recipe: Recipe
) -> Iterator[Copy | Refused]:
    """What the per-record replay read from the plan and the DLQ (the former
    `planned_results`, without the oversize re-read)."""
    entries = {(p, e.offset): e for p in stored.partitions() for e in stored.entries(p)}
    seen = {(r.partition, r.offset) for r in dlq}
    for r in dlq:
        for p, o in sorted(entries):
            if p == r.partition and o < r.offset and (p, o) not in seen:
                yield Refused(f"{TOPIC}/{p}/{o}", "gone")
                del entries[(p, o)]
        entry = entries.pop((r.partition, r.offset), None)
        if entry is not None:
            yield _checked(_letter(r), entry, recipe)
    for p, o in sorted(entries):
        yield Refused(f"{TOPIC}/{p}/{o}", "gone")


def reference_replay(
    sink: Sink, results: Iterable[Copy | Refused], ledger: Ledger, hooks: Hooks, size: int = 7
) -> Tally:
    """The contract's replay, record by record (the former `Run.replay_stream`): refusals
    reported, copies of decided dead letters skipped, then per chunk of `size`: its targets
    checked, begin, its copies, flush, a ledger entry per copy (`replayed_entry` encoded by the
    codec, naming the copy's target), commit."""
    tally, todo = Tally(), []
    for result in results:
        if not isinstance(result, Copy):
            hooks.refused(result)
        elif ledger.decision(result.dl).entry is not None:
            tally.skipped += 1
        else:
            todo.append(result)
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        hooks.check_targets({copy.topic for copy in chunk})
        sink.begin()
        for copy in chunk:
            sink.send(copy.topic, copy.key, copy.value, copy.headers)
        targets = sink.flush()
        entries = [
            replayed_entry(copy.dl, run="r-1", operator="ops", target=target, at_ms=9)
            for copy, target in zip(chunk, targets, strict=True)
        ]
        sink.send_all(
            f"{TOPIC}.ledger",
            [ledger_record(c.dl, e) for c, e in zip(chunk, entries, strict=True)],
        )
        sink.commit()
        for copy in chunk:
            tally.by_target[copy.topic] = tally.by_target.get(copy.topic, 0) + 1
        tally.done += len(chunk)
    return tally


def batches_of(dlq: list[SourceRecord], size: int) -> Iterator[RecordBatch]:
    for start in range(0, len(dlq), size):
        yield RecordBatch.of(TOPIC, dlq[start : start + size])


def slow(recipe: Recipe) -> Slow:
    def one(r: SourceRecord, entry: plans.Entry) -> Copy | Refused:
        return _checked(_letter(r), entry, recipe)

    return one


def the_dlq(uniform: bool = False) -> list[SourceRecord]:
    """Two partitions interleaved in runs, offsets with gaps (markers, aborted records)."""
    p0 = records(0, [o for o in range(0, 160) if o % 13 != 3], uniform)
    p1 = records(1, [o for o in range(1000, 1090) if o % 5 != 4], uniform)
    merged: list[SourceRecord] = []
    while p0 or p1:
        merged += p0[:17] + p1[:9]
        p0, p1 = p0[17:], p1[9:]
    return merged


def a_ledger(dlq: list[SourceRecord]) -> Ledger:
    """Decisions by another run: valid for some dead letters, stale for others."""
    ledger = Ledger(TOPIC)
    for r in dlq[::10]:
        dl = as_letter(r)
        entry = replayed_entry(dl, run="r-0", operator="ops", target="out/0/1", at_ms=1)
        if r.offset % 20 == 0:
            entry = replace(entry, failed_at=1)  # left by a recreated topic: stale
        ledger.record(dl.coordinates, entry)
    return ledger


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("size", [1, 7, 64, 1000])
@pytest.mark.parametrize("hashed", [False, True])
@pytest.mark.parametrize("decided", [False, True])
@pytest.mark.parametrize(
    "target",
    [
        Target(TargetMode.TO, "out"),
        Target(TargetMode.REDRIVE, None, frozenset({"orders-app.redrive"})),
        Target(TargetMode.SOURCE),
    ],
)
def test_the_batch_replay_writes_what_the_per_record_replay_wrote(
    tmp_path: Path, size: int, hashed: bool, decided: bool, target: Target, uniform: bool
) -> None:
    dlq = the_dlq(uniform)
    stored = write_plan(tmp_path, dlq, hashed)
    recipe = Recipe(run="r-1", target=target, max_replays=3)
    before_sink, before_hooks = Sink(), Hooks()
    ledger = a_ledger(dlq) if decided else Ledger(TOPIC)
    before = reference_replay(before_sink, per_record(stored, dlq, recipe), ledger, before_hooks)

    after_sink, after_hooks = Sink(), Hooks()
    after_run = Run(after_sink, f"{TOPIC}.ledger", "r-1", "ops", clock=lambda: 9)
    match = PlanMatch(stored)

    def batches() -> Iterator[tuple[Copies, list[Refused]]]:
        for batch in batches_of(dlq, size):
            planned, _ = match.match(batch)
            copies, refused = copies_of(batch, planned, recipe, slow(recipe))
            yield copies, planned.gone + refused
        yield Copies(), list(match.rest())

    ledger = a_ledger(dlq) if decided else Ledger(TOPIC)
    after = replay_batches(after_run, batches(), ledger, Sevens(None), ignore, after_hooks)

    def order(sink: Sink) -> list[list[str]]:
        return [[(h[-2][1] or b"").decode() for *_, h in t if h] for t in sink.transactions]

    assert order(after_sink) == order(before_sink)
    assert after_sink.transactions == before_sink.transactions
    assert (after.done, after.skipped, after.by_target) == (
        before.done,
        before.skipped,
        before.by_target,
    )
    gone = "no longer in the DLQ (deleted by retention, or the topic recreated)"
    expected = sorted((c, gone if r == "gone" else r) for c, r in before_hooks.refusals)
    assert sorted(after_hooks.refusals) == expected
    assert after_hooks.checked == before_hooks.checked
    assert before.done > 0 and len(expected) > 5
    kinds = {reason.split(" ")[0] for _, reason in expected}
    assert {"loop", "changed", "no"} <= kinds
    if uniform:  # the batches were read by `replay_columns`, not record by record
        assert uniform_lineage([list(r.headers) for r in dlq[:size]]) is not None
