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

The walk is Python source generated from the schema (as `dataclasses` generates `__init__`):
one function per record type, whose fields are read in straight-line code with the common
cases (a one-byte varint, a short string) inline. A closure call per field cost four times as
much, and the walk runs for every undecodable record. `Walks.source` holds the generated text,
and tracebacks through it show its lines (it is registered with `linecache`).

The same code, as `Walks.guard`, runs before fastavro's compiled reader for schemas where a
short body could stop it: arrays of items that take no bytes (ten bytes claiming 2**62 nulls
keep it looping, `MAX_EMPTY_ITEMS`), and recursive named types (a body nesting thousands of
levels overflows its C stack, a segfault, `MAX_NESTING`). A recursive type's function calls
itself by name, the item budget is the body's across all levels, and every function of a
recursive schema takes the nesting `depth` of its value.

Two things are left to the pure-Python re-read, where the walk would not be exact (no `walk`
from `compile_walks`, or the caller checks `needs_bounded_read`):

* schemas the walk does not take: unknown types; and, with a guard but no walk, recursive named
  types (the pure-Python reader's RecursionError comes at a depth its caller's stack decides, so
  no walk answers as it does for every body; for the bodies it reads the guard agrees with it)
  and nesting past `MAX_DEPTH`;
* bodies holding 11 or more consecutive bytes with the high bit set: only there can the codec's
  bound on varint length (more than 10 continuation bytes read one at a time) cut a read short.
"""

from __future__ import annotations

import hashlib
import itertools
import linecache
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from fastavro.logical_readers import LOGICAL_READERS
from fastavro.schema import extract_logical_type, extract_record_type, parse_schema
from fastavro.types import Schema

MAX_DEPTH = 64
"""Nesting the walk takes; deeper schemas go to the pure-Python reader (its recursion limit),
and keep the guard."""
_SSIZE_MAX = sys.maxsize
"""`BytesIO.read` refuses a size outside a C ssize_t with OverflowError."""
MAX_VARINT_BYTES = 10
"""A 64-bit zig-zag varint takes at most 10 bytes."""
_HIGH_BITS = bytes(byte >> 7 for byte in range(256))
"""A `bytes.translate` table: each byte to its high bit."""
_LONG_RUN = b"\x01" * (MAX_VARINT_BYTES + 1)
"""More high bits in a row than a 64-bit varint has continuation bytes."""

Walk = Callable[[bytes], tuple[str | None, type[BaseException] | None]]

MAX_NESTING = 1000
"""Levels a body of a recursive schema may nest its values (a record's fields, a union's branch,
an array's or map's items, a named type's definition: each one level deeper, as `MAX_DEPTH`
counts a schema's height). fastavro's compiled reader recurses in C for each: a linked list
(`Node {next: [null, Node]}`, 3 levels an item) 4,656 items deep, a 4.7 KB body, overflowed the
8 MB stack of a main thread (SIGSEGV; a tree of `array<Node>` at 4,972), so past this bound the
guard answers `NestedTooDeep` before fastavro reads it, 14 times below that. The walk takes one
Python frame for at least two levels (a recursive reference is a field, item or branch and a
named type): at most 502 frames, within Python's recursion limit (1,000) for a caller less
than about 490 frames deep; a deeper caller sees RecursionError from the guard instead."""

MAX_EMPTY_ITEMS = 1_000_000
"""Array items that take no bytes (null, a record of nulls, a zero-size fixed) one body may
hold. Their block counts alone drive a reader: ten bytes claiming 2**62 of them keep fastavro's
compiled reader looping, its list growing, for good (a poison pill that stops its partition).
`Walks.guard` finds such bodies first; past this many, the walk stops."""


class TooManyEmptyItems(ValueError):
    """A body's arrays claim more than `MAX_EMPTY_ITEMS` items that take no bytes."""


class NestedTooDeep(ValueError):
    """A body of a recursive schema nests its values more than `MAX_NESTING` levels deep."""


class _Unsupported(Exception):
    """The walk would not be exact for this schema."""


class _Recursive(Exception):
    """The schema has a recursive named type: generate again, with a depth bound."""


def needs_bounded_read(body: bytes) -> bool:
    """Whether the varint bound of the pure-Python re-read could fire on `body`: it counts
    consecutive one-byte reads with the high bit set, which need that many such bytes in a row.
    (Each byte as its high bit, then a substring search: a fifth of a regex's instructions.)"""
    return _LONG_RUN in body.translate(_HIGH_BITS)


class Walks(NamedTuple):
    """What `compile_walks` builds for one writer schema."""

    walk: Walk | None
    """The walk, or None when it would not be exact."""
    guard: Walk | None
    """The walk's code when the schema has arrays of items that take no bytes or recursive named
    types (then with a depth bound), else None (every other item takes a byte, so the body's
    length bounds the reader's loops, and the schema bounds its nesting). Run before fastavro's
    reader, it finds a body claiming too many such items (`TooManyEmptyItems`) or nesting too
    deep (`NestedTooDeep`), and names its field. It is the walk itself where that is exact;
    where not, its other answers are left unused."""
    source: str = ""
    """The generated Python source of the walk, or of the guard without a walk (empty without
    either), for reading and debugging."""


def compile_walks(schema: Schema) -> Walks:
    """The walk of bodies written with `schema` (parsed), and its guard. The walk reads as the
    pure-Python reader does, except that it stops with `TooManyEmptyItems` where that reader
    would loop over more than `MAX_EMPTY_ITEMS` empty items.

    A schema with recursive named types gets a guard and no walk, and so does one nesting past
    `MAX_DEPTH` when it needs a guard: the pure-Python reader's own limit (RecursionError)
    depends on the stack it is called from, so no walk answers as it does for every body. The
    recursive guard also stops a body whose values nest more than `MAX_NESTING` levels
    (`NestedTooDeep`)."""
    named: dict[str, Any] = {}
    try:
        parsed = parse_schema(schema, named)  # as `_read_py.schemaless_reader` does
        try:
            generator = _Generator(named, parsed)
            source, walk, height = generator.module(parsed)
        except _Recursive:
            generator = _Generator(named, parsed, recursive=True)
            source, walk, height = generator.module(parsed)
            return Walks(None, walk, source)
    except (_Unsupported, KeyError, TypeError, ValueError, RecursionError, SyntaxError):
        return Walks(None, None)
    guard = walk if generator.empty_arrays else None
    if height > MAX_DEPTH:
        return Walks(None, guard, source if guard else "")
    return Walks(walk, guard, source)


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


def _fixed(buf: bytes, pos: int, size: int) -> tuple[bytes, int]:
    """`BinaryDecoder.read_fixed`: exactly `size` bytes, EOFError when short."""
    end = pos + size
    if end > len(buf):
        raise EOFError
    return buf[pos:end], end


_SIZED = {"boolean": 1, "float": 4, "double": 8}
"""Types read as a fixed number of bytes."""
_READ_VALUE = {"int": "_long(buf, pos)", "long": "_long(buf, pos)"}
_READ_VALUE |= {"bytes": "_bytes(buf, pos)", "string": "_string(buf, pos)"}
"""How a logical type's underlying value is read (a fixed's takes its size)."""
_RECORDS = frozenset({"record", "error", "request"})
_CONTAINERS = frozenset({"union", "array", "map"})


class _Lines:
    """Indented source lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.level = 0
        """The indentation of the next line, in blocks."""

    def add(self, *lines: str) -> None:
        indent = "    " * self.level
        self.lines.extend(indent + line for line in lines)

    @contextmanager
    def block(self, head: str) -> Iterator[None]:
        """`head:` and the lines added inside, indented (`pass` when there are none)."""
        self.add(head)
        start = len(self.lines)
        self.level += 1
        try:
            yield
        finally:
            if len(self.lines) == start:
                self.add("pass")
            self.level -= 1


_MAX_LOOPS = 6
"""Arrays and maps nested in one generated function (each opens two loop blocks; Python takes
20 blocks a function). Deeper values are read by a function of their own."""
_MAX_LEVEL = 40
"""Indentation one generated function takes (Python takes 100 levels)."""


class _Generator:
    """Generates the walk's module: `walk(buf)` reading the schema in straight-line code, and a
    function for each record type that is referenced by name (read in several places) and each
    value nested too deep for one function. Those take `(buf, pos, n, path)` and return the
    position after the value.

    Names in generated code: `buf` the body, `n` its length, `pos` where the next read starts,
    `path` the names of the record fields being read (a record pushes its fields' names, and
    pops them after its last field; on an error they stay, naming where it happened), `b` a
    byte, `v` a value just read, `end` where a string ends, `count<k>` the items left in the
    block of the `k`-th nested array or map.

    `recursive`: the schema has recursive named types. A reference to a record type being
    generated then calls its function by name (Python resolves it when it runs), and every
    function takes `depth` too, the nesting level of the value it reads, and raises
    `NestedTooDeep` past `MAX_NESTING`. Without it, such a reference raises `_Recursive`, so the
    source of other schemas stays as it was."""

    def __init__(self, named: Mapping[str, Any], schema: Any, *, recursive: bool = False) -> None:
        self.named = named
        self.recursive = recursive
        self.empty_arrays = False
        self.budget = [MAX_EMPTY_ITEMS]
        """Empty items the body being walked may still claim (one walk at a time)."""
        self.namespace: dict[str, object] = {
            "_long": _long,
            "_bytes": _bytes,
            "_string": _string,
            "_fixed": _fixed,
            "TooManyEmptyItems": TooManyEmptyItems,
            "MAX_EMPTY_ITEMS": MAX_EMPTY_ITEMS,
            "NestedTooDeep": NestedTooDeep,
            "MAX_NESTING": MAX_NESTING,
            "HIGH_BITS": _HIGH_BITS,
            "budget": self.budget,
        }
        self._referenced = _referenced_names(schema)
        self._functions: list[list[str]] = []
        self._records: dict[str, tuple[str, int]] = {}
        """The function reading a referenced record type, and its nesting height, by name."""
        self._open: set[str] = set()
        """Record types being generated (a reference to one is a recursive type)."""
        self._widths: dict[str, int] = {}
        """`_width` of each record type measured, by name."""
        self._nest = 0
        """The nesting level, in the function being generated, of the value being read."""
        self._ids = itertools.count()
        self._args = "buf, pos, n, path, ascii_end" + (", depth" if recursive else "")

    def module(self, schema: Any) -> tuple[str, Walk, int]:
        """The generated source, its `walk`, and the schema's height."""
        lines = _Lines()
        with lines.block("def walk(buf):"):
            lines.add("n = len(buf)", "pos = 0", "path = []", "budget[0] = MAX_EMPTY_ITEMS")
            lines.add("ascii_end = buf.translate(HIGH_BITS).find(1) % (n + 1)  # -1: n")
            if self.recursive:
                lines.add("depth = 0")
            with lines.block("try:"):
                height = self.value(schema, lines, 0)
            with lines.block("except Exception as exc:"):
                lines.add("return '.'.join(path) or None, type(exc)")
            lines.add("return None, None")
        source = "\n\n".join("\n".join(f) for f in [*self._functions, lines.lines]) + "\n"
        # named by its text: the same schema compiled again shares its `linecache` entry
        filename = f"<avro walk {hashlib.sha256(source.encode()).hexdigest()[:16]}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), self.namespace)  # our own source, from the schema
        walk: Walk = self.namespace["walk"]  # type: ignore[assignment]
        return source, walk, height

    def value(self, schema: Any, out: _Lines, loop: int) -> int:
        """Add to `out` the lines reading one value of `schema`; `loop` is the number of array
        and map blocks around it in the function. Returns the height of the schema's nesting
        (the depth that `MAX_DEPTH` bounds)."""
        kind = extract_record_type(schema)
        if not isinstance(kind, str):
            raise _Unsupported("unknown type")
        logical = extract_logical_type(schema) if isinstance(schema, dict) else None
        convert = LOGICAL_READERS.get(logical) if logical else None
        if convert is not None:
            self._logical(kind, schema, convert, out)
            return 0
        if kind == "null":
            return 0
        if kind in ("int", "long"):
            _skip_long(out)
            return 0
        if kind in ("bytes", "string"):
            _skip_sized(out, decode=kind == "string")
            return 0
        if kind in _SIZED or kind == "fixed":
            size = _SIZED[kind] if kind in _SIZED else int(schema["size"])
            if size:  # `read(0)` reads nothing, never short
                out.add(f"pos += {size}")
                with out.block("if pos > n:"):
                    out.add("raise EOFError")
            return 0
        if kind == "enum":
            _read_long(out, "v")
            count = len(schema["symbols"])
            with out.block(f"if not -{count} <= v < {count}:"):  # as `symbols[v]`
                out.add("raise IndexError")
            return 0
        if kind not in _RECORDS and kind not in _CONTAINERS:  # a named type, by its name
            if kind not in self.named:
                raise _Unsupported("unknown named type")
            if kind in self._open:  # a record type being generated: recursive
                if not self.recursive:
                    raise _Recursive(kind)
                self._nest += 1
                self._call(self._records[kind][0], out)
                self._nest -= 1
                return 1
            self._nest += 1
            height = self.value(self.named[kind], out, loop)
            self._nest -= 1
            return 1 + height
        if kind in _RECORDS and schema["name"] in self._referenced:
            function, height = self._record_function(schema)
        elif loop >= _MAX_LOOPS or out.level >= _MAX_LEVEL:
            function, height = self._function(schema)
        else:
            return self._compound(kind, schema, out, loop)
        self._call(function, out)
        return height

    def _call(self, function: str, out: _Lines) -> None:
        """Read the value with `function`, at the depth of the value being read."""
        depth = f", depth + {self._nest}" if self.recursive else ""
        out.add(f"pos = {function}(buf, pos, n, path, ascii_end{depth})")

    def _compound(self, kind: str, schema: Any, out: _Lines, loop: int) -> int:
        """A union, array, map or record, inline."""
        if kind == "union":
            return self._union(schema, out, loop)
        if kind == "array":
            items = schema["items"]
            empty = self._width(items, frozenset()) == 0
            self.empty_arrays |= empty
            return 1 + self._blocks(items, out, loop, keyed=False, empty=empty)
        if kind == "map":
            return 1 + self._blocks(schema["values"], out, loop, keyed=True, empty=False)
        return self._record(schema, out, loop)

    def _function(self, schema: Any, function: str | None = None) -> tuple[str, int]:
        """A function reading one value of `schema` (a union, array, map or record), named
        `function` (a new name by default)."""
        kind = extract_record_type(schema)
        function = function or self._function_name(schema)
        lines = _Lines()
        with lines.block(f"def {function}({self._args}):"):
            if self.recursive:
                with lines.block("if depth > MAX_NESTING:"):
                    lines.add("raise NestedTooDeep")
            nest, self._nest = self._nest, 0
            height = self._compound(kind, schema, lines, 0)
            self._nest = nest
            lines.add("return pos")
        self._functions.append(lines.lines)
        return function, height

    def _function_name(self, schema: Any) -> str:
        kind = extract_record_type(schema)
        label = schema["name"] if kind in _RECORDS else kind
        return f"read{next(self._ids)}_{_IDENTIFIER.sub('_', label)}"

    def _record_function(self, schema: Any) -> tuple[str, int]:
        """The function reading a record type referenced by name, generated on first use (and
        named first, so that a recursive reference inside calls it)."""
        name = schema["name"]
        known = self._records.get(name)
        if known is None:
            function = self._function_name(schema)
            self._records[name] = (function, 0)
            self._open.add(name)
            known = self._records[name] = self._function(schema, function)
            self._open.discard(name)
        return known

    def _logical(self, kind: str, schema: Any, convert: Callable[..., object], out: _Lines) -> None:
        """Read the value, then convert it with fastavro's own function (outside the read, as
        `read_data` does, so its errors are the conversion's)."""
        if kind == "fixed":
            read = f"_fixed(buf, pos, {int(schema['size'])})"
        elif kind in _READ_VALUE:
            read = _READ_VALUE[kind]
        else:
            raise _Unsupported(f"logical type on {kind}")
        index = next(self._ids)
        self.namespace[f"convert{index}"] = convert
        self.namespace[f"schema{index}"] = schema
        out.add(f"v, pos = {read}", f"convert{index}(v, schema{index}, None)")

    def _union(self, branches: list[Any], out: _Lines, loop: int) -> int:
        """An index, negative ones counting from the end as `writer_schema[index]` does."""
        _read_long(out, "v")
        if not branches:
            out.add("raise IndexError")
            return 0
        with out.block("if v < 0:"):
            out.add(f"v += {len(branches)}")
        heights = []
        self._nest += 1
        for index, branch in enumerate(branches):
            with out.block(f"{'el' if index else ''}if v == {index}:"):
                heights.append(self.value(branch, out, loop))
        self._nest -= 1
        with out.block("else:"):
            out.add("raise IndexError")
        return 1 + max(heights)

    def _blocks(self, item: Any, out: _Lines, loop: int, *, keyed: bool, empty: bool) -> int:
        """Arrays and maps: blocks of `count` items (a negative count is followed by the
        block's size in bytes), ended by a zero count; a map item starts with its key. Items
        that take no bytes count against the body's budget before they are read (the reader
        would loop for as long as the count says)."""
        count = f"count{loop}"
        _read_long(out, count)
        with out.block(f"while {count} != 0:"):
            with out.block(f"if {count} < 0:"):
                out.add(f"{count} = -{count}")
                _skip_long(out)
            if empty:
                out.add(f"budget[0] -= {count}")
                with out.block("if budget[0] < 0:"):
                    out.add("raise TooManyEmptyItems")
            with out.block(f"for _ in range({count}):"):
                if keyed:
                    _skip_sized(out, decode=True)
                self._nest += 1
                height = self.value(item, out, loop + 1)
                self._nest -= 1
            _read_long(out, count)
        return height

    def _record(self, schema: Any, out: _Lines, loop: int) -> int:
        """A record's fields in order, each under its name in `path`."""
        fields = [(field["name"], field["type"]) for field in schema["fields"]]
        if not all(isinstance(name, str) for name, _ in fields):
            raise _Unsupported("field without a name")
        height = 0
        self._nest += 1
        for index, (name, field_type) in enumerate(fields):
            out.add(f"path.append({name!r})" if index == 0 else f"path[-1] = {name!r}")
            height = max(height, self.value(field_type, out, loop))
        self._nest -= 1
        if fields:
            out.add("path.pop()")
        return 1 + height if fields else 0

    def _width(self, schema: Any, seen: frozenset[str]) -> int:
        """Whether a value of `schema` can take no bytes at all (0) or takes some (1). A record
        type's width is kept (a schema referring to each type twice made this exponential:
        2**18 calls for 18 levels). A reference back to a record being measured (`seen`) counts
        as taking bytes: such a cycle runs through required record fields only, the type has no
        finite value, and reading it stops at `MAX_NESTING`."""
        kind = extract_record_type(schema)
        if kind == "null":
            return 0
        if kind == "fixed":
            return 1 if int(schema["size"]) > 0 else 0
        if kind in _RECORDS:
            name = schema["name"]
            known = self._widths.get(name)
            if known is None:
                inner = seen | {name}
                fields = schema["fields"]
                known = 1 if any(self._width(f["type"], inner) for f in fields) else 0
                self._widths[name] = known
            return known
        if isinstance(kind, str) and kind in self.named and kind not in seen:
            return self._width(self.named[kind], seen)
        return 1


_IDENTIFIER = re.compile(r"\W", re.ASCII)
"""What a type's full name may hold that a function name may not: anything but ASCII letters,
digits and `_` (some Unicode word characters, a superscript two, cannot be in an identifier)."""


def _referenced_names(schema: Any) -> set[str]:
    """The named types `schema` (parsed) refers to by name: after its definition, a type is
    referenced by its full name, a string where a type goes."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, list):  # a union
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item[key] for key in ("type", "items", "values") if key in item)
            stack.extend(field["type"] for field in item.get("fields", ()))
    return found


def _read_long(out: _Lines, target: str) -> None:
    """`target` = the varint at `pos` (`read_long`); a one-byte varint inline."""
    with out.block("if pos < n and (b := buf[pos]) < 0x80:"):
        out.add(f"{target} = (b >> 1) ^ -(b & 1)", "pos += 1")
    with out.block("else:"):
        out.add(f"{target}, pos = _long(buf, pos)")


def _skip_long(out: _Lines) -> None:
    with out.block("if pos < n and buf[pos] < 0x80:"):
        out.add("pos += 1")
    with out.block("else:"):
        out.add("pos = _long(buf, pos)[1]")


def _skip_sized(out: _Lines, *, decode: bool) -> None:
    """bytes, or a string (decoded: UnicodeDecodeError as `read_utf8`); a length of one byte
    (most values) inline, where an odd byte is a negative length, short as a long one is. Only
    a string reaching past `ascii_end` (the body's first byte >= 0x80) can be bad UTF-8."""
    with out.block("if pos < n and (b := buf[pos]) < 0x80:"):
        out.add("end = pos + 1 + (b >> 1)")
        with out.block("if b & 1 or end > n:"):
            out.add("raise EOFError")
        if decode:
            with out.block("if end > ascii_end:"):
                out.add("buf[pos + 1 : end].decode()")
        out.add("pos = end")
    with out.block("else:"):
        out.add(f"pos = {'_string' if decode else '_bytes'}(buf, pos)[1]")
