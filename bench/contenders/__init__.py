"""The contenders of bench_peers, each a command line the harness runs as a child process.

Every contender consumes the same pre-produced source topic, does the same job (decode,
validate, forward the good values, dead-letter the bad ones) and commits its group's offsets
about once a second; the harness watches those offsets. In-process peers (`raw`, `ceiling`,
`quix`, `arroyo`) are run as `python -m bench.contenders.<module>` too, so /proc shows only their
own work. This module is stdlib-only: the Quix interpreter imports it as well.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.contenders.job import Job
from bench.contenders.lazarus import BASE, lazarus_root, worker_argv, write_config
from bench.workloads import REPO

QUIX_VENV = REPO / ".cache/bench-quix"
BASELINE = "lazarus-alos"


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    what: str
    kind: str  # "loop", "quix", "arroyo" or "lazarus"
    arg: str = ""  # loop: raw|ceiling; lazarus: the delivery
    processes: int = 1
    build: str = ""  # "" for this checkout's build, BASE for `--lazarus-base`

    @property
    def transactional(self) -> bool:
        return self.arg == "exactly-once"

    def cwd(self) -> Path:
        return lazarus_root(self.build) if self.kind == "lazarus" else REPO

    def argv(self, job: Job, workdir: Path) -> list[str]:
        if self.kind == "lazarus":
            config = write_config(job, self.arg, workdir, self.build)
            return worker_argv(config, self.processes, self.build)
        python = str(QUIX_VENV / "bin/python") if self.kind == "quix" else sys.executable
        module = f"bench.contenders.{self.kind}"
        return [python, "-m", module, job.to_arg(), *([self.arg] if self.arg else [])]


CONTENDERS = {
    c.name: c
    for c in (
        Contender("raw", "confluent-kafka consume→produce, no decoding", "loop", "raw"),
        Contender("ceiling", "the same loop + decode/validate inline, DLQ", "loop", "ceiling"),
        Contender("lazarus-alos", "lazarus worker, at-least-once", "lazarus", "at-least-once"),
        Contender("lazarus-eos", "lazarus worker, exactly-once", "lazarus", "exactly-once"),
        Contender("lazarus-alos-2p", "lazarus worker --processes 2", "lazarus", "at-least-once", 2),
        Contender("lazarus-eos-2p", "exactly-once, --processes 2", "lazarus", "exactly-once", 2),
        Contender(
            "base-alos",
            "--lazarus-base build, at-least-once",
            "lazarus",
            "at-least-once",
            build=BASE,
        ),
        Contender(
            "base-eos", "--lazarus-base build, exactly-once", "lazarus", "exactly-once", build=BASE
        ),
        Contender("quix", "Quix Streams Application, on_processing_error → DLQ", "quix"),
        Contender("arroyo", "Sentry Arroyo StreamProcessor + DlqPolicy", "arroyo"),
    )
}
