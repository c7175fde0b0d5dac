"""Both CLIs abused as an operator under stress would, without a broker: every case ends in one
line on stderr and the documented exit code (2 usage or configuration, 1 run time, 130 Ctrl-C,
143 SIGTERM), never a traceback, a RecursionError or a replay of everything."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError, KafkaException

from pipeline.app import cli_support
from pipeline.errors import ConfigError, RuntimeFailure
from reprocessor import fixes, plans, selection
from reprocessor.index import DlqIndex
from reprocessor.ledger import Plan
from tests.dlq_kit import dlq

UNREACHABLE = ("-b", "127.0.0.1:1", "-t", "orders.dlq")
"""No broker answers there: a case that reaches Kafka would end in exit 1 after the client's
deadline, so each case below that exits 2 proves it was refused before any I/O."""


def one_error_line(stderr: str, prog: str = "dlq") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{prog}: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- --where ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "(" * 2000 + "category=validation" + ")" * 2000,
        "not " * 5000 + "category=validation",
        "(not " * 1000 + "category=validation" + ")" * 1000,
    ],
)
def test_deeply_nested_where_is_a_selection_error_not_a_recursion_error(expr: str) -> None:
    with pytest.raises(selection.SelectionError, match="nested more than"):
        selection.parse(expr)
    result = dlq(*UNREACHABLE, "stats", "--where", expr)
    assert result.code == 2, result.output
    assert "RecursionError" not in one_error_line(result.stderr)


def test_where_nested_up_to_the_limit_still_parses() -> None:
    depth = selection.MAX_NESTING
    nested = selection.parse("(" * depth + "category=validation" + ")" * depth)
    negated = selection.parse("not " * depth + "category=validation")
    assert nested.terms and negated.terms


@pytest.mark.parametrize("command", [("stats",), ("replay", "-y"), ("discard", "--reason", "x")])
@pytest.mark.parametrize("expr", ["", "   "])
def test_an_empty_where_is_refused_not_taken_for_everything(
    command: tuple[str, ...], expr: str
) -> None:
    result = dlq(*UNREACHABLE, *command, "--where", expr)
    assert result.code == 2, result.output
    assert "--where is empty" in one_error_line(result.stderr)


# -- stored plans ----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--plan", "--resume"])
def test_an_empty_plan_id_is_refused_not_a_new_replay_of_everything(flag: str) -> None:
    result = dlq(*UNREACHABLE, "replay", "-y", flag, "")
    assert result.code == 2, result.output
    assert "is not a plan id" in one_error_line(result.stderr)


def test_plan_and_resume_together_even_empty_contradict() -> None:
    result = dlq(*UNREACHABLE, "replay", "-y", "--plan", "", "--resume", "")
    assert result.code == 2, result.output
    assert "contradict" in one_error_line(result.stderr)


def _plan_json(**changes: object) -> str:
    data: dict[str, Any] = json.loads(
        Plan("r-1", "orders.dlq", 1, "ops", "to", "out", ()).to_json()
    )
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"selected": "five"},
        {"refused": None},
        {"force": "yes"},
        {"created_ms": True},
        {"target_mode": "nowhere"},
        {"target_topic": 5},
        {"fix": ["set a=1"]},
        {"fix": [["set", 1]]},
        {"coordinates": [1, 2]},
        {"coordinates": "orders.dlq/0/1"},
        {"surprise": 1},
    ],
)
def test_a_plan_json_edited_into_wrong_types_is_unreadable(
    tmp_path: Path, changes: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        Plan.from_json(_plan_json(**changes))
    (tmp_path / "r-1").mkdir()
    (tmp_path / "r-1" / "plan.json").write_text(_plan_json(**changes))
    with pytest.raises(ConfigError, match="is unreadable"):
        plans.load(tmp_path, "r-1")


def test_a_plan_json_as_written_reads_back() -> None:
    plan = Plan(
        "r-1", "orders.dlq", 1, "ops", "", None, ("orders.dlq/0/1",), (("set", "a=1"),), "m:f"
    )
    assert Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    "line",
    [
        "garbage\n",
        '{"o":0,"h":"","f":"ab',  # cut short
        '{"o":"x","h":"","f":"ab","t":1}\n',
        '{"o":1.5,"h":"","f":"ab","t":1}\n',
        '{"h":"","f":"ab","t":1}\n',
        "[1, 2]\n",
    ],
)
def test_a_damaged_plan_line_is_a_configuration_error_naming_the_file(
    tmp_path: Path, line: str
) -> None:
    folder = tmp_path / "r-1"
    folder.mkdir()
    plan = Plan("r-1", "orders.dlq", 1, "ops", "to", "out", ())
    good = '{"o":0,"h":"","f":"ab","t":1}\n'
    (folder / "p0.jsonl").write_text(good + line)
    stored = plans.StoredPlan(plan, folder)
    for read in (lambda: list(stored.entries(0)), lambda: list(stored.blocks(0))):
        with pytest.raises(ConfigError, match=r"p0\.jsonl is damaged at line 2"):
            read()


def test_a_damaged_refusals_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "refused.jsonl").write_text('{"c": "orders.dlq/0/1", "r": "x"}\n{"c":\n')
    stored = plans.StoredPlan(Plan("r-1", "orders.dlq", 1, "ops", "to", "out", ()), tmp_path)
    with pytest.raises(ConfigError, match=r"refused\.jsonl is damaged at line 2"):
        list(stored.refused())


# -- --with ----------------------------------------------------------------------------------


def test_a_fix_module_that_exits_while_imported_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "h28_exits.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(ConfigError, match="importing 'h28_exits' failed: SystemExit"):
        fixes.load_fix_function("h28_exits:fix", search_paths=[tmp_path])


def test_a_fix_function_that_exits_fails_its_record_only() -> None:
    def leaves(_event: dict[str, object]) -> NoReturn:
        sys.exit(4)

    with pytest.raises(fixes.FixError, match="raised SystemExit"):
        fixes.apply_function(leaves, {"a": 1})


# -- the index is a cache ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [b"", b"not a database at all", b"SQLite format 3\x00" + b"\xff" * 5000],
)
def test_a_damaged_index_file_is_rebuilt(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "orders.dlq.sqlite3"
    DlqIndex(path, "orders.dlq", "c1").close()
    good = path.read_bytes()
    path.write_bytes(damage or good[:4096])
    with DlqIndex(path, "orders.dlq", "c1") as index:
        assert index.partitions() == []
        assert index.meta() == {}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_an_index_that_cannot_be_opened_for_another_reason_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "orders.dlq.sqlite3"
    path.mkdir()  # a folder where the file should be: not SQLite's to judge, nor ours to delete
    with pytest.raises(ConfigError, match="cannot open the DLQ index"):
        DlqIndex(path, "orders.dlq", "c1")
    assert path.is_dir()


def test_rows_left_unfinished_after_the_index_closed_raise_nothing(tmp_path: Path) -> None:
    unraisable: list[object] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        index = DlqIndex(tmp_path / "i.sqlite3", "orders.dlq", "c1")
        rows = index.rows("SELECT 1 UNION ALL SELECT 2")
        assert isinstance(rows, Generator)  # what `close()` finalizes
        assert next(rows) == (1,)
        index.close()  # `inspect -n 1`: the index closed before the abandoned generator
        rows.close()
        del rows
    finally:
        sys.unraisablehook = hook
    assert unraisable == []


# -- exit codes and one line -------------------------------------------------------------------


def _run(command: click.Command, prog: str = "dlq") -> tuple[int, str]:
    runner = CliRunner()
    with runner.isolation() as (_out, err, _):
        with pytest.raises(SystemExit) as exited:
            cli_support.run(command, prog, [])
        code = exited.value.code
    return int(code if isinstance(code, int) else 1), err.getvalue().decode()


def _failing(exc: BaseException) -> click.Command:
    @click.command()
    def command() -> None:
        raise exc

    return command


def test_a_kafka_exception_that_reaches_the_top_is_one_plain_line() -> None:
    error = KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Broker transport failure")
    code, stderr = _run(_failing(KafkaException(error)), "lazarus")
    assert code == 1
    line = one_error_line(stderr, "lazarus")
    assert line == "lazarus: error: Kafka: Failed to get metadata: Broker transport failure"


@pytest.mark.parametrize(
    "exc",
    [
        NotADirectoryError(20, "Not a directory", "/state/ledgers"),
        PermissionError(13, "Permission denied", "/state/runs"),
        OSError(28, "No space left on device", "/state/index/x.sqlite3"),
    ],
)
def test_a_state_path_that_cannot_be_used_is_a_configuration_error(exc: OSError) -> None:
    code, stderr = _run(_failing(exc))
    assert code == 2
    line = one_error_line(stderr)
    assert line == f"dlq: error: cannot use {exc.filename}: {exc.strerror}"


def test_sigterm_stops_a_command_cleanly_with_143_and_restores_the_handler() -> None:
    cleaned: list[str] = []

    class Unhandled(Exception):
        pass

    def unhandled(_signum: int, _frame: object) -> None:
        raise Unhandled  # what this test's SIGTERM would do if `run` installed nothing

    @click.command()
    def command() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
            raise AssertionError("SIGTERM did not stop the command")
        finally:
            cleaned.append("finally")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        code, stderr = _run(command)
        assert signal.getsignal(signal.SIGTERM) == unhandled
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == cli_support.EXIT_TERMINATED == 143
    assert cleaned == ["finally"]
    assert stderr.strip() == "dlq: terminated"


def test_ctrl_c_still_exits_130() -> None:
    code, stderr = _run(_failing(KeyboardInterrupt()))
    assert code == 130
    assert stderr.strip() == "dlq: interrupted"


@pytest.fixture
def kafka_log_level() -> Iterator[None]:
    from pipeline.kafka.clients import KAFKA_LOG

    level = KAFKA_LOG.level
    yield
    KAFKA_LOG.setLevel(level)


def test_lazarus_topics_prints_the_error_not_librdkafka_s_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kafka_log_level: None
) -> None:
    from lazarus import cli as _lazarus_commands  # noqa: F401 - adds its commands to the group
    from pipeline.app import build
    from pipeline.app.cli import cli
    from pipeline.kafka.clients import KAFKA_LOG

    def unreachable(_settings: object) -> None:
        for attempt in range(3):  # what librdkafka logs while it retries
            KAFKA_LOG.error(
                "FAIL [rdkafka#producer-1]: Connect to 127.0.0.1:1 failed (%d)", attempt
            )
        raise RuntimeFailure("cannot reach the Kafka cluster: Failed to get metadata")

    monkeypatch.setattr(build, "check_topics", unreachable)
    config = Path(__file__).resolve().parents[2] / "examples" / "orders.toml"
    runner = CliRunner()
    last_resort = logging.lastResort
    with runner.isolation() as (_out, err, _):
        logging.lastResort = logging.StreamHandler(sys.stderr)  # where unhandled records go
        try:
            with pytest.raises(SystemExit) as exited:
                cli_support.run(cli, "lazarus", ["topics", "--config", str(config)])
        finally:
            logging.lastResort = last_resort
        stderr = err.getvalue().decode()
    assert exited.value.code == 1
    assert "FAIL" not in stderr
    assert one_error_line(stderr, "lazarus").endswith("Failed to get metadata")


# -- empty and contradictory values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("-b", "", "-t", "orders.dlq", "stats"), "--bootstrap is empty"),
        (("-b", " ", "-t", "orders.dlq", "inspect"), "--bootstrap is empty"),
        ((*UNREACHABLE, "replay", "-y", "--to", ""), "--to is empty"),
        ((*UNREACHABLE, "replay", "-y", "--plan", "r-1", "--to", " "), "--to is empty"),
        ((*UNREACHABLE, "stats", "--since", "2h", "--until", "3h"), "is later than --until"),
        ((*UNREACHABLE, "discard", "--reason", "x", "--since", "1d", "--until", "2d"), "later"),
    ],
)
def test_empty_or_contradictory_values_are_refused_before_any_io(
    args: tuple[str, ...], said: str
) -> None:
    result = dlq(*args)
    assert result.code == 2, result.output
    assert said in one_error_line(result.stderr)


def test_lazarus_without_any_configuration_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lazarus import cli as _lazarus_commands  # noqa: F401 - adds its commands to the group
    from pipeline.app.cli import cli

    for name in list(os.environ):
        if name.startswith("LAZARUS_"):
            monkeypatch.delenv(name)
    for command in (["worker"], ["topics"], ["sample"], ["holds"]):
        runner = CliRunner()
        with runner.isolation() as (_out, err, _):
            with pytest.raises(SystemExit) as exited:
                cli_support.run(cli, "lazarus", command)
            stderr = err.getvalue().decode()
        assert exited.value.code == 2, stderr
        assert "give --config FILE" in one_error_line(stderr, "lazarus")


@pytest.mark.parametrize("host", ["127.0.0.1", "999.1.1.1"])
def test_exporter_that_cannot_serve_is_one_line_exit_2(host: str) -> None:
    import socket
    import subprocess

    config = Path(__file__).resolve().parents[2] / "examples" / "orders.toml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if host == "127.0.0.1" else 0
        serving = ("--host", host, "--port", str(port))
        done = subprocess.run(
            [sys.executable, "-m", "reprocessor.cli", "exporter", "-c", str(config), *serving],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"cannot serve on {host}:{port}: " in one_error_line(done.stderr)


def test_an_address_the_worker_cannot_listen_on_is_a_configuration_error() -> None:
    import errno

    code, stderr = _run(_failing(OSError(errno.EADDRINUSE, "Address already in use")), "lazarus")
    assert code == 2
    assert "cannot listen: Address already in use" in one_error_line(stderr, "lazarus")
    code, stderr = _run(_failing(OSError(errno.ECONNRESET, "Connection reset by peer")))
    assert code == 1  # any other OSError stays a run-time failure
    assert "unexpected" in one_error_line(stderr)


# -- terminal escape sequences from records ------------------------------------------------------

EVIL = "\x1b[2J\x1b[31mred\x1b]0;title\x07\r\x9b1m"


def test_render_escape_shows_control_characters_never_sends_them() -> None:
    from reprocessor.render import escape

    shown = escape(f"bad {EVIL} [bold]x[/bold]\tand\nmore")
    assert not any(ord(c) < 0x20 and c not in "\t\n" for c in shown), repr(shown)
    assert "\x7f" not in shown and "\x9b" not in shown
    assert "\\x1b[2J" in shown and "\\[bold]" in shown  # still rich markup escaped
    assert "\tand\nmore" in shown


def test_an_error_line_never_carries_a_control_character() -> None:
    code, stderr = _run(_failing(RuntimeFailure(f"the fix function raised ValueError: {EVIL}")))
    assert code == 1
    line = one_error_line(stderr)
    assert not {"\x1b", "\x07", "\r", "\x9b"} & set(stderr)
    assert "\\x1b[2J" in line and "\\x9b1m" in line


@pytest.mark.parametrize("rate", ["1e-300/s", "0.0005", "0", "-5/s", "nan", "inf", "fast"])
def test_a_rate_no_replay_could_keep_is_refused_before_any_io(rate: str) -> None:
    result = dlq(*UNREACHABLE, "replay", "-y", "--to", "out", "--rate", rate)
    assert result.code == 2, result.output
    assert "--rate" in one_error_line(result.stderr)


# -- --debug ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--debug", *UNREACHABLE, "stats", "--bogus"),
        (*UNREACHABLE, "stats", "--bogus", "--debug"),
        ("--debug", *UNREACHABLE, "stats", "--where", ""),
    ],
)
def test_debug_adds_the_traceback_and_keeps_the_exit_code(args: tuple[str, ...]) -> None:
    """`--debug` adds the traceback to the error line; it used to re-raise, so a usage error
    exited 1 (Python's code for an uncaught exception) with no `dlq: error:` line."""
    result = dlq(*args)
    assert result.code == 2, result.output
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("dlq: error: ")


# -- the confirmation prompt -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "agreed"),
    [(b"y\n", True), (b"YES\n", True), (b"n\n", False), (b"\n", False), (b"", False)],
)
def test_the_confirmation_reads_a_real_file_descriptor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], typed: bytes, agreed: bool
) -> None:
    """`cli_support.confirm` waits in short selects on a real descriptor (so a SIGTERM that
    arrives as the prompt appears is acted on); yes goes on, anything else aborts."""
    read, write = os.pipe()
    os.write(write, typed)
    os.close(write)
    with os.fdopen(read) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        if agreed:
            cli_support.confirm("Replay 3 dead letters?")
        else:
            with pytest.raises(click.Abort):
                cli_support.confirm("Replay 3 dead letters?")
    assert capsys.readouterr().err.startswith("Replay 3 dead letters? [y/N]: ")


def test_the_confirmation_asks_again_after_an_answer_it_does_not_understand(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    read, write = os.pipe()
    os.write(write, b"maybe\ny\n")
    os.close(write)
    with os.fdopen(read) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        cli_support.confirm("Go?")
    assert capsys.readouterr().err.count("Go? [y/N]: ") == 2
