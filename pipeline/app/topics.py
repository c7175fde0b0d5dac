"""What topics a pipeline needs and what would make it fail later (pure checks).

`lazarus topics --check` (and every worker at start-up) verifies that the source, output, DLQ,
redrive and ledger topics exist, that the ledger is compacted, that a dead letter fits in the DLQ
(its `max.message.bytes` at least the largest source's plus room for the `dlq.*` headers), and
that the DLQ keeps records at least the configured minimum: an unresolved dead letter that
expires is data lost.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.app.settings import Settings
from pipeline.kafka.admin import NewTopicSpec, TopicInfo

BROKER_DEFAULT_MAX_BYTES = 1_048_588
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


def required_topics(settings: Settings) -> list[str]:
    return [
        *settings.sources,
        settings.output.topic,
        settings.dlq.topic,
        settings.redrive_topic,
        settings.ledger_topic,
    ]


def max_bytes(info: TopicInfo | None) -> int:
    if info is None:
        return BROKER_DEFAULT_MAX_BYTES
    return int(info.configs.get("max.message.bytes", BROKER_DEFAULT_MAX_BYTES))


def check(settings: Settings, topics: Mapping[str, TopicInfo], configs_known: bool) -> list[str]:
    """Every problem found, one line each; empty when the pipeline can run."""
    problems = [
        f"topic {name} does not exist" for name in required_topics(settings) if name not in topics
    ]
    if not configs_known:
        return problems
    dlq = topics.get(settings.dlq.topic)
    if dlq is not None:
        needed = (
            max(max_bytes(topics.get(s)) for s in settings.sources) + settings.dlq.header_room_bytes
        )
        if max_bytes(dlq) < needed:
            problems.append(
                f"topic {dlq.name}: max.message.bytes is {max_bytes(dlq)}, below {needed} "
                f"(largest source plus {settings.dlq.header_room_bytes} bytes of dlq headers)"
            )
        retention = int(dlq.configs.get("retention.ms", DEFAULT_RETENTION_MS))
        if 0 <= retention < settings.dlq.min_retention_ms:
            problems.append(
                f"topic {dlq.name}: retention.ms is {retention}, below the configured minimum "
                f"{settings.dlq.min_retention_ms} (unresolved dead letters would expire)"
            )
    if dlq is not None and dlq.configs.get("cleanup.policy", "delete") == "compact":
        problems.append(
            f"topic {dlq.name}: cleanup.policy=compact would delete older dead letters of a key"
        )
    ledger = topics.get(settings.ledger_topic)
    if ledger is not None and ledger.configs.get("cleanup.policy", "compact") != "compact":
        problems.append(
            f"topic {ledger.name}: cleanup.policy must be compact (entries must never expire)"
        )
    return problems


def missing_specs(
    settings: Settings, existing: Mapping[str, int], infos: Mapping[str, TopicInfo]
) -> list[NewTopicSpec]:
    """Topics `--create` makes: output, DLQ, redrive and ledger, sized like the sources."""
    partitions = max((existing.get(s, 1) for s in settings.sources), default=1)
    source_bytes = max(max_bytes(infos.get(s)) for s in settings.sources)
    retention = max(settings.dlq.min_retention_ms, DEFAULT_RETENTION_MS)
    wanted = [
        NewTopicSpec(settings.output.topic, partitions),
        NewTopicSpec(
            settings.dlq.topic,
            partitions,
            {
                "max.message.bytes": str(source_bytes + settings.dlq.header_room_bytes),
                "retention.ms": str(retention),
            },
        ),
        NewTopicSpec(settings.redrive_topic, partitions),
        NewTopicSpec(settings.ledger_topic, 1, {"cleanup.policy": "compact"}),
    ]
    return [spec for spec in wanted if spec.name not in existing]
