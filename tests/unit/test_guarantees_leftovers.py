"""Guarantees the adversarial suite left open, on the in-memory fake: a record with several
outputs of which one is refused as too large (exactly-once writes all its outputs or its dead
letter, never both), a crash mark the coordinator refuses at assignment, a clean stop while a
suspect partition's record is unhandled, and the flood guard counting a too-large record's dead
letter."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from pipeline.core import contract
from pipeline.core.policy import BreakerState
from pipeline.kafka.seam import SinkError, SinkFailure
from tests.unit.test_guarantees_adversarial import P0, dead_offsets, ids
from tests.unit.test_worker import OUTPUT, SOURCE, Rig, good, rig

HUGE = "o" * 5000


def split(event: Any, ctx: Any) -> object:
    """p-1 becomes three outputs, the second one too large for the output topic."""
    if event.payment_id == "p-1":
        return [
            event.model_copy(update={"payment_id": "p-1-a"}),
            event.model_copy(update={"payment_id": "p-1-huge", "order_id": HUGE}),
            event.model_copy(update={"payment_id": "p-1-c"}),
        ]
    return event


def refuse_huge_at_once(r: Rig) -> None:
    """librdkafka's own `message.max.bytes` check: the huge output is refused by `produce`."""
    original = r.sink.produce

    def produce(out: Any, batch: int) -> None:
        if out.topic == OUTPUT and HUGE.encode() in (out.value or b""):
            raise SinkFailure(SinkError("produce refused: too large", OUTPUT, too_large=True))
        original(out, batch)

    r.sink.produce = produce  # type: ignore[method-assign]


def split_rig(how: str, *, exactly_once: bool, linger_s: float = 0.0) -> Rig:
    r = rig(exactly_once=exactly_once, processor=split, linger_s=linger_s)
    for i in range(4):
        r.cluster.append(SOURCE, good(i))
    if how == "at once":
        refuse_huge_at_once(r)
    else:  # the output topic's max.message.bytes: refused in the delivery report
        r.sink.max_bytes[OUTPUT] = 2000
    return r


# -- 1. several outputs, one refused as too large ----------------------------------------------
@pytest.mark.parametrize("linger_s", [0.0, 60.0])
@pytest.mark.parametrize("how", ["at once", "in the delivery report"])
def test_exactly_once_writes_all_outputs_of_a_record_or_its_dead_letter_never_both(
    how: str, linger_s: float
) -> None:
    """A read_committed reader sees each input exactly once in output or DLQ. The record's first
    output was in the transaction already when the second was refused: it must not be committed
    beside the dead letter (it was, for a refusal at once)."""
    r = split_rig(how, exactly_once=True, linger_s=linger_s)
    r.steps(6)
    r.clock.advance(61.0)
    r.steps(6)
    seen = ids(r)
    assert not {"p-1-a", "p-1-huge", "p-1-c"} & set(seen), seen
    assert seen == Counter({"p-0": 1, "p-2": 1, "p-3": 1})
    assert dead_offsets(r) == Counter({(0, 1): 1})
    assert r.cluster.committed[P0].offset == 4
    assert r.worker.breaker.state is BreakerState.CLOSED
    r.flush_metrics()
    assert r.sample("lazarus_breaker_opens_total") == 0
    assert r.sample("lazarus_records_total", outcome="processed") == 3
    assert r.sample("lazarus_records_total", outcome="dead_lettered") == 1
    (dead,) = [rec for rec in r.cluster.records("payments.dlq")]
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.error_type == "lazarus.RecordTooLarge"
    assert "may have been written" not in (meta.message or "")


@pytest.mark.parametrize("how", ["at once", "in the delivery report"])
def test_at_least_once_keeps_a_record_s_earlier_outputs_and_its_dead_letter_says_so(
    how: str,
) -> None:
    """At-least-once cannot take back an output already produced, and dropping the dead letter
    would lose the refused one: the record is in the output and the DLQ, and the dead letter
    says that other outputs of it may have been written (a replay writes them again)."""
    r = split_rig(how, exactly_once=False)
    r.steps(6)
    r.clock.advance(10.0)
    r.steps(6)
    seen = ids(r)
    assert {"p-0", "p-2", "p-3", "p-1-a"} <= set(seen) and "p-1-huge" not in seen
    assert dead_offsets(r) == Counter({(0, 1): 1})
    assert r.cluster.committed[P0].offset == 4
    r.flush_metrics()
    assert r.sample("lazarus_breaker_opens_total") == 0
    (dead,) = [rec for rec in r.cluster.records("payments.dlq")]
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.error_type == "lazarus.RecordTooLarge"
    assert "one of 3 outputs" in (meta.message or ""), meta.message
