"""A dead letter leaves no reference cycle behind: its exception, the frames of its traceback
(fastavro's included) and everything they hold are freed as soon as the handler is done with
them, not by a garbage-collector pass (a cycle per truncated Avro record kept 35 objects alive
each and made the collector run for every 20 dead letters)."""

from __future__ import annotations

import gc
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.base import Codec
from pipeline.codecs.catalog import LocalCatalog
from pipeline.codecs.json import JsonCodec
from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Handler, Routed
from pipeline.core.policy import RetryPolicy
from schemas.orders import Order
from tests.kit import avro_framed, good_order

REPO = Path(__file__).resolve().parents[2]


def values(fmt: str) -> list[bytes]:
    """A good value, a truncated one and one that breaks the model."""
    bad = good_order(1)
    bad["items"][0]["qty"] = 0
    if fmt == "avro":
        good = avro_framed(good_order(1))
        return [good, good[:-7], avro_framed(bad)]
    text = json.dumps(good_order(1)).encode()
    return [text, text[: len(text) // 2], json.dumps(bad).encode()]


def handler(codec: Codec) -> Handler:
    return Handler(
        pipeline="p",
        output_topic="out",
        dlq_topic="dlq",
        redrive_topic="p.redrive",
        codecs={"orders": codec},
        output_codec=None,
        processor=None,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=1, budget_s=30),
        retryable=(),
        rng=random.Random(0),
    )


@pytest.fixture
def garbage() -> Iterator[list[object]]:
    """What a collection pass would find unreachable, kept for inspection."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_routing_good_and_bad_records_leaves_no_cycles(fmt: str, garbage: list[object]) -> None:
    codec: Codec = (
        AvroCodec(source=LocalCatalog(REPO / "schemas" / "avro"), model=Order)
        if fmt == "avro"
        else JsonCodec(Order)
    )
    routes = handler(codec)
    outcomes = []
    for offset, value in enumerate(values(fmt) * 5):
        rec = SourceRecord("orders", 0, offset, 1_760_000_000_000, b"k", value, ())
        outcome = routes.handle(rec, 1, 0.0, 1.0)
        assert isinstance(outcome, Routed)
        outcomes.append(outcome.outcome)
    assert outcomes.count("dead_lettered") == 10
    gc.collect()
    assert garbage == []
