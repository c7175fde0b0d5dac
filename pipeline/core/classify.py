"""Exception -> contract category, error type, safe message and details (pure).

Messages that reach the `dlq.error.*` headers never carry payload values: errors Lazarus raises
(`RecordError` and its kinds) build their messages from field paths and rules only. The text of
the user's own exceptions (a processor's `ValueError(f"bad card {card}")`) is withheld by default:
the dead letter, its stack trace and every log line name the exception type and say the message
was redacted. A pipeline that opts in (`policy.error_messages = "keep"`) records the text through
its redaction hook (`policy.redact`, the identity when unset).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import NamedTuple

from pipeline.errors import Category, RecordError, Retryable

Redactor = Callable[[str], str]
"""A user exception's message in, the message to record out."""
WITHHELD = 'message redacted; set policy.error_messages = "keep" to record it'


class Classified(NamedTuple):
    """What the dead letter will say about a failure (a named tuple: one per dead letter)."""

    category: Category
    error_type: str
    message: str
    details: tuple[dict[str, str], ...] = ()
    stacktrace: str | None = None


def qualified_type(exc: BaseException) -> str:
    """`module.Qualname`, private module segments dropped (`pydantic_core._pydantic_core.X` ->
    `pydantic_core.X`) and builtins bare (`TimeoutError`)."""
    cls = type(exc)
    name = _QUALIFIED.get(cls)
    if name is None:
        name = _qualified_name(cls)
        if len(_QUALIFIED) < _QUALIFIED_MAX:
            _QUALIFIED[cls] = name
    return name


_QUALIFIED: dict[type, str] = {}
"""Once per exception class: a dead-letter path names the same few types again and again."""
_QUALIFIED_MAX = 1024


def _qualified_name(cls: type) -> str:
    module = ".".join(part for part in cls.__module__.split(".") if not part.startswith("_"))
    if module in ("", "builtins"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def reported_type(exc: BaseException) -> str:
    """For Lazarus' own record errors the library exception they wrap names the cause better."""
    if isinstance(exc, RecordError) and exc.__cause__ is not None:
        return qualified_type(exc.__cause__)
    return qualified_type(exc)


def user_message(exc: BaseException, keep: Redactor | None) -> str:
    """What a dead letter or a log line says of a user exception: its text through `keep` when
    the pipeline records messages (the type's name if that leaves nothing), else a stable
    sentence naming the type (one fingerprint per exception type, whatever the input)."""
    if keep is None:
        return f"{qualified_type(exc)} raised by the processor ({WITHHELD})"
    return keep(str(exc)) or qualified_type(exc)


def safe_stacktrace(exc: BaseException, message: str) -> str:
    """Frames (file, line, function and the code line, never locals) plus the sanitised
    message: never the exception's raw text, which can hold input."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{qualified_type(exc)}: {message}"


def is_retryable(exc: BaseException, retryable: tuple[type[BaseException], ...]) -> bool:
    return isinstance(exc, (Retryable, *retryable))


def classify(exc: BaseException, redact: Redactor | None, *, with_stack: bool = True) -> Classified:
    """Classify a failure that ends a record's journey now (no retry left). `redact` is the
    hook a user exception's text goes through; None (the default policy) withholds it."""
    if isinstance(exc, RecordError):
        message = exc.message
        category = exc.category
        details = tuple(exc.details)
    else:
        message = user_message(exc, redact)
        category = Category.PROCESSING
        details = ()
    stack = safe_stacktrace(exc, message) if with_stack else None
    return Classified(category, reported_type(exc), message, details, stack)


def exhausted(
    exc: BaseException,
    attempts: int,
    elapsed_s: float,
    redact: Redactor | None,
    *,
    with_stack: bool,
) -> Classified:
    """A retryable error that outlived its retry budget."""
    last = classify(exc, redact, with_stack=with_stack)
    message = f"gave up after {attempts} attempts in {elapsed_s:.1f}s: {last.message}"
    return Classified(
        Category.RETRIES_EXHAUSTED, last.error_type, message, last.details, last.stacktrace
    )


def load_exception_types(names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """Resolve configured retryable exception names: builtins by name, others `module:Name` or
    `module.Name`."""
    import builtins
    import importlib

    from pipeline.errors import ConfigError

    types: list[type[BaseException]] = []
    for name in names:
        module_name, _, attr = name.replace(":", ".").rpartition(".")
        try:
            found = getattr(importlib.import_module(module_name) if module_name else builtins, attr)
        except Exception as exc:
            raise ConfigError(f"policy.retryable: cannot find exception type {name!r}") from exc
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            raise ConfigError(f"policy.retryable: {name!r} is not an exception type")
        types.append(found)
    return tuple(types)
