"""`--processes N` supervision (pipeline/app/members.py) with real child processes: a member that
keeps dying takes the group down with its code, a configuration error at once, and each member
gets its own metrics port."""

from __future__ import annotations

import sys

from pipeline.app.members import Supervisor, member_env


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
