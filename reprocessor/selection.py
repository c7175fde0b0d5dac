"""The `--where` language: a small grammar, parsed by hand and never `eval`'d.

    expression := conjunction ( "or" conjunction )*      "" selects everything
    conjunction:= negation ( "and" negation )*           "and" binds tighter than "or"
    negation   := "not" negation | "(" expression ")" | term
    term       := field op value ( "|" value )*
    op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~"
    value      := bare | 'single quoted' | "double quoted"

`and`, `or` and `not` are words in any case. Fields: `category`, `fingerprint` (`=` matches a
prefix), `type`, `message`, `stacktrace`, `source.topic`, `topic` (the DLQ topic), `origin`,
`pipeline`, `dialect`, `rule` (the hold rule that parked a `held` dead letter), `trace` (the
request's W3C trace id, from `traceparent`), `key`, `state`;
the numbers `partition`, `offset`, `source.partition`, `source.offset`, `attempts`,
`replay_count`; the times `ts` (the DLQ record's timestamp) and `failed_at`, which take epoch
ms, an ISO-8601 time or a duration meaning that long ago (`failed_at>2h`: in the last two
hours); `age` (since the failure), which takes a duration (`age>1d`); and `value.<path>`, a
field of the decoded payload (`value.customer.id`, `value.items.0.sku`: a number indexes a list).
Durations are `30s`, `15m`, `2h`, `7d`, `2w` or combinations largest first (`1h30m`).

Semantics. `=` is exact and `~` a case-insensitive substring; `a|b` means any of (with `!=`:
none of); `!=` is exactly the negation of `=`, and `not (...)` of what it encloses. The bare
value `null` matches a field the dead letter does not have (and, for `value.*`, a payload path
that is missing or null). Numeric fields take integers; `<`, `<=`, `>`, `>=` take one value and
never match a missing field. For `value.*`, bare `true`/`false` are booleans and bare numbers
compare numerically with numbers; everything else, and every quoted value, compares as text. A
bare value ends at whitespace or `|` (and, inside parentheses, at `)`); quote it to hold those,
quotes or operators (a backslash takes the next character as is).

A bad expression raises `SelectionError` with the 1-based column of the problem.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.core.dialects import DIALECTS
from pipeline.errors import Category
from reprocessor.deadletters import (
    LAZARUS,
    MISSING,
    UNKNOWN,
    ReplayState,
    is_number,
    lookup,
    text_of,
)
from reprocessor.timeparse import parse_when


class Selectable(Protocol):
    """What a selection reads of a dead letter: a `DeadLetter`, or an index row seen as one
    (`index_rows.RowView`, which has no key, stack trace nor trace: the index cannot answer a
    selection on those)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def dialect(self) -> str: ...
    @property
    def source_topic(self) -> str | None: ...
    @property
    def source_partition(self) -> int | None: ...
    @property
    def source_offset(self) -> int | None: ...
    @property
    def origin(self) -> str | None: ...
    @property
    def category(self) -> str | None: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def stacktrace(self) -> str | None: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def attempts(self) -> int | None: ...
    @property
    def failed_at_ms(self) -> int | None: ...
    @property
    def pipeline(self) -> str | None: ...
    @property
    def replay_count(self) -> int: ...
    @property
    def rule(self) -> str | None: ...
    @property
    def trace(self) -> str | None: ...
    @property
    def seen_ms(self) -> int: ...


Getter = Callable[[Selectable, ReplayState, object], object]
Test = Callable[[Selectable, ReplayState, object], bool]

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
    "rule": lambda dl, s, d: dl.rule,
    "trace": lambda dl, s, d: dl.trace,
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
TIME_FIELDS = frozenset({"ts", "failed_at"})
"""Numeric fields that also take an ISO-8601 time or a duration ago."""
FIELDS: tuple[str, ...] = (*TEXT_FIELDS, "key", *NUMERIC_FIELDS, "age", "value.<path>")
"""Every field name, for help texts."""
WORDS = ("and", "or", "not")

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
_STOP = frozenset("=!<>~|'\"()")
_QUOTES = frozenset("'\"")
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


MAX_NESTING = 64
"""Parentheses and `not`s open at once: deeper, `parse` refuses the expression (each level is a
frame of the recursive-descent parser and of the test it builds)."""


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


def _everything(dl: Selectable, state: ReplayState, decoded: object) -> bool:
    return True


@dataclass(frozen=True)
class Selection:
    """A parsed expression. `terms` lists every term in written order; `test` combines them
    with `and`, `or` and `not` (None: every term must match, as an expression of `and`s does).
    `conjunctive` is True when the expression is only terms joined by `and`, so that each term
    may be checked on its own (e.g. pushed down to an index)."""

    expr: str = ""
    terms: tuple[Term, ...] = ()
    test: Test | None = dataclasses.field(default=None, compare=False, repr=False)
    conjunctive: bool = dataclasses.field(default=True, compare=False)

    def matches(self, dl: Selectable, state: ReplayState, decoded: object | None = None) -> bool:
        """Whether `dl` is selected. `decoded` is the decoded payload (None when not decoded:
        `value.*` terms then see a missing path)."""
        if self.test is not None:
            return self.test(dl, state, decoded)
        return all(term.test(dl, state, decoded) for term in self.terms)

    @property
    def selects_all(self) -> bool:
        """True when the selection is empty (no `--where`): every dead letter matches."""
        return not self.terms and self.test in (None, _everything)

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


def parse(expr: str | None, now_ms: int | None = None) -> Selection:
    """Parse `expr`; None, "" or blanks select everything. Durations (`failed_at>2h`, `age<1d`)
    count back from `now_ms` (default: the wall clock). Raises only `SelectionError`."""
    text = expr or ""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    parser = _Parser(text, now)
    try:
        test = parser.whole()
    except SelectionError as exc:
        exc.expr = text
        raise
    terms = tuple(parser.terms)
    if parser.conjunctive:
        return Selection(text, terms)
    return Selection(text, terms, test, conjunctive=False)


class _Parser:
    """A recursive-descent parser over `text`; `pos` is a 0-based index, `depth` the number of
    open parentheses. Collects every term in `terms`; `conjunctive` turns False at the first
    `or`, `not` or parenthesis."""

    def __init__(self, text: str, now_ms: int) -> None:
        self.text = text
        self.now_ms = now_ms
        self.pos = 0
        self.depth = 0
        self.nesting = 0
        self.terms: list[Term] = []
        self.conjunctive = True

    def whole(self) -> Test:
        self.skip_space()
        if self.pos >= len(self.text):
            return _everything
        test = self.disjunction()
        self.skip_space()
        if self.pos < len(self.text):
            if self.text[self.pos] == ")":
                raise SelectionError("unmatched ')'", self.pos + 1)
            raise SelectionError("expected 'and' or 'or' between terms", self.pos + 1)
        return test

    def disjunction(self) -> Test:
        tests = [self.conjunction()]
        while (column := self.word("or")) is not None:
            self.conjunctive = False
            self.must_follow("or", column)
            tests.append(self.conjunction())
        return tests[0] if len(tests) == 1 else _any_of(tuple(tests))

    def conjunction(self) -> Test:
        tests = [self.negation()]
        while (column := self.word("and")) is not None:
            self.must_follow("and", column)
            tests.append(self.negation())
        return tests[0] if len(tests) == 1 else _all_of(tuple(tests))

    def negation(self) -> Test:
        self.skip_space()
        column = self.word("not")
        if column is not None:
            self.conjunctive = False
            self.must_follow("not", column)
            self.nest(column)
            inner = self.negation()
            self.nesting -= 1
            return lambda dl, s, d: not inner(dl, s, d)
        if self.text.startswith("(", self.pos):
            return self.group()
        term = self.term()
        self.terms.append(term)
        self.check_after_term()
        return term.test

    def group(self) -> Test:
        self.conjunctive = False
        opened = self.pos + 1
        self.pos += 1
        self.depth += 1
        self.nest(opened)
        self.skip_space()
        if self.text.startswith(")", self.pos):
            raise SelectionError("empty parentheses: an expression must go inside", self.pos + 1)
        if self.pos >= len(self.text):
            raise SelectionError("unclosed '(': an expression and ')' must follow", opened)
        test = self.disjunction()
        self.skip_space()
        if not self.text.startswith(")", self.pos):
            raise SelectionError("unclosed '(' (no matching ')')", opened)
        self.pos += 1
        self.depth -= 1
        self.nesting -= 1
        self.check_after_term()
        return test

    def nest(self, column: int) -> None:
        """One more open parenthesis or `not`: past `MAX_NESTING`, a SelectionError, not the
        interpreter's RecursionError."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise SelectionError(
                f"nested more than {MAX_NESTING} deep (parentheses and 'not')", column
            )

    def check_after_term(self) -> None:
        """After a term or a group comes the end, `)`, `and` or `or`."""
        self.skip_space()
        if self.pos >= len(self.text) or self.text[self.pos] == ")":
            return
        if self.peek_word() in ("and", "or"):
            return
        raise SelectionError("expected 'and' or 'or' between terms", self.pos + 1)

    def must_follow(self, word: str, column: int) -> None:
        self.skip_space()
        if self.pos >= len(self.text) or self.text[self.pos] == ")":
            raise SelectionError(f"dangling {word!r}: a term must follow it", column)

    def peek_word(self) -> str | None:
        """The keyword at `pos` (and, or, not), lower-cased, if one stands there as a word."""
        for word in WORDS:
            end = self.pos + len(word)
            after = self.text[end : end + 1]
            if self.text[self.pos : end].casefold() == word and (
                not after or after.isspace() or after == "("
            ):
                return word
        return None

    def word(self, word: str) -> int | None:
        """Consume `word` when it stands at `pos` (after blanks); its 1-based column."""
        self.skip_space()
        if self.peek_word() != word:
            return None
        self.pos += len(word)
        return self.pos - len(word) + 1

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

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
        return _compile(name, (op, op_column), tuple(values), start + 1, self.now_ms)

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
        if name.casefold() in ("and", "or"):
            raise SelectionError(f"{name.casefold()!r} needs a term on each side", start + 1)
        payload = name.startswith("value.") and all(name.split(".")[1:])
        known = name in TEXT_FIELDS or name in NUMERIC_FIELDS or name in ("key", "age")
        if not known and not payload:
            raise SelectionError(f"unknown field {name!r} (known: {', '.join(FIELDS)})", start + 1)
        return name

    def value(self, op: str) -> Literal:
        start = self.pos
        char = self.text[start] if start < len(self.text) else ""
        if char in _QUOTES:
            return Literal(self.quoted(char), True, start + 1)
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char.isspace() or char == "|" or (char == ")" and self.depth):
                break
            if char in _QUOTES:
                raise SelectionError("a quote inside a value: quote the whole value", self.pos + 1)
            self.pos += 1
        text = self.text[start : self.pos]
        if not text or text.casefold() in ("and", "or"):
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


def _any_of(tests: tuple[Test, ...]) -> Test:
    return lambda dl, s, d: any(test(dl, s, d) for test in tests)


def _all_of(tests: tuple[Test, ...]) -> Test:
    return lambda dl, s, d: all(test(dl, s, d) for test in tests)


def _compile(
    name: str, op_at: tuple[str, int], values: tuple[Literal, ...], column: int, now_ms: int
) -> Term:
    """Check the term and build its test. `op_at` is the operator and its column."""
    op, op_column = op_at
    if len(values) > 1 and op in _ORDER:
        raise SelectionError(f"'|' (any of) does not work with {op!r}", values[1].column)
    if op in _ORDER and values[0].is_null:
        raise SelectionError(f"null only works with = and != (not {op!r})", values[0].column)
    if name in NUMERIC_FIELDS or name == "age":
        if op == "~":
            raise SelectionError(f"'~' needs a text field; {name} is a number", op_column)
        if name == "age":
            numbers = tuple(_duration(v) for v in values)
            test = _numeric(lambda dl, s, d: now_ms - dl.seen_ms, op, numbers)
        else:
            numbers = tuple(_integer(v, now_ms, when=name in TIME_FIELDS) for v in values)
            test = _numeric(NUMERIC_FIELDS[name], op, numbers)
    elif name.startswith("value."):
        test = _payload(tuple(name.split(".")[1:]), op, values)
    else:
        if op in _ORDER:
            raise SelectionError(f"{op!r} needs a numeric field or value.*", op_column)
        _check_closed(name, op, values)
        test = _key(op, values) if name == "key" else _text(name, op, values)
    return Term(name, op, values, column, test)


MAX_DIGITS = 4000
"""Integer literals longer than this are refused (numeric fields) or compared as text
(`value.*`): Python's int() refuses more than 4,300 digits, and no offset has that many."""


def _integer(value: Literal, now_ms: int, *, when: bool) -> int | None:
    """The number a numeric term compares with (None for null). Time fields also take what
    `--since` takes: an ISO-8601 time, or a duration counted back from `now_ms`."""
    if value.is_null:
        return None
    if _INTEGER.fullmatch(value.text):
        if len(value.text.lstrip("+-0")) > MAX_DIGITS:
            raise SelectionError(f"{value.text[:24]}... is too large a number", value.column)
        return int(value.text)
    if when:
        try:
            return parse_when(value.text, now_ms)
        except ValueError:
            why = "an integer, an ISO-8601 time or a duration like 2h"
            raise SelectionError(f"{value.text!r} is not {why}", value.column) from None
    raise SelectionError(f"{value.text!r} is not an integer", value.column)


def _duration(value: Literal) -> int | None:
    """The milliseconds of a duration literal (`age` compares with these); None for null."""
    if value.is_null:
        return None
    try:
        ago = parse_when(value.text, 0)
    except ValueError:
        ago = 1
    if ago > 0 or value.text.strip().isdigit():
        raise SelectionError(
            f"{value.text!r} is not a duration like 30s, 15m, 2h, 7d or 1h30m", value.column
        )
    return -ago


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


def _numeric(get: Getter, op: str, numbers: tuple[int | None, ...]) -> Test:
    if op in _ORDER:
        compare, bound = _ORDER[op], numbers[0]
        return lambda dl, s, d: (n := get(dl, s, d)) is not None and compare(n, bound)
    nulls = any(n is None for n in numbers)
    wanted = tuple(n for n in numbers if n is not None)
    return _negated(lambda dl, s, d: _equals(get(dl, s, d), wanted, nulls), op)


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
    if _INTEGER.fullmatch(literal.text):
        # past Python's int() digit limit: compare as text, never raise
        return int(literal.text) if len(literal.text) <= MAX_DIGITS else None
    return float(literal.text)
