"""Hold rules: loading and validating the TOML file, matching records, expiry, reloads."""

from __future__ import annotations

import builtins
import hashlib
from pathlib import Path
from typing import NoReturn

import pytest
from pydantic import BaseModel

from pipeline.core.holds import (
    FieldMatch,
    HeaderMatch,
    HoldRules,
    HoldRulesError,
    KeyMatch,
    RulesFile,
    expired,
    load_rules,
    match,
    policy_rule_header,
)
from pipeline.errors import ConfigError

EXPIRES = "2030-01-01T00:00:00Z"
EXPIRES_MS = 1_893_456_000_000
NOW_MS = EXPIRES_MS - 86_400_000  # a day before


def rule_toml(name: str, body: str, expires: str = EXPIRES) -> str:
    return f'[[hold]]\nname = "{name}"\nreason = "ticket"\nexpires = {expires}\n{body}\n'


def write(tmp_path: Path, text: str, name: str = "holds.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, *rules: str) -> HoldRules:
    return load_rules(write(tmp_path, "\n".join(rules)))


def first(
    rules: HoldRules,
    *,
    topic: str = "orders",
    key: bytes | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
    event: object | None = None,
    now_ms: int = NOW_MS,
) -> str | None:
    found = match(rules, topic=topic, key=key, headers=headers or [], event=event, now_ms=now_ms)
    return None if found is None else found.name


class Customer(BaseModel):
    id: str
    vip: bool = False


class Item(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    customer: Customer
    items: list[Item]
    total: float


ORDER = Order(
    customer=Customer(id="c-42"), items=[Item(sku="a", qty=1), Item(sku="b", qty=42)], total=9.5
)


# --- loading -----------------------------------------------------------------------------------


def test_loads_each_predicate_kind(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        rule_toml("by-field", 'topic = "orders"\nfield = "customer.id"\nequals = "c-42"'),
        rule_toml("by-key", 'key = "order-17"'),
        rule_toml("by-header", 'header = "tenant"\nin = ["x", "y"]'),
    )
    assert [r.predicate for r in rules.rules] == [
        FieldMatch(("customer", "id"), ("c-42",)),
        KeyMatch(b"order-17"),
        HeaderMatch("tenant", ("x", "y")),
    ]
    assert [r.topic for r in rules.rules] == ["orders", None, None]
    assert {r.expires_at_ms for r in rules.rules} == {EXPIRES_MS}
    assert rules.rules[0].reason == "ticket"


def test_expiry_offsets_are_honoured(tmp_path: Path) -> None:
    rules = load(tmp_path, rule_toml("r", 'key = "k"', expires="2030-01-01T01:00:00+01:00"))
    assert rules.rules[0].expires_at_ms == EXPIRES_MS


def test_version_is_the_sha256_prefix_of_the_bytes_and_changes_with_the_file(
    tmp_path: Path,
) -> None:
    text = rule_toml("r", 'key = "k"')
    path = write(tmp_path, text)
    before = load_rules(path)
    assert before.version == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert before.source == path
    path.write_text(text + "# a comment\n", encoding="utf-8")
    assert load_rules(path).version != before.version


def test_empty_rules_and_an_empty_file_agree(tmp_path: Path) -> None:
    from_file = load_rules(write(tmp_path, ""))
    assert from_file.rules == HoldRules.empty().rules == ()
    assert from_file.version == HoldRules.empty().version


def test_an_invalid_file_lists_every_problem_in_one_message(tmp_path: Path) -> None:
    text = (
        "colour = 1\n"
        + rule_toml("a", 'field = "customer.id"', expires="2030-01-01T00:00:00")
        + '[[hold]]\nname = "a"\nreason = 3\nkey = "k"\nequals = "x"\nbogus = true\n'
        + rule_toml("c", 'header = "tenant"\nequals = 4\nfield = "_secret"')
        + rule_toml("d", 'field = "x"\nin = []')
    )
    with pytest.raises(HoldRulesError) as info:
        load_rules(write(tmp_path, text))
    lines = str(info.value).splitlines()
    assert lines[0].startswith("invalid hold rules ")
    assert lines[1:] == [
        "colour: extra inputs are not permitted",
        "hold[1]: a field rule needs exactly one of equals, in",
        "hold[1].expires: input should have timezone info",
        "hold[2]: a key rule takes its value in `key`; remove equals/in",
        "hold[2].name: duplicate of hold[1]",
        "hold[2].reason: input should be a valid string",
        "hold[2].expires: field required",
        "hold[2].bogus: extra inputs are not permitted",
        "hold[3].field: path segments must be non-empty and not start with '_'",
        "hold[3]: exactly one of field, key, header is required (found: field, header)",
        "hold[4].in: list should have at least 1 item after validation, not 0",
    ]
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('field = "a"\nin = ["x", 2030-01-01T00:00:00Z]', "hold[1].in[2]: must be a string"),
        ('field = "a"\nequals = nan', "hold[1].equals: must be a string"),
        ('header = "h"\nin = ["x", 1]', "hold[1]: a header rule compares UTF-8 text"),
        ('field = "a..b"\nequals = 1', "hold[1].field: path segments must be non-empty"),
        ("key = 17", "hold[1].key: input should be a valid string"),
        ('key = "k"\ntopic = ""', "hold[1].topic: string should have at least 1 character"),
    ],
)
def test_each_problem_names_its_field(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(HoldRulesError) as info:
        load(tmp_path, rule_toml("r", body))
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_a_name_must_be_usable_in_the_policy_header(tmp_path: Path) -> None:
    with pytest.raises(HoldRulesError, match=r"hold\[1\]\.name: string should match pattern"):
        load(tmp_path, rule_toml("a:b@c", 'key = "k"'))


def test_unreadable_and_unparsable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid UTF-8 TOML"):
        load_rules(write(tmp_path, "[[hold]\nname = "))
    bad_utf8 = tmp_path / "latin1.toml"
    bad_utf8.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid UTF-8 TOML"):
        load_rules(bad_utf8)


def test_config_text_is_never_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("evaluated config text")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    payload = "__import__('os').system('touch pwned')"
    rules = load(tmp_path, rule_toml("code", f'field = "note"\nequals = "{payload}"'))
    assert first(rules, event={"note": payload}) == "code"  # compared as text, nothing more
    assert first(rules, event={"note": "other"}) is None
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(HoldRulesError, match="not start with '_'"):
        load(tmp_path, rule_toml("dunder", 'field = "__class__.__init__"\nequals = "x"'))


# --- matching ----------------------------------------------------------------------------------


def test_key_rules_match_the_exact_utf8_key(tmp_path: Path) -> None:
    rules = load(tmp_path, rule_toml("k", 'key = "örder-17"'))
    assert first(rules, key="örder-17".encode()) == "k"
    assert first(rules, key=b"order-17") is None
    assert first(rules, key=None) is None


def test_header_rules_use_the_last_occurrence_as_utf8(tmp_path: Path) -> None:
    rules = load(tmp_path, rule_toml("h", 'header = "tenant"\nin = ["x", "zürich"]'))
    assert first(rules, headers=[("tenant", b"x")]) == "h"
    assert first(rules, headers=[("tenant", "zürich".encode())]) == "h"
    assert first(rules, headers=[("tenant", b"x"), ("tenant", b"y")]) is None
    assert first(rules, headers=[("tenant", b"y"), ("tenant", b"x")]) == "h"
    assert first(rules, headers=[("Tenant", b"x")]) is None
    assert first(rules, headers=[("tenant", None)]) is None
    assert first(rules, headers=[("tenant", b"\xff")]) is None


@pytest.mark.parametrize(
    ("path", "toml_value", "event", "hit"),
    [
        ("customer.id", '"c-42"', {"customer": {"id": "c-42"}}, True),
        ("customer.id", '"c-42"', {"customer": {"id": "c-43"}}, False),
        ("customer.id", '"c-42"', ORDER, True),
        ("items.1.qty", "42", ORDER, True),
        ("items.1.sku", '"b"', {"items": [{"sku": "a"}, {"sku": "b"}]}, True),
        ("items.2.sku", '"b"', ORDER, False),  # index past the end
        ("items.x.sku", '"b"', ORDER, False),  # not an index
        ("customer.name", '"c-42"', ORDER, False),  # missing attribute
        ("customer.id.deeper", '"c-42"', ORDER, False),  # through a scalar
        ("customer.vip", "false", ORDER, True),
        ("total", "9.5", ORDER, True),
        ("n", "42", {"n": 42}, True),
        ("n", "42", {"n": 42.0}, True),  # numbers compare numerically
        ("n", "42", {"n": "42"}, False),  # but never with text
        ("n", '"42"', {"n": 42}, False),
        ("n", "1", {"n": True}, False),  # nor with booleans
        ("n", "true", {"n": 1}, False),
        ("n", "1", {"n": None}, False),
        ("n", "1", {"n": [1]}, False),
        ("0.id", '"c-1"', [{"id": "c-1"}], True),
    ],
)
def test_field_paths_and_json_scalar_equality(
    tmp_path: Path, path: str, toml_value: str, event: object, hit: bool
) -> None:
    rules = load(tmp_path, rule_toml("f", f'field = "{path}"\nequals = {toml_value}'))
    assert (first(rules, event=event) == "f") is hit


def test_in_matches_any_listed_value(tmp_path: Path) -> None:
    rules = load(tmp_path, rule_toml("f", 'field = "customer.id"\nin = ["c-42", "c-43", 7]'))
    assert first(rules, event={"customer": {"id": "c-43"}}) == "f"
    assert first(rules, event={"customer": {"id": 7}}) == "f"
    assert first(rules, event={"customer": {"id": "c-44"}}) is None


def test_undecodable_records_match_key_and_header_rules_only(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        rule_toml("f", 'field = "customer.id"\nequals = "c-42"'),
        rule_toml("k", 'key = "k1"'),
    )
    assert first(rules, event=None, key=b"k1") == "k"
    assert first(rules, event=None, key=b"k2") is None


def test_topic_restriction(tmp_path: Path) -> None:
    rules = load(tmp_path, rule_toml("k", 'topic = "orders"\nkey = "k1"'))
    assert first(rules, topic="orders", key=b"k1") == "k"
    assert first(rules, topic="payments", key=b"k1") is None


def test_the_first_matching_rule_in_file_order_wins(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        rule_toml("narrow", 'topic = "payments"\nkey = "k1"'),
        rule_toml("first", 'header = "tenant"\nequals = "x"'),
        rule_toml("second", 'key = "k1"'),
    )
    assert first(rules, key=b"k1", headers=[("tenant", b"x")]) == "first"
    assert first(rules, key=b"k1") == "second"


def test_a_rule_at_exactly_its_expiry_does_not_match(tmp_path: Path) -> None:
    rules = load(tmp_path, rule_toml("k", 'key = "k1"'))
    assert first(rules, key=b"k1", now_ms=EXPIRES_MS - 1) == "k"
    assert first(rules, key=b"k1", now_ms=EXPIRES_MS) is None
    assert expired(rules, EXPIRES_MS - 1) == []
    assert [r.name for r in expired(rules, EXPIRES_MS)] == ["k"]


def test_policy_rule_header(tmp_path: Path) -> None:
    rules = load(tmp_path, rule_toml("fraud-review-c42", 'key = "k1"'))
    assert policy_rule_header(rules.rules[0], rules) == f"hold:fraud-review-c42@{rules.version}"


# --- RulesFile ---------------------------------------------------------------------------------


def test_reload_picks_up_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, rule_toml("a", 'key = "k"'))
    rules_file = RulesFile(path)
    path.write_text(rule_toml("b", 'key = "k"'), encoding="utf-8")
    rules, error = rules_file.reload()
    assert error is None
    assert [r.name for r in rules.rules] == ["b"] == [r.name for r in rules_file.current.rules]


def test_reload_keeps_the_old_rules_on_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, rule_toml("a", 'key = "k"'))
    rules_file = RulesFile(path)
    before = rules_file.current
    path.write_text(rule_toml("b", 'key = "k"\nbogus = 1\nequals = "x"'), encoding="utf-8")
    rules, error = rules_file.reload()
    assert rules is before is rules_file.current
    assert error is not None and "\n" not in error
    assert "hold[1].bogus: extra inputs are not permitted" in error
    assert f"keeping version {before.version}" in error
    path.unlink()
    rules, error = rules_file.reload()
    assert rules is before and error is not None and "cannot read" in error


def test_a_bad_file_at_start_up_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        RulesFile(write(tmp_path, "[[hold]]\n"))


def test_expired_since_last_reports_each_rule_once(tmp_path: Path) -> None:
    soon, later = "2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z"
    path = write(tmp_path, rule_toml("a", 'key = "a"', soon) + rule_toml("b", 'key = "b"', later))
    rules_file = RulesFile(path)
    assert rules_file.expired_since_last(NOW_MS) == []
    assert [r.name for r in rules_file.expired_since_last(EXPIRES_MS)] == ["a"]
    assert rules_file.expired_since_last(EXPIRES_MS + 1) == []
    rules_file.reload()  # the same rules again: nothing new to report
    assert rules_file.expired_since_last(EXPIRES_MS + 2) == []
    assert [r.name for r in rules_file.expired_since_last(EXPIRES_MS + 86_400_000)] == ["b"]
    assert rules_file.expired_since_last(EXPIRES_MS + 86_400_001) == []


def test_an_extended_rule_is_reported_again_when_it_expires_again(tmp_path: Path) -> None:
    path = write(tmp_path, rule_toml("a", 'key = "a"'))
    rules_file = RulesFile(path)
    assert len(rules_file.expired_since_last(EXPIRES_MS)) == 1
    path.write_text(rule_toml("a", 'key = "a"', "2030-01-02T00:00:00Z"), encoding="utf-8")
    rules_file.reload()
    assert rules_file.expired_since_last(EXPIRES_MS + 1) == []
    assert len(rules_file.expired_since_last(EXPIRES_MS + 86_400_000)) == 1
