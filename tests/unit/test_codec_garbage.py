"""A dead letter leaves no reference cycle behind: its exception, the frames of its traceback
(fastavro's included) and everything they hold are freed as soon as the handler is done with
them, not by a garbage-collector pass (a cycle per truncated Avro record kept 35 objects alive
each and made the collector run for every 20 dead letters)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.bench_deadletter import handler_for, sample_records
from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.base import Codec
from pipeline.codecs.catalog import LocalCatalog
from pipeline.codecs.json import JsonCodec
from pipeline.core.handler import Routed
from schemas.orders import Order

REPO = Path(__file__).resolve().parents[2]


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
    routes = handler_for(codec)
    good, truncated, invalid = sample_records(fmt)
    for rec in (good[0], truncated[0], invalid[0]):  # first uses may build caches: not counted
        routes.handle(rec, 1, 0.0, 1.0)
    gc.collect()
    garbage.clear()
    outcomes = []
    for rec in good[1:6] + truncated[1:6] + invalid[1:6]:
        outcome = routes.handle(rec, 1, 0.0, 1.0)
        assert isinstance(outcome, Routed)
        outcomes.append(outcome.outcome)
    assert outcomes == ["forwarded"] * 5 + ["dead_lettered"] * 10
    gc.collect()
    assert garbage == []
