"""Faults with real processes and a real broker: kill -9 in both delivery modes, a downstream
outage, and a rebalance across three workers. The accounting always re-reads the topics."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.core import contract
from scripts.kafka_broker import Broker
from tests.kit import (
    Pipeline,
    WorkerProcess,
    account,
    avro_framed,
    committed_offsets,
    good_order,
    produce,
    read_all,
    wait_until,
)


def mixed_orders(start: int, count: int, bad_every: int = 20) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + count):
        value = avro_framed(good_order(i))
        if i % bad_every == 0:
            value = value[:-2]  # truncated: a dead letter
        out.append((f"key-{i}".encode(), value))
    return out


def started(worker: WorkerProcess) -> bool:
    """Alive, and past start-up: its SIGTERM handler installed. The first worker may commit
    everything before its kill, and a SIGTERM during the next one's imports ended it with the
    signal's default action (-15) instead of a clean stop (seen in CI)."""
    return worker.check_alive() and " starting (" in worker.text()


def all_committed(pipe: Pipeline, topic: str, total: int) -> bool:
    offsets = committed_offsets(pipe.bootstrap, pipe.name, topic, pipe.partitions)
    return sum(max(o, 0) for o in offsets.values()) >= total


def test_at_least_once_survives_kill_9(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path, partitions=3).create()
    total = produce(bootstrap, pipe.orders, mixed_orders(0, 30_000))
    first = WorkerProcess(pipe.config, tmp_path / "w1.log")
    wait_until(
        lambda: first.check_alive() and len(read_all(bootstrap, pipe.output)) > 3000,
        90,
        "the first worker to make progress",
    )
    first.kill9()
    seen_before = len(read_all(bootstrap, pipe.output))
    assert seen_before < total, "the kill should land mid-run"

    second = WorkerProcess(pipe.config, tmp_path / "w2.log")
    wait_until(
        lambda: started(second) and all_committed(pipe, pipe.orders, total),
        180,
        "the restarted worker to commit everything",
    )
    assert second.stop() == 0
    acc = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq)
    assert acc.missing == set(), f"{len(acc.missing)} records lost"
    assert len(acc.dead) >= total // 20
    print(f"\nat-least-once kill -9: {total} inputs, {acc.duplicates} duplicates after restart")


def test_exactly_once_kill_lands_in_open_transaction(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(
        bootstrap,
        tmp_path,
        partitions=1,
        delivery="exactly-once",
        top='processor = "tests.processors:stall"',
        extra="[policy]\nretry_budget_ms = 5000\n",
    ).create()
    # the processor re-encodes with the source schema, so outputs are Avro too
    total = produce(bootstrap, pipe.orders, mixed_orders(0, 3000))
    stalls = tmp_path / "stalls"
    stalls.mkdir()
    first = WorkerProcess(pipe.config, tmp_path / "w1.log", env={"LAZARUS_TEST_STALL": str(stalls)})
    for offset in (1050, 1550, 2050, 2550):
        marker = stalls / f"stalled-{offset}"

        def stalled(marker: Path = marker) -> bool:
            return first.check_alive() and marker.exists()

        wait_until(stalled, 90, f"a stall at {offset}")
        time.sleep(1.0)  # linger: the batch's records before the stall reach the broker
        stable = len(read_all(bootstrap, pipe.output, "read_committed"))
        raw = len(read_all(bootstrap, pipe.output, "read_uncommitted"))
        if raw > stable:
            break  # a transaction is open with records in it: kill now
        (stalls / f"release-{offset}").touch()  # the stall began a batch: try the next one
    else:
        raise AssertionError("no stall landed inside an open transaction")
    first.kill9()

    second = WorkerProcess(pipe.config, tmp_path / "w2.log")
    wait_until(
        lambda: started(second) and all_committed(pipe, pipe.orders, total),
        180,
        "the restarted worker to commit everything",
    )
    assert second.stop() == 0

    committed = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq, "read_committed")
    assert committed.missing == set()
    assert committed.duplicates == 0, "read_committed must see exactly one copy of each input"
    uncommitted = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq, "read_uncommitted")
    aborted = uncommitted.duplicates
    assert aborted > 0, "the aborted transaction's copies are visible to read_uncommitted"
    print(f"\nexactly-once kill -9: {total} inputs, {aborted} aborted copies, 0 duplicates")


def test_broker_outage_opens_the_breaker_and_dead_letters_nothing_extra(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    """The broker goes away for longer than message.timeout.ms in the middle of a run.

    (A DLQ with min.insync.replicas=2 on one broker does not fail produces on Kafka 4.1: the
    broker accepts them, so the outage here is the broker itself.)"""
    broker = broker_factory()
    pipe = Pipeline(
        broker.bootstrap,
        tmp_path,
        top='processor = "tests.processors:slow"',
        extra="[policy]\nbreaker_open_ms = 500\nbreaker_max_open_ms = 2000\nstall_ms = 1000\n",
    ).create()
    text = pipe.config.read_text().replace(
        '"message.timeout.ms" = 10000', '"message.timeout.ms" = 3000'
    )
    pipe.config.write_text(text)
    total = produce(broker.bootstrap, pipe.orders, mixed_orders(0, 3000, bad_every=10))
    worker = WorkerProcess(pipe.config, tmp_path / "w.log")
    wait_until(
        lambda: worker.check_alive() and len(read_all(broker.bootstrap, pipe.dlq)) > 20,
        60,
        "progress before the outage",
    )
    broker.stop()
    time.sleep(8)  # longer than message.timeout.ms: deliveries fail, the breaker opens
    assert worker.alive()
    broker.start()
    wait_until(
        lambda: worker.check_alive() and all_committed(pipe, pipe.orders, total),
        120,
        "recovery after the outage",
    )
    assert worker.stop() == 0
    acc = account(broker.bootstrap, [pipe.orders], pipe.output, pipe.dlq)
    assert acc.missing == set()
    dead_inputs = {r.header("test.seq") for r in acc.dead}
    assert len(dead_inputs) == total // 10, "only the bad records were dead-lettered"
    for letter in acc.dead:
        meta = contract.parse_dead_letter(letter.headers)
        assert meta is not None and meta.category is not None
        assert meta.category.value == "deserialization"
    log = worker.text()
    assert "circuit breaker closed -> open" in log, log[-3000:]
    assert "open -> half_open" in log and "half_open -> closed" in log
    assert "resuming" in log  # it sought back to the first unacknowledged offset
    print(f"\nbroker outage: {total} inputs, {acc.duplicates} duplicates, 0 lost")


def test_rebalance_across_three_workers_loses_nothing(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path, partitions=6).create()
    names = ("a", "b", "c")
    workers = {n: WorkerProcess(pipe.config, tmp_path / f"{n}.log", "--instance", n) for n in names}
    # every member owns partitions before phase 1 is produced: on a loaded machine the first two
    # members to join could otherwise drain all of phase 1 before the third one starts
    wait_until(
        lambda: all(
            w.check_alive() and f"assigned {pipe.orders}" in w.text() for w in workers.values()
        ),
        90,
        "all three workers to own partitions",
    )
    phase1 = produce(bootstrap, pipe.orders, mixed_orders(0, 3000, bad_every=10))
    wait_until(lambda: all_committed(pipe, pipe.orders, phase1), 90, "phase 1")

    assert workers["c"].stop() == 0  # c leaves: a rebalance
    phase2 = produce(bootstrap, pipe.orders, mixed_orders(3000, 3000, bad_every=10))
    workers["c"] = WorkerProcess(pipe.config, tmp_path / "c2.log", "--instance", "c")  # rejoins
    wait_until(
        lambda: workers["c"].check_alive() and f"assigned {pipe.orders}" in workers["c"].text(),
        60,
        "c to get partitions again",
    )
    phase3 = produce(bootstrap, pipe.orders, mixed_orders(6000, 3000, bad_every=10))
    total = phase1 + phase2 + phase3
    wait_until(lambda: all_committed(pipe, pipe.orders, total), 120, "all phases")
    for w in workers.values():
        assert w.stop() == 0

    acc = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq)
    assert acc.missing == set()
    by_phase: dict[str, set[int]] = {n: set() for n in names}
    for letter in acc.dead:
        instance = (letter.text(contract.WORKER) or "").rsplit(":", 1)[-1]
        index = int((letter.key or b"key-0").decode().rsplit("-", 1)[-1])
        by_phase[instance].add(0 if index < 3000 else 1)
    for n in names:
        assert by_phase[n] == {0, 1}, f"worker {n} processed only in phases {by_phase[n]}"


def test_invalid_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        'pipeline = "has space"\ndelivery = "sometimes"\n[sources.x]\nformat = "xml"\n'
        '[output]\ntopic = "ok"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "lazarus.cli", "worker", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    legal = "must be a legal Kafka topic name (letters, digits, '.', '_', '-')"
    assert any(line.endswith(f"pipeline: Value error, {legal}") for line in lines), lines
    assert any(
        "delivery: Input should be 'at-least-once' or 'exactly-once'" in line for line in lines
    )
    assert any("sources.x.format" in line for line in lines)
    assert any(line.endswith("dlq: Field required") for line in lines)
    assert all(line.startswith("lazarus: error: ") for line in lines)
