"""JSON record values validated by a pydantic model, and the translation of pydantic's errors
into `RecordError`s that the Avro codec shares.

Why the care: `str(ValidationError)` embeds the raw input, and dead-letter headers must hold no
payload values, so messages and details are built only from
`errors(include_input=False, include_url=False)`, with the input's own parts of each location
(dict keys, extra field names, union tags) and of each message (a validator's own text) taken
out by `pipeline.codecs.locations`. pydantic reports
undecodable bytes (bad UTF-8, malformed JSON, nesting past its recursion limit, numbers past
its size limit) as a `ValidationError` of type `json_invalid`: those are deserialization
failures, not validation ones. And pydantic accepts NaN and infinities (`NaN`, `Infinity`,
`"nan"`, `1e999`) unless each model opts out, so the codec rejects non-finite numbers itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date, time
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticSerializationError

from pipeline.codecs.base import Decoded
from pipeline.codecs.finite import compile_model_check
from pipeline.codecs.locations import EXTRA, KEY, WITHHELD, Redactor, safe_location, safe_message
from pipeline.errors import DeserializationError, RecordError, ValidationFailed

M = TypeVar("M", bound=BaseModel)

MAX_NAMED = 10
"""Failed fields named in a message; the rest are counted (the header holds 1 KiB)."""
MAX_DETAILS = 100
"""Entries kept in `details`; the contract caps the header at 8 KiB anyway."""
ROOT = "<root>"
"""How a message names the document itself (a details `loc` is then empty)."""
UNDECODABLE = frozenset({"json_invalid", "json_type"})
"""pydantic error types that mean the bytes are not a JSON document at all."""


def model_ref(model: type[BaseModel]) -> str:
    """`model:<module>:<qualname>`, the `dlq.schema` value for model-validated events."""
    return f"model:{model.__module__}:{model.__qualname__}"


def validate_python(
    model: type[M],
    data: object,
    *,
    strict: bool = False,
    may_be_non_finite: Callable[[object], bool] | None = None,
    keep_messages: Redactor | None = None,
) -> M:
    """Validate an already decoded value (e.g. the Avro codec's dict) against `model`.

    Raises `ValidationFailed` for rule violations, non-finite numbers, and validators that
    crash with something other than `ValueError` (whose messages may quote the input).
    `may_be_non_finite`, a check of the validated event compiled per model
    (`pipeline.codecs.finite`), replaces the walk of all of `data`; the event is walked in full
    only when it says so. A validator's own message is recorded only through `keep_messages`
    (the pipeline's `policy.redact` hook when it keeps them), else withheld.
    """
    try:
        # `model_validate` without its wrapper (a check of by_alias/by_name, unused here)
        event: M = model.__pydantic_validator__.validate_python(data, strict=strict)
    except ValidationError as exc:
        raise validation_failed(exc, model, keep_messages) from exc
    except Exception as exc:
        raise validator_crashed(model, exc, keep_messages) from exc
    if may_be_non_finite is None:
        if plain_may_be_non_finite(data):
            reject_non_finite(event, model.__name__)
    elif may_be_non_finite(event):
        reject_non_finite(event, model.__name__)
    return event


def error_details(
    exc: ValidationError,
    model: type[BaseModel],
    keep_messages: Redactor | None = None,
    errors: list[ErrorDetails] | None = None,
) -> list[dict[str, str]]:
    """`[{"loc": "items.0.qty", "msg": ..., "type": ...}]`, free of input values: user-chosen
    location parts become `<key>`, `<extra field>` or `<tag>` (`locations.safe_location`) and
    messages that quote the input are rebuilt or withheld (`locations.safe_message`). The
    context is read (a union's expected tags) but never copied. `errors` is
    `exc.errors(include_url=False, include_input=False)` when the caller has it already."""
    if errors is None:
        errors = exc.errors(include_url=False, include_input=False)
    return [
        {
            "loc": safe_location(model, error["loc"]),
            "msg": safe_message(error, keep_messages),
            "type": error["type"],
        }
        for error in errors[:MAX_DETAILS]
    ]


def summarise(title: str, details: list[dict[str, str]], total: int) -> str:
    """`2 validation errors for Order: items.0.qty (greater_than), customer.id (missing)`."""
    noun = "error" if total == 1 else "errors"
    named = ", ".join(f"{d['loc'] or ROOT} ({d['type']})" for d in details[:MAX_NAMED])
    more = f", and {total - MAX_NAMED} more" if total > MAX_NAMED else ""
    return f"{total} validation {noun} for {title}: {named}{more}"


def validation_failed(
    exc: ValidationError,
    model: type[BaseModel],
    keep_messages: Redactor | None = None,
    text: str | None = None,
) -> ValidationFailed:
    """The `ValidationFailed` for a pydantic `ValidationError` (whose own text is never used).

    Built once per shape of error when messages are withheld: one cause repeats the same shape
    record after record. The shape is `errors_text(exc)` (every error's type, location and
    message: all the result depends on, besides the model), read in one call; `text`, when
    the caller has it already. With a `keep_messages` hook (the user's, called per record), a
    union tag error (whose message is built from its context) or much text, it is built afresh.
    """
    if keep_messages is not None:
        return _described(exc, model, keep_messages)
    if text is None:
        text = errors_text(exc)
    known = _FAILED.get((model, text))
    if known is None:
        failed = _described(exc, model, None)
        if len(text) <= _MAX_SHAPE_TEXT and _UNION_TAG not in text:
            if len(_FAILED) >= _MAX_FAILED:
                _FAILED.clear()
            _FAILED[(model, text)] = (failed.message, tuple(map(dict, failed.details)))
        return failed
    message, cached = known
    return ValidationFailed(message, details=list(map(dict, cached)))


def errors_text(exc: ValidationError) -> str:
    """`exc`'s errors as JSON, without their inputs, contexts and URLs: the shape of the error,
    e.g. `[{"type":"greater_than","loc":["items",0,"qty"],"msg":"Input should be greater than
    0"}]`. One call, where `errors()` and a key made of its dicts cost three times as much."""
    return exc.json(include_url=False, include_input=False, include_context=False)


def _described(
    exc: ValidationError, model: type[BaseModel], keep_messages: Redactor | None
) -> ValidationFailed:
    details = error_details(exc, model, keep_messages)
    message = summarise(model.__name__, details, exc.error_count())
    return ValidationFailed(message, details=details)


_FAILED: dict[tuple[type[BaseModel], str], tuple[str, tuple[dict[str, str], ...]]] = {}
_MAX_FAILED = 512
_MAX_SHAPE_TEXT = 16384
"""Longer shapes (many errors, or a validator's long text) are not kept."""
_UNION_TAG = '"union_tag_invalid"'
"""A union tag error's message is built from its context, which the shape leaves out. (The
text may also hold it as a location part or a message: then that shape is not kept either.)"""


def validator_crashed(
    model: type[BaseModel], exc: Exception, keep_messages: Redactor | None = None
) -> ValidationFailed:
    """A validator raised something pydantic does not convert (not a `ValueError`): its
    message only through `keep_messages`, since it may quote the input."""
    prefix = f"a validator of {model.__name__} raised {type(exc).__name__}"
    if keep_messages is None:
        return ValidationFailed(f"{prefix} ({WITHHELD})")
    return ValidationFailed(f"{prefix}: {keep_messages(str(exc))}")


def reject_non_finite(event: object, title: str) -> None:
    """Raise `ValidationFailed` (type `finite_number`, one entry per field) if `event` holds a
    NaN or an infinity anywhere, whatever the model's own `allow_inf_nan` says."""
    locations = [".".join(loc) for loc in itertools.islice(_non_finite(event, ()), MAX_DETAILS)]
    if locations:
        details = [
            {"loc": loc, "msg": "Input should be a finite number", "type": "finite_number"}
            for loc in locations
        ]
        raise ValidationFailed(summarise(title, details, len(details)), details=details)


_NON_FINITE_WORD = re.compile(r"(?i)nan|inf")
_HUGE = 10**308


def plain_may_be_non_finite(value: object) -> bool:
    """Whether a decoded value (dicts, lists, scalars) may hold or become a non-finite number.
    Anything but plain JSON-like data answers True, so the full check runs."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if item - item != 0.0:  # NaN and ±inf give NaN
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, str):
            if _NON_FINITE_WORD.search(item):
                return True
        elif item is None or isinstance(item, bool | bytes | date | time | UUID):
            continue  # datetime is a date; Avro logical types decode to these
        elif isinstance(item, Decimal):
            if not item.is_finite():
                return True
        elif isinstance(item, int):
            if not -_HUGE < item < _HUGE:
                return True
        else:
            return True
    return False


def holds_non_finite(value: object) -> bool:
    """Whether `value` (models, dataclasses, containers) holds a non-finite number anywhere."""
    return next(_non_finite(value, ()), None) is not None


def _non_finite(value: object, loc: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Locations of non-finite floats and decimals in models, dataclasses and containers."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield loc
    elif isinstance(value, Decimal):
        if not value.is_finite():
            yield loc
    elif isinstance(value, BaseModel):
        yield from _non_finite_fields(value, loc)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _non_finite(getattr(value, field.name), (*loc, field.name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _non_finite(item, (*loc, KEY))  # a key is the record's, never shown
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*loc, str(index)))


def _non_finite_fields(model: BaseModel, loc: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """A model's fields under their aliases (as pydantic's `loc` names them), then its extras
    (as `<extra field>`: their names are the record's)."""
    for name, info in type(model).model_fields.items():
        yield from _non_finite(getattr(model, name), (*loc, info.alias or name))
    for item in (model.model_extra or {}).values():
        yield from _non_finite(item, (*loc, EXTRA))


def _undecodable(data: bytes, title: str, problem: str) -> DeserializationError:
    """Say whether the bytes are not UTF-8 (jiter reports that as a JSON syntax error)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DeserializationError(f"invalid UTF-8 at byte {exc.start}: not a JSON document")
    problem = problem.removeprefix("Invalid JSON: ")
    if problem.startswith("EOF while parsing"):  # a string, a value, an object...: one cause
        return DeserializationError(f"truncated JSON for {title}: the document ends early")
    return DeserializationError(f"malformed JSON for {title}: {problem}")


class JsonCodec:
    """JSON values validated by a pydantic v2 model (`strict=True` turns off type coercion,
    e.g. `"2"` for an int). `Decoded.event` is the model instance. `keep_messages` records a
    validator's own message through that hook (`policy.error_messages = "keep"`); by default it
    is withheld."""

    __slots__ = ("_finite", "_keep", "_model", "_ref", "_strict")

    def __init__(
        self,
        model: type[BaseModel],
        *,
        strict: bool = False,
        keep_messages: Redactor | None = None,
    ) -> None:
        self._model = model
        self._strict = strict
        self._keep = keep_messages
        self._ref = model_ref(model)
        self._finite = compile_model_check(model, holds_non_finite)

    @property
    def model(self) -> type[BaseModel]:
        """The model every value is validated against."""
        return self._model

    def decode(self, data: bytes) -> Decoded:
        """Parse and validate one value; raises `DeserializationError` or `ValidationFailed`."""
        if not data:
            raise DeserializationError("empty value (0 bytes): expected a JSON document")
        try:
            validator = self._model.__pydantic_validator__  # `model_validate_json`, unwrapped
            event = validator.validate_json(bytes(data), strict=self._strict)
        except ValidationError as exc:
            raise self._translate(exc, data) from exc
        except Exception as exc:
            raise validator_crashed(self._model, exc, self._keep) from exc
        if self._finite(event):
            reject_non_finite(event, self._model.__name__)
        return Decoded(event, self._ref)

    def encode(self, event: object, *, schema_id: int | None = None) -> bytes:
        """UTF-8 JSON of `event` (a model instance, or a mapping validated first), by alias so
        that `decode` reads it back. JSON has no writer schema: `schema_id` is ignored."""
        title = self._model.__name__
        if isinstance(event, self._model):
            reject_non_finite(event, title)
            model = event
        elif isinstance(event, Mapping):
            model = validate_python(
                self._model, event, strict=self._strict, keep_messages=self._keep
            )
        else:
            raise ValidationFailed(f"cannot encode a {type(event).__name__} as {title}")
        try:
            return model.model_dump_json(by_alias=True).encode()
        except PydanticSerializationError as exc:
            raise ValidationFailed(f"{title} cannot be serialised to JSON") from exc

    def _translate(self, exc: ValidationError, data: bytes) -> RecordError:
        """`json_invalid` means the bytes never became JSON; anything else broke the model."""
        text = errors_text(exc)  # the shape `validation_failed` caches by, read once for both
        if text.startswith(_NOT_JSON) and text.endswith('"}]') and "\\" not in text:
            # the one error of bytes that are no JSON document, its message a JSON string
            # literal without escapes: the message itself
            return _undecodable(bytes(data), self._model.__name__, text[len(_NOT_JSON) : -3])
        if _JSON_INVALID not in text and _JSON_TYPE not in text:  # no undecodable type
            return validation_failed(exc, self._model, self._keep, text)
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        undecodable = [error["msg"] for error in errors if error["type"] in UNDECODABLE]
        if undecodable:
            return _undecodable(bytes(data), self._model.__name__, undecodable[0])
        return validation_failed(exc, self._model, self._keep, text)


_NOT_JSON = '[{"type":"json_invalid","loc":[],"msg":"'
"""How `errors_text` begins for bytes that are not a JSON document (jiter's one error)."""
_JSON_INVALID, _JSON_TYPE = (f'"{kind}"' for kind in ("json_invalid", "json_type"))
"""Without these in `errors_text`, no error is of an `UNDECODABLE` type."""
