"""What README.md shows, checked against what the code and the cited results say: the `--where`
examples parse and select what the text says, the hold-rules example checks as documented, the
options it calls global are global, and the Performance section's figures are the ones in the
`bench/results/*.json` files it cites."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest

from lazarus.cli import main as lazarus_main
from pipeline.errors import EXIT_OK, EXIT_USAGE, Category
from reprocessor.cli import cli as dlq
from reprocessor.deadletters import ReplayState
from reprocessor.selection import parse
from tests.unit.test_selection import lazarus as dead_letter

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
U = ReplayState.UNRESOLVED


def section(title: str) -> str:
    """The README section under the `## title` heading, up to the next `## ` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 4)
    return README[start : end if end != -1 else len(README)]


def where_examples() -> list[str]:
    """Every `--where` value the README quotes, as the shell would pass it, placeholders left out
    (`<top cause>`, `...`)."""
    text = README.replace("\n", " ")  # code spans may wrap lines
    found = re.findall(r"--where (\"[^\"]*\"|'[^']*'|[^\s`]+)", text)
    values = [shlex.split(raw)[0] for raw in found]
    return sorted({v for v in values if "<" not in v and "..." not in v})


def test_the_readme_quotes_where_examples_of_each_kind() -> None:
    examples = where_examples()
    assert "category=validation and not (type~Timeout or rule=fraud-review)" in examples
    assert "message~'truncated Avro'|'malformed Avro'" in examples
    assert 'message~"currency (missing)"' in examples
    assert "state=replayed" in examples and "category=schema" in examples


@pytest.mark.parametrize("expr", where_examples())
def test_every_where_example_in_the_readme_parses(expr: str) -> None:
    assert parse(expr, now_ms=0).terms, expr


def test_the_release_note_selects_both_truncated_avro_messages_at_once() -> None:
    """ "select both at once by their message (`--where "message~'truncated Avro'|'malformed
    Avro'"`)": the old and the new text of one cause, and nothing else."""
    selection = parse("message~'truncated Avro'|'malformed Avro'")
    truncated = "truncated Avro record (expected more bytes reading field 'created_at')"
    malformed = "malformed Avro record (more than 1,000,000 array items that take no bytes)"
    magic = "bad magic byte 0x01: not the Confluent wire format (expected 0x00)"
    for message, selected in ((truncated, True), (malformed, True), (magic, False)):
        dl = dead_letter(category=Category.DESERIALIZATION, error_type="EOFError", message=message)
        assert selection.matches(dl, U) is selected, message


def test_the_grammar_example_from_the_readme_selects_as_it_reads() -> None:
    selection = parse("category=validation and not (type~Timeout or rule=fraud-review)")
    assert selection.matches(dead_letter(), U)
    assert not selection.matches(dead_letter(error_type="TimeoutError"), U)
    assert not selection.matches(dead_letter(category=Category.SCHEMA), U)


def test_failed_at_takes_a_duration_ago_as_the_readme_says() -> None:
    """`failed_at>2h`: failed within the last two hours; `age>1d`: failed over a day ago."""
    failed_at = dead_letter().failed_at_ms
    assert failed_at is not None
    hour = 3_600_000
    assert parse("failed_at>2h", now_ms=failed_at + hour).matches(dead_letter(), U)
    assert not parse("failed_at>2h", now_ms=failed_at + 3 * hour).matches(dead_letter(), U)
    assert parse("age>1d", now_ms=failed_at + 25 * hour).matches(dead_letter(), U)
    assert not parse("age>1d", now_ms=failed_at + 23 * hour).matches(dead_letter(), U)


def readme_hold_example() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", README, flags=re.S)
    holds: list[str] = [b for b in blocks if b.startswith("[[hold]]")]
    assert len(holds) == 1, holds
    return holds[0]


def lazarus_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`lazarus ARGS` as its console script runs it: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exited:
        lazarus_main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_the_readmes_hold_rule_example_checks_and_lists_as_expired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's rule expired on 2026-12-01: `lazarus holds --check` accepts the file and
    lists the rule, expired, with its expiry and predicate."""
    path = tmp_path / "holds.toml"
    path.write_text(readme_hold_example())
    code, out, err = lazarus_cli(capsys, "holds", "--check", "--file", str(path))
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "expired",
        "fraud-review",
        "until",
        "2026-12-01T00:00:00Z",
        "field",
        "customer.id",
        "=",
        "'c-42'",
    ]
    assert lines[-1].endswith("0 of 1 active")


def test_holds_check_puts_every_problem_on_its_own_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "`lazarus holds --check` validates the file (every problem on its own line, exit 2)"."""
    path = tmp_path / "holds.toml"
    path.write_text(readme_hold_example().replace('reason = "', 'rason = "'))
    with path.open("a") as rules:
        rules.write('\n[[hold]]\nname = "second"\n')
    code, _, err = lazarus_cli(capsys, "holds", "--check", "--file", str(path))
    assert code == EXIT_USAGE, err
    lines = err.splitlines()
    wanted = ("hold[1].reason", "hold[2]: exactly one of field, key, header", "hold[2].expires")
    where = [[i for i, line in enumerate(lines) if problem in line] for problem in wanted]
    assert all(len(found) == 1 for found in where), err
    assert len({found[0] for found in where}) == len(wanted), err  # one line each


def test_the_options_the_readme_calls_global_work_on_every_dlq_command() -> None:
    """ "`dlq`'s are `--config`, `--bootstrap`, ...": each is an option of `dlq` itself and of
    every subcommand, so it goes before or after the command name."""
    sentence = re.search(r"`dlq`'s are (.*?)\.\n", README, flags=re.S)
    assert sentence is not None
    listed = re.findall(r"`(-{1,2}[A-Za-z-]+)`", sentence.group(1))
    assert "--config" in listed and "--mask" in listed and "-X" in listed
    assert isinstance(dlq, click.Group)
    commands = [dlq, *(dlq.commands[name] for name in sorted(dlq.commands))]
    for command in commands:
        names = {opt for param in command.params for opt in param.opts}
        missing = [option for option in listed if option not in names]
        assert not missing, f"{command.name} lacks {missing}"


# --- Performance ---------------------------------------------------------------------------------

PERF = section("Performance")
CONTENDERS = {
    "Lazarus at-least-once": "lazarus-alos",
    "Lazarus exactly-once": "lazarus-eos",
    "ceiling + work": "ceiling",
}
WORKLOADS = {
    "Avro, 0% bad": "avro-0",
    "Avro, 5% bad": "avro-5",
    "Avro, 50% bad": "avro-50",
    "JSON, 0% bad": "json-0",
    "JSON, 50% bad": "json-50",
}


def cited(pattern: str) -> dict[str, object]:
    match = re.search(rf"`bench/results/({pattern})`", PERF)
    assert match is not None, f"the Performance section cites no bench/results/{pattern}"
    path = REPO / "bench" / "results" / match.group(1)
    assert path.is_file(), path
    data: dict[str, object] = json.loads(path.read_text())
    return data


def tables(text: str) -> list[list[str]]:
    """The lines of each Markdown table in `text`, in order (the section has more than one)."""
    found: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("| "):
            if not inside:
                found.append([])
            found[-1].append(line)
        inside = line.startswith("| ")
    return found


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_performance_table_is_the_cited_runs_summary() -> None:
    summary = cited(r"peers-[^`]+\.json")["summary"]
    assert isinstance(summary, dict)
    lines = tables(PERF)[0]
    columns = [
        CONTENDERS.get(name, "quix" if name.startswith("Quix") else name)
        for name in cells(lines[0])
    ]
    rows = [cells(line) for line in lines[2:]]
    assert [row[0] for row in rows] == list(WORKLOADS)
    for row in rows:
        workload = WORKLOADS[row[0]]
        for contender, cell in zip(columns[1:], row[1:], strict=True):
            measured = summary[workload][contender]
            assert cell == f"{measured['rate']:,.0f}/s · {measured['cpu_us']:.1f} µs", (
                f"{row[0]}, {contender}: README {cell!r}"
            )


LAYER_ROWS = {
    "Avro, truncated": "avro truncated",
    "Avro, invalid (`qty = 0`)": "avro invalid",
    "Avro, 50% bad, interleaved": "avro mixed",
    "JSON, truncated": "json truncated",
    "JSON, invalid": "json invalid",
    "JSON, 50% bad, interleaved": "json mixed",
}
LAYERS = ("check", "handler", "seam", "broker", "process")


def test_where_a_dead_letters_time_goes_is_the_cited_runs() -> None:
    data = cited(r"layers-[^`]+\.json")
    extra, medians = data["over_good"], data["medians"]
    assert isinstance(extra, dict) and isinstance(medians, dict)
    rows = [cells(line) for line in tables(PERF)[1][2:]]
    assert [row[0] for row in rows] == list(LAYER_ROWS)
    for row in rows:
        measured = [f"{extra[f'{LAYER_ROWS[row[0]]} {layer}']:+.1f}" for layer in LAYERS]
        assert row[1:] == measured, row[0]
    text = " ".join(PERF.split())
    for layer in LAYERS:  # a good record's figures, in the prose above the table
        avro, json_ = (f"{medians[f'{fmt} good {layer}']:.1f}" for fmt in ("avro", "json"))
        quoted = f"{avro} (Avro) / {json_} (JSON)" if layer == "check" else f"{avro} / {json_}"
        assert quoted in text, layer


def test_the_latency_figures_are_the_cited_runs() -> None:
    latency = cited(r"latency-[^`]+\.json")["latency"]
    assert isinstance(latency, list)
    by_contender = {run["contender"]: run for run in latency}
    text = " ".join(PERF.split())
    quoted = {
        "lazarus-alos": r"Lazarus at-least-once p50/p99 \*\*([\d.]+)/([\d.]+) ms\*\*",
        "quix": r"Quix Streams ([\d.]+)/([\d.]+) ms",
        "arroyo": r"Sentry Arroyo ([\d.]+)/([\d.]+) ms",
        "ceiling": r"the ceiling loop ([\d.]+)/([\d.]+) ms",
        "lazarus-eos": r"Lazarus exactly-once ([\d.]+)/([\d.]+) ms",
    }
    for contender, pattern in quoted.items():
        match = re.search(pattern, text)
        assert match is not None, pattern
        run = by_contender[contender]
        assert match.groups() == (f"{run['p50_ms']:.1f}", f"{run['p99_ms']:.1f}"), contender
    rate = re.search(r"produced at ([\d,]+) records/s", text)
    assert rate is not None
    assert {f"{run['rate']:,.0f}" for run in latency} == {rate.group(1)}
