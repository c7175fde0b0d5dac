"""The seam between the worker and Kafka: two small Protocols in the project's own types.

The worker loop and the delivery modes (`pipeline.runtime`) depend on `Source` and `Sink` only,
never on confluent-kafka's classes or error flags. `pipeline.kafka.confluent` implements them on
librdkafka; `pipeline.kafka.fake` implements them in memory for unit tests; one behaviour suite
(tests/behaviour/) runs against both.

Acknowledgements are data, per batch (shared/STYLE.md habit 16): every record produced names
the batch it belongs to, and `Sink.poll` returns, for each batch with news, how many of its
records the broker acknowledged or refused since the last poll. No callback reaches the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Output

TP = tuple[str, int]
"""A topic partition: (topic, partition)."""

OFFSET_BEGINNING = -2
"""Kafka's logical offset for "the start of the partition" (no committed offset)."""


@dataclass(frozen=True, slots=True)
class SinkError:
    """Why the broker (or the client) refused a produce or a transactional call.

    `fatal`: the producer is unusable (fenced, or an unrecoverable idempotence error): exit.
    `abortable`: the open transaction must be aborted; then the work can be redone.
    `retriable`: asking again may succeed (a broker moving, a timeout).
    `too_large`: the record itself is too large for the target: a property of the record, never
    an outage."""

    reason: str
    topic: str | None = None
    fatal: bool = False
    abortable: bool = False
    retriable: bool = False
    too_large: bool = False


class SinkFailure(Exception):
    """A transactional call or a produce that failed at once, carrying the `SinkError`."""

    def __init__(self, error: SinkError) -> None:
        super().__init__(error.reason)
        self.error = error


@dataclass(frozen=True, slots=True)
class Ack:
    """What one `Sink.poll` learnt about one batch: `acked` more records acknowledged, `failed`
    more refused (`error` is the first refusal's reason)."""

    batch: int
    acked: int
    failed: int = 0
    error: SinkError | None = None


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed position with its metadata string (empty when none)."""

    offset: int
    metadata: str = ""


class RebalanceListener(Protocol):
    """What a `Source` calls, from inside `consume`/`poll`, when the group reassigns."""

    def on_assign(self, tps: list[TP]) -> None: ...
    def on_revoke(self, tps: list[TP]) -> None: ...
    def on_lost(self, tps: list[TP]) -> None: ...


class Source(Protocol):
    """A consumer-group member reading committed (read_committed) records."""

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None: ...

    def consume(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Up to `max_records` records (consumer errors are logged, not returned). Rebalance
        callbacks run inside this call."""
        ...

    def pause(self, tps: Iterable[TP]) -> None: ...
    def resume(self, tps: Iterable[TP]) -> None: ...
    def seek(self, tp: TP, offset: int) -> bool:
        """Move `tp`'s next read to `offset`; False when the partition cannot be moved yet
        (just assigned and still fetching its committed offset, or leaving in a rebalance)."""
        ...

    def commit(self, offsets: Mapping[TP, Committed], *, wait: bool) -> None:
        """Commit positions (asynchronously unless `wait`); raises `SinkFailure` when refused
        at once. An asynchronous failure is reported by `commit_failures`."""
        ...

    def commit_failures(self) -> list[TP]:
        """Partitions whose asynchronous commits failed since the last call."""
        ...

    def committed(self, tps: Sequence[TP], timeout_s: float) -> dict[TP, Committed]:
        """The group's committed positions (`OFFSET_BEGINNING` when none); retried while the
        coordinator moves, `SinkFailure` after `timeout_s`."""
        ...

    def group_metadata(self) -> object:
        """Opaque consumer-group metadata for `Sink.send_offsets` (KIP-447 fencing)."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    """A producer: asynchronous produce, acknowledgements per batch, optional transactions."""

    def produce(self, out: Output, batch: int) -> None:
        """Queue `out` as part of `batch`, waiting (and polling) while the local queue is full.
        Raises `SinkFailure` when refused at once (e.g. `too_large`)."""
        ...

    def poll(self, timeout_s: float) -> list[Ack]:
        """Serve delivery reports for up to `timeout_s`; the acknowledgements since last time.
        A transactional sink reports refusals only (`acked` stays 0): its records count once
        `commit_transaction` returns, and a delivery report per record would only be waste."""
        ...

    def pending(self) -> int:
        """Records queued or in flight, not yet acknowledged or refused."""
        ...

    def flush(self, timeout_s: float) -> list[Ack]:
        """Wait up to `timeout_s` for every pending record; the acknowledgements it brought."""
        ...

    def init_transactions(self, timeout_s: float) -> None: ...
    def begin_transaction(self) -> None: ...

    def send_offsets(
        self, offsets: Mapping[TP, Committed], group: object, timeout_s: float
    ) -> None:
        """Add consumed positions (with their metadata) to the open transaction."""
        ...

    def reset(self, timeout_s: float) -> None:
        """A new producer with the same transactional id (after a fatal error such as being
        fenced when a transaction outlived `transaction.timeout.ms`): the broker bumps the
        epoch and aborts whatever the old one left open."""
        ...

    def commit_transaction(self, timeout_s: float) -> None: ...
    def abort_transaction(self, timeout_s: float) -> None: ...
