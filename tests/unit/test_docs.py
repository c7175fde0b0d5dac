"""The documentation cannot drift from the code: CLI reference, contract copy, exit codes."""

from __future__ import annotations

import re
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
