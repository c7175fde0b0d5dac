"""The operator story of issue 12, timed: page -> see the cause -> preview a fix -> replay once ->
depth 0, in four `dlq` commands, on a DLQ of N dead letters in three causes, next to a raw
confluent-kafka consume of the same topic in the same run.

    python -m bench.bench_story [--bootstrap HOST:PORT] [--count N] [--reps R]

Without --bootstrap a broker is started with `scripts/kafka_broker.py` (and stopped after). Each
repetition fills two DLQs the same way (`bench.bench_replay.fill_dlq`: Lazarus dead letters,
three validation causes) and runs the story on each: `cold` starts from an empty state folder
(the first command builds the index), `warm` after an untimed `dlq stats` built it. The commands
run as child processes, as an operator types them:

1. `dlq --json stats`: the depth and the causes (fingerprints) by unresolved count;
2. `dlq fix --where 'fingerprint=A|B|C' --set fixed=true --save --summary`: preview the fix of
   every unresolved cause and store it as a plan (its id is printed);
3. `dlq replay --plan ID --to TARGET --yes`: replay exactly that preview;
4. `dlq --json stats`: the depth, which must be 0.

Prints a table (seconds and CPU seconds per command, the load average before it) and writes
`bench/results/story-<UTC time>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import confluent_kafka

from bench.bench_group import raw_consume
from bench.bench_replay import broker, fill_dlq
from tests.conftest import create_topics

RESULTS = Path(__file__).resolve().parent / "results"
_PLAN = re.compile(r"plan (\S+) stored")


@dataclass(frozen=True, slots=True)
class Step:
    """One timed `dlq` command: its words, seconds, and the 1-minute load average before it;
    `cpu_s` is the CPU seconds (user + system) it used, which other work on a shared machine
    changes less than the seconds."""

    name: str
    argv: list[str]
    seconds: float
    load_before: float
    cpu_s: float = 0.0


@dataclass
class Story:
    """One run of the story on one freshly filled DLQ."""

    mode: str
    rep: int
    topic: str
    count: int
    fill_s: float
    raw_consume_s: float
    prime_s: float | None = None
    steps: list[Step] = field(default_factory=list)
    depth_before: int = 0
    depth_after: int = -1

    @property
    def total_s(self) -> float:
        return sum(step.seconds for step in self.steps)


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def dlq(state: Path, *args: str) -> tuple[float, str, str, float]:
    """`dlq ARGS` as a child process with its own state folder; (seconds, stdout, stderr,
    CPU seconds)."""
    env = {**os.environ, "LAZARUS_STATE_DIR": str(state)}
    cpu = _children_cpu()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "reprocessor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"dlq {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr, _children_cpu() - cpu


def story(bootstrap: str, mode: str, rep: int, count: int, partitions: int) -> Story:
    """Fill a DLQ, consume it raw, then run the four commands (after priming the index when
    `mode` is warm)."""
    topic = f"bench-story-{uuid.uuid4().hex[:6]}.dlq"
    target = topic.replace(".dlq", ".fixed")
    create_topics(bootstrap, [topic, target], partitions)
    filled = fill_dlq(bootstrap, topic, count)
    _, raw_s = raw_consume(bootstrap, topic)
    run = Story(mode, rep, topic, count, filled, raw_s)
    base = ["-b", bootstrap, "-t", topic]
    with tempfile.TemporaryDirectory(prefix="lazarus-story-") as folder:
        state = Path(folder)
        if mode == "warm":
            run.prime_s = dlq(state, *base, "stats")[0]

        def step(name: str, *args: str) -> str:
            load = load1()
            seconds, out, err, cpu = dlq(state, *base, *args)
            run.steps.append(Step(name, ["dlq", *base[2:], *args], seconds, load, cpu))
            return out + err

        page = json.loads(step("stats (page: see the causes)", "--json", "stats"))
        run.depth_before = int(page["unresolved"])
        causes = [c["fingerprint"] for c in page["by_cause"] if c["unresolved"]]
        where = "fingerprint=" + "|".join(causes)
        preview = step("fix --save (preview)", "fix", "--where", where, "--set", "fixed=true",
                       "--save", "--summary")  # fmt: skip
        found = _PLAN.search(preview)
        if found is None:
            raise RuntimeError(f"dlq fix --save printed no plan id: {preview[-2000:]}")
        step("replay --plan (once)", "replay", "--plan", found.group(1), "--to", target, "--yes")
        after = json.loads(step("stats (depth)", "--json", "stats"))
        run.depth_after = int(after["unresolved"])
    return run


def print_table(runs: list[Story]) -> None:
    print(f"{'mode':<5} {'rep':>3} {'command':<30} {'seconds':>8} {'load':>6} {'cpu s':>6}")
    for run in runs:
        for step in run.steps:
            print(f"{run.mode:<5} {run.rep:>3} {step.name:<30} {step.seconds:>8.2f} "
                  f"{step.load_before:>6.2f} {step.cpu_s:>6.2f}")  # fmt: skip
        print(f"{run.mode:<5} {run.rep:>3} {'= story total':<30} {run.total_s:>8.2f}")
        print(
            f"{run.mode:<5} {run.rep:>3} {'raw consume, same topic':<30} {run.raw_consume_s:>8.2f}"
        )
        if run.prime_s is not None:
            print(f"{run.mode:<5} {run.rep:>3} {'(untimed index build)':<30} {run.prime_s:>8.2f}")
        ratio = run.total_s / run.raw_consume_s
        print(f"      depth {run.depth_before:,} -> {run.depth_after:,} in {len(run.steps)} "
              f"commands; story {ratio:.1f} x the raw consume")  # fmt: skip


def code_version() -> dict[str, str]:
    """Which code the `dlq` commands ran: the folder `reprocessor` was imported from, its git
    commit, and whether its tree had uncommitted changes (a before/after run of another
    checkout, by PYTHONPATH, says so in its results)."""
    import reprocessor

    folder = Path(reprocessor.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
        return done.stdout.strip()

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {
        "folder": str(folder),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": str(dirty),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args(argv)
    started_load = Path("/proc/loadavg").read_text().strip()
    runs: list[Story] = []
    with broker(args.bootstrap) as bootstrap:
        for rep in range(1, args.reps + 1):
            for mode in ("cold", "warm") if rep % 2 else ("warm", "cold"):  # interleaved
                runs.append(story(bootstrap, mode, rep, args.count, args.partitions))
                print(f"{mode} rep {rep}: {runs[-1].total_s:.1f}s", file=sys.stderr)
    print_table(runs)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"story-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "machine": {
                    "nproc": os.cpu_count(),
                    "python": platform.python_version(),
                    "confluent_kafka": confluent_kafka.version()[0],
                    "librdkafka": confluent_kafka.libversion()[0],
                    "loadavg_start": started_load,
                    "loadavg_end": Path("/proc/loadavg").read_text().strip(),
                },
                "code": code_version(),
                "count": args.count,
                "runs": [{**asdict(run), "total_s": run.total_s} for run in runs],
            },
            indent=2,
        )
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
