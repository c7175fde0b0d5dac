"""Foreign dead letters as an operator uses them: Spring's consumer group is the pipeline,
Connect's converter stages are deserialization failures, and replayed copies leave the foreign
tool's error headers behind unless asked to keep them."""

from __future__ import annotations

import pytest

from pipeline.core import contract
from pipeline.core.dialects import (
    CONNECT_STAGE,
    SPRING_CONSUMER_GROUP,
    SPRING_TOPIC,
    foreign_category,
    read_foreign,
    without_foreign,
)
from pipeline.errors import Category
from reprocessor.deadletters import ReplayState, from_record
from reprocessor.replay import Copy, Recipe, Refusal, Target, TargetMode, prepare
from reprocessor.selection import parse

CONNECT = [
    ("tenant", b"acme"),
    ("__connect.errors.topic", b"orders"),
    ("__connect.errors.partition", b"1"),
    ("__connect.errors.offset", b"5"),
    ("__connect.errors.exception.class.name", b"org.apache.kafka.connect.errors.DataException"),
]
SPRING = [
    ("trace", b"t-1"),
    (SPRING_TOPIC, b"payments"),
    ("kafka_dlt-original-partition", bytes(4)),
    ("kafka_dlt-original-offset", bytes(8)),
    (SPRING_CONSUMER_GROUP, b"payments-svc"),
    ("kafka_dlt-exception-fqcn", b"java.lang.IllegalStateException"),
]


@pytest.mark.parametrize(
    ("stage", "category"),
    [
        ("KEY_CONVERTER", "deserialization"),
        ("VALUE_CONVERTER", "deserialization"),
        ("HEADER_CONVERTER", "deserialization"),
        ("TRANSFORMATION", None),
        ("TASK_PUT", None),
        (None, None),
    ],
)
def test_connect_stage_maps_to_a_category_only_when_unambiguous(
    stage: str | None, category: str | None
) -> None:
    headers = CONNECT + ([] if stage is None else [(CONNECT_STAGE, stage.encode())])
    dl = from_record("sink.dlq", 0, 1, 1, None, b"x", headers)
    assert dl.category == category
    meta = read_foreign(headers)
    assert meta is not None
    assert foreign_category(meta) == (None if category is None else Category(category))
    assert parse("category=deserialization").matches(dl, ReplayState.UNRESOLVED) is bool(category)


def test_springs_consumer_group_is_the_pipeline() -> None:
    dl = from_record("payments-dlt", 0, 1, 1, None, b"x", SPRING)
    assert dl.pipeline == "payments-svc"
    assert parse("pipeline=payments-svc").matches(dl, ReplayState.UNRESOLVED)
    assert from_record("t", 0, 1, 1, None, None, CONNECT).pipeline is None


def test_a_spring_pipeline_has_no_redrive_topic() -> None:
    dl = from_record("payments-dlt", 0, 1, 1, None, b"x", SPRING)
    refused = prepare(dl, Recipe("r-1", Target(TargetMode.REDRIVE)))
    assert isinstance(refused, Refusal)


@pytest.mark.parametrize("headers", [CONNECT, SPRING])
def test_replayed_copies_drop_foreign_headers_unless_kept(
    headers: list[tuple[str, bytes | None]],
) -> None:
    dl = from_record("dlq", 0, 3, 1, b"k", b"v", headers)
    copy = prepare(dl, Recipe("r-1", Target(TargetMode.SOURCE)))
    assert isinstance(copy, Copy)
    names = [name for name, _ in copy.headers]
    assert names[0] in ("tenant", "trace") and names[1:] == [
        contract.REPLAY_COUNT,
        contract.REPLAY_OF,
        contract.REPLAY_RUN,
    ]
    kept = prepare(dl, Recipe("r-1", Target(TargetMode.SOURCE), keep_foreign_headers=True))
    assert isinstance(kept, Copy)
    assert [h for h in kept.headers if not h[0].startswith("dlq.")] == headers


def test_without_foreign_keeps_order_and_other_headers() -> None:
    headers = [("a", b"1"), *CONNECT[1:], ("original_offset", b"4"), ("b", None)]
    assert without_foreign(headers) == [("a", b"1"), ("b", None)]
