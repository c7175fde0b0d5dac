"""Topic look-ups and creation through the AdminClient (the only admin I/O Lazarus does)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from pipeline.errors import RuntimeFailure
from pipeline.kafka.clients import authentication_failure, error_text, with_logger

KafkaConf = Mapping[str, str | int | float | bool]
WATCHED_CONFIGS = ("max.message.bytes", "retention.ms", "cleanup.policy", "min.insync.replicas")


class AdminUnsupported(Exception):
    """The cluster cannot answer config look-ups (librdkafka's mock cluster cannot)."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewTopicSpec:
    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


def admin_client(conf: KafkaConf) -> AdminClient:
    allowed = {k: v for k, v in conf.items() if not k.startswith(("partitioner", "enable.idem"))}
    return AdminClient(with_logger(dict(allowed)))


def unreachable(admin: AdminClient, reason: str) -> RuntimeFailure:
    """The one-line error for a cluster that did not answer: a refused login says so (the
    failed call itself only says "transport failure" or times out)."""
    admin.poll(0.5)  # serve the error callbacks that name the cause
    refused = authentication_failure()
    if refused is not None:
        return RuntimeFailure(f"authentication failed (check the SASL credentials): {refused}")
    return RuntimeFailure(f"cannot reach the Kafka cluster: {reason}")


def existing_topics(admin: AdminClient, timeout_s: float = 15.0) -> dict[str, int]:
    """Topic name -> partition count, for every topic the cluster lists."""
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise unreachable(admin, error_text(exc)) from exc
    return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}


def describe(admin: AdminClient, names: list[str], timeout_s: float = 15.0) -> dict[str, TopicInfo]:
    """Partitions and the watched configs of the named topics that exist."""
    known = existing_topics(admin, timeout_s)
    present = [n for n in names if n in known]
    if not present:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in present]
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout_s)
        configs = {res.name: fut.result(timeout=timeout_s) for res, fut in futures.items()}
    except Exception as exc:
        raise AdminUnsupported(f"topic configs unavailable ({type(exc).__name__})") from exc
    return {
        n: TopicInfo(
            n,
            known[n],
            {k: str(configs[n][k].value) for k in WATCHED_CONFIGS if k in configs[n]},
        )
        for n in present
    }


def create(admin: AdminClient, specs: list[NewTopicSpec], timeout_s: float = 30.0) -> None:
    if not specs:
        return
    new = [NewTopic(s.name, num_partitions=s.partitions, config=dict(s.configs)) for s in specs]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except Exception as exc:
            raise RuntimeFailure(f"creating topic {name} failed: {exc}") from exc
