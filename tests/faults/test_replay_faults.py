"""Replay faults the integration suite does not already cover (kill -9 of `dlq replay` and two
replays at once live in tests/integration/test_dlq_exactly_once.py): the ledger topic deleted
between two runs. The ledger is what makes a replay exactly once; losing it must not replay a
dead letter a second time."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from pipeline.core import contract
from scripts.kafka_broker import Broker
from tests.conftest import create_topics
from tests.dlq_kit import dlq, failure, fill, lazarus_letter, replays_of
from tests.faults.accounting import Report
from tests.faults.conftest import RESULTS
from tests.faults.harness import size
from tests.kit import wait_until


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=60)
    wait_until(
        lambda: topic not in admin.list_topics(timeout=10).topics, 60, f"{topic} to be deleted"
    )
    time.sleep(1.0)  # the deletion reaches every metadata cache


@pytest.mark.parametrize("ledger", ["created-by-the-first-replay", "created-up-front"])
def test_ledger_topic_deleted_between_runs(broker: Broker, tmp_path: Path, ledger: str) -> None:
    """Either the second run refuses (one line, non-zero exit) or it replays nothing again.
    The ledger exists before the first run (as `lazarus topics --create` makes it) or is
    created by it (a DLQ that had none)."""
    count = size(records=300, faults=1).records
    stem = f"f{uuid.uuid4().hex[:8]}"
    dlq_topic, target = f"{stem}.dlq", f"{stem}.to"
    create_topics(broker.bootstrap, [dlq_topic, target], 2)
    if ledger == "created-up-front":
        compact = {"cleanup.policy": "compact"}
        create_topics(broker.bootstrap, [contract.ledger_topic(dlq_topic)], 1, compact)
    why = failure()
    fill(
        broker.bootstrap,
        dlq_topic,
        [
            lazarus_letter("orders", i, f"k{i}".encode(), f"v{i}".encode(), why)
            for i in range(count)
        ],
    )
    command = ("-b", broker.bootstrap, "-t", dlq_topic, "replay", "--to", target, "--yes")
    state = ("--state-dir", str(tmp_path))
    first = dlq(*command, *state)
    assert first.code == 0, first.output
    assert sum(len(v) for v in replays_of(broker.bootstrap, target).values()) == count

    delete_topic(broker.bootstrap, contract.ledger_topic(dlq_topic))
    second = dlq(*command, *state)

    copies = replays_of(broker.bootstrap, target)
    extra = {k: len(v) - 1 for k, v in copies.items() if len(v) > 1}
    report = Report(
        "replay, ledger deleted",
        "exactly-once",
        count,
        [],
        [(0, i) for i in range(count - len(copies))],
        {(0, i): n for i, n in enumerate(extra.values())},
        0,
        [],
        1,
    )
    RESULTS.append((f"replay, ledger deleted ({ledger})", 1, report))
    print("\n" + report.summary() + f"; second run: {second.output}")
    assert not extra, (
        f"{len(extra)} dead letters replayed twice after the ledger topic was deleted "
        f"(second run exit {second.code}: {second.stdout.strip()[-300:]})"
    )
    assert second.code != 0, second.output
    assert len(second.stderr.strip().splitlines()) == 1, second.output
