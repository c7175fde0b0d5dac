"""Worker features on the real broker: processing functions and retries, the flood guard, hold
rules (expiry and SIGHUP reload), `--processes`, topic checks and the metrics endpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.app.instance import host_name
from pipeline.core import contract
from tests.conftest import create_topics
from tests.kit import (
    Pipeline,
    WorkerProcess,
    account,
    avro_framed,
    committed_offsets,
    free_port,
    good_order,
    produce,
    read_all,
    wait_until,
)

AVRO_OUT = """
[policy]
retryable = ["tests.processors:PricingDown"]
max_attempts = 3
initial_backoff_ms = 20
max_backoff_ms = 50
"""


def committed(pipe: Pipeline, topic: str) -> int:
    offsets = committed_offsets(pipe.bootstrap, pipe.name, topic, pipe.partitions)
    return sum(max(o, 0) for o in offsets.values())


def run_to_end(pipe: Pipeline, tmp_path: Path, topic: str, total: int, *args: str) -> str:
    worker = WorkerProcess(pipe.config, tmp_path / f"w{time.monotonic_ns()}.log", *args)
    try:
        wait_until(
            lambda: worker.check_alive() and committed(pipe, topic) >= total, 90, "all committed"
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.text()
    return worker.text()


def test_processing_function_outputs_retries_and_failures(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(
        bootstrap, tmp_path, top='processor = "tests.processors:flaky"', extra=AVRO_OUT
    ).create()
    ids = [
        0,
        1,
        2,
        3,
        4,
        5,
    ]  # o-0 enrich, o-1 retry ok, o-2 exhausted, o-3 bug, o-4 split, o-5 drop
    total = produce(
        bootstrap, pipe.orders, [(f"k{i}".encode(), avro_framed(good_order(i))) for i in ids]
    )
    log = run_to_end(pipe, tmp_path, pipe.orders, total)

    from pipeline.codecs.avro import AvroCodec
    from pipeline.codecs.catalog import LocalCatalog
    from tests.kit import REPO

    codec = AvroCodec(source=LocalCatalog(REPO / "schemas/avro"))

    def event(value: bytes | None) -> dict[str, object]:
        decoded = codec.decode(value or b"").event
        assert isinstance(decoded, dict), decoded  # a codec without a model decodes to a dict
        return decoded

    outputs = {event(r.value)["order_id"]: r for r in read_all(bootstrap, pipe.output)}
    assert set(outputs) == {"o-0", "o-1", "o-4", "o-4-b"}
    assert event(outputs["o-0"].value)["amount"] == 20.0
    dead = {r.key: contract.parse_dead_letter(r.headers) for r in read_all(bootstrap, pipe.dlq)}
    assert set(dead) == {b"k2", b"k3"}
    exhausted, bug = dead[b"k2"], dead[b"k3"]
    assert exhausted is not None and bug is not None
    assert exhausted.category is not None and exhausted.category.value == "retries_exhausted"
    assert exhausted.attempts == 3
    assert exhausted.error_type == "tests.processors.PricingDown"
    assert bug.category is not None and bug.category.value == "processing"
    assert bug.error_type == "KeyError" and bug.attempts == 1
    assert bug.stacktrace is not None and "flaky" in bug.stacktrace
    assert "event dropped by the processing function" in log


def test_flood_guard_pauses_instead_of_draining(bootstrap: str, tmp_path: Path) -> None:
    guard = (
        "[policy]\nflood_ratio = 0.5\nflood_window = 20\nflood_min_records = 10\n"
        "flood_pause_ms = 60000\n"
    )
    pipe = Pipeline(bootstrap, tmp_path, extra=guard).create()
    bad = [(f"k{i}".encode(), b"\x00\x00\x00\x00\x01garbage") for i in range(300)]
    total = produce(bootstrap, pipe.orders, bad)
    worker = WorkerProcess(pipe.config, tmp_path / "w.log")
    wait_until(
        lambda: worker.check_alive() and "flood guard" in worker.text(), 60, "the flood guard"
    )
    time.sleep(3)
    leaked = len(read_all(bootstrap, pipe.dlq))
    assert 0 < leaked < 20, f"{leaked} dead letters: the guard should pause after a handful"
    assert worker.stop() == 0
    assert committed(pipe, pipe.orders) <= leaked, "paused records must not be committed"

    # Lift the guard: everything that was held back is dead-lettered, nothing was skipped.
    pipe.extra = "[policy]\nflood_guard = false\n"
    pipe.write()
    run_to_end(pipe, tmp_path, pipe.orders, total)
    acc = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq)
    assert acc.missing == set()
    assert len(acc.dead) == total


def write_holds(path: Path, rules: list[str]) -> None:
    path.write_text("\n".join(rules))


def rule(name: str, expires: datetime, selector: str) -> str:
    stamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'[[hold]]\nname = "{name}"\nreason = "review {name}"\nexpires = {stamp}\n{selector}\n'


def test_hold_rules_park_expire_and_reload_on_sighup(bootstrap: str, tmp_path: Path) -> None:
    holds = tmp_path / "holds.toml"
    now = datetime.now(UTC)
    write_holds(
        holds,
        [rule("cust-3", now + timedelta(seconds=12), 'field = "customer.id"\nequals = "c-3"')],
    )
    pipe = Pipeline(
        bootstrap, tmp_path, partitions=1, extra=f'[policy]\nholds = "{holds}"\n'
    ).create()
    worker = WorkerProcess(pipe.config, tmp_path / "w.log")
    produce(
        bootstrap, pipe.orders, [(f"k{i}".encode(), avro_framed(good_order(i))) for i in range(7)]
    )
    wait_until(lambda: worker.check_alive() and committed(pipe, pipe.orders) >= 7, 60, "batch 1")
    held = read_all(bootstrap, pipe.dlq)
    assert [r.key for r in held] == [b"k3"]  # good_order(3) has customer c-3
    meta = contract.parse_dead_letter(held[0].headers)
    assert meta is not None and meta.category is not None and meta.category.value == "held"
    assert (meta.policy_rule or "").startswith("hold:cust-3@")

    # SIGHUP: a new rule on a key applies without a restart
    write_holds(
        holds,
        [
            rule("cust-3", now + timedelta(seconds=12), 'field = "customer.id"\nequals = "c-3"'),
            rule("key-k8", now + timedelta(hours=1), 'key = "k8"'),
        ],
    )
    worker.signal(signal.SIGHUP)
    wait_until(lambda: "hold rules reloaded" in worker.text(), 30, "the reload")
    produce(bootstrap, pipe.orders, [(b"k8", avro_framed(good_order(8)))])
    wait_until(lambda: committed(pipe, pipe.orders) >= 8, 60, "batch 2")
    assert [r.key for r in read_all(bootstrap, pipe.dlq)] == [b"k3", b"k8"]

    # after expiry, c-3 flows again
    wait_until(lambda: "hold rule cust-3 expired" in worker.text(), 30, "expiry to be logged")
    produce(bootstrap, pipe.orders, [(b"k10", avro_framed(good_order(10)))])  # 10 % 7 == 3
    wait_until(lambda: committed(pipe, pipe.orders) >= 9, 60, "batch 3")
    assert worker.stop() == 0
    assert [r.key for r in read_all(bootstrap, pipe.dlq)] == [b"k3", b"k8"]
    assert b"k10" in [r.key for r in read_all(bootstrap, pipe.output)]


def test_two_processes_share_the_work(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path, partitions=4).create()
    records = []
    for i in range(2000):
        value = avro_framed(good_order(i))
        records.append((f"k{i}".encode(), value[:-1] if i % 50 == 0 else value))
    total = produce(bootstrap, pipe.orders, records)
    run_to_end(pipe, tmp_path, pipe.orders, total, "--processes", "2")
    acc = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq)
    assert acc.missing == set() and acc.duplicates == 0
    instances = {(r.text(contract.WORKER) or "").rsplit(":", 1)[-1] for r in acc.dead}
    host = host_name()  # no --instance: each child takes the lowest index free on this host
    assert instances == {f"{host}-0", f"{host}-1"}


def test_processes_serve_metrics_on_their_own_ports_and_a_dead_member_is_restarted(
    bootstrap: str, tmp_path: Path
) -> None:
    port = free_port(2)
    pipe = Pipeline(bootstrap, tmp_path, partitions=4, top=f"metrics_port = {port}").create()
    worker = WorkerProcess(pipe.config, tmp_path / "w.log", "--processes", "2")
    urls = [f"http://127.0.0.1:{port + i}/readyz" for i in (0, 1)]

    def serving() -> bool:
        return worker.check_alive() and all(_status(url) == 200 for url in urls)

    wait_until(serving, 60, "both members ready on their ports")
    first, _second = _children(worker.proc.pid)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: first not in _children(worker.proc.pid), 30, "the member to die")
    wait_until(serving, 60, "the member restarted and serving again")
    assert len(_children(worker.proc.pid)) == 2
    assert "restarting it" in worker.text()
    assert worker.stop() == 0


def _status(url: str) -> int:
    try:
        return int(urllib.request.urlopen(url, timeout=2).status)
    except (urllib.error.URLError, OSError):
        return 0


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc), oldest first."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def lazarus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lazarus.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_topics_check_and_create(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path)
    create_topics(bootstrap, [pipe.orders, pipe.payments], 3)
    pipe.write()
    result = lazarus("topics", "--config", str(pipe.config))
    assert result.returncode == 1, result.stderr
    assert f"problem: topic {pipe.dlq} does not exist" in result.stderr
    assert f"problem: topic {pipe.dlq}.ledger does not exist" in result.stderr

    worker = lazarus("worker", "--config", str(pipe.config))
    assert worker.returncode == 1
    assert "topic check failed" in worker.stderr and "Traceback" not in worker.stderr

    created = lazarus("topics", "--config", str(pipe.config), "--create")
    assert created.returncode == 0, created.stderr
    for name in (pipe.output, pipe.dlq, pipe.redrive, f"{pipe.dlq}.ledger"):
        assert f"created {name}" in created.stdout
    assert "ok" in lazarus("topics", "--config", str(pipe.config)).stdout

    # a DLQ that would drop unresolved dead letters too early is refused
    short = Pipeline(bootstrap, tmp_path)
    short.create(dlq_config={"retention.ms": "60000"})
    result = lazarus("topics", "--config", str(short.config))
    assert result.returncode == 1
    assert "retention.ms is 60000, below the configured minimum" in result.stderr


def test_metrics_endpoint_counts_outcomes(bootstrap: str, tmp_path: Path) -> None:
    port = free_port()
    pipe = Pipeline(bootstrap, tmp_path, top=f"metrics_port = {port}").create()
    records = [(b"ok", avro_framed(good_order(1))), (b"bad", b"\x00\x00\x00\x00\x01x")]
    total = produce(bootstrap, pipe.orders, records)
    worker = WorkerProcess(pipe.config, tmp_path / "w.log")
    wait_until(lambda: worker.check_alive() and committed(pipe, pipe.orders) >= total, 60, "done")
    name = pipe.name
    forwarded = f'lazarus_records_total{{outcome="forwarded",pipeline="{name}"}} 1.0'
    url = f"http://127.0.0.1:{port}"

    def page() -> str:
        return str(urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode())

    wait_until(lambda: forwarded in page(), 10, "the metrics flushed (once a second)")
    text = page()
    assert f'lazarus_dead_letters_total{{category="deserialization",pipeline="{name}"}} 1.0' in text
    assert f'lazarus_breaker_state{{pipeline="{name}",state="closed"}} 1.0' in text
    assigned = 3 * pipe.partitions  # orders, payments and the redrive topic
    assert f'lazarus_assigned_partitions{{pipeline="{name}"}} {assigned}.0' in text
    assert f'lazarus_produce_failures_total{{pipeline="{name}",target="dlq"}} 0.0' in text
    assert "lazarus_flood_guard_paused" in text
    assert "lazarus_batch_duration_seconds_bucket" in text
    assert "lazarus_last_commit_timestamp_seconds" in text
    assert "process_cpu_seconds_total" in text and "python_gc_objects_collected_total" in text
    assert urllib.request.urlopen(f"{url}/livez", timeout=10).status == 200
    assert urllib.request.urlopen(f"{url}/readyz", timeout=10).status == 200
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{url}/other", timeout=10)
    assert missing.value.code == 404
    assert _listening_addresses(port) == {"127.0.0.1"}  # loopback only by default
    assert worker.stop() == 0


def _listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at `port`, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_dependency_outage_opens_the_breaker_instead_of_dead_lettering(
    bootstrap: str, tmp_path: Path
) -> None:
    marker = tmp_path / "outage"
    marker.write_text("down")
    pipe = Pipeline(
        bootstrap,
        tmp_path,
        top='processor = "tests.processors:marker_outage"',
        extra=(
            "[policy]\nmax_attempts = 3\nbreaker_threshold = 2\ninitial_backoff_ms = 10\n"
            "max_backoff_ms = 20\nbreaker_open_ms = 300\nbreaker_max_open_ms = 1000\n"
        ),
    ).create()
    total = produce(
        bootstrap, pipe.orders, [(f"k{i}".encode(), avro_framed(good_order(i))) for i in range(50)]
    )
    worker = WorkerProcess(
        pipe.config, tmp_path / "w.log", env={"LAZARUS_TEST_OUTAGE": str(marker)}
    )
    wait_until(
        lambda: worker.check_alive() and "circuit breaker closed -> open" in worker.text(),
        60,
        "the breaker to open",
    )
    time.sleep(3)  # several half-open probes fail while the dependency is down
    assert read_all(bootstrap, pipe.dlq) == []
    assert committed(pipe, pipe.orders) == 0
    marker.unlink()  # the dependency recovers
    wait_until(lambda: worker.check_alive() and committed(pipe, pipe.orders) >= total, 60, "done")
    assert worker.stop() == 0
    acc = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq)
    assert acc.missing == set() and acc.dead == []
    assert "half_open -> closed" in worker.text()
