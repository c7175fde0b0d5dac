"""Error types of Lazarus. The dead-letter category is data: a StrEnum of the contract's words."""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    """`dlq.error.category`: the closed list of contract version 1."""

    DESERIALIZATION = "deserialization"
    SCHEMA = "schema"
    VALIDATION = "validation"
    PROCESSING = "processing"
    RETRIES_EXHAUSTED = "retries_exhausted"
    HELD = "held"
    CRASHED = "crashed"


class LazarusError(Exception):
    """Base of every error Lazarus raises on purpose."""


class ConfigError(LazarusError):
    """Bad configuration or usage: exit code 2."""


class RuntimeFailure(LazarusError):
    """The job failed at run time (broker unreachable past its deadline, fenced, accounting
    mismatch): exit code 1."""


class PartialSuccess(LazarusError):
    """Some of the work could not be done (e.g. some dead letters not replayed): exit code 3."""


class RecordError(LazarusError):
    """A record could not be handled. Carries its category and a message free of payload data."""

    category: Category = Category.PROCESSING

    def __init__(self, message: str, *, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class DeserializationError(RecordError):
    """The bytes cannot be decoded at all."""

    category = Category.DESERIALIZATION


class SchemaError(RecordError):
    """Unknown schema id, or writer/reader schemas that cannot be resolved."""

    category = Category.SCHEMA


class ValidationFailed(RecordError):
    """Decoded, but the event violates its model or a rule."""

    category = Category.VALIDATION


class SchemaUnavailable(SchemaError):
    """The writer schema could not be fetched (registry unreachable, HTTP 5xx, refused
    credentials). The record itself may be fine, so a worker should retry or pause rather than
    dead-letter it at once; if it must dead-letter, the category is still `schema`."""


class Retryable(Exception):
    """Raise (or subclass) this from a processing function to ask for a retry with backoff."""


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
