"""Workers of one scenario as real `lazarus worker` processes (the CLI only: the worker's
internals change under this suite), started, killed and stopped by name, all of them ended when
the scenario ends, whatever happened."""

from __future__ import annotations

import random
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.accounting import Checker
from tests.faults.conftest import SOAK
from tests.kit import Pipeline, WorkerProcess, avro_framed, good_order, produce, wait_until

EXACTLY_ONCE_POLICY = "[policy]\nretry_budget_ms = 5000\n"  # fits the 10 s transaction timeout


@dataclass(frozen=True)
class Size:
    records: int
    faults: int
    runs: int


def size(records: int, faults: int) -> Size:
    """The default size, or a soak: five times the records, three times the faults, 3 runs."""
    if SOAK:
        return Size(records * 5, faults * 3, 3)
    return Size(records, faults, 1)


def pipeline(bootstrap: str, workdir: Path, mode: str, partitions: int = 3) -> Pipeline:
    """A pipeline whose worker takes ~3 ms per record (`tests.processors:slow`), so faults land
    mid-run, with a short session timeout so a killed member's partitions move on quickly."""
    workdir.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(
        bootstrap,
        workdir,
        partitions=partitions,
        delivery=mode,
        top='processor = "tests.processors:slow"',
        extra=EXACTLY_ONCE_POLICY if mode == "exactly-once" else "",
    ).create()
    text = pipe.config.read_text().replace(
        '"session.timeout.ms" = 6000', '"session.timeout.ms" = 3000'
    )
    pipe.config.write_text(text)
    return pipe


def fill(pipe: Pipeline, count: int, bad_every: int = 20) -> int:
    """`count` Avro orders in one call (so every `test.seq` is unique), every `bad_every`-th
    truncated (a dead letter)."""
    records = []
    for i in range(count):
        value = avro_framed(good_order(i))
        records.append((f"key-{i}".encode(), value[:-2] if i % bad_every == 0 else value))
    return produce(pipe.bootstrap, pipe.orders, records)


def checker(pipe: Pipeline) -> Checker:
    return Checker(pipe.bootstrap, pipe.name, [pipe.orders], pipe.output, pipe.dlq, pipe.partitions)


REBALANCE = re.compile(r"lazarus\.worker: (?:assigned|revoked|lost) ")


@dataclass
class Fleet:
    """The scenario's workers by name; `--instance` is left to the default derivation."""

    pipe: Pipeline
    workdir: Path
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    started: int = 0

    def start(self, name: str) -> WorkerProcess:
        self.started += 1
        log = self.workdir / f"{name}-{self.started}.log"
        self.workers[name] = WorkerProcess(self.pipe.config, log)
        return self.workers[name]

    def kill9(self, name: str) -> None:
        self.workers.pop(name).kill9()

    def stop(self, name: str) -> int:
        return self.workers.pop(name).stop()

    def check_alive(self) -> bool:
        return all(w.check_alive() for w in self.workers.values())

    def end(self) -> None:
        for name in list(self.workers):
            worker = self.workers.pop(name)
            if worker.alive():
                worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait(30)
            worker.out.close()

    def rebalances(self) -> int:
        """Assignments, revocations and losses the workers logged so far (every run of every
        worker of this scenario run)."""
        return sum(
            len(REBALANCE.findall(p.read_text(errors="replace")))
            for p in self.workdir.glob("*.log")
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )


@contextmanager
def fleet(pipe: Pipeline, workdir: Path) -> Iterator[Fleet]:
    f = Fleet(pipe, workdir)
    try:
        yield f
    finally:
        f.end()


def progress_beyond(check: Checker, routed: int) -> bool:
    return len(check.routed("read_uncommitted")) > routed


def settle(check: Checker, f: Fleet, timeout: float = 120) -> None:
    """Wait until the group committed every input, with every worker alive."""
    try:
        wait_until(
            lambda: f.check_alive() and check.all_committed(), timeout, "every input committed"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{f.logs()}") from None


def pause(rng: random.Random, low: float, high: float) -> None:
    time.sleep(rng.uniform(low, high))
