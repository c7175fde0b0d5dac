"""The README cannot rot: every command of its tour runs, as written, against a real broker.

The tour's commands are the `$ ` lines of the ```console blocks under "## 60-second tour". They
run in order in a shell at the repository root with `LAZARUS_BOOTSTRAP` pointing at a broker of
this test's own (so topic names from examples/orders.toml never collide). `lazarus worker` runs
in the background for the rest of the tour, as a person would leave it running.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scripts.kafka_broker import Broker
from tests.kit import committed_offsets, read_all, wait_until

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def tour_commands() -> list[str]:
    text = README.read_text()
    tour = text[text.index("## 60-second tour") :]
    tour = tour[: tour.index("\n## ", 3)]
    blocks = re.findall(r"```console\n(.*?)```", tour, flags=re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


def environment(bootstrap: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "LAZARUS_BOOTSTRAP": bootstrap,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "COLUMNS": "120",
        "LAZARUS_STATE_DIR": str(REPO / ".cache" / "readme-state"),
    }


def test_readme_tour_runs_as_written(broker_factory: Callable[..., Broker], tmp_path: Path) -> None:
    commands = tour_commands()
    assert len(commands) >= 8, commands
    broker = broker_factory()
    env = environment(broker.bootstrap)
    worker: subprocess.Popen[bytes] | None = None
    log = (tmp_path / "worker.log").open("wb")
    outputs: list[tuple[str, str]] = []
    try:
        for command in commands:
            if command.startswith("lazarus worker"):
                worker = subprocess.Popen(
                    shlex.split(command), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
                )
                _wait_caught_up(broker.bootstrap, worker)
                continue
            result = subprocess.run(
                command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
            outputs.append((command, result.stdout + result.stderr))
        assert worker is not None, "the tour runs a worker"
        wait_until(lambda: _replays_forwarded(broker.bootstrap) == 4, 60, "replays forwarded")
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGINT)
            worker.wait(60)
        log.close()
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
    stats = [out for cmd, out in outputs if cmd.endswith(" stats")]
    assert "18 dead letters, 18 unresolved" in stats[0]
    assert "18 dead letters, 14 unresolved" in stats[-1] and "4 replayed" in stats[-1]
    groups = next(out for cmd, out in outputs if cmd.endswith(" group"))
    assert "18 dead letters in 6 groups by fingerprint" in groups


def _wait_caught_up(bootstrap: str, worker: subprocess.Popen[bytes]) -> None:
    wait_until(lambda: _caught_up(bootstrap, worker), 90, "the worker to catch up")


def _caught_up(bootstrap: str, worker: subprocess.Popen[bytes]) -> bool:
    assert worker.poll() is None, "the worker exited"
    orders = committed_offsets(bootstrap, "orders-pipeline", "orders", 3)
    payments = committed_offsets(bootstrap, "orders-pipeline", "payments", 3)
    total = sum(max(o, 0) for o in [*orders.values(), *payments.values()])
    time.sleep(0.2)
    return total >= 90


def _replays_forwarded(bootstrap: str) -> int:
    return sum(1 for r in read_all(bootstrap, "orders.valid") if r.header("dlq.replay.of"))
