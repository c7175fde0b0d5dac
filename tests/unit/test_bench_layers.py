"""bench/bench_layers.py measures what it says: each kind of record is that kind for the peers'
check and for Lazarus' handler alike, and the seam layer routes and acknowledges every record
it times (no broker: the broker layer runs the same loop with a `KafkaSink`)."""

from __future__ import annotations

import pytest

from bench.bench_deadletter import handler_for
from bench.bench_layers import FORMATS, AckingSink, codec_for, loop_us, records, values_by_kind
from bench.workloads import checker
from pipeline.core.handler import Output, Routed
from pipeline.errors import Category
from pipeline.kafka.fake import FakeCluster
from pipeline.kafka.seam import Sink

CATEGORY = {"truncated": Category.DESERIALIZATION, "invalid": Category.VALIDATION}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_kind_is_what_its_name_says_for_the_peers_and_for_lazarus(fmt: str) -> None:
    handler = handler_for(codec_for(fmt))
    check = checker(fmt)
    by_kind = values_by_kind(fmt)
    assert {kind: len(values) for kind, values in by_kind.items()} == {
        "good": 10_000,
        "truncated": 5_000,
        "invalid": 5_000,
        "mixed": 20_000,
    }
    for kind, values in by_kind.items():
        if kind == "mixed":
            continue
        for rec in records(values, 50):
            routed = handler.handle(rec, 1, 0.0, 1.0)
            assert isinstance(routed, Routed)
            if kind == "good":
                check(rec.value or b"")
                assert routed.outcome == "forwarded"
            else:
                with pytest.raises(Exception):  # noqa: B017 - the peers catch any exception
                    check(rec.value or b"")
                assert routed.failure is not None
                assert routed.failure.category is CATEGORY[kind]


class CountingSink(AckingSink):
    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster)
        self.topics: list[str] = []

    def produce(self, out: Output, batch: int) -> None:
        self.topics.append(out.topic)
        super().produce(out, batch)


def test_mixed_is_the_50_percent_workload_in_its_order() -> None:
    by_kind = values_by_kind("avro")
    mixed = by_kind["mixed"]
    assert sorted(mixed) == sorted(by_kind["good"] + by_kind["truncated"] + by_kind["invalid"])
    good = set(by_kind["good"])
    assert [v in good for v in mixed[:4]] == [True, False, True, False]  # interleaved


@pytest.mark.parametrize("kind", ["good", "invalid"])
def test_the_seam_layer_routes_every_record_it_times(kind: str) -> None:
    handler = handler_for(codec_for("json"))
    recs = records(values_by_kind("json")[kind], 1_234)
    made: list[CountingSink] = []

    def sink(cluster: FakeCluster) -> Sink:
        made.append(CountingSink(cluster))
        return made[0]

    main, process = loop_us(handler, recs, sink)
    assert main > 0 and process >= main * 0.5
    expected = handler.output_topic if kind == "good" else handler.dlq_topic
    assert made[0].topics == [expected] * len(recs)
    assert made[0].pending() == 0
