"""SASL/SCRAM-SHA-512 with ACLs (the broker's SASL profile): the worker and `dlq` work with
credentials passed as librdkafka properties in the config; wrong credentials fail fast with one
line and a non-zero exit; a principal without Write on a target cannot replay (the ledger stays as
it was); DLQ writes refused by an ACL for a while, then allowed: nothing committed past an
unacknowledged dead letter, nothing dead-lettered twice, nothing lost."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from pipeline.core import contract
from scripts.kafka_broker import Broker
from tests.conftest import create_topics
from tests.dlq_kit import failure, fill, lazarus_letter
from tests.faults.accounting import Checker
from tests.faults.conftest import RESULTS
from tests.faults.harness import fill as fill_orders
from tests.kit import REPO, Pipeline, WorkerProcess, read_all, wait_until

WORKER, WORKER_PASSWORD = "lazarus-worker", "worker-secret"
OPERATOR, OPERATOR_PASSWORD = "lazarus-operator", "operator-secret"


def acl(
    kind: ResourceType,
    name: str,
    user: str,
    operation: AclOperation = AclOperation.ALL,
    permission: AclPermissionType = AclPermissionType.ALLOW,
    pattern: ResourcePatternType = ResourcePatternType.PREFIXED,
) -> AclBinding:
    return AclBinding(kind, name, pattern, f"User:{user}", "*", operation, permission)


def change_acls(broker: Broker, add: list[AclBinding], remove: tuple[AclBinding, ...] = ()) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    if add:
        for future in admin.create_acls(add).values():
            future.result(timeout=30)
    if remove:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in remove
        ]
        for future in admin.delete_acls(filters).values():
            future.result(timeout=30)
    time.sleep(1.0)  # ACL changes reach the authorizer through the metadata log


@pytest.fixture(scope="module")
def users(sasl_broker: Broker) -> Broker:
    sasl_broker.add_user(WORKER, WORKER_PASSWORD)
    sasl_broker.add_user(OPERATOR, OPERATOR_PASSWORD)
    return sasl_broker


def kafka_table(user: str, password: str) -> str:
    return (
        '[kafka]\n"security.protocol" = "SASL_PLAINTEXT"\n"sasl.mechanism" = "SCRAM-SHA-512"\n'
        f'"sasl.username" = "{user}"\n"sasl.password" = "{password}"\n'
    )


def sasl_pipeline(broker: Broker, workdir: Path, password: str = WORKER_PASSWORD) -> Pipeline:
    """Topics created as the super user; the config logs in as the worker on the SASL listener;
    the worker may do anything to its own topics, group and transactional ids."""
    pipe = Pipeline(broker.bootstrap, workdir, partitions=2).create()
    pipe.bootstrap = broker.sasl_bootstrap
    pipe.extra = kafka_table(WORKER, password)
    pipe.top = 'processor = "tests.processors:slow"'
    pipe.write()
    pipe.bootstrap = broker.bootstrap  # the test reads back as the super user
    change_acls(
        broker,
        [
            acl(ResourceType.TOPIC, pipe.name, WORKER),
            acl(ResourceType.GROUP, pipe.name, WORKER),
            acl(ResourceType.TRANSACTIONAL_ID, "lazarus-", WORKER),
            # `dlq` reads with assign(), but librdkafka still looks up the coordinator of its
            # groups (lazarus-dlq-reader, lazarus-dlq-index)
            acl(ResourceType.GROUP, "lazarus-dlq-", WORKER),
        ],
    )
    return pipe


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def test_worker_and_dlq_work_with_scram_credentials(users: Broker, tmp_path: Path) -> None:
    pipe = sasl_pipeline(users, tmp_path)
    total = fill_orders(pipe, 400)
    worker = WorkerProcess(pipe.config, tmp_path / "w.log")
    check = Checker(users.bootstrap, pipe.name, [pipe.orders], pipe.output, pipe.dlq, 2)
    try:
        wait_until(lambda: worker.check_alive() and check.all_committed(), 90, "all committed")
    finally:
        assert worker.stop() == 0, worker.text()[-3000:]
    report = check.check("SASL worker", "at-least-once", 0)
    report.assert_holds()
    assert len(read_all(users.bootstrap, pipe.dlq)) == total // 20
    stats = run("reprocessor.cli", "--config", str(pipe.config), "stats")
    assert stats.returncode == 0, stats.stdout + stats.stderr
    assert f"{total // 20} dead letters" in stats.stdout
    assert WORKER_PASSWORD not in worker.text() + stats.stdout + stats.stderr


def one_line_errors(stderr: str) -> list[str]:
    """The command's own error lines (`lazarus: error: …`, `dlq: error: …`); librdkafka's log
    lines about the refused login are dropped (see `clients._Quieter`)."""
    return [line for line in stderr.splitlines() if line.startswith(("lazarus: ", "dlq: "))]


@pytest.mark.parametrize("command", ["worker", "dlq"])
def test_wrong_credentials_fail_fast_with_one_line(
    users: Broker, tmp_path: Path, command: str
) -> None:
    pipe = sasl_pipeline(users, tmp_path, password="not-the-password")
    args = (
        ("lazarus.cli", "worker", "--config", str(pipe.config))
        if command == "worker"
        else ("reprocessor.cli", "--config", str(pipe.config), "stats")
    )
    result = run(*args, timeout=90)  # a hang fails here
    assert result.returncode != 0, result.stdout + result.stderr
    errors = one_line_errors(result.stderr)
    assert len(errors) == 1, result.stderr
    assert result.stderr.strip().splitlines() == errors  # no librdkafka line before it
    assert "Traceback" not in result.stderr
    assert "authentication" in errors[0].lower() or "sasl" in errors[0].lower(), errors
    assert "not-the-password" not in result.stdout + result.stderr


def test_operator_without_write_on_the_target_cannot_replay(users: Broker, tmp_path: Path) -> None:
    stem = f"s{uuid.uuid4().hex[:8]}"
    dlq_topic, target = f"{stem}.dlq", f"{stem}.target"
    create_topics(users.bootstrap, [dlq_topic, target], 1)
    create_topics(
        users.bootstrap, [contract.ledger_topic(dlq_topic)], 1, {"cleanup.policy": "compact"}
    )
    why = failure()
    fill(
        users.bootstrap,
        dlq_topic,
        [lazarus_letter("orders", i, f"k{i}".encode(), b"v", why) for i in range(20)],
    )
    change_acls(
        users,
        [
            acl(ResourceType.TOPIC, dlq_topic, OPERATOR),  # the DLQ and its ledger
            acl(ResourceType.TRANSACTIONAL_ID, "lazarus-dlq-", OPERATOR),
            acl(ResourceType.GROUP, "*", OPERATOR, pattern=ResourcePatternType.LITERAL),
            acl(
                ResourceType.TOPIC,
                target,
                OPERATOR,
                AclOperation.DESCRIBE,
                pattern=ResourcePatternType.LITERAL,
            ),
        ],
    )
    config = tmp_path / "operator.toml"
    config.write_text(
        f'pipeline = "{stem}"\nbootstrap = "{users.sasl_bootstrap}"\n'
        f'[sources."{stem}.orders"]\nformat = "bytes"\n[output]\ntopic = "{stem}.out"\n'
        f'[dlq]\ntopic = "{dlq_topic}"\n' + kafka_table(OPERATOR, OPERATOR_PASSWORD)
    )
    ledger_before = read_all(users.bootstrap, contract.ledger_topic(dlq_topic))
    result = run(
        "reprocessor.cli",
        "--config",
        str(config),
        "replay",
        "--to",
        target,
        "--yes",
        "--state-dir",
        str(tmp_path),
        timeout=90,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert read_all(users.bootstrap, target) == []
    after = read_all(users.bootstrap, contract.ledger_topic(dlq_topic))
    assert [(r.key, r.value) for r in after] == [(r.key, r.value) for r in ledger_before]
    errors = one_line_errors(result.stderr)
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "authoriz" in errors[0].lower() and target in errors[0], errors


def test_dlq_writes_refused_for_a_while(users: Broker, tmp_path: Path) -> None:
    """A DENY Write on the DLQ for the worker's principal while the output works; lifted after
    a few seconds. Meanwhile no committed offset may pass the first bad record (its dead letter
    is unacknowledged); afterwards every input is routed once to the DLQ or at least once to the
    output."""
    pipe = sasl_pipeline(users, tmp_path)
    deny = acl(
        ResourceType.TOPIC,
        pipe.dlq,
        WORKER,
        AclOperation.WRITE,
        AclPermissionType.DENY,
        ResourcePatternType.LITERAL,
    )
    change_acls(users, [deny])
    total = fill_orders(pipe, 2000)
    check = Checker(users.bootstrap, pipe.name, [pipe.orders], pipe.output, pipe.dlq, 2)
    first_bad: dict[int, int] = {}
    for rec in read_all(users.bootstrap, pipe.orders):
        if int((rec.key or b"key-1").decode().rsplit("-", 1)[1]) % 20 == 0:
            first_bad.setdefault(rec.partition, rec.offset)
    worker = WorkerProcess(pipe.config, tmp_path / "w.log")
    try:
        wait_until(
            lambda: worker.check_alive() and len(read_all(users.bootstrap, pipe.output)) > 100,
            90,
            "the output to work while the DLQ refuses",
        )
        for _ in range(8):  # a few seconds of refusals
            worker.check_alive()
            for (_, partition), offset in check.committed().items():
                assert offset <= first_bad[partition], (
                    f"committed {offset} on partition {partition} past the unacknowledged dead "
                    f"letter at {first_bad[partition]}\n{worker.text()[-3000:]}"
                )
            time.sleep(0.5)
        assert read_all(users.bootstrap, pipe.dlq, "read_uncommitted") == []
        check.mark("DLQ refused", {(pipe.orders, p): 0 for p in range(2)})
        change_acls(users, [], (deny,))
        wait_until(lambda: worker.check_alive() and check.all_committed(), 120, "recovery")
    finally:
        code = worker.stop()
    assert code == 0, worker.text()[-3000:]
    report = check.check("DLQ writes refused (ACL)", "at-least-once", 1)
    RESULTS.append(("DLQ writes refused, ACL (at-least-once)", 1, report))
    print("\n" + report.summary())
    dead = [r.header("test.seq") for r in read_all(users.bootstrap, pipe.dlq)]
    assert len(dead) == len(set(dead)) == total // 20, "a record dead-lettered twice or never"
    report.assert_holds()
