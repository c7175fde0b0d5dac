"""The one place configuration is read: a TOML file validated by frozen pydantic-settings models,
with `LAZARUS_...` environment overrides (nested with `__`, e.g. `LAZARUS_OUTPUT__TOPIC`).

The same file configures the worker (`lazarus`) and the reprocessor (`dlq`). librdkafka properties
under `[kafka]` (all clients), `[consumer]` and `[producer]` pass through verbatim, so SASL/TLS and
every tuning knob work without code. Values of secret-looking properties are kept as `SecretStr`
and never appear in logs, headers or error messages.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.app.defaults import MAX_REPLAYS, USE_INDEX
from pipeline.errors import ConfigError

LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_LENGTH = 249
SECRET_WORDS = (
    "password",
    "secret",
    "token",
    "credentials",
    "user.info",
    "key.pem",
    "keystore.key",
    "oauthbearer.config",  # sasl.oauthbearer.config carries clientSecret=...
)
KafkaValue = str | int | float | bool
# Left to right: plain values stay plain; only what `_hide_secrets` wrapped stays a SecretStr.
PassThrough = Annotated[KafkaValue | SecretStr, Field(union_mode="left_to_right")]


def is_secret_property(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def _check_topic(name: str, *, room: int = 0) -> str:
    if not LEGAL_TOPIC.match(name) or name in {".", ".."}:
        raise ValueError("must be a legal Kafka topic name (letters, digits, '.', '_', '-')")
    if len(name) + room > MAX_TOPIC_LENGTH:
        raise ValueError(f"must be at most {MAX_TOPIC_LENGTH - room} characters")
    return name


def _hide(value: Any) -> Any:
    """Wrap the values of secret-looking properties in SecretStr (never logged or shown)."""
    if not isinstance(value, dict):
        return value
    return {k: SecretStr(str(v)) if is_secret_property(k) else v for k, v in value.items()}


TopicName = Annotated[str, Field(min_length=1)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SchemaSpec(Frozen):
    """How the records of one topic are decoded and validated."""

    format: Literal["avro", "avro-schemaless", "json", "bytes"]
    subject: str | None = None
    writer_schema: Path | None = None
    reader_schema: Path | None = None
    model: str | None = None
    strict: bool = False


class OutputSpec(Frozen):
    topic: TopicName
    schema_: SchemaSpec | None = Field(default=None, alias="schema")

    @field_validator("topic")
    @classmethod
    def _legal(cls, value: str) -> str:
        return _check_topic(value)


class DlqSpec(Frozen):
    topic: TopicName
    min_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=0)
    header_room_bytes: int = Field(default=32 * 1024, ge=0)
    stacktraces: bool = True

    @field_validator("topic")
    @classmethod
    def _legal(cls, value: str) -> str:
        return _check_topic(value, room=len(".ledger"))


class PolicySpec(Frozen):
    """The error policy: what is retried, when the circuit opens, when a flood pauses."""

    retryable: tuple[str, ...] = ("TimeoutError", "ConnectionError")
    max_attempts: int = Field(default=3, ge=1)
    initial_backoff_ms: int = Field(default=100, ge=0)
    max_backoff_ms: int = Field(default=2000, ge=0)
    retry_budget_ms: int = Field(default=30_000, ge=0)
    tombstones: Literal["forward", "dead-letter"] = "forward"
    redact: str | None = None
    error_messages: Literal["redact", "keep"] = "redact"
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_open_ms: int = Field(default=1000, ge=1)
    breaker_max_open_ms: int = Field(default=30_000, ge=1)
    stall_ms: int = Field(default=15_000, ge=100)
    crash_limit: int = Field(default=3, ge=0)
    flood_guard: bool = True
    flood_ratio: float = Field(default=0.5, gt=0, le=1)
    flood_window: int = Field(default=200, ge=1)
    flood_min_records: int = Field(default=50, ge=1)
    flood_pause_ms: int = Field(default=30_000, ge=0)
    holds: Path | None = None


class RegistrySpec(Frozen):
    url: str
    conf: dict[str, PassThrough] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _hide_secrets(cls, value: Any) -> Any:
        return _hide(value)


class ReprocessorSpec(Frozen):
    max_replays: int = Field(default=MAX_REPLAYS, ge=0)
    operator: str | None = None
    index: bool = USE_INDEX
    mask: tuple[str, ...] = ()


class Settings(BaseSettings):
    """Everything a worker or the reprocessor needs, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="LAZARUS_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        populate_by_name=True,
    )

    pipeline: str
    bootstrap: str = "127.0.0.1:9092"
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"
    instance: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    sources: dict[str, SchemaSpec]
    output: OutputSpec
    dlq: DlqSpec
    processor: str | None = None
    policy: PolicySpec = PolicySpec()
    schema_dir: Path = Path("schemas/avro")
    python_path: tuple[Path, ...] = ()
    registry: RegistrySpec | None = None
    kafka: dict[str, PassThrough] = Field(default_factory=dict)
    consumer: dict[str, PassThrough] = Field(default_factory=dict)
    producer: dict[str, PassThrough] = Field(default_factory=dict)
    batch_size: int = Field(default=500, ge=1)
    commit_interval_ms: int = Field(default=1000, ge=0)
    transaction_ms: int = Field(default=100, ge=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    correlation_header: str | None = None
    log_format: Literal["text", "json"] = "text"
    reprocessor: ReprocessorSpec = ReprocessorSpec()
    slo_objective: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("pipeline")
    @classmethod
    def _pipeline_is_topic_stem(cls, value: str) -> str:
        return _check_topic(value, room=len(".redrive"))

    @field_validator("sources")
    @classmethod
    def _sources_are_topics(cls, value: dict[str, SchemaSpec]) -> dict[str, SchemaSpec]:
        if not value:
            raise ValueError("at least one source topic is required")
        for topic in value:
            _check_topic(topic)
        return value

    @field_validator("kafka", "consumer", "producer", mode="before")
    @classmethod
    def _hide_secrets(cls, value: Any) -> Any:
        return _hide(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment overrides the file (which arrives as init arguments)."""
        return (env_settings, init_settings)

    @property
    def redrive_topic(self) -> str:
        return f"{self.pipeline}.redrive"

    @property
    def ledger_topic(self) -> str:
        return f"{self.dlq.topic}.ledger"

    def client_properties(self, role: Literal["consumer", "producer"]) -> dict[str, KafkaValue]:
        """librdkafka properties for one client role, secrets revealed (for the client only)."""
        merged: dict[str, KafkaValue] = {"bootstrap.servers": self.bootstrap}
        for source in (self.kafka, self.consumer if role == "consumer" else self.producer):
            for key, value in source.items():
                merged[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return merged


PASS_THROUGH = ("kafka", "consumer", "producer")


def _problem_lines(exc: ValidationError, origin: str) -> list[str]:
    """One line per problem. A pass-through property fails once per union member: say it once."""
    lines: list[str] = []
    for error in exc.errors(include_input=False, include_context=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        message = error["msg"]
        if len(loc) > 2 and loc[0] in PASS_THROUGH:
            loc, message = loc[:2], "must be a string, a number or a boolean"
        line = f"{origin}: {'.'.join(loc) or '(top level)'}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make file paths in the config relative to the config file, not to the working folder."""

    def fix(value: Any) -> Any:
        return (
            str(base / value) if isinstance(value, str) and not Path(value).is_absolute() else value
        )

    out = dict(data)
    for key in ("schema_dir",):
        if key in out:
            out[key] = fix(out[key])
    if "python_path" in out and isinstance(out["python_path"], list):
        out["python_path"] = [fix(p) for p in out["python_path"]]
    else:
        out.setdefault("python_path", [str(base)])
    policy = out.get("policy")
    if isinstance(policy, dict) and "holds" in policy:
        out["policy"] = {**policy, "holds": fix(policy["holds"])}
    if "output" in out:
        out["output"] = _resolve_output_paths(out["output"], fix)
    sources = out.get("sources")
    if isinstance(sources, dict):
        out["sources"] = {t: _resolve_schema_paths(s, fix) for t, s in sources.items()}
    return out


def _resolve_output_paths(output: Any, fix: Any) -> Any:
    if isinstance(output, dict) and isinstance(output.get("schema"), dict):
        return {**output, "schema": _resolve_schema_paths(output["schema"], fix)}
    return output


def _resolve_schema_paths(spec: Any, fix: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    return {k: fix(v) if k in ("writer_schema", "reader_schema") else v for k, v in spec.items()}


def load_settings(path: Path | None, **overrides: Any) -> Settings:
    """Read and validate the configuration; every problem becomes one line of a ConfigError."""
    data: dict[str, Any] = {}
    origin = "environment"
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such configuration file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read it ({type(exc).__name__})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        data = _resolve_paths(data, path.resolve().parent)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_problem_lines(exc, origin))) from exc
