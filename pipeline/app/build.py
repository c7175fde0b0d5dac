"""Assembling a worker from settings: codecs, handler, clients, policies, metrics, signals."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from pydantic import SecretStr

from pipeline.app import topics as topic_rules
from pipeline.app.health_http import HealthServer
from pipeline.app.settings import SchemaSpec, Settings
from pipeline.codecs.avro import AvroCodec, ParsedSchema, SchemaSource, parse_avro
from pipeline.codecs.base import Codec, Decoded
from pipeline.codecs.catalog import LocalCatalog, load_model
from pipeline.codecs.json import JsonCodec
from pipeline.core.classify import Redactor, load_exception_types
from pipeline.core.crashes import CrashGuard
from pipeline.core.handler import Handler, Processor
from pipeline.core.holds import HoldRules, RulesFile
from pipeline.core.policy import BreakerState, CircuitBreaker, FloodGuard, RetryPolicy
from pipeline.errors import ConfigError, RuntimeFailure
from pipeline.kafka import admin
from pipeline.kafka.confluent import KafkaSink, KafkaSource
from pipeline.runtime.delivery import AtLeastOnce, Delivery, Transactions
from pipeline.runtime.metrics import WorkerMetrics
from pipeline.runtime.worker import Worker, WorkerOptions

log = logging.getLogger("lazarus.worker")


class BytesCodec:
    """`format = "bytes"`: no schema; every value passes as it is."""

    def decode(self, data: bytes) -> Decoded:
        return Decoded(event=data, schema_ref="bytes", schema_id=None)

    def encode(self, event: object, *, schema_id: int | None = None) -> bytes:
        if isinstance(event, bytes):
            return event
        raise ConfigError("a bytes output takes bytes events from the processing function")


@dataclass(frozen=True, slots=True)
class FixedSchemaCodec:
    """Encodes outputs with one writer schema id (the output subject's latest)."""

    inner: AvroCodec
    schema_id: int

    def decode(self, data: bytes) -> Decoded:
        return self.inner.decode(data)

    def encode(self, event: object, *, schema_id: int | None = None) -> bytes:
        return self.inner.encode(event, schema_id=self.schema_id)


class Schemas:
    """Schema sources shared by every codec of a process: parsed once, cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._source: SchemaSource | None = None
        self._catalog: LocalCatalog | None = None
        self.keep_messages = message_hook(settings)

    def catalog(self) -> LocalCatalog:
        if self._catalog is None:
            self._catalog = LocalCatalog(self.settings.schema_dir)
        return self._catalog

    def source(self) -> SchemaSource:
        if self._source is None:
            registry = self.settings.registry
            if registry is not None:
                from pipeline.kafka.registry import RegistrySource

                conf = {
                    k: v.get_secret_value() if isinstance(v, SecretStr) else str(v)
                    for k, v in registry.conf.items()
                }
                self._source = RegistrySource(registry.url, conf)
            else:
                self._source = self.catalog()
        return self._source

    def file_schema(self, path: Path) -> ParsedSchema:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read schema file {path}") from exc
        return ParsedSchema(parse_avro(text), None, None, None, f"file:{path.name}")

    def model(self, spec: str | None) -> type | None:
        if spec is None:
            return None
        return load_model(spec)

    def codec(self, spec: SchemaSpec) -> Codec:
        model = self.model(spec.model)
        if spec.format == "bytes":
            return BytesCodec()
        if spec.format == "json":
            if model is None:
                raise ConfigError('a json topic needs `model = "module:Model"`')
            return JsonCodec(model, strict=spec.strict, keep_messages=self.keep_messages)
        reader = self.file_schema(spec.reader_schema) if spec.reader_schema else None
        writer = None
        if spec.format == "avro-schemaless":
            if spec.writer_schema is None:
                raise ConfigError('an avro-schemaless topic needs `writer_schema = "file.avsc"`')
            writer = self.file_schema(spec.writer_schema)
        return AvroCodec(
            source=self.source() if writer is None else None,
            writer=writer,
            reader=reader,
            model=model,
            strict=spec.strict,
            keep_messages=self.keep_messages,
        )

    def output_codec(self, spec: SchemaSpec | None) -> Codec | None:
        if spec is None:
            return None
        codec = self.codec(spec)
        if spec.format == "avro" and isinstance(codec, AvroCodec):
            if spec.subject is None:
                raise ConfigError("output.schema: an avro output needs `subject`")
            latest = self.catalog().latest(spec.subject)
            assert latest.schema_id is not None
            return FixedSchemaCodec(codec, latest.schema_id)
        return codec


def load_callable(spec: str, what: str) -> Callable[..., object]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what}: expected `module:function`, got {spec!r}")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:
        raise ConfigError(f"{what}: cannot load {spec!r} ({type(exc).__name__})") from exc
    if not callable(found):
        raise ConfigError(f"{what}: {spec!r} is not callable")
    return found  # type: ignore[no-any-return]


def message_hook(settings: Settings) -> Redactor | None:
    """How the text of the user's own exceptions and validators is recorded: None withholds it
    (`policy.error_messages = "redact"`, the default); with "keep", through `policy.redact`
    (the identity when unset)."""
    policy = settings.policy
    if policy.error_messages == "redact":
        return None
    if policy.redact:
        return load_callable(policy.redact, "policy.redact")  # type: ignore[return-value]
    return _identity


def _identity(text: str) -> str:
    return text


def build_handler(
    settings: Settings, schemas: Schemas, holds: HoldRules, worker_id: str
) -> Handler:
    policy = settings.policy
    if policy.redact and policy.error_messages == "redact":
        log.warning(
            'policy.redact is set but policy.error_messages is "redact": exception and '
            "validator messages are withheld and the hook is unused (set "
            'policy.error_messages = "keep" to record them through it)'
        )
    processor: Processor | None = None
    if settings.processor:
        processor = load_callable(settings.processor, "processor")
    return Handler(
        pipeline=settings.pipeline,
        output_topic=settings.output.topic,
        dlq_topic=settings.dlq.topic,
        redrive_topic=settings.redrive_topic,
        codecs={topic: schemas.codec(spec) for topic, spec in settings.sources.items()},
        output_codec=schemas.output_codec(settings.output.schema_),
        processor=processor,
        retry=retry_policy(settings),
        retryable=load_exception_types(policy.retryable),
        redact=schemas.keep_messages,
        tombstones=policy.tombstones,
        stacktraces=settings.dlq.stacktraces,
        worker_id=worker_id,
        holds=holds,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    p = settings.policy
    return RetryPolicy(
        max_attempts=p.max_attempts,
        initial_backoff_s=p.initial_backoff_ms / 1000,
        max_backoff_s=p.max_backoff_ms / 1000,
        budget_s=p.retry_budget_ms / 1000,
    )


def validate_budget(settings: Settings) -> None:
    """Reject a retry budget that cannot fit the consumer's poll interval or, in exactly-once
    mode, the transaction timeout."""
    consumer = settings.client_properties("consumer")
    producer = settings.client_properties("producer")
    max_poll = float(consumer.get("max.poll.interval.ms", 300_000)) / 1000
    txn = float(producer.get("transaction.timeout.ms", 60_000)) / 1000
    retry_policy(settings).validate(max_poll, txn if settings.delivery == "exactly-once" else None)


@dataclass(frozen=True, slots=True)
class TopicReport:
    problems: list[str]
    configs_known: bool
    dlq_max_bytes: int


def check_topics(settings: Settings) -> TopicReport:
    """Problems with the pipeline's topics, whether topic configs could be read, and how large a
    dead letter may be."""
    client = admin.admin_client(settings.client_properties("producer"))
    names = topic_rules.required_topics(settings)
    try:
        infos = admin.describe(client, names)
        known = True
    except admin.AdminUnsupported:
        existing = admin.existing_topics(client)
        infos = {n: admin.TopicInfo(n, existing[n]) for n in names if n in existing}
        known = False
    limit = topic_rules.max_bytes(infos.get(settings.dlq.topic))
    return TopicReport(topic_rules.check(settings, infos, known), known, limit)


def create_topics(settings: Settings) -> list[str]:
    client = admin.admin_client(settings.client_properties("producer"))
    existing = admin.existing_topics(client)
    try:
        infos = admin.describe(client, list(settings.sources))
    except admin.AdminUnsupported:
        infos = {}
    specs = topic_rules.missing_specs(settings, existing, infos)
    admin.create(client, specs)
    return [s.name for s in specs]


def worker_id(instance: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{instance}"


def build_worker(
    settings: Settings,
    instance: str,
    registry: CollectorRegistry,
    holds: HoldRules,
    dlq_max_bytes: int = topic_rules.BROKER_DEFAULT_MAX_BYTES,
) -> Worker:
    """Every part of one group member, wired; the clients connect lazily."""
    for path in settings.python_path:
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    schemas = Schemas(settings)
    handler = build_handler(settings, schemas, holds, worker_id(instance))
    handler.dlq_max_bytes = dlq_max_bytes
    metrics = WorkerMetrics(registry, settings.pipeline)
    source = KafkaSource(settings.client_properties("consumer"), settings.pipeline)
    delivery = _delivery(settings, instance, source, metrics, dlq_max_bytes)
    p = settings.policy

    def on_change(old: BreakerState, new: BreakerState, reason: str) -> None:
        metrics.set_breaker(new.value)
        if new is BreakerState.OPEN:
            metrics.breaker_opens.labels(settings.pipeline).inc()
        log.warning("circuit breaker %s -> %s: %s", old.value, new.value, reason)

    breaker = CircuitBreaker(
        p.breaker_threshold, p.breaker_open_ms / 1000, p.breaker_max_open_ms / 1000, on_change
    )
    flood = (
        FloodGuard(p.flood_ratio, p.flood_window, p.flood_min_records, p.flood_pause_ms / 1000)
        if p.flood_guard
        else None
    )
    options = WorkerOptions(
        pipeline=settings.pipeline,
        topics=(*settings.sources, settings.redrive_topic),
        batch_size=settings.batch_size,
        correlation_header=settings.correlation_header,
    )
    crashes = CrashGuard(p.crash_limit, settings.batch_size) if p.crash_limit else None
    return Worker(options, source, delivery, handler, metrics, breaker, flood, crashes=crashes)


def _delivery(
    settings: Settings,
    instance: str,
    source: KafkaSource,
    metrics: WorkerMetrics,
    dlq_max_bytes: int,
) -> Delivery:
    props = settings.client_properties("producer")
    # room for a dead letter as large as the DLQ takes (librdkafka's own default is 1 MB)
    props.setdefault("message.max.bytes", max(1_000_000, dlq_max_bytes))
    if settings.delivery == "exactly-once":
        txn_id = f"lazarus-{settings.pipeline}-{instance}"
        timeout = float(props.get("transaction.timeout.ms", 60_000)) / 1000
        sink = KafkaSink(props, transactional_id=txn_id)
        return Transactions(
            sink,
            source,
            metrics,
            time.monotonic,
            time.time,
            settings.dlq.topic,
            timeout_s=timeout,
            linger_s=settings.transaction_ms / 1000,
        )
    return AtLeastOnce(
        KafkaSink(props),
        source,
        metrics,
        time.monotonic,
        time.time,
        settings.dlq.topic,
        commit_interval_s=settings.commit_interval_ms / 1000,
        stall_s=settings.policy.stall_ms / 1000,
    )


def run_worker(settings: Settings, instance: str, *, check: bool = True) -> None:
    """Run one group member until SIGTERM/SIGINT; SIGHUP reloads the hold rules."""
    validate_budget(settings)
    dlq_max_bytes = topic_rules.BROKER_DEFAULT_MAX_BYTES
    if check:
        report = check_topics(settings)
        if report.problems:
            raise RuntimeFailure("topic check failed: " + "; ".join(report.problems))
        dlq_max_bytes = report.dlq_max_bytes
    rules = RulesFile(settings.policy.holds) if settings.policy.holds else None
    registry = process_registry()
    holds = rules.current if rules else HoldRules.empty()
    worker = build_worker(settings, instance, registry, holds, dlq_max_bytes)
    if settings.metrics_port is not None:
        HealthServer(
            settings.metrics_host,
            settings.metrics_port,
            registry,
            live=worker.liveness,
            ready=worker.readiness,
        ).start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: draining and stopping", signum)
        worker.stop()

    def reload(_signum: int, _frame: FrameType | None) -> None:
        if rules is None:
            return
        current, problem = rules.reload()
        worker.handler.holds = current
        if problem:
            log.error("hold rules not reloaded: %s", problem)
        else:
            log.info(
                "hold rules reloaded (version %s, %d rules)", current.version, len(current.rules)
            )

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    if rules is not None:
        worker.on_tick = lambda: _report_expired(rules)
    log.info(
        "worker %s of pipeline %s starting (%s)", instance, settings.pipeline, settings.delivery
    )
    worker.run()


def process_registry() -> CollectorRegistry:
    """A registry with the standard process, platform and GC metrics (prometheus-client puts
    those on its global registry only)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _report_expired(rules: RulesFile) -> None:
    for rule in rules.expired_since_last(int(time.time() * 1000)):
        log.warning("hold rule %s expired; matching records flow again", rule.name)
