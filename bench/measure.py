"""Pure helpers of bench_peers: percentiles, spreads, /proc parsing and ratios to a baseline.

Nothing here touches Kafka or a process: every function takes values (or the text of a /proc
file) and returns values, so tests/unit/test_bench_measure.py runs without a broker.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) by linear interpolation between closest ranks, as
    numpy's default. Raises `ValueError` on no values or a `q` outside 0..100."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Spread:
    """Median, minimum and maximum of a few repetitions."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("spread of no values")
        return cls(statistics.median(values), min(values), max(values))


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that the bench reads."""

    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime, in clock ticks (os.sysconf("SC_CLK_TCK") per second)


def parse_proc_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line. The command name (field 2) is in parentheses and may
    hold spaces and parentheses itself, so fields are counted from the *last* ')'."""
    head, _, tail = text.rpartition(")")
    if not head or "(" not in head:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    pid = int(head.split("(", 1)[0])
    rest = tail.split()  # rest[0] is field 3 (state): field n is rest[n - 3]
    utime, stime = int(rest[14 - 3]), int(rest[15 - 3])
    return ProcStat(pid=pid, ppid=int(rest[4 - 3]), cpu_ticks=utime + stime)


def parse_vm_hwm_kb(status: str) -> int:
    """Peak resident set size (`VmHWM`, kB) from the text of /proc/<pid>/status; 0 when the
    line is missing (a zombie has none)."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def descendants(parents: Mapping[int, int], root: int) -> list[int]:
    """`root` and every process below it, from a pid -> ppid map (one /proc scan)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return sorted(found)


def cpu_us_per_record(ticks: int, clock_ticks_per_s: int, records: int) -> float:
    """CPU time per record in microseconds."""
    if records <= 0:
        raise ValueError("no records")
    return ticks / clock_ticks_per_s * 1e6 / records


def ratios(
    values: Mapping[str, float | None], baseline: str, higher_is_better: bool = True
) -> dict[str, float | None]:
    """Each contender's value against `baseline`'s, oriented so that > 1 means "better than the
    baseline": value / baseline for rates, baseline / value for costs (CPU, memory, latency).
    None where either side is missing or zero."""
    base = values.get(baseline)
    out: dict[str, float | None] = {}
    for name, value in values.items():
        if not base or not value:
            out[name] = None
        else:
            out[name] = value / base if higher_is_better else base / value
    return out


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
