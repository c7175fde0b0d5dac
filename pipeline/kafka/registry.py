"""Writer schemas from a Confluent Schema Registry: a `SchemaSource` over
`confluent_kafka.schema_registry.SchemaRegistryClient`.

Each id is fetched and parsed once (with its references), then served from memory: registry
ids are immutable. Failures become `SchemaError` when the registry says the id (or a
reference) does not exist, and `SchemaUnavailable` when it cannot answer (unreachable,
HTTP 5xx, credentials refused), since then the record itself may be fine. Messages carry ids,
subjects and HTTP statuses only: never configuration values, which hold credentials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from fastavro.types import NamedSchemas

from pipeline.codecs.avro import AvroSchema, ParsedSchema, parse_avro
from pipeline.errors import ConfigError, SchemaError, SchemaUnavailable

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10
"""httpx's client waits forever without one; a hung registry must not hang the worker."""
NUMERIC_KEYS = frozenset(
    {"timeout", "max.retries", "retries.wait.ms", "retries.max.wait.ms", "cache.capacity"}
)
"""Client settings that must be numbers (settings files give strings)."""
NOT_FOUND = 404


class RegistrySource:
    """`SchemaSource` over a schema registry at `url` (comma-separated for several).

    `conf` takes the client's other settings (`basic.auth.user.info`, `ssl.*`, `timeout`,
    `max.retries`, ...); numeric ones may be given as strings. Raises `ConfigError` if the
    client rejects them. Not thread-safe: one per worker.
    """

    __slots__ = ("_cache", "_client", "_secrets")

    def __init__(self, url: str, conf: Mapping[str, str | int | float] | None = None) -> None:
        settings = _client_settings(url, conf or {})
        self._secrets = _secrets(settings)
        try:
            self._client = SchemaRegistryClient(settings)
        except Exception as exc:  # ValueError, TypeError, OSError for ssl.* files, ...
            reason = _scrub(str(exc), self._secrets)
            raise ConfigError(f"schema registry settings rejected: {reason}") from exc
        self._cache: dict[int, ParsedSchema] = {}

    def by_id(self, schema_id: int) -> ParsedSchema:
        """The Avro schema registered as `schema_id`, parsed; fetched on first use only."""
        parsed = self._cache.get(schema_id)
        if parsed is None:
            parsed = self._fetch(schema_id)
            self._cache[schema_id] = parsed
        return parsed

    def close(self) -> None:
        """Close the client's HTTP session."""
        self._client.close()

    def _fetch(self, schema_id: int) -> ParsedSchema:
        what = f"schema id {schema_id}"
        schema = self._call(what, self._client.get_schema, schema_id)
        kind = schema.schema_type or "AVRO"
        if kind != "AVRO":
            raise SchemaError(f"{what} is a {kind} schema, not Avro")
        named: NamedSchemas = {}
        self._parse_references(schema, named, set())
        parsed = self._parse(what, schema, named)
        subject, version = self._subject_version(schema_id)
        where = f"{subject}/{version}/" if subject is not None else ""
        return ParsedSchema(parsed, schema_id, subject, version, f"registry:{where}id={schema_id}")

    def _parse_references(self, schema: Schema, named: NamedSchemas, seen: set[str]) -> None:
        """Parse referenced schemas, depth first and each once, into `named`, so the schema
        that names their types parses (what the Confluent deserializer does)."""
        for ref in schema.references or []:
            key = f"{ref.subject}/{ref.version}"
            if key in seen:
                continue
            seen.add(key)
            what = f"schema reference {ref.name!r} ({key})"
            if ref.subject is None or ref.version is None:
                raise SchemaError(f"{what} names no subject or version")
            registered = self._call(what, self._client.get_version, ref.subject, ref.version, True)
            self._parse_references(registered.schema, named, seen)
            self._parse(what, registered.schema, named)

    @staticmethod
    def _parse(what: str, schema: Schema, named: NamedSchemas) -> AvroSchema:
        if not schema.schema_str:
            raise SchemaError(f"the registry returned no schema text for {what}")
        try:
            return parse_avro(schema.schema_str, named)
        except SchemaError as exc:
            raise SchemaError(f"{what} from the registry: {exc.message}") from exc

    def _subject_version(self, schema_id: int) -> tuple[str | None, int | None]:
        """Where the id is registered, for the `dlq.schema` ref. A registry without the
        endpoint (404) leaves the ref as `registry:id=N`; other failures propagate, so that
        a ref without them is never cached because of a blip."""
        try:
            found = self._call(
                f"versions of schema id {schema_id}", self._client.get_schema_versions, schema_id
            )
        except SchemaUnavailable:
            raise
        except SchemaError:
            return None, None
        if not found:
            return None, None
        first = min(found, key=lambda v: (v.subject or "", v.version or 0))
        return first.subject, first.version

    def _call(self, what: str, fn: Callable[..., T], *args: object) -> T:
        """Call the client, mapping its errors to ours without their text."""
        try:
            return fn(*args)
        except SchemaRegistryError as exc:
            if exc.http_status_code == NOT_FOUND:
                raise SchemaError(f"{what} unknown to the registry") from exc
            raise SchemaUnavailable(
                f"registry answered HTTP {exc.http_status_code} (error code {exc.error_code}) "
                f"for {what}"
            ) from exc
        except Exception as exc:
            raise SchemaUnavailable(
                f"registry request failed for {what} ({type(exc).__name__})"
            ) from exc


def _client_settings(url: str, conf: Mapping[str, str | int | float]) -> dict[str, object]:
    settings: dict[str, object] = {"timeout": DEFAULT_TIMEOUT_S}
    for key, value in conf.items():
        settings[key] = _number(key, value) if key in NUMERIC_KEYS else value
    settings["url"] = url
    return settings


def _number(key: str, value: str | int | float) -> int | float:
    if not isinstance(value, str):
        return value
    try:
        return float(value) if "." in value else int(value)
    except ValueError as exc:
        raise ConfigError(f"schema registry setting {key!r} must be a number") from exc


def _secrets(settings: Mapping[str, object]) -> list[str]:
    """Every string setting, the password part of `user:password` ones, and the user info of
    every URL: none may appear in a message. Longest first, so that scrubbing is complete."""
    values: set[str] = set()
    for value in settings.values():
        if isinstance(value, str) and value:
            values.add(value)
            values.add(value.partition(":")[2])
    for url in str(settings["url"]).split(","):
        parts = urlsplit(url.strip())
        values.update({parts.netloc.rpartition("@")[0], parts.password or ""})
        values.add(unquote(parts.password or ""))
    return sorted((v for v in values if v), key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
