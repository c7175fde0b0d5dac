"""Contender child processes: start, sample CPU and peak RSS from /proc, stop.

Each contender runs in a session of its own, so stopping it (SIGTERM, then SIGKILL after a
grace period) reaches the children of `lazarus worker --processes 2` as well. Every live child
is remembered in `LIVE`, and `stop_all` (called on exit, Ctrl-C included) ends them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.measure import descendants, parse_proc_stat, parse_vm_hwm_kb

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LIVE: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU ticks and peak RSS summed over a contender's process tree at one moment."""

    cpu_ticks: int
    hwm_kb: int
    processes: int


def proc_parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = parse_proc_stat(Path(entry.path, "stat").read_text())
                parents[stat.pid] = stat.ppid
    return parents


class Child:
    """One contender process (and whatever it forks), its output in `log`."""

    def __init__(self, argv: list[str], log: Path, cwd: Path) -> None:
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.log = log
        LIVE[self.popen.pid] = self.popen

    def alive(self) -> bool:
        return self.popen.poll() is None

    def sample(self) -> Sample:
        ticks = hwm = n = 0
        for pid in descendants(proc_parents(), self.popen.pid):
            with contextlib.suppress(OSError, ValueError, IndexError):
                ticks += parse_proc_stat(Path(f"/proc/{pid}/stat").read_text()).cpu_ticks
                hwm += parse_vm_hwm_kb(Path(f"/proc/{pid}/status").read_text())
                n += 1
        return Sample(ticks, hwm, n)

    def tail(self, lines: int = 5) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self, grace_s: float = 15.0) -> None:
        pid = self.popen.pid
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # stragglers of the group, the leader included
        self.popen.wait(10)
        LIVE.pop(pid, None)


def stop_all() -> None:
    for pid in list(LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        LIVE.pop(pid, None)
