"""Hold rules: operators park records matching a simple predicate in the DLQ as `held`.

The rules live in a TOML file (read with `tomllib`, validated with pydantic; never evaluated as
code). Each `[[hold]]` table names one rule with exactly one predicate:

- `field = "customer.id"` with `equals = ...` or `in = [...]`: a dotted path into the decoded
  event, resolved through mappings (keys), sequences (non-negative integer segments) and objects
  such as pydantic models (attributes; segments starting with `_` are refused at load time).
  Values compare as JSON-ish scalars: strings only with strings, booleans only with booleans, and
  integers and floats numerically (`equals = 42` matches 42 and 42.0, never "42" or True). Any
  other value (None, Decimal, datetime, bytes, containers) never matches, and TOML has no null.
  A missing path, or an undecodable record (event None), simply does not match.
- `key = "order-17"`: the record key equals this string's UTF-8 bytes (a null key never matches).
- `header = "tenant"` with `equals`/`in` (strings): the header's UTF-8 value; when the header
  repeats, its last occurrence counts (as the DLQ contract reads repeated headers).

Every rule needs `name`, `reason` and `expires` (a TOML datetime with an offset); an optional
`topic` restricts it to records of that source topic. A rule matches while `now_ms <
expires_at_ms`: at its expiry instant it is already inactive. Expiry uses the wall clock (epoch
milliseconds), as an operator writes it.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from pipeline.errors import ConfigError

__all__ = [
    "FieldMatch",
    "HeaderMatch",
    "HoldRule",
    "HoldRules",
    "HoldRulesError",
    "KeyMatch",
    "RulesFile",
    "describe",
    "expired",
    "expiry_text",
    "held_by",
    "hold_details",
    "load_rules",
    "match",
    "parse_rules",
    "policy_rule_header",
]

Scalar = str | int | float | bool
_MISSING = object()
_SELECTORS = ("field", "key", "header")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOLD_PREFIX = "hold:"


class HoldRulesError(ConfigError):
    """The hold-rules file is unreadable or invalid; `problems` holds one line per problem."""

    def __init__(self, source: Path, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join([f"invalid hold rules {source}:", *self.problems]))

    def one_line(self) -> str:
        return f"invalid hold rules {self.source}: " + "; ".join(self.problems)


@dataclass(frozen=True, slots=True)
class FieldMatch:
    """A decoded event's value at `path` is one of `values`."""

    path: tuple[str, ...]
    values: tuple[Scalar, ...]

    def matches(self, event: object | None) -> bool:
        if event is None:
            return False
        found = _resolve(event, self.path)
        return found is not _MISSING and any(_same_scalar(found, v) for v in self.values)


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """The record key is exactly `key`."""

    key: bytes


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """The last header called `name` has a UTF-8 value among `values`."""

    name: str
    values: tuple[str, ...]

    def matches(self, headers: Sequence[tuple[str, bytes | None]]) -> bool:
        raw = next((v for k, v in reversed(headers) if k == self.name), None)
        if raw is None:
            return False
        try:
            return raw.decode("utf-8") in self.values
        except UnicodeDecodeError:
            return False


Predicate = FieldMatch | KeyMatch | HeaderMatch


@dataclass(frozen=True, slots=True)
class HoldRule:
    """One operator rule: records it matches are dead-lettered as `held` until it expires."""

    name: str
    reason: str
    expires_at_ms: int
    topic: str | None
    predicate: Predicate

    def active(self, now_ms: int) -> bool:
        return now_ms < self.expires_at_ms


@dataclass(frozen=True, slots=True)
class HoldRules:
    """The rules of one file version. `version` is the first 12 hex digits of the sha256 of the
    file's bytes: the policy version hash written to `dlq.policy.rule`."""

    rules: tuple[HoldRule, ...]
    version: str
    source: Path | None

    @classmethod
    def empty(cls) -> HoldRules:
        """No rules (the version of an empty file, so an empty file and no file agree)."""
        return cls((), _version(b""), None)


def match(
    rules: HoldRules,
    *,
    topic: str,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    event: object | None,
    now_ms: int,
) -> HoldRule | None:
    """The first rule, in file order, that is active at `now_ms` and matches the record."""
    for rule in rules.rules:
        if not rule.active(now_ms) or (rule.topic is not None and rule.topic != topic):
            continue
        pred = rule.predicate
        if isinstance(pred, KeyMatch):
            hit = key is not None and key == pred.key
        elif isinstance(pred, HeaderMatch):
            hit = pred.matches(headers)
        else:
            hit = pred.matches(event)
        if hit:
            return rule
    return None


def expired(rules: HoldRules, now_ms: int) -> list[HoldRule]:
    """The rules no longer active at `now_ms`, in file order."""
    return [rule for rule in rules.rules if not rule.active(now_ms)]


def policy_rule_header(rule: HoldRule, rules: HoldRules) -> str:
    """The `dlq.policy.rule` value for a record parked by `rule`: `hold:<name>@<version>`."""
    return f"{HOLD_PREFIX}{rule.name}@{rules.version}"


def held_by(policy_rule: str | None) -> str | None:
    """The rule name in a `dlq.policy.rule` value written by `policy_rule_header`
    (`hold:<name>@<version>`); None for any other value."""
    if policy_rule is None or not policy_rule.startswith(HOLD_PREFIX):
        return None
    name, _, _version = policy_rule[len(HOLD_PREFIX) :].rpartition("@")
    return name or None


def hold_details(rule: HoldRule) -> tuple[dict[str, str], ...]:
    """The `dlq.error.details` of a record parked by `rule`: when the rule expires (ISO-8601
    UTC and epoch ms), so that an operator reading the dead letter knows when the worker stops
    parking its like. No `loc` key: the fingerprint stays the rule's and message's."""
    return (
        {
            "rule": rule.name,
            "expires": expiry_text(rule),
            "expires_at_ms": str(rule.expires_at_ms),
        },
    )


def describe(rule: HoldRule) -> str:
    """What the rule matches, as the file says it: `field customer.id in ['c-1', 'c-2']`,
    `key 'order-17'`, `header tenant = 'acme'`, then `on topic orders` when restricted."""
    pred = rule.predicate
    if isinstance(pred, KeyMatch):
        text = f"key {pred.key.decode('utf-8', errors='replace')!r}"
    else:
        what = "field " + ".".join(pred.path) if isinstance(pred, FieldMatch) else "header "
        what += pred.name if isinstance(pred, HeaderMatch) else ""
        values = pred.values
        text = f"{what} = {values[0]!r}" if len(values) == 1 else f"{what} in {list(values)!r}"
    return text if rule.topic is None else f"{text} on topic {rule.topic}"


def expiry_text(rule: HoldRule) -> str:
    """The rule's expiry as ISO-8601 UTC, to the second: `2026-01-31T12:00:00Z`."""
    moment = _EPOCH + timedelta(milliseconds=rule.expires_at_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _resolve(event: object, path: tuple[str, ...]) -> object:
    """The value at `path`, or `_MISSING`. Never raises for a missing key, index or attribute."""
    current = event
    for segment in path:
        if isinstance(current, Mapping):
            current = current.get(segment, _MISSING)
        elif isinstance(current, Sequence) and not isinstance(current, str | bytes | bytearray):
            if not (segment.isascii() and segment.isdigit()) or int(segment) >= len(current):
                return _MISSING
            current = current[int(segment)]
        else:
            current = getattr(current, segment, _MISSING)
        if current is _MISSING:
            return _MISSING
    return current


def _same_scalar(found: object, wanted: Scalar) -> bool:
    """JSON-ish equality: bool only with bool, str only with str, int/float numerically."""
    if isinstance(wanted, bool) or isinstance(found, bool):
        return isinstance(wanted, bool) and isinstance(found, bool) and found is wanted
    if isinstance(wanted, str):
        return isinstance(found, str) and found == wanted
    return isinstance(found, int | float) and found == wanted


# --- the file schema ------------------------------------------------------------------------


def _scalar(value: object) -> Scalar:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise PydanticCustomError("scalar", "must be a string, an integer, a finite float or a boolean")


_ScalarValue = Annotated[object, AfterValidator(_scalar)]


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    reason: str = Field(min_length=1)
    expires: AwareDatetime
    topic: str | None = Field(default=None, min_length=1)
    field: str | None = None
    key: str | None = None
    header: str | None = Field(default=None, min_length=1)
    equals: _ScalarValue | None = None
    in_: list[_ScalarValue] | None = Field(default=None, alias="in", min_length=1)


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    hold: list[_RuleModel] = Field(default_factory=list)


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as an operator reads the file: `hold[1].in[2]`, counting from 1."""
    text = ""
    for part in loc:
        text += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(file)"


def _shape_problems(raw: object) -> list[tuple[int, str]]:
    """Cross-field problems that pydantic's per-field checks cannot see, found on the raw TOML
    tables so that they are listed alongside the type errors, not only once those are fixed."""
    tables = raw.get("hold") if isinstance(raw, dict) else None
    if not isinstance(tables, list):
        return []
    problems: list[tuple[int, str]] = []
    first_seen: dict[object, int] = {}
    for index, table in enumerate(tables, start=1):
        if isinstance(table, dict):
            problems += [(index, f"hold[{index}]{p}") for p in _table_problems(table)]
            name = table.get("name")
            if isinstance(name, str) and first_seen.setdefault(name, index) != index:
                problems.append(
                    (index, f"hold[{index}].name: duplicate of hold[{first_seen[name]}]")
                )
    return problems


def _table_problems(table: dict[str, object]) -> list[str]:
    """One rule's cross-field problems, each as a suffix of its `hold[i]` location."""
    problems = []
    path = table.get("field")
    if isinstance(path, str) and any(not s or s.startswith("_") for s in path.split(".")):
        problems.append(".field: path segments must be non-empty and not start with '_'")
    selectors = [s for s in _SELECTORS if s in table]
    if len(selectors) != 1:
        found = ", ".join(selectors) or "none"
        return [*problems, f": exactly one of field, key, header is required (found: {found})"]
    kind = selectors[0]
    comparisons = [c for c in ("equals", "in") if c in table]
    if kind == "key" and comparisons:
        problems.append(": a key rule takes its value in `key`; remove equals/in")
    elif kind != "key" and len(comparisons) != 1:
        problems.append(f": a {kind} rule needs exactly one of equals, in")
    if kind == "header":
        values = table.get("in") if "in" in table else [table.get("equals")]
        if isinstance(values, list) and not all(isinstance(v, str) for v in values):
            problems.append(": a header rule compares UTF-8 text: use strings")
    return problems


def _to_rule(model: _RuleModel) -> HoldRule:
    predicate: Predicate
    values = tuple(model.in_) if model.in_ is not None else (model.equals,)
    if model.key is not None:
        predicate = KeyMatch(model.key.encode("utf-8"))
    elif model.header is not None:
        predicate = HeaderMatch(model.header, tuple(str(v) for v in values))
    else:
        assert model.field is not None
        predicate = FieldMatch(tuple(model.field.split(".")), tuple(_scalar(v) for v in values))
    expires_ms = (model.expires - _EPOCH) // timedelta(milliseconds=1)
    return HoldRule(model.name, model.reason, expires_ms, model.topic, predicate)


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def parse_rules(data: bytes, source: Path) -> HoldRules:
    """Parse and validate a rules file's bytes. Raises `HoldRulesError` listing every problem."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise HoldRulesError(source, [f"not valid UTF-8 TOML: {exc}"]) from exc
    problems = _shape_problems(raw)
    model: _FileModel | None = None
    try:
        model = _FileModel.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False, include_context=False):
            loc = tuple(err["loc"])
            msg = err["msg"][:1].lower() + err["msg"][1:]
            index = loc[1] + 1 if len(loc) > 1 and isinstance(loc[1], int) else 0
            problems.append((index, f"{_where(loc)}: {msg}"))
    if problems or model is None:
        raise HoldRulesError(source, [text for _, text in sorted(problems, key=lambda p: p[0])])
    return HoldRules(tuple(_to_rule(m) for m in model.hold), _version(data), source)


def load_rules(path: Path) -> HoldRules:
    """Read and validate the rules file at `path`. Raises `HoldRulesError` (a `ConfigError`)
    when it cannot be read or is invalid, with one line per problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HoldRulesError(path, [f"cannot read: {exc.strerror or exc}"]) from exc
    return parse_rules(data, path)


class RulesFile:
    """The rules file of a running worker, reloaded on SIGHUP.

    The constructor loads the file and raises `HoldRulesError` on a bad one (fail fast at start).
    `reload` never raises for a bad file: a typo during an incident must not kill the worker, so
    it keeps the previous rules and returns an error line to log instead.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = load_rules(path)
        self._reported: set[tuple[str, int]] = set()

    def reload(self) -> tuple[HoldRules, str | None]:
        """Load the file again: `(new rules, None)`, or `(kept rules, error line)`."""
        try:
            self.current = load_rules(self.path)
        except HoldRulesError as exc:
            return self.current, f"{exc.one_line()} (keeping version {self.current.version})"
        return self.current, None

    def expired_since_last(self, now_ms: int) -> list[HoldRule]:
        """Rules of the current version that have expired and were not reported before.

        A rule is identified by name and expiry, so a reload that keeps it does not report it
        again, while one that extends and later passes its expiry reports it anew.
        """
        self._reported &= {(rule.name, rule.expires_at_ms) for rule in self.current.rules}
        fresh = [r for r in expired(self.current, now_ms) if _ident(r) not in self._reported]
        self._reported.update(_ident(r) for r in fresh)
        return fresh


def _ident(rule: HoldRule) -> tuple[str, int]:
    return rule.name, rule.expires_at_ms
