"""Two exactly-once workers started the same way (no `--instance`, as identical pods would be)
share one group without fencing each other, and the accounting still holds exactly once."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tests.integration.test_worker_faults import all_committed, mixed_orders
from tests.kit import Pipeline, WorkerProcess, account, produce, wait_until

EXACTLY_ONCE_POLICY = "[policy]\nretry_budget_ms = 5000\n"  # fits the 10 s transaction timeout
STARTING = re.compile(r"worker (\S+) of pipeline \S+ starting \(exactly-once\)")


def test_two_exactly_once_workers_without_instance_do_not_fence(
    bootstrap: str, tmp_path: Path
) -> None:
    pipe = Pipeline(
        bootstrap, tmp_path, partitions=4, delivery="exactly-once", extra=EXACTLY_ONCE_POLICY
    ).create()
    first_half = produce(bootstrap, pipe.orders, mixed_orders(0, 2000, bad_every=25))
    workers = [WorkerProcess(pipe.config, tmp_path / f"w{i}.log") for i in range(2)]
    for w in workers:

        def assigned(w: WorkerProcess = w) -> bool:
            return w.check_alive() and f"assigned {pipe.orders}" in w.text()

        wait_until(assigned, 90, "both workers to own partitions")
    total = first_half + produce(bootstrap, pipe.orders, mixed_orders(2000, 2000, bad_every=25))
    wait_until(
        lambda: all(w.check_alive() for w in workers) and all_committed(pipe, pipe.orders, total),
        120,
        "both workers to commit everything",
    )
    names = [STARTING.findall(w.text()) for w in workers]
    assert all(len(n) == 1 for n in names), names
    assert names[0] != names[1], f"both workers took instance {names[0]}"
    for w in workers:
        assert w.stop() == 0, w.text()[-3000:]
        assert "fenced" not in w.text().lower(), w.text()[-3000:]
    acc = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq, "read_committed")
    routed = [r.key for r in acc.outputs + acc.dead]  # keys are unique (test.seq is per call)
    assert Counter(routed) == Counter(r.key for r in acc.inputs), "lost or duplicated records"
    assert len(acc.dead) == total // 25
