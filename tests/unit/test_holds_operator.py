"""What an operator sees of hold rules: the rule a held dead letter names, when it expires (in
`dlq.error.details`, written by the handler), and `lazarus holds --check`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pipeline.app.cli import cli
from pipeline.core.contract import ERROR_DETAILS
from pipeline.core.holds import describe, held_by, hold_details, parse_rules, policy_rule_header
from tests.unit.test_handler import NOW, dead_letter, hold_rules, make, never_called, record
from tests.unit.test_settings import MINIMAL

RULES = b"""
[[hold]]
name = "fraud-review"
reason = "customer under fraud review"
expires = 2099-12-01T00:00:00Z
field = "customer.id"
in = ["c-42", "c-43"]

[[hold]]
name = "old-key"
reason = "x"
expires = 2020-12-01T00:00:00Z
key = "k-1"
topic = "orders"

[[hold]]
name = "tenant"
reason = "y"
expires = 2099-01-01T12:30:00+02:00
header = "tenant"
equals = "acme"
"""


def test_the_rule_name_comes_back_from_the_policy_rule_header() -> None:
    rules = parse_rules(RULES, Path("holds.toml"))
    header = policy_rule_header(rules.rules[0], rules)
    assert held_by(header) == "fraud-review"
    assert held_by("hold:a@b@0123") == "a@b"
    assert held_by(None) is None and held_by("breaker:open") is None and held_by("hold:@x") is None


def test_each_rule_kind_is_described_as_the_file_says_it() -> None:
    rules = parse_rules(RULES, Path("holds.toml")).rules
    assert [describe(rule) for rule in rules] == [
        "field customer.id in ['c-42', 'c-43']",
        "key 'k-1' on topic orders",
        "header tenant = 'acme'",
    ]


def test_details_say_when_the_rule_expires_in_utc() -> None:
    rule = parse_rules(RULES, Path("holds.toml")).rules[2]
    (details,) = hold_details(rule)
    assert details == {
        "rule": "tenant",
        "expires": "2099-01-01T10:30:00Z",
        "expires_at_ms": str(rule.expires_at_ms),
    }


def test_a_held_dead_letter_carries_its_rules_expiry_in_its_details() -> None:
    rules = hold_rules('field = "customer.id"\nequals = "c-1"', name="bad-customer")
    out, meta = dead_letter(make(holds=rules, processor=never_called).handle(record(), 1, NOW, NOW))
    raw = next(value for name, value in out.headers if name == ERROR_DETAILS)
    assert raw is not None
    (details,) = json.loads(raw)
    assert details["rule"] == "bad-customer"
    assert details["expires"] == "2999-01-01T00:00:00Z"
    assert meta.details == (details,)


def test_holds_check_lists_active_and_expired_rules(tmp_path: Path) -> None:
    path = tmp_path / "holds.toml"
    path.write_bytes(RULES)
    result = CliRunner().invoke(cli, ["holds", "--check", "--file", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "active   fraud-review  until 2099-12-01T00:00:00Z  field customer.id in ['c-42', 'c-43']"
    )
    assert lines[1].startswith("expired  old-key  until 2020-12-01T00:00:00Z")
    assert lines[2].startswith("active   tenant  until 2099-01-01T10:30:00Z")
    assert lines[3].endswith(
        "valid, version " + parse_rules(RULES, path).version + ", 2 of 3 active"
    )


def test_holds_check_reads_the_configs_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    bad = tmp_path / "holds.toml"
    bad.write_text('[[hold]]\nname = "x"\n')
    config = tmp_path / "lazarus.toml"
    config.write_text(MINIMAL + '\n[policy]\nholds = "holds.toml"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "holds", "--check"])
    assert result.exit_code != 0
    assert "exactly one of field, key, header is required" in str(result.exception)
    assert "hold[1].reason" in str(result.exception)
