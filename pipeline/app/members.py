"""`lazarus worker --processes N`: N group members as child processes, supervised.

Each member i gets its own metrics port (`metrics_port + i`; prometheus-client's multiprocess
mode would drop the process metrics), signals are forwarded to every member, and a member that
dies is restarted, at most `max_restarts` times in `window_s` seconds; past that, or when a
member exits with a configuration error, the others are stopped and the parent exits with the
member's code. Never a silent half-size group, and never orphans: a member gets SIGTERM when
the parent dies, however it dies (SIGKILL, OOM), so it drains, commits and leaves the group
instead of running on unsupervised with its metrics port taken from the next parent's members.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from pipeline.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE

log = logging.getLogger("lazarus.worker")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class Member:
    index: int
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)
    done: bool = False

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, preexec_fn=terminated_with(os.getpid())
        )

    def exited(self) -> int | None:
        """The exit code once the current process ended, else None."""
        return None if self.process is None else self.process.poll()


def terminated_with(parent: int) -> Callable[[], None]:
    """What a member runs between fork and exec: SIGTERM when `parent` dies (Linux
    PR_SET_PDEATHSIG; elsewhere nothing), and at once if it died before that was set."""

    def set_up() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return set_up


def member_env(base: dict[str, str], index: int, metrics_port: int | None) -> dict[str, str]:
    """The environment of member `index`: its own metrics port when the pipeline has one."""
    env = dict(base)
    if metrics_port is not None:
        env["LAZARUS_METRICS_PORT"] = str(metrics_port + index)
    return env


class Supervisor:
    """Starts the members, forwards signals, restarts the dead within a budget."""

    def __init__(
        self,
        argvs: Sequence[list[str]],
        metrics_port: int | None,
        *,
        max_restarts: int = 3,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.members = [
            Member(i, argv, member_env(dict(os.environ), i, metrics_port))
            for i, argv in enumerate(argvs)
        ]
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.clock = clock
        self.stopping = False
        self.code = EXIT_OK

    def run(self) -> int:
        for member in self.members:
            member.start()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._forward)
        while not all(m.done for m in self.members):
            for member in self.members:
                self._watch(member)
            time.sleep(0.2)
        return self.code

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for member in self.members:
            if not member.done and member.exited() is None and member.process is not None:
                member.process.send_signal(signum)

    def _watch(self, member: Member) -> None:
        code = member.exited()
        if member.done or code is None:
            return
        if self.stopping:
            self.code = max(self.code, code if code > 0 else EXIT_OK)
            member.done = True
            return
        now = self.clock()
        while member.restarts and now - member.restarts[0] > self.window_s:
            member.restarts.popleft()
        if code == EXIT_USAGE or len(member.restarts) >= self.max_restarts:
            log.error(
                "member %d exited with %d; stopping the other members (restarts used: %d)",
                member.index,
                code,
                len(member.restarts),
            )
            self.code = code if code > 0 else EXIT_FAILED
            self.stopping = True
            member.done = True
            self._signal_all(signal.SIGTERM)
            return
        member.restarts.append(now)
        log.warning("member %d exited with %d; restarting it", member.index, code)
        member.start()
