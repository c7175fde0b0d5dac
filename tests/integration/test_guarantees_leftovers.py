"""A record with several outputs, one of which the real client or broker refuses as too large:
at once by librdkafka's own `message.max.bytes` check, or in the delivery report by the output
topic's `max.message.bytes`. Exactly-once writes all of a record's outputs or its dead letter,
never both (a read_committed reader sees each input once in output or DLQ)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.core import contract
from pipeline.core.handler import Context
from tests.integration.test_guarantees_adversarial import limit_message_bytes
from tests.integration.test_worker_routing import run_until_committed
from tests.kit import SEQ, Pipeline, account, good_payment, produce

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
