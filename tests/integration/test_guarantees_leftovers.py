"""Guarantees the adversarial suite left open, on the real broker with real processes.

A record with several outputs, one of which the client or broker refuses as too large (at once
by librdkafka's own `message.max.bytes` check, or in the delivery report by the output topic's
`max.message.bytes`): exactly-once writes all of its outputs or its dead letter, never both. And
a clean stop (SIGTERM) before a suspect record is handled keeps the deaths counted on it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.core import contract
from pipeline.core.crashes import parse_mark
from pipeline.core.handler import Context
from pipeline.errors import Retryable
from tests.integration.test_guarantees_adversarial import limit_message_bytes
from tests.integration.test_poison_pill import _metadata
from tests.integration.test_worker_routing import run_until_committed
from tests.kit import (
    SEQ,
    Pipeline,
    WorkerProcess,
    account,
    avro_framed,
    committed_offsets,
    good_order,
    good_payment,
    produce,
)

HUGE_ENV = "LAZARUS_TEST_HUGE_BYTES"


def split_huge(event: Any, ctx: Context) -> Any:
    """The worker's processing function here: payment p-11 becomes three outputs, the second
    with an incompressible order id of $LAZARUS_TEST_HUGE_BYTES bytes."""
    if event.payment_id != "p-11":
        return event
    huge = os.urandom(int(os.environ[HUGE_ENV]) // 2).hex()
    return [
        event.model_copy(update={"payment_id": "p-11-a"}),
        event.model_copy(update={"payment_id": "p-11-huge", "order_id": huge}),
        event.model_copy(update={"payment_id": "p-11-c"}),
    ]


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
@pytest.mark.parametrize("how", ["at once", "in the delivery report"])
def test_a_record_with_one_output_too_large_is_dead_lettered_and_exactly_once_writes_no_other(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delivery: str, how: str
) -> None:
    policy = "[policy]\nretry_budget_ms = 5000\n"  # fits the 10 s transaction timeout
    processor = f'processor = "{__name__}:split_huge"'
    pipe = Pipeline(
        bootstrap, tmp_path, partitions=1, delivery=delivery, top=processor, extra=policy
    ).create()
    if how == "at once":  # above the producer's message.max.bytes (1,048,588)
        monkeypatch.setenv(HUGE_ENV, str(2_000_000))
    else:  # within the producer's, above the topic's
        monkeypatch.setenv(HUGE_ENV, str(20_000))
        limit_message_bytes(bootstrap, pipe.output, 4000)
    values = [json.dumps(good_payment(i)).encode() for i in range(30)]
    produce(bootstrap, pipe.payments, [(f"p{i}".encode(), v) for i, v in enumerate(values)])
    run_until_committed(pipe, tmp_path, {pipe.payments: 30})
    acc = account(bootstrap, [pipe.payments], pipe.output, pipe.dlq)
    assert not acc.missing
    (seq11,) = [r.header(SEQ) for r in acc.inputs if r.offset == 11]
    of_11 = [
        json.loads(r.value or b"{}")["payment_id"] for r in acc.outputs if r.header(SEQ) == seq11
    ]
    assert "p-11-huge" not in of_11
    assert acc.dead and all(r.header(SEQ) == seq11 for r in acc.dead)
    meta = contract.parse_dead_letter(acc.dead[0].headers)
    assert meta is not None and meta.source_offset == 11
    assert meta.category is not None and meta.category.value == "processing"
    assert meta.error_type == "lazarus.RecordTooLarge"
    if delivery == "exactly-once":
        assert of_11 == [] and len(acc.dead) == 1, of_11
        assert acc.duplicates == 0 and len(acc.outputs) == 29
        assert "may have been written" not in (meta.message or "")
    else:  # what was produced stays; in a delivery report the broker refuses the whole
        # request (the outputs beside the huge one too), which the sizing re-read then routes
        if how == "at once":
            assert "p-11-a" in of_11
        assert "one of 3 outputs" in (meta.message or ""), meta.message


PILL_ENV = "LAZARUS_TEST_PILL"
"""`die`: the worker process dies on o-13; else the name of a file to create when o-13 runs,
which then fails with a retryable error for good (the worker waits to retry it)."""


def dies_or_waits_on_o13(event: Any, ctx: Context) -> Any:
    if event["order_id"] != "o-13":
        return event
    how = os.environ[PILL_ENV]
    if how == "die":
        os._exit(137)
    Path(how).touch()
    raise Retryable("pricing service timed out")


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_sigterm_before_the_suspect_record_is_handled_keeps_its_deaths(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delivery: str
) -> None:
    """Two processes die (the second on o-13, which the marks then pin); the third marks o-13
    and is stopped cleanly while it waits to retry it. The stop used to clear the mark, and the
    death with it: a record that kills every other run never reached `crash_limit`. It leaves
    the death behind (a mark no process owns), so one more death dead-letters the record."""
    policy = (
        "[policy]\ncrash_limit = 2\nmax_attempts = 1000\nbreaker_threshold = 1000\n"
        "initial_backoff_ms = 200\nmax_backoff_ms = 500\nretry_budget_ms = 9000\n"
    )
    pipe = Pipeline(
        bootstrap,
        tmp_path,
        partitions=1,
        delivery=delivery,
        top=f'processor = "{__name__}:dies_or_waits_on_o13"',
        extra=policy,
    ).create()
    records = [(f"k{i}".encode(), avro_framed(good_order(i))) for i in range(20)]
    total = produce(bootstrap, pipe.orders, records)

    def run(name: str, how: str) -> int | None:
        """A worker until it dies (its exit code), or until `how`'s file appears (it is stopped
        then: None) or everything is committed (stopped: 0)."""
        monkeypatch.setenv(PILL_ENV, how)
        worker = WorkerProcess(pipe.config, tmp_path / f"{name}.log")
        deadline = time.monotonic() + 90
        while worker.alive() and time.monotonic() < deadline:
            if how != "die" and Path(how).exists():
                assert worker.stop() == 0, worker.text()[-3000:]
                return None
            if committed_offsets(bootstrap, pipe.name, pipe.orders, 1).get(0, 0) >= total:
                assert worker.stop() == 0, worker.text()[-3000:]
                return 0
            time.sleep(0.3)
        code = worker.stop()
        assert code == 137, worker.text()[-3000:]
        return code

    assert run("first", "die") == 137  # died on o-13 (its start mark at 0 says where it began)
    assert run("second", "die") == 137  # one record at a time from 0: the mark pins o-13
    assert parse_mark(_metadata(bootstrap, pipe.name, pipe.orders)) == (13, 1)
    assert run("third", str(tmp_path / "waiting")) is None  # o-13 marked, SIGTERM in its wait
    assert parse_mark(_metadata(bootstrap, pipe.name, pipe.orders)) == (13, 1)
    assert run("fourth", "die") == 137  # the second death on o-13: the limit
    assert run("fifth", "die") == 0  # o-13 dead-lettered as crashed without running
    acc = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq)
    assert acc.missing == set()
    (dead,) = acc.dead
    meta = contract.parse_dead_letter(dead.headers)
    assert dead.key == b"k13" and meta is not None and meta.category is not None
    assert (meta.category.value, meta.attempts) == ("crashed", 2)
