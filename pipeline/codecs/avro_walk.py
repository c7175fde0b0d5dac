"""Where an undecodable Avro body fails, without decoding it again in fastavro's pure Python.

fastavro's compiled reader says neither where nor in which field a body went wrong, so the
Avro codec names the failing field by re-reading the body with fastavro's pure-Python reader
(`fastavro._read_py`) and reading the `field` of each `read_record` frame in the traceback. That
re-read builds the whole record and costs more than the rest of a dead letter together.

`compile_walks(schema).walk`, built once per writer schema, walks a body the way
`_read_py.schemaless_reader` reads it, read for read: the same varints, lengths, block counts,
union and enum indexes (indexed the same way, negative ones included), the same UTF-8 decoding
of strings and map keys, the same logical-type conversions (fastavro's own functions, called on
the same values), raising the same exception types at the same field, but building nothing.
It answers `(dotted field path, exception type)`, or `(None, None)` when the body reads.

Two things are left to the pure-Python re-read, where the walk would not be exact (no `walk`
from `compile_walks`, or the caller checks `needs_bounded_read`):

* schemas the walk does not take: recursive named types, unknown types, nesting past
  `MAX_DEPTH`;
* bodies holding 11 or more consecutive bytes with the high bit set: only there can the codec's
  bound on varint length (more than 10 continuation bytes read one at a time) cut a read short.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from fastavro.logical_readers import LOGICAL_READERS
from fastavro.schema import extract_logical_type, extract_record_type, parse_schema
from fastavro.types import Schema

MAX_DEPTH = 64
"""Nesting the walk takes; deeper schemas go to the pure-Python reader (its recursion limit)."""
_SSIZE_MAX = sys.maxsize
"""`BytesIO.read` refuses a size outside a C ssize_t with OverflowError."""
_LONG_RUN = re.compile(rb"[\x80-\xff]{11}")

Walk = Callable[[bytes], tuple[str | None, type[BaseException] | None]]
_Step = Callable[[bytes, int, list[str]], int]
"""Reads one value of a schema node from `pos`, returns the position after it; `path` holds
the names of the record fields being read (pushed before a field, popped after it)."""
_Value = Callable[[bytes, int], tuple[object, int]]

MAX_EMPTY_ITEMS = 1_000_000
"""Array items that take no bytes (null, a record of nulls, a zero-size fixed) one body may
hold. Their block counts alone drive a reader: ten bytes claiming 2**62 of them keep fastavro's
compiled reader looping, its list growing, for good (a poison pill that stops its partition).
`Walks.guard` finds such bodies first; past this many, the walk stops."""


class TooManyEmptyItems(ValueError):
    """A body's arrays claim more than `MAX_EMPTY_ITEMS` items that take no bytes."""


class _Unsupported(Exception):
    """The walk would not be exact for this schema."""


def needs_bounded_read(body: bytes) -> bool:
    """Whether the varint bound of the pure-Python re-read could fire on `body`: it counts
    consecutive one-byte reads with the high bit set, which need that many such bytes in a row."""
    return _LONG_RUN.search(body) is not None


class Walks(NamedTuple):
    """What `compile_walks` builds for one writer schema."""

    walk: Walk | None
    """The walk, or None when it would not be exact."""
    guard: Walk | None
    """The walk again when the schema has arrays of items that take no bytes, else None (every
    other item takes a byte, so the body's length bounds the reader's loops). Run before
    fastavro's reader, it finds a body claiming too many such items, and names its field."""


def compile_walks(schema: Schema) -> Walks:
    """The walk of bodies written with `schema` (parsed), and its guard. The walk reads as the
    pure-Python reader does, except that it stops with `TooManyEmptyItems` where that reader
    would loop over more than `MAX_EMPTY_ITEMS` empty items."""
    named: dict[str, Any] = {}
    try:
        parsed = parse_schema(schema, named)  # as `_read_py.schemaless_reader` does
        compiler = _Compiler(named)
        step = compiler.step(parsed, 0, frozenset())
    except (_Unsupported, KeyError, TypeError, ValueError, RecursionError):
        return Walks(None, None)
    budget = compiler.budget

    def walk(body: bytes) -> tuple[str | None, type[BaseException] | None]:
        path: list[str] = []
        budget[0] = MAX_EMPTY_ITEMS
        try:
            step(body, 0, path)
        except Exception as exc:
            return ".".join(path) or None, type(exc)
        return None, None

    return Walks(walk, walk if compiler.empty_arrays else None)


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """`BinaryDecoder.read_long`: one byte at a time, EOFError when they run out."""
    if pos >= len(buf):
        raise EOFError
    byte = buf[pos]
    pos += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if pos >= len(buf):
            raise EOFError
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    """`BinaryDecoder.read_bytes`: a length, then exactly that many bytes."""
    size, pos = _long(buf, pos)
    if not -_SSIZE_MAX - 1 <= size <= _SSIZE_MAX:
        raise OverflowError("Python int too large to convert to C ssize_t")
    end = pos + size
    if size < 0 or end > len(buf):  # a negative size reads to the end: never that length
        raise EOFError
    return buf[pos:end], end


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    data, pos = _bytes(buf, pos)
    return data.decode(), pos


def _skip_long(buf: bytes, pos: int, path: list[str]) -> int:
    if pos < len(buf) and buf[pos] < 0x80:  # a one-byte varint, inline
        return pos + 1
    return _long(buf, pos)[1]


def _skip_bytes(buf: bytes, pos: int, path: list[str]) -> int:
    return _bytes(buf, pos)[1]


def _skip_string(buf: bytes, pos: int, path: list[str]) -> int:
    if pos < len(buf) and buf[pos] < 0x80:  # a length of one byte (most strings), inline
        byte = buf[pos]
        size = (byte >> 1) ^ -(byte & 1)
        end = pos + 1 + size
        if size < 0 or end > len(buf):
            raise EOFError
        buf[pos + 1 : end].decode()  # UnicodeDecodeError as `read_utf8`
        return end
    return _string(buf, pos)[1]


def _skip_null(buf: bytes, pos: int, path: list[str]) -> int:
    return pos


def _sized(size: int) -> _Step:
    """boolean (1), float (4), double (8) and fixed: `read(size)`, EOFError when short."""

    def step(buf: bytes, pos: int, path: list[str]) -> int:
        end = pos + size
        if end > len(buf):
            raise EOFError
        return end

    return step


def _fixed_value(size: int) -> _Value:
    def value(buf: bytes, pos: int) -> tuple[object, int]:
        end = pos + size
        if end > len(buf):
            raise EOFError
        return buf[pos:end], end

    return value


_VALUES: dict[str, _Value] = {"int": _long, "long": _long, "bytes": _bytes, "string": _string}
_SIMPLE: dict[str, _Step] = {
    "null": _skip_null,
    "boolean": _sized(1),
    "int": _skip_long,
    "long": _skip_long,
    "float": _sized(4),
    "double": _sized(8),
    "bytes": _skip_bytes,
    "string": _skip_string,
}
_RECORDS = frozenset({"record", "error", "request"})


class _Compiler:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.empty_arrays = False
        self.budget = [MAX_EMPTY_ITEMS]
        """Empty items the body being walked may still claim (one walk at a time)."""

    def step(self, schema: Any, depth: int, seen: frozenset[str]) -> _Step:
        if depth > MAX_DEPTH:
            raise _Unsupported("too deep")
        kind = extract_record_type(schema)
        if not isinstance(kind, str):
            raise _Unsupported("unknown type")
        logical = extract_logical_type(schema) if isinstance(schema, dict) else None
        convert = LOGICAL_READERS.get(logical) if logical else None
        if convert is not None:
            return self._logical(kind, schema, convert)
        if kind in _SIMPLE:
            return _SIMPLE[kind]
        if kind == "fixed":
            return _sized(int(schema["size"]))
        if kind == "enum":
            return self._enum(list(schema["symbols"]))
        if kind == "union":
            return self._union([self.step(s, depth + 1, seen) for s in schema])
        if kind == "array":
            items = schema["items"]
            item = self.step(items, depth + 1, seen)
            if self._width(items, frozenset()) == 0:
                self.empty_arrays = True
                return self._blocks(item, keyed=False, budget=self.budget)
            return self._blocks(item, keyed=False)
        if kind == "map":
            return self._blocks(self.step(schema["values"], depth + 1, seen), keyed=True)
        if kind in _RECORDS:
            fields = [(f["name"], self.step(f["type"], depth + 1, seen)) for f in schema["fields"]]
            if not all(isinstance(name, str) for name, _ in fields):
                raise _Unsupported("field without a name")
            return self._record(fields)
        if kind in seen or kind not in self.named:
            raise _Unsupported("recursive or unknown named type")
        return self.step(self.named[kind], depth + 1, seen | {kind})

    def _width(self, schema: Any, seen: frozenset[str]) -> int:
        """Whether a value of `schema` can take no bytes at all (0) or takes some (1)."""
        kind = extract_record_type(schema)
        if kind == "null":
            return 0
        if kind == "fixed":
            return 1 if int(schema["size"]) > 0 else 0
        if kind in _RECORDS:
            widths = [self._width(f["type"], seen) for f in schema["fields"]]
            return 1 if any(widths) else 0
        if isinstance(kind, str) and kind in self.named and kind not in seen:
            return self._width(self.named[kind], seen | {kind})
        return 1

    @staticmethod
    def _logical(kind: str, schema: Any, convert: Callable[..., object]) -> _Step:
        """Read the value, then convert it with fastavro's own function (outside the read, as
        `read_data` does, so its errors are the conversion's)."""
        value = _fixed_value(int(schema["size"])) if kind == "fixed" else _VALUES.get(kind)
        if value is None:
            raise _Unsupported(f"logical type on {kind}")

        def step(buf: bytes, pos: int, path: list[str]) -> int:
            data, pos = value(buf, pos)
            convert(data, schema, None)
            return pos

        return step

    @staticmethod
    def _enum(symbols: list[object]) -> _Step:
        def step(buf: bytes, pos: int, path: list[str]) -> int:
            index, pos = _long(buf, pos)
            symbols[index]  # IndexError as in `read_enum`, negative indexes included
            return pos

        return step

    @staticmethod
    def _union(branches: list[_Step]) -> _Step:
        def step(buf: bytes, pos: int, path: list[str]) -> int:
            index, pos = _long(buf, pos)
            return branches[index](buf, pos, path)

        return step

    @staticmethod
    def _blocks(item: _Step, *, keyed: bool, budget: list[int] | None = None) -> _Step:
        """Arrays and maps: blocks of `count` items (a negative count is followed by the
        block's size in bytes), ended by a zero count; a map item starts with its key. Items
        that take no bytes count against the body's `budget` before they are read (the reader
        would loop for as long as the count says)."""

        def step(buf: bytes, pos: int, path: list[str]) -> int:
            count, pos = _long(buf, pos)
            while count != 0:
                if count < 0:
                    count = -count
                    pos = _long(buf, pos)[1]
                if budget is not None:
                    budget[0] -= count
                    if budget[0] < 0:
                        raise TooManyEmptyItems
                for _ in range(count):
                    if keyed:
                        pos = _string(buf, pos)[1]
                    pos = item(buf, pos, path)
                count, pos = _long(buf, pos)
            return pos

        return step

    @staticmethod
    def _record(fields: list[tuple[str, _Step]]) -> _Step:
        def step(buf: bytes, pos: int, path: list[str]) -> int:
            for name, field in fields:
                path.append(name)
                pos = field(buf, pos, path)
                path.pop()
            return pos

        return step
