"""Operations an operator applies to decoded payloads before a replay: pure functions on copies.

Declarative operations come from the command line and are applied in the order given there:

    --set path=value       value is JSON when it parses as JSON (12.5, true, null, "12", {...}),
                           otherwise the text as is; missing parent records are created
    --delete path          nothing happens when the path is missing
    --rename old=new       FixError when `old` is missing or `new` already exists
    --default path=value   like --set, but only when the path is missing or null
    --cast path:type       type is int, float, str or bool; FixError when the path is missing
                           or the value does not convert exactly (12.5 is not an int)

A path is dot-separated (`customer.email`); a decimal part indexes a list (`items.0.qty`).
Or `--with module:function`: a function that takes the event as a dict and returns the fixed
dict, or None after changing its argument in place (`apply_function`).

Errors name the path and the value's type, never the value: FixError messages may end up in
logs and summaries, payloads may hold personal data.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import cast

from pipeline.errors import ConfigError
from reprocessor.deadletters import is_model, text_of

KINDS = ("set", "delete", "rename", "default", "cast")
CAST_TYPES = ("int", "float", "str", "bool")
SHOW_LIMIT = 120
"""Characters of a value shown in a diff line or a description before it is cut with `…`."""

Event = dict[str, object]
FixFunction = Callable[[Event], Event | None]


class FixError(ValueError):
    """An operation that cannot apply to one record; the record is listed, not replayed."""


@dataclass(frozen=True, slots=True)
class FixOp:
    """One declarative operation. `value` for set/default, `new_path` for rename, `to_type`
    for cast."""

    kind: str
    path: str
    value: object | None = None
    new_path: str | None = None
    to_type: str | None = None

    def describe(self) -> str:
        """How the operation reads in the ledger's `fix` and in previews, e.g.
        `set customer.email='x@y.z'`, `rename old=new`, `cast amount:float`."""
        if self.kind in ("set", "default"):
            return f"{self.kind} {self.path}={show_value(self.value)}"
        if self.kind == "rename":
            return f"rename {self.path}={self.new_path}"
        if self.kind == "cast":
            return f"cast {self.path}:{self.to_type}"
        return f"{self.kind} {self.path}"


def parse_ops(
    *,
    set_: Sequence[str] = (),
    delete: Sequence[str] = (),
    rename: Sequence[str] = (),
    default: Sequence[str] = (),
    cast: Sequence[str] = (),
) -> tuple[FixOp, ...]:
    """Operations grouped by kind, in the order set, delete, rename, default, cast. Use
    `parse_ordered` to keep the command line's order. Raises ValueError on bad syntax."""
    groups = (("set", set_), ("delete", delete), ("rename", rename), ("default", default))
    pairs = [(kind, text) for kind, texts in (*groups, ("cast", cast)) for text in texts]
    return parse_ordered(pairs)


def parse_ordered(pairs: Sequence[tuple[str, str]]) -> tuple[FixOp, ...]:
    """`(kind, text)` pairs as given on the command line, e.g. `("set", "amount=12.5")`, into
    operations in the same order. Raises ValueError with a one-line message on bad syntax."""
    return tuple(_parse_one(kind, text) for kind, text in pairs)


def _parse_one(kind: str, text: str) -> FixOp:
    flag = f"--{kind}"
    if kind == "delete":
        return FixOp("delete", _checked_path(text, flag))
    if kind == "cast":
        path, sep, to_type = text.rpartition(":")
        if not sep:
            raise ValueError(f"{flag} expects path:type, got {text!r}")
        if to_type not in CAST_TYPES:
            raise ValueError(f"{flag} {text!r}: type must be one of {', '.join(CAST_TYPES)}")
        return FixOp("cast", _checked_path(path, flag), to_type=to_type)
    if kind not in KINDS:
        raise ValueError(f"unknown fix operation {kind!r} (one of {', '.join(KINDS)})")
    path, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"{flag} expects {'old=new' if kind == 'rename' else 'path=value'}")
    if kind == "rename":
        old, new = _checked_path(path, flag), _checked_path(rest, flag)
        if old == new:
            raise ValueError(f"{flag} {text!r}: old and new paths are the same")
        return FixOp("rename", old, new_path=new)
    return FixOp(kind, _checked_path(path, flag), value=parse_value(rest))


def _checked_path(path: str, flag: str) -> str:
    path = path.strip()
    if not path or not all(path.split(".")):
        raise ValueError(f"{flag}: {path!r} is not a path like customer.email or items.0.qty")
    return path


def parse_value(text: str) -> object:
    """JSON when `text` is valid JSON (NaN and Infinity are not), else `text` itself (also when
    it nests deeper than the JSON parser recurses)."""
    try:
        return json.loads(text, parse_constant=_reject)
    except (ValueError, RecursionError):
        return text


def _reject(name: str) -> object:
    raise ValueError(name)


def apply(ops: Sequence[FixOp], event: object) -> Event:
    """A new dict (containers copied, see `to_plain`) with `ops` applied in order; `event` is
    never changed. Raises FixError when an operation cannot apply, or when `event` is not a
    record (a mapping or a pydantic model)."""
    try:
        result = _copy_for(ops, event)
        for op in ops:
            _APPLY[op.kind](op, result)
    except RecursionError:
        raise FixError("the event nests too deeply to be fixed") from None
    return result


def _copy_for(ops: Sequence[FixOp], event: object) -> Event:
    """What `ops` may change of `event`, copied: the top-level fields their paths start with
    (as `to_plain` does); the other fields are shared with `event`, so that `diff` sees them
    unchanged at once (`is`) and a preview of 100,000 records does not copy 100,000 payloads.
    A decoded event is a dict of plain values (the codecs, `json.loads`); anything else, a
    model or a mapping, is copied whole."""
    if type(event) is not dict:
        return _as_event(event, "the event")
    result: Event = dict(event)
    for op in ops:
        for path in (op.path, op.new_path):
            root = None if path is None else path.partition(".")[0]
            if root is not None and root in result:
                result[root] = to_plain(result[root])
    return result


def _as_event(value: object, what: str) -> Event:
    plain = to_plain(value)
    if not isinstance(plain, dict):
        raise FixError(f"{what} is a {type(value).__name__}, not a record")
    return cast(Event, plain)


_Slot = tuple[dict[str, object] | list[object], str | int]


def _slot(event: Event, path: str, *, create: bool) -> _Slot | None:
    """The container holding `path`'s last part and its key (or index). With `create`, missing
    or null records on the way are created; without, None when the way is missing."""
    container: dict[str, object] | list[object] = event
    parts = path.split(".")
    for depth, part in enumerate(parts[:-1]):
        key = _key_in(container, part, path)
        child = _get(container, key)
        if child is None and create and isinstance(container, dict) and isinstance(key, str):
            created: dict[str, object] = {}
            container[key] = child = created
        if child is None and create:
            where = ".".join(parts[: depth + 1])
            raise FixError(f"{path}: {where} is out of range (lists are not extended)")
        if child is None:
            return None
        if not isinstance(child, dict | list):
            where = ".".join(parts[: depth + 1])
            raise FixError(f"{path}: {where} is a {type(child).__name__}, not a record or list")
        container = child
    return container, _key_in(container, parts[-1], path)


def _key_in(container: dict[str, object] | list[object], part: str, path: str) -> str | int:
    if isinstance(container, dict):
        return part
    if not part.isascii() or not part.isdigit():
        raise FixError(f"{path}: {part!r} is not a list index")
    return int(part)


def _get(container: dict[str, object] | list[object], key: str | int) -> object | None:
    if isinstance(container, dict):
        return container.get(key) if isinstance(key, str) else None
    return container[key] if isinstance(key, int) and key < len(container) else None


def _has(container: dict[str, object] | list[object], key: str | int) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(key, int) and key < len(container)


def _put(event: Event, path: str, value: object) -> None:
    slot = _slot(event, path, create=True)
    assert slot is not None  # create=True never gives None
    container, key = slot
    if isinstance(container, dict):
        container[str(key)] = value  # dict keys are always str (see _key_in)
    elif _has(container, key):
        container[int(key)] = value
    else:
        raise FixError(f"{path}: list index {key} is out of range")


def _read(event: Event, path: str, op: FixOp) -> object:
    slot = _slot(event, path, create=False)
    if slot is None or not _has(*slot):
        raise FixError(f"{op.describe()}: {path} is missing")
    return _get(*slot)


def _apply_set(op: FixOp, event: Event) -> None:
    _put(event, op.path, copy.deepcopy(op.value))


def _apply_default(op: FixOp, event: Event) -> None:
    slot = _slot(event, op.path, create=True)
    if slot is None or _get(*slot) is None:
        _put(event, op.path, copy.deepcopy(op.value))


def _apply_delete(op: FixOp, event: Event) -> None:
    slot = _slot(event, op.path, create=False)
    if slot is None or not _has(*slot):
        return
    container, key = slot
    if isinstance(container, dict):
        del container[str(key)]
    else:
        del container[int(key)]


def _apply_rename(op: FixOp, event: Event) -> None:
    value = _read(event, op.path, op)
    new_path = op.new_path or ""
    target = _slot(event, new_path, create=False)
    if target is not None and _has(*target):
        raise FixError(f"{op.describe()}: {new_path} already exists")
    _apply_delete(op, event)
    _put(event, new_path, value)


def _apply_cast(op: FixOp, event: Event) -> None:
    value = _read(event, op.path, op)
    convert = _CASTS[op.to_type or ""]
    try:
        _put(event, op.path, convert(value))
    except (ValueError, TypeError, OverflowError) as exc:
        kind = "null" if value is None else f"a {type(value).__name__}"
        raise FixError(f"{op.describe()}: the value ({kind}) does not convert") from exc


def _to_int(value: object) -> int:
    """Exact only: "12", 12.0 and "12.0" convert, 12.5 does not (no silent truncation)."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        return int(value)  # exact even beyond a float's precision
    number = _to_float(value)
    if not number.is_integer():
        raise ValueError("not an integer")
    return int(number)


def _to_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _to_str(value: object) -> str:
    if value is None or isinstance(value, dict | list):
        raise TypeError("not a scalar")
    return text_of(value)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise ValueError("not a boolean")


_INTEGER_TEXT = re.compile(r"[-+]?[0-9]+")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
_CASTS: dict[str, Callable[[object], object]] = {
    "int": _to_int,
    "float": _to_float,
    "str": _to_str,
    "bool": _to_bool,
}
_APPLY: dict[str, Callable[[FixOp, Event], None]] = {
    "set": _apply_set,
    "delete": _apply_delete,
    "rename": _apply_rename,
    "default": _apply_default,
    "cast": _apply_cast,
}


def load_fix_function(spec: str, *, search_paths: Sequence[Path] = ()) -> FixFunction:
    """The function named by `module:function` (or `module:Class.method`). `search_paths` (the
    config's `python_path`, the working directory: the `dlq` script puts neither on `sys.path`)
    go to the front of `sys.path` first, in that order of precedence. Raises ConfigError with a
    one-line message when the spec is malformed, the module or attribute is missing, importing
    fails, or it is not callable."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"--with {spec!r} is not of the form module:function")
    for folder in reversed(search_paths):
        if str(folder.resolve()) not in sys.path:
            sys.path.insert(0, str(folder.resolve()))
            importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--with {spec!r}: no module named {exc.name or module_name!r}") from exc
    except (Exception, SystemExit) as exc:  # a module that calls sys.exit() while imported
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ConfigError(f"--with {spec!r}: importing {module_name!r} failed: {reason}") from exc
    try:
        found = reduce(getattr, attribute.split("."), module)
    except AttributeError as exc:
        raise ConfigError(f"--with {spec!r}: {module_name!r} has no {attribute!r}") from exc
    if not callable(found):
        raise ConfigError(f"--with {spec!r} is a {type(found).__name__}, not a function")
    return cast(FixFunction, found)


def apply_function(function: FixFunction, event: object) -> Event:
    """Call a `--with` function on a copy of `event`: its result, or the copy it changed in
    place when it returns None. `event` is never changed. Raises FixError when the function
    raises or returns something other than a record."""
    argument = _as_event(event, "the event")
    try:
        result = function(argument)
    except (Exception, SystemExit) as exc:  # sys.exit() in a fix fails that record, not dlq
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise FixError(f"the fix function raised {reason}") from exc
    return argument if result is None else _as_event(result, "the fix function's result")


def to_plain(event: object) -> object:
    """A copy made of plain containers: pydantic models dumped (mode="python"), mappings to
    dicts, lists and tuples to lists, recursively; other values (str, numbers, datetimes,
    Decimals, bytes) are immutable and shared."""
    if is_model(event):
        return to_plain(event.model_dump(mode="python"))
    if isinstance(event, Mapping):
        return {key: to_plain(value) for key, value in event.items()}
    if isinstance(event, list | tuple):
        return [to_plain(item) for item in event]
    return event


def diff(before: object, after: object) -> list[str]:
    """Readable per-path changes: `~ path: old -> new`, `+ path: new`, `- path` (a removed
    value is not shown). Values of another type count as changed (12 -> 12.0)."""
    lines: list[str] = []
    _diff(before, after, "", lines)
    return lines


_PLAIN = frozenset({dict, list, str, int, float, bool, type(None)})


def _plain(value: object) -> object:
    """`to_plain` of one level: containers below are made plain as `_diff` reaches them."""
    if type(value) in _PLAIN:
        return value
    if is_model(value):
        return to_plain(value)
    if isinstance(value, Mapping):
        return dict(value.items())
    if isinstance(value, tuple):
        return list(value)
    return value


def _diff(old: object, new: object, path: str, lines: list[str]) -> None:
    if old is new and type(old) is not float:  # shared by `apply`: unchanged (NaN is not)
        return
    old, new = _plain(old), _plain(new)
    if isinstance(old, dict) and isinstance(new, dict):
        for key, value in old.items():
            if key not in new:
                lines.append(f"- {_join(path, key)}")
            elif value is not new[key] or type(value) is float:  # the path only if it may differ
                _diff(value, new[key], _join(path, key), lines)
        lines += [f"+ {_join(path, k)}: {show_value(v)}" for k, v in new.items() if k not in old]
    elif isinstance(old, list) and isinstance(new, list):
        for index, (a, b) in enumerate(zip(old, new, strict=False)):
            _diff(a, b, _join(path, index), lines)
        lines += [f"- {_join(path, i)}" for i in range(len(new), len(old))]
        lines += [f"+ {_join(path, i)}: {show_value(new[i])}" for i in range(len(old), len(new))]
    elif type(old) is not type(new) or old != new:
        lines.append(f"~ {path or '(event)'}: {show_value(old)} -> {show_value(new)}")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def show_value(value: object) -> str:
    """A value as a diff or description shows it: text quoted ('x@y.z'), everything else as
    JSON-like text (12.5, true, null, {"a":1}); cut at SHOW_LIMIT characters with `…`."""
    if type(value) in _SCALARS:  # the same few values over and over in a preview's diffs
        return _show_scalar(type(value).__name__, value)
    return _cut(repr(value) if isinstance(value, str) else text_of(value))


_SCALARS = frozenset({bool, int, type(None)})


@functools.lru_cache(maxsize=1024)
def _show_scalar(kind: str, value: object) -> str:
    """`show_value` of a bool, int or None (`kind` keeps True apart from 1)."""
    return _cut(text_of(value))


def _cut(shown: str) -> str:
    return shown if len(shown) <= SHOW_LIMIT else shown[: SHOW_LIMIT - 1] + "…"
