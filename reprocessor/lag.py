"""Consumer-group lag as `dlq exporter` reports it, the way kafka_exporter, kafka-lag-exporter and
Burrow users know it, measured for what a `read_committed` consumer can read.

Per partition: the lag in records is the last stable offset minus the group's committed offset
(the low watermark when it has none, as `auto.offset.reset=earliest` would start), and 0 when no
record is left to read between the two — a caught-up group on a transactional topic has only the
commit marker there, so it shows 0, not 1. The time lag is the age of the next unconsumed record
(its timestamp is fetched; 0 when caught up). A partition is stalled when its committed offset has
not moved for the stall window while its lag is above 0. Measured from the broker each interval,
so the figures stay current while the group is idle or stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.kafka.follow import Cluster, next_timestamps


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    records: int
    seconds: float
    stalled: bool


@dataclass
class LagTracker:
    """Remembers, per (group, topic, partition), when the committed offset last moved and the
    timestamp of the next unconsumed record at that offset (fetched once per offset)."""

    stall_window_s: float
    moved: dict[tuple[str, str, int], tuple[int | None, float]] = field(default_factory=dict)
    next_ts: dict[tuple[str, str, int], tuple[int, int | None]] = field(default_factory=dict)

    def measure(
        self, cluster: Cluster, group: str, topics: Iterable[str], now_s: float
    ) -> list[PartitionLag]:
        """The group's lag on every topic that exists; RuntimeFailure when unreachable."""
        out: list[PartitionLag] = []
        for meta in cluster.topics(topics).values():
            marks = cluster.marks(meta.name, meta.partitions)
            committed = cluster.committed(group, meta.name, meta.partitions)
            starts = {p: max(m.low, committed.get(p) or m.low) for p, m in marks.items()}
            ends = {p: m.end for p, m in marks.items()}
            stamps = self._stamps(cluster, group, meta.name, starts, ends)
            for p in sorted(marks):
                key = (group, meta.name, p)
                last = self.moved.get(key)
                if last is None or last[0] != committed.get(p):
                    self.moved[key] = (committed.get(p), now_s)
                stamp = stamps.get(p)
                records = ends[p] - starts[p] if stamp is not None else 0
                seconds = max(0.0, now_s - stamp / 1000) if stamp is not None else 0.0
                since = now_s - self.moved[key][1]
                stalled = records > 0 and since >= self.stall_window_s
                out.append(PartitionLag(group, meta.name, p, records, seconds, stalled))
        return out

    def _stamps(
        self,
        cluster: Cluster,
        group: str,
        topic: str,
        starts: dict[int, int],
        ends: dict[int, int],
    ) -> dict[int, int | None]:
        """The next unconsumed record's timestamp per partition (None when there is none),
        fetched only for offsets not seen before."""
        found: dict[int, int | None] = {}
        wanted: dict[int, int] = {}
        for p, start in starts.items():
            cached = self.next_ts.get((group, topic, p))
            if start >= ends[p]:
                found[p] = None
            elif cached is not None and cached[0] == start and cached[1] is not None:
                found[p] = cached[1]
            else:
                wanted[p] = start
        if wanted:
            fetched = next_timestamps(cluster.conf, topic, wanted, ends)
            for p, stamp in fetched.items():
                found[p] = stamp
                self.next_ts[(group, topic, p)] = (wanted[p], stamp)
        return found
