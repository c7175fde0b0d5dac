"""The ledger topic is never silently recreated.

Deleting `<dlq>.ledger` deletes every decision: each replayed or discarded dead letter would look
unresolved again, a replay would copy them a second time, and loop protection (which counts
replays in the copies' headers, not in the ledger) would not stop it. A producer to a missing
topic on a broker with `auto.create.topics.enable`, or `dlq replay` creating the ledger of a DLQ
that never had one, would hide that. So every command checks, before it reads a DLQ (and
before it writes anything to the state folder, refusing a DLQ topic that does not exist):

- the ledger topic exists and has the topic id last seen on this cluster: fine (the id is kept in
  the state folder, `ledgers/<cluster id>.json`);
- it exists with another id (deleted and recreated, by hand or by auto-creation), or it is missing
  while a ledger was seen here before or the pipeline's config names this DLQ (whose topics
  `lazarus topics --create` creates with the ledger): `LedgerMissing` (exit 2), unless the
  operator passes `--recreate-ledger`, which accepts the empty ledger (and a replay creates it);
- it is missing and never was seen, on a DLQ no config names (a foreign tool's DLQ): nothing was
  ever decided, and the first replay or discard creates it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.contract import ledger_topic
from pipeline.errors import ConfigError
from pipeline.kafka.follow import Cluster, KafkaConf


class LedgerMissing(ConfigError):
    """The ledger topic was deleted (or deleted and recreated): exit 2."""


@dataclass(frozen=True, slots=True)
class LedgerState:
    """What the check found: the ledger topic's id (None when it does not exist)."""

    topic: str
    topic_id: str | None


def check_ledger(
    conf: KafkaConf, dlq_topic: str, folder: Path, *, expected: bool, recreate: bool
) -> LedgerState:
    """Check the DLQ's ledger topic as the module docstring says; remember its id when it is
    fine. Raises `LedgerMissing` (a ConfigError) when it was deleted and `recreate` is False;
    RuntimeFailure when the cluster cannot be reached."""
    cluster = Cluster(conf)  # on the command's one admin client (`dlqio.shared_admin`)
    name = ledger_topic(dlq_topic)
    memory = folder / "ledgers" / f"{_safe(cluster.cluster_id())}.json"
    known = _read(memory)
    seen = known.get(name)
    metas = cluster.topics([dlq_topic, name])  # one look-up for both, when both exist
    if dlq_topic not in metas and _topic_id(cluster, dlq_topic, confirm=True) is None:
        raise no_such_topic(cluster, dlq_topic)  # before anything is written: no file left
    found = metas.get(name)
    topic_id = (
        found.topic_id
        if found is not None
        else _topic_id(cluster, name, confirm=seen is not None or expected)
    )
    if topic_id is not None and (seen is None or seen == topic_id or recreate):
        if seen != topic_id:
            _write(memory, {**known, name: topic_id})
        return LedgerState(name, topic_id)
    if recreate and seen is not None:  # forget the old id: the new ledger is remembered next
        _write(memory, {k: v for k, v in known.items() if k != name})
    if recreate or (topic_id is None and seen is None and not expected):
        return LedgerState(name, topic_id)
    if topic_id is None:
        why = "was deleted" if seen is not None else "is missing, though the config names the DLQ"
    else:
        why = f"was deleted and created again (topic id {seen} is now {topic_id})"
    raise LedgerMissing(
        f"the ledger topic {name} {why}: its decisions are lost, so every replayed or "
        "discarded dead letter would look unresolved and could be replayed again. Restore it, "
        "or pass --recreate-ledger to go on with an empty ledger"
    )


def no_such_topic(cluster: Cluster, topic: str) -> ConfigError:
    """The one line of a DLQ topic that does not exist (exit 2): a mistyped --topic."""
    return ConfigError(f"topic {topic} does not exist on {cluster.conf.get('bootstrap.servers')}")


def _topic_id(cluster: Cluster, name: str, *, confirm: bool) -> str | None:
    """The topic's id, None when it does not exist. With `confirm`, a missing topic is looked
    up a few more times first: a topic created a moment ago may not be listed yet (its
    partitions still electing leaders), and a false alarm would stop the operator."""
    for attempt in range(CONFIRM_ATTEMPTS if confirm else 1):
        if attempt:
            time.sleep(CONFIRM_PAUSE_S)
        found = cluster.topics([name]).get(name)
        if found is not None:
            return found.topic_id
    return None


CONFIRM_ATTEMPTS = 6
CONFIRM_PAUSE_S = 0.5


def _safe(cluster_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in cluster_id) or "unknown"


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    partial.replace(path)
