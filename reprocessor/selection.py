"""The `--where` language: a small grammar, parsed by hand and never `eval`'d.

    expression := term ( "and" term )*          "and" in any case; "" selects everything
    term       := field op value ( "|" value )*
    op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~"
    value      := bare | 'single quoted' | "double quoted"

Fields: `category`, `fingerprint` (`=` matches a prefix), `type`, `message`, `stacktrace`,
`source.topic`, `topic` (the DLQ topic), `origin`, `pipeline`, `dialect`, `key`, `state`; the
numbers `partition`, `offset`, `source.partition`, `source.offset`, `attempts`, `replay_count`,
`ts` (the DLQ record's timestamp) and `failed_at` (epoch ms); and `value.<path>`, a field of the
decoded payload (`value.customer.id`, `value.items.0.sku`: a number indexes a list).

Semantics. `=` is exact and `~` a case-insensitive substring; `a|b` means any of (with `!=`:
none of); `!=` is exactly the negation of `=`. The bare value `null` matches a field the dead
letter does not have (and, for `value.*`, a payload path that is missing or null). Numeric fields
take integers; `<`, `<=`, `>`, `>=` take one value and never match a missing field. For
`value.*`, bare `true`/`false` are booleans and bare numbers compare numerically with numbers;
everything else, and every quoted value, compares as text. A bare value ends at whitespace or
`|`; quote it to hold those, quotes or operators (a backslash takes the next character as is).

A bad expression raises `SelectionError` with the 1-based column of the problem.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core.dialects import DIALECTS
from pipeline.errors import Category
from reprocessor.deadletters import (
    LAZARUS,
    MISSING,
    UNKNOWN,
    DeadLetter,
    ReplayState,
    is_number,
    lookup,
    text_of,
)

Getter = Callable[[DeadLetter, ReplayState, object], object]
Test = Callable[[DeadLetter, ReplayState, object], bool]

TEXT_FIELDS: dict[str, Getter] = {
    "category": lambda dl, s, d: dl.category,
    "fingerprint": lambda dl, s, d: dl.fingerprint,
    "type": lambda dl, s, d: dl.error_type,
    "message": lambda dl, s, d: dl.message,
    "stacktrace": lambda dl, s, d: dl.stacktrace,
    "source.topic": lambda dl, s, d: dl.source_topic,
    "topic": lambda dl, s, d: dl.topic,
    "origin": lambda dl, s, d: dl.origin,
    "pipeline": lambda dl, s, d: dl.pipeline,
    "dialect": lambda dl, s, d: dl.dialect,
    "state": lambda dl, s, d: s.value,
}
NUMERIC_FIELDS: dict[str, Getter] = {
    "partition": lambda dl, s, d: dl.partition,
    "offset": lambda dl, s, d: dl.offset,
    "source.partition": lambda dl, s, d: dl.source_partition,
    "source.offset": lambda dl, s, d: dl.source_offset,
    "attempts": lambda dl, s, d: dl.attempts,
    "replay_count": lambda dl, s, d: dl.replay_count,
    "ts": lambda dl, s, d: dl.timestamp_ms,
    "failed_at": lambda dl, s, d: dl.failed_at_ms,
}
FIELDS: tuple[str, ...] = (*TEXT_FIELDS, "key", *NUMERIC_FIELDS, "value.<path>")
"""Every field name, for help texts."""

_CLOSED: dict[str, tuple[str, ...]] = {
    "category": tuple(c.value for c in Category),
    "state": tuple(s.value for s in ReplayState),
    "dialect": (LAZARUS, *DIALECTS, UNKNOWN),
}
_OPS = ("!=", "<=", ">=", "=", "<", ">", "~")
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_STOP = frozenset("=!<>~|'\"")
_QUOTES = frozenset("'\"")
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


class SelectionError(ValueError):
    """A bad `--where` expression; `column` (1-based) points at the problem."""

    def __init__(self, message: str, column: int, expr: str | None = None) -> None:
        super().__init__(message, column)
        self.message = message
        self.column = column
        self.expr = expr

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}"

    def pointer(self, expr: str | None = None) -> str:
        """The expression and, below it, a caret under the column."""
        text = self.expr if expr is None else expr
        return f"{text or ''}\n{' ' * (self.column - 1)}^"


@dataclass(frozen=True, slots=True)
class Literal:
    """One value of a term as written. `quoted` values are always text."""

    text: str
    quoted: bool
    column: int

    @property
    def is_null(self) -> bool:
        return not self.quoted and self.text == "null"


@dataclass(frozen=True, slots=True)
class Term:
    """`field op value|value...`, compiled to `test`."""

    field: str
    op: str
    values: tuple[Literal, ...]
    column: int
    test: Test = dataclasses.field(compare=False, repr=False)


@dataclass(frozen=True)
class Selection:
    """A parsed expression: every term must match (`and`)."""

    expr: str = ""
    terms: tuple[Term, ...] = ()

    def matches(self, dl: DeadLetter, state: ReplayState, decoded: object | None = None) -> bool:
        """Whether `dl` is selected. `decoded` is the decoded payload (None when not decoded:
        `value.*` terms then see a missing path)."""
        return all(term.test(dl, state, decoded) for term in self.terms)

    @property
    def needs_payload(self) -> bool:
        """True when a term reads the decoded payload (`value.*`)."""
        return any(term.field.startswith("value.") for term in self.terms)

    @property
    def needs_state(self) -> bool:
        """True when a term reads the ledger state."""
        return any(term.field == "state" for term in self.terms)

    def __str__(self) -> str:
        return self.expr


def parse(expr: str | None) -> Selection:
    """Parse `expr`; None, "" or blanks select everything. Raises only `SelectionError`."""
    text = expr or ""
    try:
        return Selection(text, _Parser(text).terms())
    except SelectionError as exc:
        exc.expr = text
        raise


class _Parser:
    """A hand-written scanner over `text`; `pos` is a 0-based index."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def terms(self) -> tuple[Term, ...]:
        terms: list[Term] = []
        self.skip_space()
        while self.pos < len(self.text):
            terms.append(self.term())
            self.skip_space()
            if self.pos < len(self.text):
                and_column = self.conjunction()
                self.skip_space()
                if self.pos >= len(self.text):
                    raise SelectionError("dangling 'and': a term must follow it", and_column)
        return tuple(terms)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def conjunction(self) -> int:
        start = self.pos
        word = self.text[start : start + 3]
        after = self.text[start + 3 : start + 4]
        if word.casefold() != "and" or (after and not after.isspace()):
            raise SelectionError("expected 'and' between terms", start + 1)
        self.pos += 3
        return start + 1

    def term(self) -> Term:
        start = self.pos
        name = self.field_name()
        self.skip_space()
        op = next((op for op in _OPS if self.text.startswith(op, self.pos)), None)
        if op is None:
            ops = " ".join(_OPS)
            raise SelectionError(f"missing operator after {name!r} (one of {ops})", self.pos + 1)
        op_column = self.pos + 1
        self.pos += len(op)
        self.skip_space()
        values = [self.value(op)]
        while self.peek_past_space() == "|":
            self.skip_space()
            self.pos += 1
            self.skip_space()
            values.append(self.value("|"))
        return _compile(name, (op, op_column), tuple(values), start + 1)

    def peek_past_space(self) -> str:
        pos = self.pos
        while pos < len(self.text) and self.text[pos].isspace():
            pos += 1
        return self.text[pos : pos + 1]

    def field_name(self) -> str:
        start = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char.isspace() or char in _STOP:
                break
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            raise SelectionError("expected a field name", start + 1)
        if name.casefold() == "and":
            raise SelectionError("'and' needs a term on each side", start + 1)
        payload = name.startswith("value.") and all(name.split(".")[1:])
        if name not in TEXT_FIELDS and name not in NUMERIC_FIELDS and name != "key" and not payload:
            known = ", ".join(FIELDS)
            raise SelectionError(f"unknown field {name!r} (known: {known})", start + 1)
        return name

    def value(self, op: str) -> Literal:
        start = self.pos
        char = self.text[start] if start < len(self.text) else ""
        if char in _QUOTES:
            return Literal(self.quoted(char), True, start + 1)
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char.isspace() or char == "|":
                break
            if char in _QUOTES:
                raise SelectionError("a quote inside a value: quote the whole value", self.pos + 1)
            self.pos += 1
        text = self.text[start : self.pos]
        if not text or text.casefold() == "and":
            raise SelectionError(f"missing value after {op!r}", start + 1)
        return Literal(text, False, start + 1)

    def quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(chars)
            if char == "\\" and self.pos + 1 < len(self.text):
                self.pos += 1
                char = self.text[self.pos]
            chars.append(char)
            self.pos += 1
        raise SelectionError(f"unterminated {quote} quote", start + 1)


def _compile(name: str, op_at: tuple[str, int], values: tuple[Literal, ...], column: int) -> Term:
    """Check the term and build its test. `op_at` is the operator and its column."""
    op, op_column = op_at
    if len(values) > 1 and op in _ORDER:
        raise SelectionError(f"'|' (any of) does not work with {op!r}", values[1].column)
    if op in _ORDER and values[0].is_null:
        raise SelectionError(f"null only works with = and != (not {op!r})", values[0].column)
    if name in NUMERIC_FIELDS:
        if op == "~":
            raise SelectionError(f"'~' needs a text field; {name} is a number", op_column)
        test = _numeric(NUMERIC_FIELDS[name], op, values)
    elif name.startswith("value."):
        test = _payload(tuple(name.split(".")[1:]), op, values)
    else:
        if op in _ORDER:
            raise SelectionError(f"{op!r} needs a numeric field or value.*", op_column)
        _check_closed(name, op, values)
        test = _key(op, values) if name == "key" else _text(name, op, values)
    return Term(name, op, values, column, test)


def _check_closed(name: str, op: str, values: tuple[Literal, ...]) -> None:
    allowed = _CLOSED.get(name)
    if allowed is None or op == "~":
        return
    for value in values:
        if value.text not in allowed and not value.is_null:
            choices = ", ".join(allowed)
            raise SelectionError(f"unknown {name} {value.text!r} (one of {choices})", value.column)


def _negated(test: Test, op: str) -> Test:
    if op != "!=":
        return test
    return lambda dl, s, d: not test(dl, s, d)


def _text(name: str, op: str, values: tuple[Literal, ...]) -> Test:
    get = TEXT_FIELDS[name]
    nulls = any(v.is_null for v in values)
    texts = tuple(v.text for v in values if not v.is_null)
    if op == "~":
        needles = tuple(v.text.casefold() for v in values)
        return lambda dl, s, d: _contains(get(dl, s, d), needles)
    if name == "fingerprint":
        prefixes = tuple(t.lower() for t in texts)
        return _negated(lambda dl, s, d: dl.fingerprint.startswith(prefixes), op)
    return _negated(lambda dl, s, d: _equals(get(dl, s, d), texts, nulls), op)


def _equals(actual: object, options: tuple[object, ...], nulls: bool) -> bool:
    return nulls if actual is None else actual in options


def _contains(actual: object, needles: tuple[str, ...]) -> bool:
    if actual is None or actual is MISSING:
        return False
    folded = text_of(actual).casefold()
    return any(needle in folded for needle in needles)


def _key(op: str, values: tuple[Literal, ...]) -> Test:
    if op == "~":
        needles = tuple(v.text.casefold() for v in values)
        return lambda dl, s, d: dl.key is not None and _contains(dl.key, needles)
    nulls = any(v.is_null for v in values)
    keys = tuple(v.text.encode("utf-8") for v in values if not v.is_null)
    return _negated(lambda dl, s, d: _equals(dl.key, keys, nulls), op)


def _numeric(get: Getter, op: str, values: tuple[Literal, ...]) -> Test:
    for value in values:
        if not value.is_null and not _INTEGER.fullmatch(value.text):
            raise SelectionError(f"{value.text!r} is not an integer", value.column)
    if op in _ORDER:
        compare, bound = _ORDER[op], int(values[0].text)
        return lambda dl, s, d: (n := get(dl, s, d)) is not None and compare(n, bound)
    nulls = any(v.is_null for v in values)
    numbers = tuple(int(v.text) for v in values if not v.is_null)
    return _negated(lambda dl, s, d: _equals(get(dl, s, d), numbers, nulls), op)


def _payload(path: tuple[str, ...], op: str, values: tuple[Literal, ...]) -> Test:
    if op == "~":
        needles = tuple(v.text.casefold() for v in values)
        return lambda dl, s, d: _contains(lookup(d, path), needles)
    if op in _ORDER:
        compare, value = _ORDER[op], values[0]
        return lambda dl, s, d: _payload_order(lookup(d, path), compare, value)
    return _negated(lambda dl, s, d: any(_payload_equals(lookup(d, path), v) for v in values), op)


def _payload_equals(actual: object, literal: Literal) -> bool:
    if literal.is_null:
        return actual is None or actual is MISSING
    if actual is None or actual is MISSING:
        return False
    if not literal.quoted:
        if isinstance(actual, bool) and literal.text in ("true", "false"):
            return actual is (literal.text == "true")
        number = _number(literal)
        if number is not None and is_number(actual):
            return bool(actual == number)
    return text_of(actual) == literal.text


def _payload_order(actual: object, compare: Callable[[Any, Any], bool], lit: Literal) -> bool:
    if actual is None or actual is MISSING:
        return False
    number = _number(lit)
    if number is not None and is_number(actual):
        return compare(actual, number)
    return compare(text_of(actual), lit.text)


def _number(literal: Literal) -> int | float | None:
    if literal.quoted or not _NUMBER.fullmatch(literal.text):
        return None
    return int(literal.text) if _INTEGER.fullmatch(literal.text) else float(literal.text)
