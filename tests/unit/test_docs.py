"""The documentation cannot drift from the code: CLI reference, contract copy, exit codes,
the benchmarks it quotes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pipeline.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from scripts.cli_reference import render

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "DLQ-CONTRACT.md"


def test_cli_reference_is_generated_from_the_commands() -> None:
    expected = render()
    actual = (REPO / "docs" / "CLI.md").read_text()
    assert actual == expected, "docs/CLI.md is stale: python scripts/cli_reference.py > docs/CLI.md"


def test_contract_copy_is_identical_to_the_shared_contract() -> None:
    assert SHARED.exists(), f"the shared contract is missing at {SHARED}"
    assert (REPO / "docs" / "DLQ-CONTRACT.md").read_text() == SHARED.read_text()


def test_readme_exit_code_table_matches_the_code() -> None:
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d) \| ([^|]+) \|$", readme, flags=re.M))
    assert set(rows) == {str(c) for c in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL)}
    assert rows[str(EXIT_OK)].strip() == "success"
    assert "usage or configuration" in rows[str(EXIT_USAGE)]
    assert "partial success" in rows[str(EXIT_PARTIAL)]
    assert "run time" in rows[str(EXIT_FAILED)]


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "\nscripts/test\n" in readme
    assert "exec scripts/test" in ci


def test_readme_configuration_reference_is_generated_from_the_settings() -> None:
    from scripts.config_reference import END, START, table

    readme = (REPO / "README.md").read_text()
    assert START in readme and END in readme
    embedded = readme[readme.index(START) : readme.index(END) + len(END)]
    assert embedded == table(), (
        "README config reference is stale: python scripts/config_reference.py"
    )


def readme_bench_commands() -> list[list[str]]:
    """The `python -m bench.…` commands the README quotes (code spans may wrap lines)."""
    spans = re.findall(r"`(python -m bench\.[^`]*)`", (REPO / "README.md").read_text())
    return [span.split() for span in spans]


def test_readme_bench_commands_name_real_options() -> None:
    """Each benchmark the README quotes exists and takes every option it is quoted with (the
    runs themselves take minutes: bench/README.md has their figures)."""
    commands = readme_bench_commands()
    assert {argv[2] for argv in commands} >= {"bench.bench_peers", "bench.bench_story"}
    for argv in commands:
        done = subprocess.run(
            [sys.executable, "-m", argv[2], "--help"], capture_output=True, text=True, cwd=REPO
        )
        assert done.returncode == 0, done.stderr
        for option in (a.split("=")[0] for a in argv[3:] if a.startswith("--")):
            assert option in done.stdout, f"{' '.join(argv)}: {argv[2]} has no {option}"
