"""topics.check and topics.missing_specs: which topics a pipeline needs, and the configurations
that would lose or refuse dead letters later (a DLQ too small or too short-lived, a ledger that is
not compacted)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.app.settings import DlqSpec, OutputSpec, SchemaSpec, Settings
from pipeline.app.topics import (
    BROKER_DEFAULT_MAX_BYTES,
    DEFAULT_RETENTION_MS,
    check,
    missing_specs,
    required_topics,
)
from pipeline.kafka.admin import NewTopicSpec, TopicInfo

DAY_MS = 24 * 3600 * 1000
ROOM = 32 * 1024
SOURCES = ("shop.orders", "shop.payments")
ALL = [*SOURCES, "orders.valid", "orders.dlq", "orders.redrive", "orders.dlq.ledger"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("LAZARUS_"):
            monkeypatch.delenv(name)
    yield


def settings(
    *, sources: tuple[str, ...] = SOURCES, min_retention_ms: int = 7 * DAY_MS, room: int = ROOM
) -> Settings:
    return Settings(
        pipeline="orders",
        sources={s: SchemaSpec(format="bytes") for s in sources},
        output=OutputSpec(topic="orders.valid"),
        dlq=DlqSpec(topic="orders.dlq", min_retention_ms=min_retention_ms, header_room_bytes=room),
    )


def healthy(**changes: dict[str, str]) -> dict[str, TopicInfo]:
    """Every topic present with configs that pass; `changes` replaces one topic's configs."""
    configs: dict[str, dict[str, str]] = {
        "shop.orders": {"max.message.bytes": str(BROKER_DEFAULT_MAX_BYTES)},
        "shop.payments": {"max.message.bytes": str(BROKER_DEFAULT_MAX_BYTES)},
        "orders.valid": {},
        "orders.dlq": {
            "max.message.bytes": str(BROKER_DEFAULT_MAX_BYTES + ROOM),
            "retention.ms": str(7 * DAY_MS),
            "cleanup.policy": "delete",
        },
        "orders.redrive": {},
        "orders.dlq.ledger": {"cleanup.policy": "compact"},
    }
    for name, value in changes.items():
        configs[name.replace("_", ".")] = value
    return {name: TopicInfo(name, 3, conf) for name, conf in configs.items()}


def dlq(**configs: str) -> dict[str, dict[str, str]]:
    base = {
        "max.message.bytes": str(BROKER_DEFAULT_MAX_BYTES + ROOM),
        "retention.ms": str(7 * DAY_MS),
    }
    return {"orders_dlq": {**base, **{k.replace("_", "."): v for k, v in configs.items()}}}


# --- required topics ---------------------------------------------------------------------------


def test_required_topics_are_sources_output_dlq_redrive_and_ledger() -> None:
    assert required_topics(settings()) == ALL


def test_a_healthy_cluster_has_no_problems() -> None:
    assert check(settings(), healthy(), configs_known=True) == []


def test_every_missing_topic_is_one_line_in_order() -> None:
    topics = healthy()
    for name in ("shop.payments", "orders.redrive", "orders.dlq.ledger"):
        del topics[name]
    assert check(settings(), topics, configs_known=True) == [
        "topic shop.payments does not exist",
        "topic orders.redrive does not exist",
        "topic orders.dlq.ledger does not exist",
    ]


def test_nothing_exists() -> None:
    assert check(settings(), {}, configs_known=True) == [f"topic {t} does not exist" for t in ALL]


def test_without_configs_only_existence_is_checked() -> None:
    bad = healthy(**dlq(max_message_bytes="1000", retention_ms="1"))
    bad["orders.dlq.ledger"] = TopicInfo("orders.dlq.ledger", 1, {"cleanup.policy": "delete"})
    del bad["orders.valid"]
    assert check(settings(), bad, configs_known=False) == ["topic orders.valid does not exist"]


# --- the DLQ's size ----------------------------------------------------------------------------


def test_a_dlq_exactly_as_large_as_the_source_plus_header_room_passes() -> None:
    topics = healthy(**dlq(max_message_bytes=str(BROKER_DEFAULT_MAX_BYTES + ROOM)))
    assert check(settings(), topics, configs_known=True) == []


def test_a_dlq_one_byte_too_small_is_reported() -> None:
    size = BROKER_DEFAULT_MAX_BYTES + ROOM - 1
    topics = healthy(**dlq(max_message_bytes=str(size)))
    assert check(settings(), topics, configs_known=True) == [
        f"topic orders.dlq: max.message.bytes is {size}, below {BROKER_DEFAULT_MAX_BYTES + ROOM} "
        f"(largest source plus {ROOM} bytes of dlq headers)"
    ]


def test_the_largest_source_sets_the_bar() -> None:
    topics = healthy(shop_payments={"max.message.bytes": "5000000"})
    problems = check(settings(), topics, configs_known=True)
    assert problems == [
        f"topic orders.dlq: max.message.bytes is {BROKER_DEFAULT_MAX_BYTES + ROOM}, "
        f"below {5_000_000 + ROOM} (largest source plus {ROOM} bytes of dlq headers)"
    ]


def test_the_header_room_is_configurable() -> None:
    big_room = 100_000
    assert len(check(settings(room=big_room), healthy(), configs_known=True)) == 1
    assert check(settings(room=0), healthy(**dlq(max_message_bytes="1048588")), True) == []


def test_sources_and_dlq_without_a_size_use_the_broker_default() -> None:
    topics = healthy(shop_orders={}, shop_payments={})
    topics["orders.dlq"] = TopicInfo("orders.dlq", 3, {"retention.ms": str(7 * DAY_MS)})
    assert check(settings(), topics, configs_known=True) == [
        f"topic orders.dlq: max.message.bytes is {BROKER_DEFAULT_MAX_BYTES}, below "
        f"{BROKER_DEFAULT_MAX_BYTES + ROOM} (largest source plus {ROOM} bytes of dlq headers)"
    ]


def test_a_missing_source_counts_with_the_broker_default() -> None:
    topics = healthy(**dlq(max_message_bytes=str(BROKER_DEFAULT_MAX_BYTES + ROOM)))
    del topics["shop.orders"]
    assert check(settings(), topics, configs_known=True) == ["topic shop.orders does not exist"]


# --- the DLQ's retention -----------------------------------------------------------------------


def test_a_dlq_keeping_records_shorter_than_the_minimum_is_reported() -> None:
    topics = healthy(**dlq(retention_ms=str(DAY_MS)))
    assert check(settings(), topics, configs_known=True) == [
        f"topic orders.dlq: retention.ms is {DAY_MS}, below the configured minimum "
        f"{7 * DAY_MS} (unresolved dead letters would expire)"
    ]


def test_retention_exactly_at_the_minimum_passes() -> None:
    topics = healthy(**dlq(retention_ms=str(3 * DAY_MS)))
    assert check(settings(min_retention_ms=3 * DAY_MS), topics, configs_known=True) == []


def test_infinite_retention_passes() -> None:
    topics = healthy(**dlq(retention_ms="-1"))
    assert check(settings(min_retention_ms=365 * DAY_MS), topics, configs_known=True) == []


def test_a_dlq_without_a_retention_config_counts_the_kafka_default() -> None:
    topics = healthy()
    topics["orders.dlq"] = TopicInfo(
        "orders.dlq", 3, {"max.message.bytes": str(BROKER_DEFAULT_MAX_BYTES + ROOM)}
    )
    assert check(settings(), topics, configs_known=True) == []
    problems = check(settings(min_retention_ms=8 * DAY_MS), topics, configs_known=True)
    assert problems == [
        f"topic orders.dlq: retention.ms is {DEFAULT_RETENTION_MS}, below the configured "
        f"minimum {8 * DAY_MS} (unresolved dead letters would expire)"
    ]


def test_a_minimum_of_zero_accepts_any_retention() -> None:
    topics = healthy(**dlq(retention_ms="0"))
    assert check(settings(min_retention_ms=0), topics, configs_known=True) == []


def test_size_and_retention_problems_are_both_reported() -> None:
    topics = healthy(**dlq(max_message_bytes="1000", retention_ms="1000"))
    problems = check(settings(), topics, configs_known=True)
    assert len(problems) == 2
    assert problems[0].startswith("topic orders.dlq: max.message.bytes is 1000, below ")
    assert problems[1].startswith("topic orders.dlq: retention.ms is 1000, below ")


# --- the ledger --------------------------------------------------------------------------------


def test_a_compacted_ledger_passes() -> None:
    topics = healthy(orders_dlq_ledger={"cleanup.policy": "compact"})
    assert check(settings(), topics, configs_known=True) == []


@pytest.mark.parametrize("policy", ["delete", "compact,delete", "delete,compact"])
def test_a_ledger_whose_entries_can_expire_is_reported(policy: str) -> None:
    """Deleting ledger entries would let a dead letter be replayed twice."""
    topics = healthy(orders_dlq_ledger={"cleanup.policy": policy})
    assert check(settings(), topics, configs_known=True) == [
        "topic orders.dlq.ledger: cleanup.policy must be compact (entries must never expire)"
    ]


def test_a_compacted_dlq_is_reported() -> None:
    topics = healthy(**dlq(cleanup_policy="compact"))
    assert check(settings(), topics, configs_known=True) == [
        "topic orders.dlq: cleanup.policy=compact would delete older dead letters of a key"
    ]


def test_all_config_problems_together() -> None:
    topics = healthy(
        **dlq(max_message_bytes="10", retention_ms="10"),
        orders_dlq_ledger={"cleanup.policy": "delete"},
    )
    del topics["orders.redrive"]
    problems = check(settings(), topics, configs_known=True)
    assert problems[0] == "topic orders.redrive does not exist"
    assert [p.split(":")[0] for p in problems[1:]] == [
        "topic orders.dlq",
        "topic orders.dlq",
        "topic orders.dlq.ledger",
    ]


# --- missing_specs -----------------------------------------------------------------------------


def test_missing_specs_size_the_new_topics_like_the_sources() -> None:
    existing = {"shop.orders": 6, "shop.payments": 3}
    infos = {
        "shop.orders": TopicInfo("shop.orders", 6, {"max.message.bytes": "2000000"}),
        "shop.payments": TopicInfo("shop.payments", 3, {}),
    }
    assert missing_specs(settings(), existing, infos) == [
        NewTopicSpec("orders.valid", 6),
        NewTopicSpec(
            "orders.dlq",
            6,
            {"max.message.bytes": str(2_000_000 + ROOM), "retention.ms": str(7 * DAY_MS)},
        ),
        NewTopicSpec("orders.redrive", 6),
        NewTopicSpec("orders.dlq.ledger", 1, {"cleanup.policy": "compact"}),
    ]


def test_missing_specs_skip_topics_that_exist() -> None:
    existing = {"shop.orders": 2, "shop.payments": 2, "orders.valid": 2, "orders.dlq.ledger": 1}
    specs = missing_specs(settings(), existing, {})
    assert [s.name for s in specs] == ["orders.dlq", "orders.redrive"]


def test_missing_specs_never_create_sources() -> None:
    specs = missing_specs(settings(), {}, {})
    assert [s.name for s in specs] == ALL[2:]
    assert {s.partitions for s in specs[:3]} == {1}  # no source to copy the partitions from


def test_missing_specs_keep_records_at_least_the_configured_minimum() -> None:
    long = 30 * DAY_MS
    dlq_spec = missing_specs(settings(min_retention_ms=long), {}, {})[1]
    assert dlq_spec.configs["retention.ms"] == str(long)
    short = missing_specs(settings(min_retention_ms=DAY_MS), {}, {})[1]
    assert short.configs["retention.ms"] == str(DEFAULT_RETENTION_MS)  # never below Kafka's


@given(
    source_bytes=st.lists(st.integers(1, 50_000_000), min_size=1, max_size=3),
    room=st.integers(0, 1_000_000),
    min_retention_ms=st.integers(0, 400 * DAY_MS),
    partitions=st.lists(st.integers(1, 64), min_size=3, max_size=3),
)
def test_topics_created_from_missing_specs_pass_the_check(
    source_bytes: list[int], room: int, min_retention_ms: int, partitions: list[int]
) -> None:
    names = tuple(f"src{i}" for i in range(len(source_bytes)))
    config = settings(sources=names, min_retention_ms=min_retention_ms, room=room)
    existing = {n: partitions[i] for i, n in enumerate(names)}
    infos = {
        n: TopicInfo(n, existing[n], {"max.message.bytes": str(b)})
        for n, b in zip(names, source_bytes, strict=True)
    }
    created = missing_specs(config, existing, infos)
    topics = {**infos, **{s.name: TopicInfo(s.name, s.partitions, s.configs) for s in created}}
    assert check(config, topics, configs_known=True) == []
    wanted = max(existing.values())
    assert {s.partitions for s in created if s.name != config.ledger_topic} == {wanted}
