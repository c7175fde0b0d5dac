"""Global options work before and after the command name, for `dlq` and for `lazarus`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import reprocessor.cli as dlq_cli
from lazarus import cli as _lazarus_commands  # noqa: F401 - adds its commands to the group
from pipeline.app.cli import cli as lazarus_cli
from pipeline.kafka.clients import KAFKA_LOG
from reprocessor.options import Env


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Env]:
    """`dlq inspect` selects nothing and remembers the Env it was given."""
    envs: list[Env] = []

    def items_of(env: Env, opts: dict[str, Any], *, decode: bool = False) -> Iterator[object]:
        envs.append(env)
        return iter(())

    monkeypatch.setattr(dlq_cli, "items_of", items_of)
    return envs


@pytest.mark.parametrize(
    "args",
    [
        ["--json", "-b", "h:1", "-t", "dlq", "inspect"],
        ["inspect", "--json", "-b", "h:1", "-t", "dlq"],
        ["-b", "h:1", "inspect", "--json", "--topic", "dlq"],
    ],
)
def test_dlq_globals_in_either_place(seen: list[Env], args: list[str]) -> None:
    result = CliRunner().invoke(dlq_cli.cli, [*args, "-X", "acks=all"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (env,) = seen
    assert env.as_json and env.bootstrap == "h:1" and env.topic_overrides == ("dlq",)
    assert env.conf()["acks"] == "all"
    assert result.output == ""  # --json streams lines: no table, no "0 dead letters" note


def test_dlq_global_after_the_command_wins(seen: list[Env]) -> None:
    args = ["-b", "first:1", "-t", "a", "-X", "x=1", "inspect", "-b", "second:2", "-X", "y=2"]
    result = CliRunner().invoke(dlq_cli.cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (env,) = seen
    assert env.bootstrap == "second:2" and env.topic_overrides == ("a",)
    assert (env.conf()["x"], env.conf()["y"]) == ("1", "2")


@pytest.mark.parametrize(
    ("args", "level"),
    [
        (["-b", "h:1", "-t", "dlq", "inspect"], logging.CRITICAL + 1),
        (["--debug", "-b", "h:1", "-t", "dlq", "inspect"], logging.DEBUG),
        (["-b", "h:1", "-t", "dlq", "inspect", "--debug"], logging.DEBUG),
    ],
)
def test_dlq_debug_shows_librdkafkas_log_in_either_place(
    seen: list[Env], args: list[str], level: int
) -> None:
    """Without --debug librdkafka's own lines are silenced (the one-line error says it all)."""
    logger = KAFKA_LOG
    before = logger.level
    try:
        result = CliRunner().invoke(dlq_cli.cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert logger.level == level
    finally:
        logger.setLevel(before)


def test_dlq_config_after_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    for args in (["stats", "--config", str(missing)], ["--config", str(missing), "stats"]):
        result = CliRunner().invoke(dlq_cli.cli, args)
        assert "no such configuration file" in str(result.exception), result.output


@pytest.mark.parametrize("command", ["worker", "topics", "sample"])
def test_lazarus_config_in_either_place(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nope.toml"
    for args in ([command, "--config", str(missing)], ["--config", str(missing), command]):
        result = CliRunner().invoke(lazarus_cli, args)
        assert result.exit_code != 2 or "No such option" not in result.output, result.output
        assert "no such configuration file" in str(result.exception), (args, result.output)
