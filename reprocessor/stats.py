"""A DLQ as `dlq` reads it: its dead letters with their ledger decisions and, where needed, their
payloads decoded by the pipeline's own codecs (what every command works on); and the per-topic
statistics of `dlq stats`.

`scan` reads the DLQ topic once, up to the end offsets captured when it starts, never joining a
group nor committing (see `pipeline.kafka.dlqio`). Decoding payloads costs more than reading
headers, so it happens only when the selection, the grouping or the output needs it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.core.contract import ledger_topic
from pipeline.kafka import dlqio
from pipeline.kafka.dlqio import KafkaConf
from reprocessor.deadletters import DeadLetter, ReplayState, from_record
from reprocessor.grouping import Grouper, GroupRow
from reprocessor.ledger import Decision, Ledger
from reprocessor.payloads import Payload, Payloads
from reprocessor.selection import Selection


@dataclass(frozen=True, slots=True)
class Item:
    """One selected dead letter: its decision, its payload when decoded, kcat's tstype."""

    dl: DeadLetter
    decision: Decision
    payload: Payload | None = None
    tstype: str = "create"

    @property
    def state(self) -> ReplayState:
        return self.decision.state

    @property
    def decoded(self) -> object | None:
        """The decoded event for selection and grouping (None when not decoded)."""
        return None if self.payload is None else self.payload.event


@dataclass(frozen=True, slots=True)
class Window:
    """What to read and keep: a `--where` selection, a time window on the DLQ record's
    timestamp (the failure time), the last `tail` records per partition, only the listed
    coordinates (a resumed plan), and whether to decode payloads."""

    selection: Selection = field(default_factory=Selection)
    since_ms: int | None = None
    until_ms: int | None = None
    tail: int | None = None
    only: frozenset[str] | None = None
    decode: bool = False

    def admits(self, dl: DeadLetter) -> bool:
        """The checks that need neither the ledger nor the payload."""
        if self.since_ms is not None and dl.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and dl.timestamp_ms > self.until_ms:
            return False
        return self.only is None or dl.coordinates in self.only


def read_ledger(conf: KafkaConf, dlq_topic: str) -> Ledger:
    """The DLQ's ledger, read `read_committed` to its current end; empty when the ledger
    topic does not exist (nothing was ever decided)."""
    topic = ledger_topic(dlq_topic)
    if dlqio.missing_topics(conf, [topic]):
        return Ledger(dlq_topic)
    with dlqio.TopicReader(conf, topic) as reader:
        return Ledger.from_records(dlq_topic, (c.record for c in reader.records()))


class ScanProgress(Protocol):
    """A progress bar a scan reports to: `expect(total)` once the partitions are open (an
    upper bound: markers take offsets), then a count of records read, now and then."""

    def __call__(self, count: int) -> None: ...
    def expect(self, total: int) -> None: ...


PROGRESS_EVERY = 1000
"""Records read between two progress reports (a report per record would cost more than it
shows)."""


def scan(
    conf: KafkaConf,
    dlq_topic: str,
    window: Window,
    payloads: Payloads,
    ledger: Ledger,
    progress: ScanProgress | None = None,
) -> Iterator[Item]:
    """Every dead letter of `dlq_topic` that the window and selection keep, in each
    partition's offset order. Raises ConfigError when the topic does not exist."""
    spec = dlqio.ReadSpec(tail=window.tail, since_ms=window.since_ms)
    decode = window.decode or window.selection.needs_payload
    with dlqio.TopicReader(conf, dlq_topic, spec) as reader:
        if progress is not None:
            progress.expect(reader.expected)
        for read, consumed in enumerate(reader.records(), start=1):
            if progress is not None and read % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
            r = consumed.record
            dl = from_record(
                r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers
            )
            if not window.admits(dl):
                continue
            decision = ledger.decision(dl)
            payload = payloads.decode(dl) if decode else None
            event = None if payload is None else payload.event
            if window.selection.matches(dl, decision.state, event):
                yield Item(dl, decision, payload, consumed.tstype)


def unresolved_items(
    conf: KafkaConf, topic: str, window: Window, payloads: Payloads, limit: int | None
) -> list[Item]:
    """The unresolved dead letters selected (what a replay or discard may decide), at most
    `limit`, sorted by (partition, offset): each partition's DLQ order, hence each key's."""
    found = scan(conf, topic, window, payloads, read_ledger(conf, topic))
    chosen = itertools.islice((i for i in found if i.decision.entry is None), limit)
    return sorted(chosen, key=lambda item: (item.dl.partition, item.dl.offset))


TOP_CAUSES = 10
"""Causes (fingerprints) `dlq stats` lists, those with the most unresolved dead letters first."""


def _by_fingerprint() -> Grouper:
    return Grouper("fingerprint")


@dataclass
class TopicStats:
    """`dlq stats` for one DLQ topic. The depth is `unresolved`: what no ledger entry decided.
    Causes are grouped by fingerprint as `add` sees dead letters, unless the index already
    grouped them in SQL (`cause_rows`)."""

    topic: str
    total: int = 0
    unresolved: int = 0
    replayed: int = 0
    discarded: int = 0
    by_category: dict[str, tuple[int, int]] = field(default_factory=dict)
    """category -> (total, unresolved); foreign dialects count under `foreign:<dialect>`."""
    oldest_unresolved_ms: int | None = None
    cause_rows: list[GroupRow] | None = None
    causes: Grouper = field(default_factory=_by_fingerprint, repr=False, compare=False)

    def all_causes(self) -> list[GroupRow]:
        return self.causes.rows() if self.cause_rows is None else self.cause_rows

    def top_causes(self, top: int = TOP_CAUSES) -> list[GroupRow]:
        """The causes with the most unresolved dead letters, then the most dead letters."""
        ranked = sorted(self.all_causes(), key=lambda row: (-row.unresolved, -row.count, row.key))
        return ranked[:top]

    def to_json(self, now_ms: int) -> dict[str, object]:
        oldest = self.oldest_unresolved_ms
        return {
            "topic": self.topic,
            "total": self.total,
            "unresolved": self.unresolved,
            "replayed": self.replayed,
            "discarded": self.discarded,
            "by_category": {
                k: {"total": t, "unresolved": u} for k, (t, u) in self.by_category.items()
            },
            "oldest_unresolved_ms": oldest,
            "oldest_unresolved_age_ms": None if oldest is None else now_ms - oldest,
            "causes": len(self.all_causes()),
            "by_cause": [cause_json(row) for row in self.top_causes()],
        }

    def add(self, item: Item) -> None:
        dl, state = item.dl, item.state
        self.total += 1
        unresolved = state is ReplayState.UNRESOLVED
        if unresolved:
            self.unresolved += 1
            if self.oldest_unresolved_ms is None or dl.seen_ms < self.oldest_unresolved_ms:
                self.oldest_unresolved_ms = dl.seen_ms
        elif state is ReplayState.REPLAYED:
            self.replayed += 1
        else:
            self.discarded += 1
        self.causes.add(dl, state)
        category = dl.category or f"foreign:{dl.dialect}"
        total, open_ = self.by_category.get(category, (0, 0))
        self.by_category[category] = (total + 1, open_ + int(unresolved))


def cause_json(row: GroupRow) -> dict[str, object]:
    """One cause of `dlq --json stats`: its fingerprint, counts, first and last failure, and an
    example (message and where that dead letter is)."""
    return {
        "fingerprint": row.key,
        "total": row.count,
        "unresolved": row.unresolved,
        "replayed": row.replayed,
        "discarded": row.discarded,
        "first_seen_ms": row.first_seen_ms,
        "last_seen_ms": row.last_seen_ms,
        "category": row.category,
        "error_type": row.error_type,
        "example": row.example,
        "example_coordinates": row.example_coordinates,
    }
