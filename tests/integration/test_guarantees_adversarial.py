"""Adversarial cases of the worker's guarantees that need the real client and broker: a record
the broker (not librdkafka's own size check) refuses as too large, which comes back in a
delivery report (at-least-once) or fails the transaction's commit (exactly-once)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from pipeline.core import contract
from tests.integration.test_worker_routing import run_until_committed
from tests.kit import (
    Pipeline,
    WorkerProcess,
    account,
    committed_offsets,
    good_payment,
    produce,
    wait_until,
)


def limit_message_bytes(bootstrap: str, topic: str, limit: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry(
        "max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_an_output_the_broker_refuses_as_too_large_is_dead_lettered_and_the_rest_flows(
    bootstrap: str, tmp_path: Path, delivery: str
) -> None:
    """The output topic takes 4,000 bytes, the producer 1 MB: the broker refuses the 20 kB
    record. It is dead-lettered (processing, lazarus.RecordTooLarge), every other record is
    forwarded (once, exactly-once), and the offsets are committed to the end."""
    policy = "[policy]\nretry_budget_ms = 5000\n"  # fits the 10 s transaction timeout
    pipe = Pipeline(bootstrap, tmp_path, partitions=1, delivery=delivery, extra=policy).create()
    limit_message_bytes(bootstrap, pipe.output, 4000)
    payments = [good_payment(i) for i in range(30)]
    payments[11]["order_id"] = os.urandom(10_000).hex()  # lz4 cannot shrink it below 4,000
    values = [json.dumps(p).encode() for p in payments]
    produce(bootstrap, pipe.payments, [(f"p{i}".encode(), v) for i, v in enumerate(values)])
    run_until_committed(pipe, tmp_path, {pipe.payments: 30})
    acc = account(bootstrap, [pipe.payments], pipe.output, pipe.dlq)
    assert not acc.missing
    assert len(acc.outputs) >= 29 and len(acc.dead) == 1
    if delivery == "exactly-once":
        assert acc.duplicates == 0 and len(acc.outputs) == 29
    meta = contract.parse_dead_letter(acc.dead[0].headers)
    assert meta is not None and meta.source_offset == 11
    assert meta.category is not None and meta.category.value == "processing"


def test_a_rebalance_during_a_retry_wait_writes_every_record_once(
    bootstrap: str, tmp_path: Path
) -> None:
    """Exactly-once: the first worker waits to retry (its dependency down) when a second one
    joins; the eager rebalance revokes every partition and gives the payments back. Their records
    are read again from the committed offset, so those of the batch in hand must not also be
    routed (they were: written twice)."""
    policy = (
        "[policy]\nmax_attempts = 1000\nbreaker_threshold = 1000\ninitial_backoff_ms = 100\n"
        "max_backoff_ms = 300\nretry_budget_ms = 9000\n"
    )
    pipe = Pipeline(
        bootstrap,
        tmp_path,
        delivery="exactly-once",
        top='processor = "tests.processors:marker_outage"',
        extra=policy,
    ).create()
    total = produce(
        bootstrap,
        pipe.payments,
        [(f"p{i}".encode(), json.dumps(good_payment(i)).encode()) for i in range(200)],
    )
    # The second member reads the orders only: the payments all go back to the first one,
    # the partition of the record it waits to retry included, whatever the member ids.
    orders_only = tmp_path / "orders-only.toml"
    source = f'[sources."{pipe.payments}"]\nformat = "json"\nmodel = "schemas.orders:Payment"\n'
    assert source in pipe.config.read_text()
    orders_only.write_text(pipe.config.read_text().replace(source, ""))
    marker = tmp_path / "outage"
    marker.write_text("")
    env = {"LAZARUS_TEST_OUTAGE": str(marker)}
    first = WorkerProcess(pipe.config, tmp_path / "first.log", env=env)
    second: WorkerProcess | None = None
    try:
        wait_until(lambda: first.check_alive() and "assigned" in first.text(), 60, "assigned")
        second = WorkerProcess(orders_only, tmp_path / "second.log", env=env)
        wait_until(
            lambda: first.check_alive() and first.text().count("assigned ") >= 2,
            60,
            "the first worker's partitions revoked and assigned again",
        )
        marker.unlink()
        wait_until(
            lambda: (
                first.check_alive()
                and sum(committed_offsets(bootstrap, pipe.name, pipe.payments, 2).values()) >= total
            ),
            90,
            "every offset committed",
        )
    finally:
        codes = [first.stop(), second.stop() if second is not None else 0]
    assert codes == [0, 0], first.text()[-3000:]
    acc = account(bootstrap, [pipe.payments], pipe.output, pipe.dlq)
    assert not acc.missing and acc.duplicates == 0
    assert "revoked" in first.text()
