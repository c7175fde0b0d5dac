"""Lazarus through its command line only: a generated TOML config and `lazarus worker`.

The harness never imports `pipeline`: the CLI and the configuration format are the stable
surface. The config validates the source with `schemas.orders:Order` (Avro decoded with the
schema files under schemas/avro, or JSON), forwards to the output topic, dead-letters to the DLQ,
commits once a second in batches of 500 and turns the flood guard off: at 50% bad records it
would pause the worker, and the bench measures the dead-letter path, not the guard.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.contenders.job import BATCH, COMMIT_EVERY_S, Job
from bench.workloads import MODEL, REPO


def config_text(job: Job, delivery: str, build: str = "") -> str:
    return f'''pipeline = "{job.group}"
bootstrap = "{job.bootstrap}"
delivery = "{delivery}"
schema_dir = "{lazarus_root(build) / "schemas/avro"}"
python_path = ["{lazarus_root(build)}"]
commit_interval_ms = {int(COMMIT_EVERY_S * 1000)}
batch_size = {BATCH}

[sources."{job.source}"]
format = "{job.fmt}"
model = "{MODEL}"

[output]
topic = "{job.output}"

[dlq]
topic = "{job.dlq}"

[policy]
flood_guard = false
'''


def write_config(job: Job, delivery: str, workdir: Path, build: str = "") -> Path:
    path = workdir / f"{job.group}.toml"
    path.write_text(config_text(job, delivery, build), encoding="utf-8")
    return path


def lazarus_bin(build: str = "") -> str:
    """The project's own `lazarus`, or another build's (`bench_peers --lazarus PATH`); with
    `build="base"`, the build the `base-*` contenders run (`bench_peers --lazarus-base PATH`)."""
    if build == BASE:
        base = os.environ.get("LAZARUS_BENCH_BASE_BIN")
        if not base:
            raise ValueError("the base-* contenders need bench_peers --lazarus-base PATH")
        return base
    return os.environ.get("LAZARUS_BENCH_BIN") or str(REPO / ".venv/bin/lazarus")


BASE = "base"
"""The build of the `base-*` contenders: another checkout, measured in the same interleaved
repetitions as this one (old tree against new tree on the same broker and load)."""


def lazarus_root(build: str = "") -> Path:
    """The checkout the executable belongs to (`<root>/.venv/bin/lazarus`): the worker runs
    there and loads that checkout's schemas, so a `--lazarus` build never imports this working
    tree's `pipeline` (`--processes 2` starts its members with `python -m` from the cwd)."""
    root = Path(lazarus_bin(build)).parent.parent.parent
    return root if (root / "schemas").is_dir() and (root / "pipeline").is_dir() else REPO


def worker_argv(config: Path, processes: int, build: str = "") -> list[str]:
    """The worker's command line; under cProfile (`bench_peers --profile DIR`, stats written to
    DIR/<group>.prof when the worker stops on SIGTERM; with --processes only the supervisor)."""
    argv = [lazarus_bin(build), "worker", "--config", str(config)]
    profile = os.environ.get("LAZARUS_BENCH_PROFILE")
    if profile:
        python = str(Path(lazarus_bin(build)).parent / "python")
        out = Path(profile) / f"{config.stem}.prof"
        argv = [python, "-m", "cProfile", "-o", str(out), *argv]
    return [*argv, "--processes", str(processes)] if processes > 1 else argv


def topics_argv(config: Path) -> list[str]:
    """`lazarus topics --create`: the redrive and ledger topics the worker checks for."""
    return [lazarus_bin(), "topics", "--config", str(config), "--create"]
