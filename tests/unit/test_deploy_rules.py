"""The Prometheus rules in deploy/prometheus are tested like code: promtool validates and unit-tests
them, a real Prometheus server loads them, every alert carries what on-call needs (severity,
summary, a description naming the top cause and the `dlq group` command, a runbook link), and every
runbook link lands on a README heading that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.prom import Prometheus

REPO = Path(__file__).resolve().parent.parent.parent
PROM = REPO / "deploy/prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
README = REPO / "README.md"
RUNBOOK_BASE = "https://github.com/lazarus-dlq/lazarus/blob/main/README.md#"
SEVERITIES = {"page", "ticket"}


def promtool_binary() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        raise AssertionError("promtool is not on PATH: run scripts/bootstrap")
    return binary


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool's output in the order it wrote it: it reports SUCCESS on stdout and FAILED on
    stderr, so two separate pipes put a failure under the next file's heading."""
    return subprocess.run(
        [promtool_binary(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped (word characters, hyphens
    and spaces kept), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown page, with GitHub's -1, -2 suffixes for repeats;
    lines inside fenced code blocks are not headings."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if fenced or not match:
            continue
        slug = github_anchor(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


@pytest.fixture(scope="module")
def loaded_groups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """The rule groups as a real Prometheus server loaded them (no scrape targets)."""
    with Prometheus(tmp_path_factory.mktemp("prometheus-rules")) as prom:
        yield prom.rule_groups()


@pytest.fixture(scope="module")
def loaded_alerts(loaded_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerting rules as a real Prometheus server loaded them."""
    return [r for g in loaded_groups for r in g["rules"] if r["type"] == "alerting"]


def test_github_anchor_matches_githubs_slugs() -> None:
    assert github_anchor("Runbook: DLQ growing") == "runbook-dlq-growing"
    assert github_anchor("Runbook: dead-letter budget burn") == "runbook-dead-letter-budget-burn"
    assert github_anchor("60-second tour") == "60-second-tour"
    assert github_anchor("The `dlq` CLI, step by step!") == "the-dlq-cli-step-by-step"
    assert readme_anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_promtool_check_rules_passes() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout


def test_promtool_check_config_passes_for_the_compose_prometheus() -> None:
    result = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_a_rule_reads_only_recording_rules_evaluated_before_it_in_its_own_group(
    loaded_groups: list[dict[str, Any]],
) -> None:
    """Groups are evaluated independently (by Prometheus at its own offset per group, by promtool
    in Go map order unless told), while the rules of one group run in order at one timestamp. A
    rule reading a series recorded in another group sees it a step late or on time, at random:
    `delta` over a window then extrapolates differently (a jump of 50 read as 53.57), and the
    promtool tests of LazarusDLQGrowing failed about one run in ten."""
    recorded: dict[str, tuple[str, int]] = {}
    for group in loaded_groups:
        for index, rule in enumerate(group["rules"]):
            if rule["type"] == "recording":
                recorded[rule["name"]] = (group["name"], index)
    assert recorded, "no recording rules loaded"
    for group in loaded_groups:
        for index, rule in enumerate(group["rules"]):
            for name in metric_names_in(rule["query"]) & recorded.keys():
                where, at = recorded[name]
                assert (where, at < index) == (group["name"], True), (
                    f"{rule['name']} (group {group['name']}, rule {index}) reads {name}, "
                    f"recorded in group {where} as rule {at}"
                )


def metric_names_in(expr: str) -> set[str]:
    """Every name an expression could select (over-approximate: function names are no
    recording rules, so they never match one)."""
    return set(re.findall(r"[A-Za-z_:][\w:]*", expr))


def test_promtool_unit_tests_pass_whatever_the_group_order(
    loaded_groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The unit tests again with the groups evaluated in one order and in its reverse
    (`group_eval_order`): whichever two groups depend on each other, one of the runs evaluates
    the reader first, so such an alert fails every time instead of one run in ten."""
    names = [g["name"] for g in loaded_groups]
    runs = {}
    for label, order in (("forward", names), ("reverse", names[::-1])):
        folder = tmp_path / label
        folder.mkdir()
        runs[label] = subprocess.Popen(
            [promtool_binary(), "test", "rules", *map(str, ordered_copies(folder, order))],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for label, proc in runs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{label} {names}: {output}"


def ordered_copies(folder: Path, order: list[str]) -> list[Path]:
    """The promtool test files, copied into `folder` with `group_eval_order: order`."""
    copies = []
    for path in TEST_FILES:
        text = path.read_text().replace("../rules/", f"{PROM / 'rules'}/")
        text, count = re.subn(
            r"^evaluation_interval: .*$",
            rf"\g<0>\ngroup_eval_order: [{', '.join(order)}]",
            text,
            flags=re.M,
        )
        assert count == 1, f"{path.name}: no top-level evaluation_interval"
        copy = folder / path.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def test_every_alert_is_unit_tested_firing_and_quiet(loaded_alerts: list[dict[str, Any]]) -> None:
    """For each alert, a promtool case where it fires and one where it stays quiet (e.g. held
    growth must not fire LazarusDLQGrowing)."""
    fires: set[str] = set()
    quiet: set[str] = set()
    pattern = re.compile(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?")
    for path in TEST_FILES:
        for name, empty in pattern.findall(path.read_text()):
            (quiet if empty else fires).add(name)
    names = {a["name"] for a in loaded_alerts}
    assert len(names) >= 13
    assert names - fires == set(), "alerts never shown firing in deploy/prometheus/tests"
    assert names - quiet == set(), "alerts never shown quiet in deploy/prometheus/tests"


def test_every_alert_has_severity_summary_description_and_runbook(
    loaded_alerts: list[dict[str, Any]],
) -> None:
    anchors = readme_anchors(README.read_text())
    for alert in loaded_alerts:
        name, labels, notes = alert["name"], alert["labels"], alert["annotations"]
        assert labels.get("severity") in SEVERITIES, name
        assert notes.get("summary"), name
        description = notes.get("description", "")
        assert "lazarus_dlq_unresolved_by_cause" in description, f"{name}: no top cause"
        assert re.search(r"dlq --config \S.* group", description), f"{name}: no dlq group"
        url = notes.get("runbook_url", "")
        assert url.startswith(RUNBOOK_BASE), f"{name}: {url}"
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchor.startswith("runbook-") and anchor in anchors, f"{name}: no README #{anchor}"


def test_every_runbook_section_is_linked_by_an_alert(loaded_alerts: list[dict[str, Any]]) -> None:
    linked = {a["annotations"]["runbook_url"].removeprefix(RUNBOOK_BASE) for a in loaded_alerts}
    sections = {a for a in readme_anchors(README.read_text()) if a.startswith("runbook-")}
    assert sections == linked


def test_the_loss_paths_page(loaded_alerts: list[dict[str, Any]]) -> None:
    severity = {a["name"]: a["labels"]["severity"] for a in loaded_alerts}
    assert severity["LazarusDLQWriteFailing"] == "page"
    assert severity["LazarusDLQUnresolvedExpired"] == "page"
    assert severity["LazarusDLQGrowing"] == "ticket"
