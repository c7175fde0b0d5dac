"""The fault suite: real broker, real worker processes, faults at random moments (a printed seed
replays the timing: LAZARUS_FAULT_SEED=<seed>), every run checked by `accounting.Checker`.

One broker of the suite's own serves every scenario (several of them stop, restart or freeze it),
so the suite never runs two brokers at once. The default size fits a CI budget of about five
minutes on two cores; `LAZARUS_SOAK=1` runs each scenario with more records, more faults and
several times."""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.kafka_broker import Broker
from tests.faults.accounting import Report

SOAK = os.environ.get("LAZARUS_SOAK", "") not in ("", "0")
SEED = int(os.environ.get("LAZARUS_FAULT_SEED") or random.SystemRandom().randrange(1, 2**31))
RESULTS: list[tuple[str, int, Report]] = []  # scenario, runs, the merged report


def pytest_report_header() -> list[str]:
    size = "soak (LAZARUS_SOAK=1)" if SOAK else "default (LAZARUS_SOAK=1 for a soak)"
    return [f"fault suite: seed {SEED} (LAZARUS_FAULT_SEED={SEED} replays it), size {size}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    write(f"fault suite (seed {SEED}{', soak' if SOAK else ''}):")
    head = ("scenario", "runs", "faults", "records", "lost", "duplicated", "unseen")
    rows = [
        (name, runs, r.faults, r.records, len(r.lost), r.copies, len(r.unseen))
        for name, runs, r in RESULTS
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for row in (head, *rows):
        write("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


@pytest.fixture(scope="package")
def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("kafka-faults"))
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def broker(fault_broker: Broker) -> Broker:
    """The suite's broker, running (a scenario that failed while it was stopped or frozen
    must not take the next one down with it)."""
    fault_broker.resume()
    if not fault_broker.running():
        fault_broker.start()
    return fault_broker


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Timing for one scenario: the suite's seed mixed with the test's name."""
    return random.Random(SEED ^ zlib.crc32(request.node.name.encode()))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
