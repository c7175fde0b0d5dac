"""`plan_ledger._keep`: of a ledger's records, only those naming a planned dead letter are
applied, with the whole ledger's rules (latest per key wins, a tombstone withdraws, a stale entry
decides nothing)."""

from __future__ import annotations

from array import array
from dataclasses import replace

from pipeline.core.contract import SourceRecord
from pipeline.core.ledger_codec import encode_ledger_entry
from pipeline.kafka.dlqio import RecordBatch
from reprocessor.ledger import Ledger, replayed_entry
from reprocessor.plan_ledger import _keep
from tests.unit.test_replay_batches import as_letter, records


def entry_record(offset: int, *, stale: bool = False, run: str = "r-0") -> SourceRecord:
    dl = as_letter(records(0, [offset])[0])
    entry = replayed_entry(dl, run=run, operator="ops", target="out/0/1", at_ms=1)
    if stale:
        entry = replace(entry, failed_at=1)
    key = dl.coordinates.encode()
    return SourceRecord("orders.dlq.ledger", 0, offset, 1, key, encode_ledger_entry(entry), ())


def test_only_the_planned_dead_letters_entries_are_kept() -> None:
    planned = {0: array("q", [2, 4, 6, 8])}
    ledger = Ledger("orders.dlq")
    batch = [
        entry_record(2),
        entry_record(3),  # not planned
        entry_record(4, stale=True),  # planned, left by a recreated topic
        entry_record(6),
        replace(entry_record(6), value=None),  # withdrawn
        entry_record(8, run="r-a"),
        entry_record(8, run="r-b"),  # the latest wins
        replace(entry_record(2), key=b"other.dlq/0/2"),  # another DLQ's key
        replace(entry_record(2), key=b"orders.dlq/1/2"),  # a partition not planned
        replace(entry_record(2), key=b"orders.dlq/0/x"),  # not coordinates
        replace(entry_record(2), key=None),
    ]
    _keep(ledger, RecordBatch.of("orders.dlq.ledger", batch), planned)
    assert sorted(ledger.entries) == ["orders.dlq/0/2", "orders.dlq/0/4", "orders.dlq/0/8"]
    assert ledger.entries["orders.dlq/0/8"].run == "r-b"
    for offset, decided in ((2, True), (3, False), (4, False), (6, False), (8, True)):
        dl = as_letter(records(0, [offset])[0])
        assert ledger.decided(dl.coordinates, dl.seen_ms, dl.fingerprint) is decided, offset
        assert (ledger.decision(dl).entry is not None) is decided, offset
