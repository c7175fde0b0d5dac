"""The fault suite's accounting checker: where did every input go? Always re-read from the topics
(`read_committed`), never taken from a worker's counters.

Terms as in Jepsen's queue checkers and Kafka's system tests (verifiable producer/consumer):

- **lost**: an input in neither the output nor the DLQ although a later input of the same source
  partition is in one of them (the worker moved past it);
- **unseen**: an input in neither, with nothing later of its partition routed either (it was never
  reached: the run ended before the worker got there, which a finished run must not show);
- **duplicated**: extra copies of an input in output or DLQ (a record both forwarded and
  dead-lettered counts too);
- **unexpected**: a routed record that is no input (a phantom; always a bug).

Each fault is recorded as a window: the group's committed offsets when it struck (`low`) and the
position the workers had reached by then (`high`, one past the highest source offset routed,
aborted transactions included; at check time also every record a worker had produced by the
window's end (its CreateTime) that landed later, e.g. a request in flight while the broker was
frozen). An at-least-once duplicate is legitimate only inside one window:
`low <= offset < high` on its source partition. Anything else is a bug, and `check` says which.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import KafkaException

from tests.kit import SEQ, Rec, committed_offsets, read_all

T = TypeVar("T")


def patiently(read: Callable[[], T], tries: int = 20) -> T:
    """A read that a broker just restarted (or continued) may refuse for a moment
    (NOT_LEADER_FOR_PARTITION, a loading coordinator, a partition error): try again."""
    for _ in range(tries - 1):
        try:
            return read()
        except (KafkaException, AssertionError):
            time.sleep(1.0)
    return read()


Coordinates = tuple[int, int]  # source partition, offset


@dataclass(frozen=True)
class Window:
    kind: str
    low: dict[int, int]
    high: dict[int, int]
    until_ms: int = 0  # wall clock when the fault's effects ended (0: `high` is final)

    def covers(self, at: Coordinates) -> bool:
        partition, offset = at
        return self.low.get(partition, 0) <= offset < self.high.get(partition, 0)


@dataclass
class Report:
    scenario: str
    mode: str
    records: int
    lost: list[Coordinates]
    unseen: list[Coordinates]
    duplicated: dict[tuple[int, ...], int]  # Coordinates; (run, *Coordinates) when merged
    unexpected: int
    outside: list[Coordinates]  # duplicates no fault window explains
    faults: int
    evidence: str = ""  # for duplicates outside every window: the windows and each copy

    @property
    def copies(self) -> int:
        return sum(self.duplicated.values())

    def summary(self) -> str:
        return (
            f"{self.scenario} ({self.mode}): {self.records} records, {len(self.lost)} lost, "
            f"{self.copies} duplicated, {len(self.unseen)} unseen, {self.unexpected} unexpected, "
            f"{len(self.outside)} duplicates outside every fault window, {self.faults} faults"
        )

    def assert_holds(self) -> None:
        """Exactly-once: nothing lost, nothing duplicated. At-least-once: nothing lost, and each
        duplicate inside a fault's window (last commit .. position at the fault)."""
        problems = []
        if self.lost or self.unseen:
            problems.append(f"lost {self.lost[:10]} unseen {self.unseen[:10]}")
        if self.unexpected:
            problems.append(f"{self.unexpected} routed records that are no input")
        if self.mode == "exactly-once" and self.duplicated:
            problems.append(f"duplicates under read_committed: {list(self.duplicated)[:10]}")
        if self.outside:
            problems.append(
                f"duplicates outside every fault window: {self.outside[:10]}\n{self.evidence}"
            )
        assert not problems, self.summary() + ": " + "; ".join(problems)


@dataclass
class Checker:
    """Accounting of one scenario's pipeline: `sources` in, `output` and `dlq` out."""

    bootstrap: str
    group: str
    sources: list[str]
    output: str
    dlq: str
    partitions: int
    windows: list[Window] = field(default_factory=list)
    _inputs: dict[bytes, tuple[str, Coordinates]] | None = None

    def inputs(self) -> dict[bytes, tuple[str, Coordinates]]:
        """Each input's identity (its `test.seq` header) -> its source coordinates (read once:
        the suite produces every input before the first fault)."""
        if self._inputs is None:
            found: dict[bytes, tuple[str, Coordinates]] = {}
            for topic in self.sources:
                for rec in patiently(functools.partial(read_all, self.bootstrap, topic)):
                    found[rec.header(SEQ) or b""] = (topic, (rec.partition, rec.offset))
            self._inputs = found
        return self._inputs

    def routed(self, isolation: str = "read_committed") -> list[Rec]:
        return patiently(
            lambda: (
                read_all(self.bootstrap, self.output, isolation)
                + read_all(self.bootstrap, self.dlq, isolation)
            )
        )

    def committed(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for topic in self.sources:
            got = patiently(
                functools.partial(
                    committed_offsets, self.bootstrap, self.group, topic, self.partitions
                )
            )
            out.update({(topic, p): max(o, 0) for p, o in got.items()})
        return out

    def position(self) -> dict[tuple[str, int], int]:
        """One past the highest source offset routed so far, per source partition, counting
        records of open and aborted transactions (what the workers had processed)."""
        inputs = self.inputs()
        high: dict[tuple[str, int], int] = {}
        for rec in self.routed("read_uncommitted"):
            found = inputs.get(rec.header(SEQ) or b"")
            if found is not None:
                topic, (partition, offset) = found
                key = (topic, partition)
                high[key] = max(high.get(key, 0), offset + 1)
        return high

    def mark(self, kind: str, low: dict[tuple[str, int], int] | None = None) -> None:
        """Record a fault window: committed offsets now (or `low`, read before the fault
        struck) up to the position reached now."""
        low = self.committed() if low is None else low
        high = self.position()
        until_ms = int(time.time() * 1000)
        for topic in self.sources:
            self.windows.append(
                Window(
                    f"{kind}:{topic}",
                    {p: o for (t, p), o in low.items() if t == topic},
                    {p: o for (t, p), o in high.items() if t == topic},
                    until_ms,
                )
            )

    def _final(self, windows: list[Window]) -> list[Window]:
        """Each window's `high` as far as the workers had got by its end, whenever their
        records landed: a produce request in flight when the broker froze can be delivered
        (idempotently retried) after the window was marked, so `position()` at the mark missed
        it. A routed record's CreateTime is when its worker produced it."""
        inputs = self.inputs()
        routed = [
            (found, rec.timestamp_ms)
            for rec in self.routed("read_uncommitted")
            if (found := inputs.get(rec.header(SEQ) or b"")) is not None
        ]
        final = []
        for w in windows:
            high = dict(w.high)
            for (topic, (partition, offset)), ts in routed:
                if w.kind.endswith(f":{topic}") and 0 < ts <= w.until_ms:
                    high[partition] = max(high.get(partition, 0), offset + 1)
            final.append(Window(w.kind, w.low, high))
        return final

    def all_committed(self) -> bool:
        """The group committed every input (offsets are dense in the non-transactional
        sources)."""
        ends = Counter(topic for topic, _ in self.inputs().values())
        got = Counter[str]()
        for (topic, _), offset in self.committed().items():
            got[topic] += offset
        return all(got[t] >= n for t, n in ends.items())

    def check(self, scenario: str, mode: str, faults: int) -> Report:
        inputs = self.inputs()
        copies = Counter(rec.header(SEQ) or b"" for rec in self.routed())
        unexpected = sum(n for seq, n in copies.items() if seq not in inputs)
        reached: dict[tuple[str, int], int] = {}
        for seq in copies:
            if seq in inputs:
                topic, (partition, offset) = inputs[seq]
                reached[(topic, partition)] = max(reached.get((topic, partition), -1), offset)
        lost: list[Coordinates] = []
        unseen: list[Coordinates] = []
        for seq, (topic, at) in inputs.items():
            if seq not in copies:
                (lost if at[1] < reached.get((topic, at[0]), -1) else unseen).append(at)
        duplicated: dict[tuple[int, ...], int] = {
            inputs[seq][1]: n - 1 for seq, n in copies.items() if n > 1 and seq in inputs
        }
        windows = self._final(self.windows) if duplicated else self.windows
        outside = [
            at
            for seq, n in copies.items()
            if n > 1 and seq in inputs
            for topic, at in [inputs[seq]]
            if not any(w.kind.endswith(f":{topic}") and w.covers(at) for w in windows)
        ]
        return Report(
            scenario,
            mode,
            len(inputs),
            sorted(lost),
            sorted(unseen),
            duplicated,
            unexpected,
            sorted(outside),
            faults,
            self._evidence(sorted(outside), windows) if outside else "",
        )

    def _evidence(self, outside: list[Coordinates], windows: list[Window]) -> str:
        """What a failing run needs explained: each window, and where and when (CreateTime)
        every copy of the first and last duplicates outside them landed."""
        inputs = self.inputs()
        wanted = {outside[0], outside[-1]}
        copies: dict[Coordinates, list[str]] = {at: [] for at in wanted}
        for rec in self.routed("read_uncommitted"):
            found = inputs.get(rec.header(SEQ) or b"")
            if found is not None and found[1] in wanted:
                copies[found[1]].append(
                    f"{rec.topic}/{rec.partition}/{rec.offset}@{rec.timestamp_ms}"
                )
        lines = [
            f"window {w.kind}: low {w.low} high {w.high} (at the mark {m.high}) until {m.until_ms}"
            for w, m in zip(windows, self.windows, strict=True)
        ]
        lines += [f"copies of {at}: {', '.join(c)}" for at, c in sorted(copies.items())]
        return "\n".join(lines)
