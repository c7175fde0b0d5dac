"""reprocessor/fixes.py: declarative fix operations, fix functions, diffs. All pure."""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline.errors import ConfigError
from reprocessor.fixes import (
    FixError,
    FixOp,
    apply,
    apply_function,
    diff,
    load_fix_function,
    parse_ops,
    parse_ordered,
    parse_value,
    show_value,
    to_plain,
)


def event() -> dict[str, object]:
    return {
        "order_id": "o-1",
        "customer": {"id": "c-1", "email": "old@example.com"},
        "items": [{"sku": "s-1", "qty": "2"}, {"sku": "s-2", "qty": 1}],
        "amount": "12.5",
        "legacy": True,
        "note": None,
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12.5", 12.5),
        ("12", 12),
        ('"12"', "12"),
        ("true", True),
        ("null", None),
        ('{"a": [1]}', {"a": [1]}),
        ("x@y.z", "x@y.z"),
        ("'quoted'", "'quoted'"),
        ("", ""),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
    ],
)
def test_values_are_json_when_they_parse_as_json(text: str, value: object) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_parse_ordered_keeps_the_command_line_order() -> None:
    ops = parse_ordered(
        [
            ("cast", "amount:float"),
            ("set", "customer.email=x@y.z"),
            ("rename", "legacy=flags.legacy"),
            ("default", "channel=web"),
            ("delete", "note"),
        ]
    )
    assert [op.kind for op in ops] == ["cast", "set", "rename", "default", "delete"]
    assert ops[0] == FixOp("cast", "amount", to_type="float")
    assert ops[1] == FixOp("set", "customer.email", value="x@y.z")
    assert ops[2] == FixOp("rename", "legacy", new_path="flags.legacy")
    assert ops[3] == FixOp("default", "channel", value="web")
    assert ops[4] == FixOp("delete", "note")


def test_parse_ops_groups_by_kind() -> None:
    ops = parse_ops(cast=["a:int"], delete=["b"], set_=["c=1"], default=["d=2"], rename=["e=f"])
    assert [op.kind for op in ops] == ["set", "delete", "rename", "default", "cast"]
    assert parse_ops() == ()


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("set", "amount", "--set expects path=value"),
        ("default", "amount", "--default expects path=value"),
        ("rename", "a", "--rename expects old=new"),
        ("rename", "a=a", "old and new paths are the same"),
        ("rename", "a=", "is not a path"),
        ("set", "=5", "is not a path"),
        ("set", "a..b=5", "is not a path"),
        ("delete", "", "is not a path"),
        ("cast", "amount", "--cast expects path:type"),
        ("cast", "amount:decimal", "type must be one of int, float, str, bool"),
        ("cast", ":int", "is not a path"),
        ("upsert", "a=1", "unknown fix operation 'upsert'"),
    ],
)
def test_bad_syntax_is_a_one_line_value_error(kind: str, text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_ordered([(kind, text)])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_describe() -> None:
    ops = parse_ordered(
        [
            ("set", "customer.email=x@y.z"),
            ("set", "amount=12.5"),
            ("set", 'note="12"'),
            ("set", "flag=true"),
            ("set", 'tags=["a"]'),
            ("default", "channel=null"),
            ("delete", "legacy"),
            ("rename", "old=new"),
            ("cast", "amount:int"),
        ]
    )
    assert [op.describe() for op in ops] == [
        "set customer.email='x@y.z'",
        "set amount=12.5",
        "set note='12'",
        "set flag=true",
        'set tags=["a"]',
        "default channel=null",
        "delete legacy",
        "rename old=new",
        "cast amount:int",
    ]


def test_apply_in_order() -> None:
    ops = parse_ordered(
        [
            ("set", "customer.email=new@example.com"),
            ("cast", "amount:float"),
            ("cast", "items.0.qty:int"),
            ("rename", "legacy=flags.legacy"),
            ("default", "channel=web"),
            ("default", "note=none given"),
            ("default", "order_id=ignored"),
            ("delete", "items.1"),
            ("delete", "not.there"),
            ("set", "meta.source.system=erp"),
        ]
    )
    assert apply(ops, event()) == {
        "order_id": "o-1",
        "customer": {"id": "c-1", "email": "new@example.com"},
        "items": [{"sku": "s-1", "qty": 2}],
        "amount": 12.5,
        "note": "none given",
        "flags": {"legacy": True},
        "channel": "web",
        "meta": {"source": {"system": "erp"}},
    }


def test_order_matters() -> None:
    first = parse_ordered([("set", "a=1"), ("cast", "a:str")])
    second = parse_ordered([("cast", "b:str"), ("set", "b=1")])
    assert apply(first, {})["a"] == "1"
    assert apply(second, {"b": 0})["b"] == 1


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (("rename", "missing=x"), "rename missing=x: missing is missing"),
        (("rename", "order_id=customer"), "customer already exists"),
        (("cast", "missing:int"), "cast missing:int: missing is missing"),
        (("cast", "amount:int"), "cast amount:int: the value (a str) does not convert"),
        (("cast", "customer.email:float"), "(a str) does not convert"),
        (("cast", "note:str"), "the value (null) does not convert"),
        (("cast", "customer:str"), "(a dict) does not convert"),
        (("cast", "order_id:bool"), "does not convert"),
        (("set", "order_id.x=1"), "order_id is a str, not a record or list"),
        (("set", "items.5=1"), "list index 5 is out of range"),
        (("set", "items.x.sku=1"), "'x' is not a list index"),
    ],
)
def test_operations_that_cannot_apply_raise_fix_error(op: tuple[str, str], message: str) -> None:
    with pytest.raises(FixError) as caught:
        apply(parse_ordered([op]), event())
    assert message in str(caught.value)
    assert "old@example.com" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "to_type", "expected"),
    [
        ("12", "int", 12),
        (" -7 ", "int", -7),
        ("12.0", "int", 12),
        (12.0, "int", 12),
        (True, "int", 1),
        ("123456789012345678901234567890", "int", 123456789012345678901234567890),
        ("12.5", "float", 12.5),
        (3, "float", 3.0),
        (12.5, "str", "12.5"),
        (True, "str", "true"),
        (dt.date(2025, 1, 2), "str", "2025-01-02"),
        (decimal.Decimal("1.10"), "str", "1.10"),
        ("Yes", "bool", True),
        ("0", "bool", False),
        (1, "bool", True),
        (False, "bool", False),
    ],
)
def test_casts(value: object, to_type: str, expected: object) -> None:
    result = apply([FixOp("cast", "v", to_type=to_type)], {"v": value})["v"]
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "to_type"),
    [
        (12.5, "int"),
        ("1e400", "float"),
        ("nan", "float"),
        (True, "float"),
        (2, "bool"),
        ([1], "int"),
    ],
)
def test_inexact_casts_are_refused(value: object, to_type: str) -> None:
    with pytest.raises(FixError):
        apply([FixOp("cast", "v", to_type=to_type)], {"v": value})


def test_set_values_are_not_shared_between_records() -> None:
    ops = parse_ordered([("set", 'tags=["a"]')])
    first, second = apply(ops, {}), apply(ops, {})
    tags = first["tags"]
    assert isinstance(tags, list)
    tags.append("b")
    assert second["tags"] == ["a"] and ops[0].value == ["a"]


def test_pydantic_models_are_fixed_as_dicts() -> None:
    class Customer(BaseModel):
        email: str

    class Order(BaseModel):
        customer: Customer
        tags: tuple[str, ...]

    order = Order(customer=Customer(email="a@b.c"), tags=("x",))
    fixed = apply(parse_ordered([("set", "customer.email=d@e.f"), ("set", "tags.0=y")]), order)
    assert fixed == {"customer": {"email": "d@e.f"}, "tags": ["y"]}
    assert order.customer.email == "a@b.c"


def test_apply_refuses_an_event_that_is_not_a_record() -> None:
    with pytest.raises(FixError, match="the event is a list, not a record"):
        apply([], [1, 2])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3)
    ),
    max_leaves=12,
)
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "delete", "rename", "default", "cast"]),
        st.lists(st.sampled_from(["a", "b", "c", "0", "1"]), min_size=1, max_size=3).map(".".join),
        st.sampled_from(["1", '"x"', "null", "[1]", "a.b", "int", "str", "bool", "float"]),
    ),
    max_size=4,
)


@given(st.dictionaries(st.sampled_from("abc"), _JSON, max_size=3), _OPS)
def test_apply_never_mutates_its_input(
    original: dict[str, object], raw_ops: list[tuple[str, str, str]]
) -> None:
    before = copy.deepcopy(original)
    ops: list[FixOp] = []
    for kind, path, extra in raw_ops:
        text = {"delete": path, "cast": f"{path}:{extra}"}.get(kind, f"{path}={extra}")
        try:
            ops.extend(parse_ordered([(kind, text)]))
        except ValueError:
            continue
    try:
        result = apply(ops, original)
    except FixError:
        result = None
    assert original == before
    if result is not None:
        assert result is not original


def test_to_plain_copies_containers() -> None:
    class Item(BaseModel):
        sku: str
        at: dt.datetime

    when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    source = {"items": (Item(sku="s", at=when),), "nested": {"list": [1]}}
    plain = to_plain(source)
    assert plain == {"items": [{"sku": "s", "at": when}], "nested": {"list": [1]}}
    assert isinstance(plain, dict) and plain["nested"] is not source["nested"]
    assert to_plain(3) == 3


def test_diff_lines() -> None:
    before = event()
    after = apply(
        parse_ordered(
            [
                ("set", "customer.email=new@example.com"),
                ("cast", "items.0.qty:int"),
                ("delete", "legacy"),
                ("default", "channel=web"),
                ("delete", "items.1"),
                ("set", "items.0.tags=[1]"),
            ]
        ),
        before,
    )
    assert diff(before, after) == [
        "~ customer.email: 'old@example.com' -> 'new@example.com'",
        "~ items.0.qty: '2' -> 2",
        "+ items.0.tags: [1]",
        "- items.1",
        "- legacy",
        "+ channel: 'web'",
    ]
    assert diff(before, before) == []
    assert diff({"a": 1}, {"a": 1.0}) == ["~ a: 1 -> 1.0"]
    assert diff({"a": True}, {"a": 1}) == ["~ a: true -> 1"]
    assert diff({"a": []}, {"a": [None]}) == ["+ a.0: null"]
    assert diff(1, 2) == ["~ (event): 1 -> 2"]


def test_long_values_are_cut() -> None:
    shown = show_value("x" * 500)
    assert len(shown) == 120 and shown.endswith("…")


FIX_MODULE = """
def add_channel(event):
    event["channel"] = "web"


def replace(event):
    return {"replaced": True}


def explode(event):
    raise RuntimeError("bad\\nsecond line")


def not_a_dict(event):
    return [1]


class Fixes:
    @staticmethod
    def upper(event):
        return {**event, "order_id": event["order_id"].upper()}


NOT_CALLABLE = 3
"""


@pytest.fixture
def fix_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder of fix modules; sys.path and sys.modules are restored afterwards."""
    (tmp_path / "lazarus_test_fixes.py").write_text(textwrap.dedent(FIX_MODULE))
    (tmp_path / "lazarus_test_broken.py").write_text("import does_not_exist_anywhere\n")
    (tmp_path / "lazarus_test_raises.py").write_text("raise ValueError('at import')\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith("lazarus_test_")]:
        del sys.modules[name]


def test_fix_functions(fix_dir: Path) -> None:
    original = event()
    in_place = load_fix_function("lazarus_test_fixes:add_channel", search_paths=[fix_dir])
    assert apply_function(in_place, original)["channel"] == "web"
    assert "channel" not in original
    replace = load_fix_function("lazarus_test_fixes:replace")
    assert apply_function(replace, original) == {"replaced": True}
    upper = load_fix_function("lazarus_test_fixes:Fixes.upper")
    assert apply_function(upper, original)["order_id"] == "O-1"
    assert original == event()


def test_fix_function_failures_are_fix_errors(fix_dir: Path) -> None:
    explode = load_fix_function("lazarus_test_fixes:explode", search_paths=[fix_dir])
    with pytest.raises(FixError) as caught:
        apply_function(explode, event())
    assert str(caught.value) == "the fix function raised RuntimeError: bad"
    not_a_dict = load_fix_function("lazarus_test_fixes:not_a_dict")
    with pytest.raises(FixError, match="result is a list, not a record"):
        apply_function(not_a_dict, event())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lazarus_test_fixes", "is not of the form module:function"),
        (":f", "is not of the form module:function"),
        ("lazarus_test_nothing_here:f", "no module named 'lazarus_test_nothing_here'"),
        ("lazarus_test_fixes:missing", "has no 'missing'"),
        ("lazarus_test_fixes:NOT_CALLABLE", "is a int, not a function"),
        ("lazarus_test_broken:f", "no module named 'does_not_exist_anywhere'"),
        ("lazarus_test_raises:f", "importing 'lazarus_test_raises' failed: ValueError: at import"),
    ],
)
def test_load_fix_function_errors_are_config_errors(fix_dir: Path, spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_fix_function(spec, search_paths=[fix_dir])
    assert message in str(caught.value)
