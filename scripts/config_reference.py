"""The configuration reference table, generated from the settings models (README embeds it
between markers; `tests/unit/test_docs.py` fails when they disagree).

    python scripts/config_reference.py
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.app.settings import Settings

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"

NOTES = {
    "pipeline": "pipeline name = consumer group; a legal topic-name stem (`<pipeline>.redrive`)",
    "bootstrap": "Kafka bootstrap servers",
    "delivery": "`at-least-once` or `exactly-once`",
    "instance": "worker name in the transactional id (default `<hostname>-<free index>`)",
    "sources": "source topic -> how its records are decoded (see `sources.<topic>.*`)",
    "output": "where good records go",
    "dlq": "the dead-letter topic; its ledger is `<dlq.topic>.ledger`",
    "processor": "optional `module:function(event, ctx)` returning None, an event or a list",
    "schema_dir": "local Avro catalog: `<dir>/<subject>/<id>.avsc`",
    "python_path": "folders on `sys.path` for models and functions (default: the config's folder)",
    "registry": "a Confluent-compatible Schema Registry instead of the local catalog",
    "kafka": "librdkafka properties for every client, passed through verbatim",
    "consumer": "librdkafka properties for the consumer only",
    "producer": "librdkafka properties for producers only",
    "batch_size": "records per poll",
    "commit_interval_ms": "at-least-once: how often safe offsets are committed",
    "transaction_ms": "exactly-once: how long a transaction may span batches before it commits "
    "(0: one per batch)",
    "policy.crash_limit": "a record on which this many processes died in a row is dead-lettered "
    "as `crashed`, unprocessed (0: never)",
    "reprocessor.mask": "fields `dlq` masks in everything it prints, as `--mask` "
    "(`value.card.number`, `key`, `header.x-user`; see [Redaction](#redaction))",
    "reprocessor.index": "answer `dlq stats`, `group` and `inspect --where` from the local index "
    "(false: always read the topic)",
    "metrics_port": "serve `/metrics`, `/livez` and `/readyz` on this port (with `--processes N`, "
    "member i serves on port + i)",
    "metrics_host": "the address that port binds to (loopback by default; 0.0.0.0 in containers)",
    "correlation_header": "header holding a record's correlation id when it has no W3C "
    "`traceparent` (e.g. `x-request-id`); shown in log lines and by `dlq`",
    "log_format": "`text` or `json` (JSON lines)",
    "sources.<topic>.format": "`avro` (Confluent framing), `avro-schemaless`, `json`, `bytes`",
    "sources.<topic>.subject": "Avro subject (informational for framed records)",
    "sources.<topic>.writer_schema": "`avro-schemaless`: the `.avsc` the records were written with",
    "sources.<topic>.reader_schema": "optional reader schema: writer/reader resolution",
    "sources.<topic>.model": "pydantic model `module:Model` (required for json, optional for avro)",
    "sources.<topic>.strict": "pydantic strict mode",
    "output.topic": "the output topic",
    "output.schema": "how processing outputs are encoded (default: the source's codec)",
    "dlq.topic": "the dead-letter topic",
    "dlq.min_retention_ms": "`topics --check` refuses a DLQ that keeps records for less",
    "dlq.header_room_bytes": "DLQ `max.message.bytes` must exceed the source's by this much",
    "dlq.stacktraces": "write `dlq.error.stacktrace`",
    "output.schema.format": "as `sources.<topic>.format`",
    "output.schema.subject": "avro: outputs are written with this subject's latest schema id",
    "output.schema.writer_schema": "as `sources.<topic>.writer_schema`",
    "output.schema.reader_schema": "unused for outputs",
    "output.schema.model": "as `sources.<topic>.model`",
    "output.schema.strict": "as `sources.<topic>.strict`",
    "policy": "the error policy",
    "reprocessor": "settings of the `dlq` reprocessor",
    "policy.retryable": "exception types retried with backoff (plus `pipeline.errors.Retryable`)",
    "policy.max_attempts": "attempts before `retries_exhausted`",
    "policy.initial_backoff_ms": "first backoff (exponential, full jitter)",
    "policy.max_backoff_ms": "backoff cap",
    "policy.retry_budget_ms": "total retry time per record",
    "policy.tombstones": "`forward` or `dead-letter` records with a null value",
    "policy.redact": "`module:function(str) -> str` applied to the messages kept by "
    '`policy.error_messages = "keep"`',
    "policy.error_messages": "`redact`: a processor's exception text and custom validator "
    "messages are withheld from dead letters and logs (type kept); `keep`: recorded through "
    "`policy.redact` (see [Redaction](#redaction))",
    "policy.breaker_threshold": "consecutive dependency failures that open the circuit",
    "policy.breaker_open_ms": "first open delay before a half-open probe (doubles, capped)",
    "policy.breaker_max_open_ms": "cap of the open delay",
    "policy.stall_ms": "an unacknowledged produce older than this opens the circuit",
    "policy.flood_guard": "pause when dead letters dominate",
    "policy.flood_ratio": "dead-letter share of the window that pauses the worker",
    "policy.flood_window": "sliding window, in records",
    "policy.flood_min_records": "no verdict before this many outcomes",
    "policy.flood_pause_ms": "how long a flood pauses the worker",
    "policy.holds": "hold-rules file (TOML), reloaded on SIGHUP",
    "registry.url": "registry URL",
    "registry.conf": "registry client settings (`basic.auth.user.info`, TLS, ...)",
    "reprocessor.max_replays": "loop protection: refuse lineages replayed this often (`--force`)",
    "reprocessor.operator": "who decides, in the ledger (default: the OS user)",
    "slo_objective": "share of records not dead-lettered the pipeline aims at, e.g. `0.999`; "
    "`dlq exporter` exports it for the burn-rate alerts",
}


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value: Any = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(table)"
    if value in ({}, (), None):
        return "—" if value is None else "empty"
    return f"`{value}`"


def _env(path: str) -> str:
    if "<topic>" in path:
        return "—"
    return "`LAZARUS_" + path.replace(".", "__").upper() + "`"


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = f"{prefix}{key}"
        out.append(f"| `{path}` | {_default(info)} | {_env(path)} | {NOTES.get(path, '')} |")
        nested = _nested(info)
        if nested is not None:
            out += rows(nested, f"{path}." if path != "sources" else "sources.<topic>.")
    return out


def _nested(info: FieldInfo) -> type[BaseModel] | None:
    from typing import get_args

    candidates = [info.annotation, *get_args(info.annotation)]
    for arg in list(candidates):
        candidates += list(get_args(arg))
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def table() -> str:
    head = ["| key | default | environment | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join([START, *head, *rows(Settings), END])


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
