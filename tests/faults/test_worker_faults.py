"""Worker faults, both delivery modes, two or three workers on three partitions, faults at random
moments (seeded): kill -9 N times, the broker stopped and restarted mid-transaction, the broker
frozen (SIGSTOP, a network partition) and continued, and a rebalance storm. After each run the
checker re-reads the topics: exactly-once shows 0 lost and 0 duplicated under read_committed,
at-least-once 0 lost and every duplicate inside a fault's window."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.kafka_broker import Broker
from tests.faults.accounting import Checker, Report
from tests.faults.conftest import RESULTS
from tests.faults.harness import (
    Fleet,
    Size,
    checker,
    fill,
    fleet,
    pause,
    pipeline,
    settle,
    size,
)
from tests.kit import wait_until

MODES = ["at-least-once", "exactly-once"]


def record(name: str, reports: list[Report]) -> Report:
    """Add the runs of one scenario to the suite's table, then assert each run."""
    first = reports[0]
    merged = Report(
        first.scenario,
        first.mode,
        sum(r.records for r in reports),
        [x for r in reports for x in r.lost],
        [x for r in reports for x in r.unseen],
        {(i, *at): n for i, r in enumerate(reports) for at, n in r.duplicated.items()},
        sum(r.unexpected for r in reports),
        [x for r in reports for x in r.outside],
        sum(r.faults for r in reports),
    )
    RESULTS.append((name, len(reports), merged))
    print("\n" + merged.summary())
    for r in reports:
        r.assert_holds()
    return merged


def progressed(check: Checker, beyond: int) -> bool:
    return len(check.routed("read_uncommitted")) > beyond


def wait_progress(check: Checker, f: Fleet, what: str) -> None:
    """Wait until the workers routed 50 more records (any isolation) or committed everything,
    all of them alive; on a time-out, fail with the workers' logs."""
    start = len(check.routed("read_uncommitted"))
    try:
        wait_until(
            lambda: f.check_alive() and (progressed(check, start + 50) or check.all_committed()),
            90,
            what,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{f.logs()}") from None


def wait_recovered(check: Checker, f: Fleet, what: str) -> None:
    """After an outage: wait until the group committed up to where the workers had got when
    progress resumed. Until then a delivery the outage failed can still rewind a partition, and
    at-least-once re-produces from there (records already produced included); once the commits
    pass that point every such rewind is behind us, so the fault's window ends here."""
    resumed = check.position()

    def caught_up() -> bool:
        committed = check.committed()
        return check.all_committed() or all(committed.get(tp, 0) >= o for tp, o in resumed.items())

    try:
        wait_until(lambda: f.check_alive() and caught_up(), 90, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{f.logs()}") from None


# longer than the workers' session timeout (3 s): a rebalance a fault caused has begun by then
QUIET_S = 5.0


def wait_settled(check: Checker, f: Fleet, what: str) -> None:
    """`wait_recovered`, then no assignment, revocation or loss for QUIET_S; a rebalance in
    the meantime (a member the fault expired, rejoining late) starts the wait over. A fault's
    consequences reach as far as the rebalances it causes: a member that loses its partitions
    without committing hands them over at the last commit, and at-least-once produces the
    records after it again. The window ends only once they are behind us."""
    deadline = time.monotonic() + 180
    while True:
        before = f.rebalances()
        wait_recovered(check, f, what)
        time.sleep(QUIET_S)
        if f.rebalances() == before or check.all_committed():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the group never settled\n{f.logs()}")


Inject = Callable[[Checker, Fleet], None]


def scenario(
    name: str, broker: Broker, workdir: Path, mode: str, plan: Size, inject: Inject, **opts: int
) -> None:
    """`plan.runs` times: a fresh pipeline filled with `plan.records` inputs, workers `a` and `b`
    (or only `a` with starting=1), `inject` called `plan.faults` times, then wait until every
    input is committed and check the accounting; the runs go into the suite's table."""
    reports = []
    for run in range(plan.runs):
        pipe = pipeline(broker.bootstrap, workdir / f"run{run}", mode, opts.get("partitions", 3))
        check = checker(pipe)
        fill(pipe, plan.records)
        check.inputs()
        with fleet(pipe, pipe.workdir) as f:
            for worker in ("a", "b")[: opts.get("starting", 2)]:
                f.start(worker)
            try:
                for _ in range(plan.faults):
                    wait_progress(check, f, f"progress before a fault ({name})")
                    inject(check, f)
                settle(check, f, 150)
            except AssertionError:  # the table still shows where the stuck run stands
                RESULTS.append((f"{name} ({mode}) STUCK", run + 1, check.check(name, mode, 0)))
                raise
        reports.append(check.check(name, mode, plan.faults))
    record(f"{name} ({mode})", reports)


@pytest.mark.parametrize("mode", MODES)
def test_kill_9_at_random_points(
    broker: Broker, workdir: Path, rng: random.Random, mode: str
) -> None:
    """Two workers; N times, one of them (at random) is killed -9 at a random moment (decoding,
    between produce and commit, inside a transaction) and restarted."""

    def kill(check: Checker, f: Fleet) -> None:
        pause(rng, 0.2, 2.5)
        victim = rng.choice(sorted(f.workers))
        low = check.committed()
        f.kill9(victim)
        time.sleep(0.5)  # produce requests already on the wire land first
        f.start(victim)
        # The kill costs two rebalances (the victim's session expires, then it joins again);
        # a rebalance can hand a partition over before its last commit lands, so the window
        # runs from the commit before the kill until the group committed past the recovery.
        wait_settled(check, f, f"commits past the restart of {victim}")
        check.mark(f"kill {victim}", low)

    scenario("worker kill -9", broker, workdir, mode, size(records=6000, faults=3), kill)


@pytest.mark.parametrize("mode", MODES)
def test_broker_restarted_mid_transaction(
    broker: Broker, workdir: Path, rng: random.Random, mode: str
) -> None:
    """The broker stops (controlled shutdown) while batches are open, stays down a random
    while, and comes back on the same ports with the same data."""

    def restart(check: Checker, f: Fleet) -> None:
        pause(rng, 0.2, 1.5)
        low = check.committed()
        broker.stop()
        pause(rng, 1.0, 5.0)
        broker.start()
        wait_progress(check, f, "progress after the restart")
        wait_settled(check, f, "commits past the restart")
        check.mark("broker restart", low)

    scenario("broker restart", broker, workdir, mode, size(records=4000, faults=1), restart)


@pytest.mark.parametrize("mode", MODES)
def test_broker_frozen_then_continued(
    broker: Broker, workdir: Path, rng: random.Random, mode: str
) -> None:
    """SIGSTOP of the broker for longer than the session timeout (a network partition: the
    connections stay up, nothing answers), then SIGCONT."""

    def freeze(check: Checker, f: Fleet) -> None:
        pause(rng, 0.2, 1.5)
        low = check.committed()
        broker.freeze()
        try:
            pause(rng, 3.0, 8.0)
        finally:
            broker.resume()
        wait_progress(check, f, "progress after the freeze")
        wait_settled(check, f, "commits past the freeze")
        check.mark("broker frozen", low)

    scenario("broker SIGSTOP/SIGCONT", broker, workdir, mode, size(4000, 1), freeze)


@pytest.mark.parametrize("mode", MODES)
def test_rebalance_storm(broker: Broker, workdir: Path, rng: random.Random, mode: str) -> None:
    """Workers a, b, c on six partitions; every 1-3 s one joins or leaves (SIGTERM: drain,
    commit, leave), at least one always running."""

    def join_or_leave(check: Checker, f: Fleet) -> None:
        pause(rng, 1.0, 3.0)
        low = check.committed()
        absent = sorted({"a", "b", "c"} - set(f.workers))
        if absent and (len(f.workers) == 1 or rng.random() < 0.5):
            f.start(rng.choice(absent))
        else:
            leaving = rng.choice(sorted(f.workers))
            assert f.stop(leaving) == 0, f.logs()
        f.check_alive()
        check.mark("rebalance", low)

    plan = size(records=6000, faults=8)
    scenario("rebalance storm", broker, workdir, mode, plan, join_or_leave, partitions=6)
