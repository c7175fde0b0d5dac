"""A first scan shared between processes: the DLQ's partitions split between the catch-up's own
process and helper processes, each reading its partitions and storing their rows and read
positions into the same index file.

Why: a first scan is CPU-bound in Python (turning records and headers into rows) and one process
runs its reading and its SQLite writer under one GIL, so it used one core whatever the machine
had. Each helper is `python -m reprocessor.index_scan`, given its job (the index file, the
topic, the Kafka configuration, its partitions' start and end offsets) as JSON on stdin, never on
its command line (the configuration may hold credentials). It runs exactly what the catch-up runs
for its own partitions (`DlqIndex.scan`): the same rows, and each batch's rows stored with its
partitions' positions in one transaction, so a crash of either process resumes where its last
stored batch ended. SQLite takes one writer at a time (WAL, busy timeout): the processes take
turns to commit while the others go on reading and parsing.

A helper reports the records it read on stdout, one line a batch (`n <count>`), and a failure the
catch-up re-raises as one line (`error <ConfigError|RuntimeFailure> <json message>`) and exit
status 1. A helper whose catch-up ends (or fails) is killed, and a helper whose catch-up died
stops at its next batch (its stdout is closed).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pipeline.errors import ConfigError, LazarusError, RuntimeFailure

if TYPE_CHECKING:
    from pipeline.kafka.follow import KafkaConf
    from reprocessor.index import DlqIndex, Progress

PARALLEL_ROWS = 200_000
"""A first scan of more records than this is shared with helper processes: below it, starting
a Python process (about 0.3 s of imports) costs more than it saves."""
_ROOT = Path(__file__).resolve().parent.parent
_ERRORS: dict[str, type[LazarusError]] = {"ConfigError": ConfigError}


def workers() -> int:
    """The processes a first scan may use: the CPUs this process may run on, no more than its
    cgroup's CPU quota allows (a container limited to one CPU sees every CPU of its host, and
    a helper there would only share that one CPU, at the cost of its own start-up and memory).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota()
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs this process's cgroup may use (quota / period, cgroup v2's `cpu.max` or v1's
    `cpu.cfs_quota_us`), or None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        limit, every = int(quota), int(period)
    except ValueError:  # "max": unlimited
        return None
    return limit / every if limit > 0 and every > 0 else None


def split(todo: Mapping[int, int], count: int) -> list[dict[int, int]]:
    """`todo` (partition -> records to read) in at most `count` groups of about equal records,
    none empty: the largest partitions first, each to the group with the fewest records so far
    (the lowest group number on a tie). A scan of at most PARALLEL_ROWS is one group."""
    if sum(todo.values()) <= PARALLEL_ROWS:
        count = 1
    groups: list[dict[int, int]] = [{} for _ in range(max(1, min(count, len(todo))))]
    loads = [0] * len(groups)
    for partition, records in sorted(todo.items(), key=lambda item: (-item[1], item[0])):
        lightest = loads.index(min(loads))
        groups[lightest][partition] = records
        loads[lightest] += records
    return groups


class _Helper:
    """One helper process and what it reported so far."""

    def __init__(self, job: Mapping[str, object]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(_ROOT), env.get("PYTHONPATH"))))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reprocessor.index_scan"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.out: IO[bytes] = self.proc.stdout
        with self.proc.stdin as stdin:
            stdin.write(json.dumps(job).encode())
        os.set_blocking(self.out.fileno(), False)
        self.pending = b""
        self.read = 0
        self.error: LazarusError | None = None

    def poll(self) -> int:
        """Records reported since the last call, without blocking."""
        try:
            chunk = os.read(self.out.fileno(), 1 << 16)
        except BlockingIOError:  # nothing new
            return 0
        return self._lines(chunk)

    def _lines(self, chunk: bytes) -> int:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        counted = 0
        for line in lines:
            kind, _, rest = line.decode().partition(" ")
            if kind == "n":
                counted += int(rest)
            elif kind == "error":
                name, _, message = rest.partition(" ")
                self.error = _ERRORS.get(name, RuntimeFailure)(json.loads(message))
        self.read += counted
        return counted

    def wait(self, progress: Callable[[int], None] | None) -> int:
        """Read its reports to their end and wait for it; re-raises its failure."""
        os.set_blocking(self.out.fileno(), True)
        while chunk := os.read(self.out.fileno(), 1 << 16):
            counted = self._lines(chunk)
            if progress is not None and counted:
                progress(counted)
        code = self.proc.wait()
        if self.error is not None:
            raise self.error
        if code != 0:
            raise RuntimeFailure(f"a helper of the index's first scan exited with status {code}")
        return self.read

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.out.close()


class Helpers:
    """The helper processes of one first scan, one per group of partitions of `groups`
    (partition -> (start, end) offsets); none for an empty list. Use as a context manager:
    leaving on an error kills them, `wait` waits for them."""

    def __init__(
        self, index: DlqIndex, conf: KafkaConf, groups: list[dict[int, tuple[int, int]]]
    ) -> None:
        self.jobs = [
            {
                "path": str(index.path),
                "topic": index.topic,
                "cluster_id": index.cluster_id,
                "conf": dict(conf),
                "start": {str(p): start for p, (start, _) in group.items()},
                "ends": {str(p): end for p, (_, end) in group.items()},
            }
            for group in groups
        ]
        self.helpers: list[_Helper] = []

    def __enter__(self) -> Helpers:
        for job in self.jobs:
            self.helpers.append(_Helper(job))
        return self

    def counter(self, progress: Progress | None) -> Callable[[int], None] | None:
        """What the catch-up's own scan reports its batches to: `progress`, plus what the
        helpers reported meanwhile (read at each batch, so their pipes never fill up)."""
        if not self.helpers:
            return progress
        helpers = self.helpers

        def count(records: int) -> None:
            records += sum(helper.poll() for helper in helpers)
            if progress is not None:
                progress(records)

        return count

    def wait(self, progress: Progress | None) -> int:
        """Wait for every helper; the records they read. Raises the first one's failure."""
        return sum(helper.wait(progress) for helper in self.helpers)

    def __exit__(self, *_: object) -> None:
        for helper in self.helpers:
            helper.kill()


def main() -> int:
    """A helper: read the job on stdin, scan its partitions, report on stdout. Ctrl-C is the
    catch-up's to answer (it kills its helpers when it stops); a catch-up that died closed
    this helper's stdout, and the helper stops quietly at its next report."""
    from reprocessor.index import DlqIndex  # the catch-up imports this module

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job = json.load(sys.stdin)
    out = sys.stdout

    def report(records: int) -> None:
        out.write(f"n {records}\n")
        out.flush()

    start = {int(p): int(o) for p, o in job["start"].items()}
    ends = {int(p): int(o) for p, o in job["ends"].items()}
    try:
        with DlqIndex(Path(job["path"]), job["topic"], job["cluster_id"], schema=False) as index:
            index.scan(job["conf"], start, ends, report, shared=True)
    except LazarusError as exc:
        out.write(f"error {type(exc).__name__} {json.dumps(str(exc))}\n")
        return 1
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
