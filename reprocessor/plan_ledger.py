"""The part of a DLQ's ledger that a stored plan's replay needs: the entries of its planned dead
letters, read (after fencing) to the ledger's end like the whole ledger, kept in memory alone.

A replay asks the ledger one question per planned dead letter: did a valid entry decide it since
the plan was made? Keeping every entry the ledger ever held (`stats.read_ledger`) costs memory in
proportion to every decision ever made on the DLQ, and a full JSON decoding of each. Here each
ledger record's key is checked first against the plan's offsets (8 bytes per planned dead letter,
read from the plan only when the ledger holds anything): the others are skipped undecoded. Kept
keys go through `Ledger.add`, so the latest record per key wins, a tombstone withdraws, and
`Ledger.decided` ignores stale entries, as for the whole ledger.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

from pipeline.core.contract import ledger_topic
from pipeline.kafka import dlqio
from pipeline.kafka.dlqio import KafkaConf, RecordBatch
from reprocessor.ledger import Ledger
from reprocessor.plans import StoredPlan


def plan_ledger(conf: KafkaConf, stored: StoredPlan) -> Ledger:
    """The ledger entries of the plan's dead letters, read `read_committed` to the ledger's
    current end; empty when the ledger topic does not exist (nothing was ever decided)."""
    dlq = stored.plan.dlq_topic
    ledger, topic = Ledger(dlq), ledger_topic(dlq)
    if dlqio.missing_topics(conf, [topic]):
        return ledger
    planned: dict[int, array[int]] | None = None
    with dlqio.TopicReader(conf, topic) as reader:
        for batch in reader.batches():
            if planned is None:
                planned = {p: stored.offsets(p) for p in stored.partitions()}
            _keep(ledger, batch, planned)
    return ledger


def _keep(ledger: Ledger, batch: RecordBatch, planned: dict[int, array[int]]) -> None:
    """Apply the batch's records whose key names a planned dead letter (`topic/p/o`, the
    DLQ's topic, a planned partition and offset). No other key can decide one: `decided` looks
    entries up by the planned dead letter's own coordinates."""
    prefix = f"{ledger.dlq_topic}/".encode()
    skip = len(prefix)
    for key, value in zip(batch.keys, batch.values, strict=True):
        if key is None or not key.startswith(prefix) or len(key) - skip > 41:
            continue
        partition, _, offset = key[skip:].partition(b"/")
        if not partition.isdigit() or not offset.isdigit():
            continue
        offsets = planned.get(int(partition))
        if offsets is not None:
            wanted = int(offset)
            at = bisect_left(offsets, wanted)
            if at < len(offsets) and offsets[at] == wanted:
                ledger.add(key, value)
