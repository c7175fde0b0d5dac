"""Safe pydantic error locations and messages: the model's own names stay, the input's go.

A pydantic `loc` mixes two kinds of parts. Field names, list indices and the labels of union
members come from the model. Dict keys, the names of unexpected (extra or forbidden) fields and
the tags of discriminated unions come from the record: they are payload values (an e-mail address
used as a key) and, in a fingerprint, they split one cause into one group per key. So a location
keeps the first kind and replaces the second with a placeholder: `tags.alice@example.com` becomes
`tags.<key>`, `secret_field` an `<extra field>`, `pet.cat.lives` becomes `pet.<tag>.lives`.

Which part is which is read from the model's annotations, as `finite.py` does: a part under a
dict-typed field is a key, a name that is not a field of the model is extra. Where the
annotations say nothing (`Any`, a custom type, a union member that cannot be told), later name
parts are treated as keys: over-redacting is the safe side.

Messages: pydantic's own texts name the rule, except a few that quote the input (a
discriminated union's unknown tag, a UUID's bad character) or are the user's own text (a custom
validator's `ValueError` / `AssertionError`, a `PydanticCustomError`). Those are rebuilt without
the input, or withheld unless the pipeline keeps validator messages (`policy.error_messages`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Discriminator, RootModel, Tag
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_core.core_schema import ErrorType
from typing_extensions import is_typeddict

KEY = "<key>"
"""A dict key of the record (user-chosen, so never shown)."""
EXTRA = "<extra field>"
"""A field name the model does not declare (forbidden or allowed extra)."""
TAG = "<tag>"
"""The tag value that chose a member of a discriminated union."""
KEY_ERROR = "[key]"
"""pydantic's marker after a dict key whose own validation failed."""
WITHHELD = 'message redacted; set policy.error_messages = "keep" to record it'
"""What replaces a validator's own text."""

Redactor = Callable[[str], str]
"""A validator message in, the message to record out (the pipeline's `policy.redact` hook)."""

_PYDANTIC_TYPES = frozenset(typing.get_args(ErrorType))
_USER_TEXT = {
    "value_error": "Value error raised by a validator",
    "assertion_error": "Assertion failed in a validator",
}
_CUT_AT_COMMA = frozenset({"uuid_parsing", "get_attribute_error", "iteration_error"})
"""pydantic types whose message ends with a parser's detail that can quote the input."""
_UNKNOWN: object = object()
"""Walking past what the annotations describe."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Slot:
    """What a location part leads to: its annotation and, for a union, its discriminator."""

    annotation: object
    discriminator: object = None


def safe_location(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    """The dotted location of an error of `model` with user-chosen parts replaced."""
    return _safe_location(model, tuple(loc))


@functools.lru_cache(maxsize=4096)
def _safe_location(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """Cached, bounded: one cause repeats the same location (the dead-letter path of a bad
    deploy), while locations holding keys vary per record and only cycle through."""
    return ".".join(_walk(_Slot(model), loc))


def safe_message(error: ErrorDetails, keep: Redactor | None) -> str:
    """pydantic's message for `error` (an entry of `errors(include_context=True)`), without
    input values; a validator's own text only through `keep`, else withheld."""
    kind, msg = error["type"], error["msg"]
    if kind == "union_tag_invalid":
        ctx = error.get("ctx") or {}
        return (
            f"Input tag found using {ctx.get('discriminator', 'the discriminator')} does not "
            f"match any of the expected tags: {ctx.get('expected_tags', '?')}"
        )
    if kind in _CUT_AT_COMMA:
        return msg.partition(",")[0]
    if kind in _USER_TEXT or kind not in _PYDANTIC_TYPES:
        if keep is not None:
            return keep(msg)
        return f"{_USER_TEXT.get(kind, 'Custom validation error')} ({WITHHELD})"
    return msg


def _walk(slot: _Slot, loc: tuple[int | str, ...]) -> list[str]:
    if not loc:
        return []
    tp, discriminator = _unwrap(slot)
    head, rest = loc[0], loc[1:]
    if tp is _UNKNOWN:
        return [_opaque(part) for part in loc]
    if isinstance(tp, type) and issubclass(tp, RootModel):
        return _walk(_fields(tp).get("root", _Slot(_UNKNOWN)), loc)
    if isinstance(tp, type) and (
        issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp) or is_typeddict(tp)
    ):
        field = _fields(tp).get(str(head))
        if field is None:
            return [EXTRA, *(_opaque(part) for part in rest)]
        return [str(head), *_walk(field, rest)]
    origin, args = typing.get_origin(tp) or tp, typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(args, discriminator, head, rest)
    if isinstance(origin, type) and issubclass(origin, Mapping):
        if rest[:1] == (KEY_ERROR,):
            return [KEY, KEY_ERROR]
        return [KEY, *_walk(_Slot(args[1] if len(args) == 2 else _UNKNOWN), rest)]
    if isinstance(origin, type) and issubclass(origin, Sequence | set | frozenset):
        return [str(head), *_walk(_Slot(_item(origin, args, head)), rest)]
    return [_opaque(part) for part in loc]


def _union(
    args: tuple[object, ...], discriminator: object, head: int | str, rest: tuple[int | str, ...]
) -> list[str]:
    """A tagged union names the member by the record's tag; a smart-mode union by the member's
    label (its class name, `int`, ...), which the model defines."""
    members = [arg for arg in args if arg is not type(None)]
    if discriminator is not None:
        return [TAG, *_walk(_Slot(_tagged(members, discriminator, str(head))), rest)]
    named = next((m for m in members if getattr(m, "__name__", None) == head), _UNKNOWN)
    return [str(head), *_walk(_Slot(named), rest)]


def _tagged(members: list[object], discriminator: object, tag: str) -> object:
    """The member whose `Tag(...)` or discriminator literal is `tag`; unknown when none."""
    for member in members:
        tp: object = member
        meta: tuple[object, ...] = ()
        if typing.get_origin(member) is typing.Annotated:
            tp, *rest = typing.get_args(member)
            meta = tuple(rest)
        if any(isinstance(m, Tag) and m.tag == tag for m in meta):
            return tp
        if isinstance(discriminator, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            literal = _fields(tp).get(discriminator)
            if literal is not None and tag in (str(v) for v in _literals(literal.annotation)):
                return tp
    return _UNKNOWN


def _literals(annotation: object) -> tuple[object, ...]:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def _unwrap(slot: _Slot) -> tuple[object, object]:
    """The annotation without `Annotated` and a lone `Optional`, and its discriminator."""
    tp, discriminator = slot.annotation, slot.discriminator
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp, *meta = typing.get_args(tp)
            discriminator = next((d for d in map(_discriminator, meta) if d), discriminator)
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if len(members) != 1:
                return tp, discriminator
            tp = members[0]  # Optional[X]: pydantic adds no location part
        else:
            return (_UNKNOWN if tp in (Any, object) else tp), discriminator


def _discriminator(meta: object) -> object:
    if isinstance(meta, Discriminator):
        return meta.discriminator
    if isinstance(meta, FieldInfo):
        return meta.discriminator
    return None


def _item(origin: type, args: tuple[object, ...], index: int | str) -> object:
    """The annotation of a sequence's item at `index` (a fixed-length tuple's by position)."""
    if not args:
        return _UNKNOWN
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        position = index if isinstance(index, int) else -1
        return args[position] if 0 <= position < len(args) else _UNKNOWN
    return args[0]


def _opaque(part: int | str) -> str:
    """A part the annotations do not explain: indices and pydantic's markers stay."""
    return str(part) if isinstance(part, int) or part == KEY_ERROR else KEY


@functools.cache
def _fields(tp: type) -> dict[str, _Slot]:
    """A model's (or dataclass's, or TypedDict's) fields by every name pydantic may report:
    the field name, its alias and its validation aliases."""
    found: dict[str, _Slot] = {}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            found_in_meta = (d for d in map(_discriminator, info.metadata) if d is not None)
            slot = _Slot(info.annotation, info.discriminator or next(found_in_meta, None))
            for alias in (name, info.alias, *_validation_aliases(info)):
                if isinstance(alias, str):
                    found.setdefault(alias, slot)
    elif dataclasses.is_dataclass(tp) or is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        found.update((name, _Slot(hint)) for name, hint in hints.items())
    return found


def _validation_aliases(info: FieldInfo) -> tuple[object, ...]:
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    return tuple(choices) if isinstance(choices, list) else (alias,)
