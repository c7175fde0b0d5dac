"""`lazarus demo`: on the embedded mock cluster (the README's first command) and on the real
broker (exactly-once). It exits 0 only when its own accounting, re-read from the topics, holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tests.kit import REPO


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`lazarus demo ARGS` from the repository, with `env` (a bare one by default)."""
    return subprocess.run(
        [sys.executable, "-m", "lazarus.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env=env if env is not None else {"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )


def assert_story(result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in out + result.stderr
    config = re.search(r"\$ dlq --config (\S+/demo\.toml) stats", out)
    assert config is not None, out
    assert not Path(config.group(1)).parent.exists()  # its folder is removed at the end
    for step in (f"$ dlq --config {config.group(1)} group", "fix", "replay"):
        assert step in out
    assert "inputs 90 · forwarded 71 · dead-lettered 19 · replayed 4 · DLQ depth now 15" in out
    assert out.count("✓") >= 5 and "✗" not in out


def test_demo_on_the_mock_cluster() -> None:
    result = run_demo()
    assert_story(result)
    assert "mock cluster" in result.stdout


def test_demo_on_the_real_broker_is_exactly_once(bootstrap: str) -> None:
    result = run_demo("--bootstrap", bootstrap)
    assert_story(result)
    assert "exactly-once" in result.stdout
    assert "Removed the demo's topics" in result.stdout
    pipeline = re.search(r"(demo-[0-9a-f]{6})\.dlq", result.stdout)
    assert pipeline is not None, result.stdout
    left = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics
    assert not [t for t in left if t.startswith(pipeline.group(1))]
