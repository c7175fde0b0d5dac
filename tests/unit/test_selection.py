"""reprocessor/selection.py: the --where grammar, parsed (never eval'd) and matched."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.core.dialects import SPRING_EXCEPTION, SPRING_MESSAGE, SPRING_TOPIC
from pipeline.errors import Category
from reprocessor.deadletters import DeadLetter, ReplayState, from_record, use_correlation_header
from reprocessor.options import Env
from reprocessor.selection import FIELDS, Selection, SelectionError, parse
from tests.unit.test_settings import MINIMAL

U, R, D = ReplayState.UNRESOLVED, ReplayState.REPLAYED, ReplayState.DISCARDED


def lazarus(
    *,
    category: Category = Category.VALIDATION,
    error_type: str = "pydantic_core.ValidationError",
    message: str = "1 validation error for Order: amount Input should be a valid number",
    key: bytes | None = b"c-1",
    partition: int = 3,
    offset: int = 150,
    attempts: int = 2,
) -> DeadLetter:
    record = SourceRecord("orders", 1, 77, 1_000, key, b"{}", ())
    failure = Failure(
        category=category,
        error_type=error_type,
        message=message,
        failed_at_ms=5_000,
        pipeline="orders-app",
        attempts=attempts,
        stacktrace="Traceback ... ReadTimeout",
    )
    headers = build_dead_letter(record, failure)
    return from_record("orders.dlq", partition, offset, 6_000, key, b"{}", headers)


def spring() -> DeadLetter:
    headers = [
        (SPRING_EXCEPTION, b"org.example.TimeoutException"),
        (SPRING_MESSAGE, b"gave up after 3 tries"),
        (SPRING_TOPIC, b"payments"),
    ]
    return from_record("payments-dlt", 0, 1, 2_000, None, None, headers)


class Customer(BaseModel):
    id: str | None
    email: str


class Order(BaseModel):
    customer: Customer
    amount: float
    zip: str
    active: bool
    items: list[dict[str, object]]


ORDER = Order(
    customer=Customer(id=None, email="a@b.c"),
    amount=12.5,
    zip="01234",
    active=True,
    items=[{"sku": "s-1", "qty": 2}],
)


def sel(
    expr: str, dl: DeadLetter | None = None, state: ReplayState = U, decoded: object = None
) -> bool:
    return parse(expr).matches(dl or lazarus(), state, decoded)


@pytest.mark.parametrize("expr", [None, "", "   "])
def test_empty_selects_everything(expr: str | None) -> None:
    selection = parse(expr)
    assert selection == Selection(expr or "", ())
    assert selection.matches(spring(), D) and selection.matches(lazarus(), U)
    assert not selection.needs_payload and not selection.needs_state


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("category=validation", True),
        ("category=processing", False),
        ("category=processing|validation", True),
        ("category!=validation", False),
        ("category!=processing|schema", True),
        ("type=pydantic_core.ValidationError", True),
        ("type=ValidationError", False),
        ("type~validationerror", True),
        ("type~Timeout|Validation", True),
        ("message~'valid number'", True),
        ('message~"AMOUNT input"', True),
        ("stacktrace~readtimeout", True),
        ("source.topic=orders", True),
        ("topic=orders.dlq", True),
        ("topic=orders", False),
        ("origin=orders/1/77", True),
        ("pipeline=orders-app", True),
        ("dialect=lazarus", True),
        ("key=c-1", True),
        ("key~C-", True),
        ("key=null", False),
        ("partition=3", True),
        ("partition=1|3", True),
        ("partition!=3", False),
        ("offset>=150", True),
        ("offset>150", False),
        ("offset<151", True),
        ("offset<=149", False),
        ("source.partition=1", True),
        ("source.offset=77", True),
        ("attempts>1", True),
        ("replay_count=0", True),
        ("ts=6000", True),
        ("failed_at<5001", True),
        ("failed_at=null", False),
        ("category=validation and offset>=100 AND type~Validation", True),
        ("category=validation and offset>=200", False),
        ("  offset >= 100   and   partition = 3 ", True),
    ],
)
def test_terms_on_a_lazarus_dead_letter(expr: str, expected: bool) -> None:
    assert sel(expr) is expected


def test_fingerprint_matches_a_prefix() -> None:
    dl = lazarus()
    assert sel(f"fingerprint={dl.fingerprint[:4]}", dl)
    assert sel(f"fingerprint={dl.fingerprint.upper()[:6]}", dl)
    assert sel(f"fingerprint=ffff|{dl.fingerprint[:2]}", dl)
    assert not sel(f"fingerprint!={dl.fingerprint[:4]}", dl)
    assert not sel("fingerprint=zz", dl)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("category=null", True),
        ("category!=validation", True),
        ("pipeline=null", True),
        ("attempts=null", True),
        ("attempts>0", False),
        ("attempts!=2", True),
        ("key=null", True),
        ("key~x", False),
        ("dialect=spring", True),
        ("source.topic=payments", True),
        ("type~timeout", True),
        ("message~null", False),
        ("origin=null", True),
    ],
)
def test_terms_on_a_foreign_dead_letter(expr: str, expected: bool) -> None:
    assert sel(expr, spring()) is expected


def test_state() -> None:
    selection = parse("state=replayed|discarded")
    assert selection.needs_state and not selection.needs_payload
    assert [selection.matches(lazarus(), s) for s in (U, R, D)] == [False, True, True]
    assert sel("state!=unresolved", state=R)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("value.customer.id=null", True),
        ("value.customer.nickname=null", True),
        ("value.customer.email=a@b.c", True),
        ("value.customer.email~@B.", True),
        ("value.amount=12.5", True),
        ("value.amount=12.50", True),
        ("value.amount>12", True),
        ("value.amount<=12", False),
        ("value.amount='12.5'", True),
        ("value.zip=1234", False),
        ("value.zip=01234", True),
        ("value.zip='01234'", True),
        ("value.zip>=01000", True),
        ("value.active=true", True),
        ("value.active=false", False),
        ("value.active='true'", True),
        ("value.items.0.sku=s-1", True),
        ("value.items.0.qty=2", True),
        ("value.items.0.qty>1", True),
        ("value.items.1.sku=null", True),
        ("value.items.x=null", True),
        ("value.customer.id!=null", False),
        ("value.customer.email=null", False),
        ("value.missing>1", False),
        ("value.customer.id~x", False),
        ("value.customer='x'", False),
        ("value.customer~a@b", True),
        ("value.amount='null'", False),
    ],
)
def test_payload_paths(expr: str, expected: bool) -> None:
    assert parse(expr).needs_payload
    assert sel(expr, decoded=ORDER) is expected
    assert sel(expr, decoded=ORDER.model_dump()) is expected


def test_payload_terms_see_a_missing_path_when_not_decoded() -> None:
    assert sel("value.customer.id=null", decoded=None)
    assert not sel("value.customer.email=a@b.c", decoded=None)


def test_quoted_values_hold_spaces_operators_and_escapes() -> None:
    dl = lazarus(message='it\'s a=b and c|d "quoted"')
    assert sel("message~'a=b and c|d'", dl)
    assert sel('message~"it\'s"', dl)
    assert sel("message~'it\\'s'", dl)
    assert sel('message~"\\"quoted\\""', dl)
    assert sel("message~'and'", dl)
    assert parse("message=''").terms[0].values[0].text == ""


def test_alternatives_may_have_spaces_around_the_bar() -> None:
    assert sel("partition = 2 | 3 and category=validation")


def test_terms_keep_what_was_written() -> None:
    term = parse("  state=replayed|'discarded'").terms[0]
    assert (term.field, term.op, term.column) == ("state", "=", 3)
    assert [(v.text, v.quoted, v.column) for v in term.values] == [
        ("replayed", False, 9),
        ("discarded", True, 18),
    ]
    assert str(parse("a=b".replace("a", "topic"))) == "topic=b"


@pytest.mark.parametrize(
    ("expr", "column", "fragment"),
    [
        ("colour=red", 1, "unknown field 'colour'"),
        ("category=validation and colour=red", 25, "unknown field"),
        ("value=1", 1, "unknown field"),
        ("value.=1", 1, "unknown field"),
        ("value.a..b=1", 1, "unknown field"),
        ("category", 9, "missing operator after 'category'"),
        ("category validation", 10, "missing operator"),
        ("category=", 10, "missing value after '='"),
        ("category= and offset>1", 11, "missing value"),
        ("partition=1|", 13, "missing value after '|'"),
        ("category=validation and", 21, "dangling 'and'"),
        ("category=validation AND  ", 21, "dangling 'and'"),
        ("category=validation nor offset>1", 21, "expected 'and' or 'or'"),
        ("category=validation or", 21, "dangling 'or'"),
        ("not", 1, "dangling 'not'"),
        ("(category=validation", 1, "unclosed '('"),
        ("offset>1 and (category=validation or ", 35, "dangling 'or'"),
        ("(offset>1))", 11, "unmatched ')'"),
        ("()", 2, "empty parentheses"),
        ("(offset>1) (offset<3)", 12, "expected 'and' or 'or'"),
        ("or category=x", 1, "'or' needs a term on each side"),
        ("age>12", 5, "not a duration"),
        ("age>2025-01-01", 5, "not a duration"),
        ("failed_at>yesterday", 11, "not an integer, an ISO-8601 time or a duration"),
        ("rule~x and offset>=x", 20, "'x' is not an integer"),
        ("category=validation offset>1", 21, "expected 'and'"),
        ("message~'unterminated", 9, "unterminated ' quote"),
        ('message~"a\\"', 9, 'unterminated " quote'),
        ("offset>=abc", 9, "'abc' is not an integer"),
        ("partition=1|x", 13, "'x' is not an integer"),
        ("offset>=1.5", 9, "not an integer"),
        ("offset<1|2", 10, "'|' (any of) does not work with '<'"),
        ("offset<null", 8, "null only works with = and !="),
        ("offset~1", 7, "'~' needs a text field"),
        ("topic>a", 6, "needs a numeric field"),
        ("category=validaton", 10, "unknown category 'validaton'"),
        ("state=open", 7, "unknown state 'open'"),
        ("dialect=kafka", 9, "unknown dialect"),
        ("type=a'b", 7, "a quote inside a value"),
        ("=x", 1, "expected a field name"),
        ("and category=x", 1, "'and' needs a term on each side"),
        ("topic=1 and and y=2", 13, "'and' needs a term"),
        ("'x'=1", 1, "expected a field name"),
        ("(", 1, "unclosed '('"),
    ],
)
def test_bad_expressions_point_at_the_column(expr: str, column: int, fragment: str) -> None:
    with pytest.raises(SelectionError) as caught:
        parse(expr)
    error = caught.value
    assert fragment in error.message
    assert error.column == column, error.pointer()
    assert str(error) == f"column {column}: {error.message}"
    assert error.pointer() == f"{expr}\n{' ' * (column - 1)}^"
    assert isinstance(error, ValueError)


def test_field_list_covers_the_issue_examples() -> None:
    issue = ["category", "fingerprint", "type", "source.topic", "partition", "offset", "key"]
    assert set(issue) <= set(FIELDS) and "state" in FIELDS and "value.<path>" in FIELDS


_GRAMMAR = st.sampled_from(
    [
        "category",
        "value.a.0",
        "offset",
        "state",
        "key",
        "=",
        "!=",
        "<=",
        ">",
        "~",
        "|",
        " and ",
        " AND",
        " or ",
        "not ",
        "(",
        ")",
        "'",
        '"',
        "\\",
        " ",
        "null",
        "12",
        "-3",
        "validation",
        "x",
    ]
)


@given(st.lists(_GRAMMAR, max_size=12).map("".join) | st.text(max_size=40))
def test_parse_raises_only_selection_errors_within_the_text(expr: str) -> None:
    try:
        selection = parse(expr)
    except SelectionError as error:
        assert 1 <= error.column <= len(expr) + 1
        assert "\n" not in str(error)
    else:
        for dl in (lazarus(), spring()):
            assert selection.matches(dl, U, {"a": [None]}) in (True, False)
            assert selection.matches(dl, D, None) in (True, False)


@given(st.text(max_size=30))
def test_any_quoted_text_round_trips(text: str) -> None:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    term = parse(f"message~'{escaped}'").terms[0]
    assert term.values[0].text == text


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("category=processing or offset>=150", True),
        ("category=processing OR offset>150", False),
        ("not category=processing", True),
        ("NOT category=validation", False),
        ("not not category=validation", True),
        ("not(category=validation)", False),
        ("category=processing or category=schema and offset>1", False),
        ("category=validation or category=schema and offset>999", True),  # and binds tighter
        ("(category=validation or category=schema) and offset>999", False),
        ("(category=validation or category=schema) and not (offset>999)", True),
        ("((offset=150))", True),
        ("(type=pydantic_core.ValidationError)", True),
        ("message~'(nested)' or key=c-1", True),
        ("not (key=null or attempts<2)", True),
    ],
)
def test_or_not_and_parentheses(expr: str, expected: bool) -> None:
    assert sel(expr) is expected
    assert not parse(expr).conjunctive


def test_a_bare_value_keeps_a_parenthesis_outside_a_group() -> None:
    """`)` ends a bare value only inside parentheses: old expressions read as before."""
    dl = lazarus(message="timed out (after 3 tries)")
    assert sel("message~tries)", dl) and parse("message~tries)").conjunctive
    assert sel("(message~tries) and offset=150", dl)


def test_terms_of_any_expression_are_listed_in_order() -> None:
    selection = parse("not (state=replayed or value.a=1) and key=x")
    assert [t.field for t in selection.terms] == ["state", "value.a", "key"]
    assert selection.needs_payload and selection.needs_state


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("failed_at>=10s", True),  # failed_at 5_000, now 12_000: 7 s ago
        ("failed_at>=5s", False),
        ("failed_at<1970-01-01T00:00:06Z", True),
        ("ts=1970-01-01T00:00:06Z", True),
        ("age>6s", True),
        ("age>=8s", False),
        ("age<1m and age>1s", True),
        ("age=7s", True),
        ("age=null", False),
    ],
)
def test_times_take_durations_and_iso_times(expr: str, expected: bool) -> None:
    assert parse(expr, now_ms=12_000).matches(lazarus(), U, None) is expected


def held(rule: str | None) -> DeadLetter:
    record = SourceRecord("orders", 1, 77, 1_000, b"k", b"{}", ())
    failure = Failure(
        category=Category.HELD,
        error_type="lazarus.Held",
        message=f"held by rule {rule}: fraud review",
        failed_at_ms=5_000,
        pipeline="orders-app",
        policy_rule=None if rule is None else f"hold:{rule}@0123456789ab",
    )
    return from_record("orders.dlq", 0, 1, 6_000, b"k", b"{}", build_dead_letter(record, failure))


def test_rule_selects_held_dead_letters_by_rule_name() -> None:
    assert held("fraud-review").rule == "fraud-review"
    assert sel("rule=fraud-review", held("fraud-review"))
    assert not sel("rule=fraud", held("fraud-review"))
    assert sel("rule~fraud", held("fraud-review"))
    assert sel("rule=null", lazarus()) and sel("rule=null", spring())
    assert sel("rule=null", held(None))


def test_trace_selects_the_dead_letters_of_one_request() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace}-00f067aa0ba902b7-01".encode()
    failure = Failure(Category.VALIDATION, "E", "m", failed_at_ms=1, pipeline="p")

    def letter(headers: tuple[tuple[str, bytes | None], ...]) -> DeadLetter:
        rec = SourceRecord("orders", 0, 1, 1, b"k", b"v", headers)
        return from_record("dlq", 0, 1, 1, b"k", b"v", build_dead_letter(rec, failure))

    on_trace, other = letter((("traceparent", parent),)), letter(())
    assert on_trace.trace == trace and other.trace is None
    selection = parse(f"trace={trace}")
    assert selection.matches(on_trace, ReplayState.UNRESOLVED)
    assert not selection.matches(other, ReplayState.UNRESOLVED)


def test_trace_falls_back_to_the_header_the_pipeline_names(tmp_path: Path) -> None:
    """`correlation_header = "x-request-id"` in the config: a dead letter without a valid
    `traceparent` is on the request its named header says (a `traceparent` still wins)."""
    failure = Failure(Category.VALIDATION, "E", "m", failed_at_ms=1, pipeline="p")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"

    def letter(headers: tuple[tuple[str, bytes | None], ...]) -> DeadLetter:
        rec = SourceRecord("orders", 0, 1, 1, b"k", b"v", headers)
        return from_record("dlq", 0, 1, 1, b"k", b"v", build_dead_letter(rec, failure))

    named = letter((("x-request-id", b"req-42"),))
    config = tmp_path / "lazarus.toml"
    config.write_text(
        MINIMAL.replace(
            'pipeline = "orders"', 'correlation_header = "x-request-id"\npipeline = "orders"'
        )
    )
    both = letter(
        (("x-request-id", b"req-42"), ("traceparent", f"00-{trace}-00f067aa0ba902b7-01".encode()))
    )
    assert named.trace is None
    env = Env(config, None, (), {}, False, None)
    try:
        assert env.settings is not None  # a dlq command loads its config: the header is set
        assert named.trace == "req-42" and both.trace == trace
        assert parse("trace=req-42").matches(named, ReplayState.UNRESOLVED)
        assert not parse("trace=req-42").matches(both, ReplayState.UNRESOLVED)
    finally:
        use_correlation_header(None)
