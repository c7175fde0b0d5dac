"""`--processes N` supervision (pipeline/app/members.py) with real child processes: a member that
keeps dying takes the group down with its code, a configuration error at once, and each member
gets its own metrics port, and none outlives a parent killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.app.members import Supervisor, member_env

REPO = Path(__file__).resolve().parent.parent.parent


def test_a_member_that_keeps_dying_takes_the_group_down() -> None:
    crash = [sys.executable, "-c", "raise SystemExit(1)"]
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    supervisor = Supervisor([crash, sleep], None, max_restarts=2, window_s=60)
    assert supervisor.run() == 1
    assert len(supervisor.members[0].restarts) == 2  # restarted twice, then gave up
    assert all(m.exited() is not None for m in supervisor.members)  # the sleeper was stopped


def test_a_configuration_error_is_not_restarted() -> None:
    supervisor = Supervisor([[sys.executable, "-c", "raise SystemExit(2)"]], None)
    assert supervisor.run() == 2
    assert not supervisor.members[0].restarts


def test_each_member_gets_its_own_metrics_port() -> None:
    assert member_env({"A": "1"}, 3, 9464) == {"A": "1", "LAZARUS_METRICS_PORT": "9467"}
    assert member_env({"A": "1"}, 3, None) == {"A": "1"}


def test_members_do_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL (or by the OOM killer) forwards nothing: its members used to
    run on unsupervised, in the group and on their metrics ports."""
    pids = tmp_path / "pids"
    member = (
        f"import os, time; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pipeline.app.members import Supervisor; "
            f"Supervisor([[sys.executable, '-c', {member!r}]] * 2, None).run()",
        ],
        cwd=REPO,
    )
    deadline = time.monotonic() + 30
    while len(started(pids)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    members = started(pids)
    assert len(members) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while any(map(alive, members)) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = [pid for pid in members if alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert orphans == []


def started(pids: Path) -> list[int]:
    return [int(line) for line in pids.read_text().split()] if pids.exists() else []


def alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie is reaped by init, not by us)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
