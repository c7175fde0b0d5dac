"""Lazarus against its Python peers and the client's ceiling, on the same job and broker.

    python -m bench.bench_peers                              # everything, a broker of its own
    python -m bench.bench_peers --count 20000 --reps 1 --skip-latency
    python -m bench.bench_peers --bootstrap 127.0.0.1:9092 --contenders ceiling,lazarus-alos
    python -m bench.bench_peers --rss-growth                 # 200,000 vs 2,000,000 records

Contenders (bench/contenders/): `raw`, `ceiling`, `lazarus-alos`, `lazarus-eos`,
`lazarus-alos-2p`, `lazarus-eos-2p`, `quix`, `arroyo`; workloads `avro-0 avro-5 avro-50 json-0
json-5 json-50`. Repetitions are interleaved (rep 1 of every contender and workload, then rep 2).
Prints one table per workload and issue 9's targets, and writes bench/results/<UTC time>.json and
bench/results/latest.json (or only the `--out` file). Nothing is asserted: it measures and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import confluent_kafka
from rich.console import Console

from bench.contenders import BASELINE, CONTENDERS, QUIX_VENV, Contender
from bench.contenders.lazarus import lazarus_bin
from bench.procs import stop_all
from bench.report import render, summarize, targets
from bench.runner import Context, latency, throughput
from bench.workloads import REPO, WORKLOADS, Workload

RESULTS = REPO / "bench/results"
PARTIAL = RESULTS / "partial.json"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.bench_peers", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--count", type=int, default=200_000, help="backlog records per run")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument(
        "--contenders",
        default=",".join(n for n, c in CONTENDERS.items() if not c.build),
        help="comma-separated (base-alos and base-eos need --lazarus-base)",
    )
    ap.add_argument("--workloads", default=",".join(w.name for w in WORKLOADS))
    ap.add_argument("--bootstrap", help="a running broker (default: start one in a temp dir)")
    ap.add_argument("--skip-latency", action="store_true", help="no live-rate latency runs")
    ap.add_argument("--latency-workloads", default="avro-5", help="comma-separated, or 'all'")
    ap.add_argument(
        "--latency-rate",
        type=float,
        help="records/s (default: half the slowest "
        "contender's median rate on that workload, so every contender keeps up)",
    )
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument(
        "--rss-growth",
        action="store_true",
        help="also ceiling vs lazarus-alos on avro-5 at each of --rss-counts",
    )
    ap.add_argument("--rss-counts", default="200000,2000000")
    ap.add_argument("--only-rss-growth", action="store_true", help="skip the main table")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument(
        "--lazarus",
        type=Path,
        help="the lazarus executable to measure "
        "(default .venv/bin/lazarus; e.g. another checkout's, to compare builds)",
    )
    ap.add_argument(
        "--lazarus-base",
        type=Path,
        help="another build's lazarus executable, "
        "measured as the base-alos and base-eos contenders in the same repetitions (old vs new)",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        help="run the Lazarus workers under cProfile, "
        "stats to DIR/<group>.prof (rates then include cProfile's overhead)",
    )
    ap.add_argument("--label", default="", help="a note stored with the results (e.g. the build)")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/<time>.json)")
    return ap.parse_args(argv)


def pick_contenders(text: str) -> list[Contender]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}; choose from {list(CONTENDERS)}")
    return [CONTENDERS[n] for n in names]


def ensure_peers(contenders: list[Contender]) -> dict[str, str]:
    """Versions of the peers, installing Quix Streams into its own virtualenv when missing
    (the `bench-quix` extra of pyproject.toml; see the comment there)."""
    versions: dict[str, str] = {}
    kinds = {c.kind for c in contenders}
    if "arroyo" in kinds:
        try:
            from importlib.metadata import version

            versions["sentry-arroyo"] = version("sentry-arroyo")
        except Exception as exc:
            raise SystemExit("arroyo missing: .venv/bin/pip install -e '.[dev,bench]'") from exc
    if "quix" in kinds:
        python = QUIX_VENV / "bin/python"
        probe = [
            str(python),
            "-c",
            "import quixstreams, confluent_kafka as c; "
            "print(quixstreams.__version__, c.__version__, c.libversion()[0])",
        ]
        if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
            extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
                "optional-dependencies"
            ]["bench-quix"]
            say(f"installing {extra} into {QUIX_VENV}")
            subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *extra], check=True)
        quix, ck, lib = subprocess.run(
            probe, capture_output=True, text=True, check=True
        ).stdout.split()
        versions["quixstreams"] = f"{quix} (confluent-kafka {ck}, librdkafka {lib})"
    return versions


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from scripts.kafka_broker import Broker

    with tempfile.TemporaryDirectory(prefix="bench-peers-broker-") as tmp:
        b = Broker(Path(tmp))
        say(f"starting a broker in {tmp}")
        b.start()
        try:
            yield b.bootstrap
        finally:
            b.stop()


def git_head() -> str:
    """The checked-out commit, "+dirty" when the working tree has changes (other engineers'
    included: the table measures the working tree, not the commit)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head + ("+dirty" if dirty else "")


def machine(versions: dict[str, str]) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "load_average_start": os.getloadavg(),
        **versions,
    }


class Session:
    """The runs of one invocation, in order: throughput (interleaved repetitions), latency,
    RSS growth. A failed run is recorded in `failures` and the others go on; what was measured
    so far is kept in bench/results/partial.json in case the whole command dies."""

    def __init__(self, args: argparse.Namespace, ctx: Context, contenders: list[Contender]):
        self.args, self.ctx, self.contenders = args, ctx, contenders
        self.runs: list[dict[str, Any]] = []
        self.lat: list[dict[str, Any]] = []
        self.rss: list[dict[str, Any]] = []
        self.failures: list[str] = []

    def attempt(self, what: str, fn: Any, *a: Any) -> dict[str, Any] | None:
        PARTIAL.write_text(json.dumps({"runs": self.runs, "latency": self.lat, "rss": self.rss}))
        say(what)
        try:
            result: dict[str, Any] = fn(self.ctx, *a)
        except Exception as exc:  # one failed run is reported, the others go on
            self.failures.append(f"{what}: {exc}")
            say(f"  FAILED: {exc}")
            return None
        shown = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
        say("  " + ", ".join(shown))
        return result

    def throughput(self, workloads: list[Workload]) -> None:
        reps = self.args.reps
        for rep in range(1, reps + 1):
            for w in workloads:
                for c in self.contenders:
                    what = f"rep {rep}/{reps} {w.name} {c.name}"
                    r = self.attempt(what, throughput, c, w, self.args.count)
                    if r:
                        self.runs.append({**r, "rep": rep})

    def latency(self, workloads: list[Workload]) -> None:
        summary, fixed = summarize(self.runs, []), self.args.latency_rate
        for w in workloads:
            rates = [r["rate"] for r in summary.get(w.name, {}).values() if r.get("rate")]
            if not rates and not fixed:
                self.failures.append(f"latency {w.name}: no throughput to derive a rate from")
                continue
            rate = fixed or round(min(rates) / 2, -1)
            for c in self.contenders:
                what = f"latency {w.name} {c.name} at {rate:,.0f}/s"
                r = self.attempt(what, latency, c, w, rate, self.args.latency_seconds)
                if r:
                    self.lat.append(r)

    def rss_growth(self) -> None:
        avro5 = Workload("avro", 5)
        for n in (int(x) for x in self.args.rss_counts.split(",")):
            for c in (CONTENDERS["ceiling"], CONTENDERS[BASELINE]):
                r = self.attempt(f"rss-growth {n:,} {c.name}", throughput, c, avro5, n)
                if r:
                    self.rss.append(r)

    def result(self) -> dict[str, Any]:
        summary = summarize(self.runs, self.lat)
        return {
            "runs": self.runs,
            "latency": self.lat,
            "rss_growth": self.rss,
            "summary": summary,
            "targets": targets(summary, self.rss),
            "failures": self.failures,
        }


def run_all(
    args: argparse.Namespace, ctx: Context, contenders: list[Contender], workloads: list[Workload]
) -> dict[str, Any]:
    session = Session(args, ctx, contenders)
    if not args.only_rss_growth:
        session.throughput(workloads)
        if not args.skip_latency:
            names = args.latency_workloads
            chosen = workloads if names == "all" else [Workload.parse(n) for n in names.split(",")]
            session.latency(chosen)
    if args.rss_growth or args.only_rss_growth:
        session.rss_growth()
    return session.result()


def write(result: dict[str, Any], out: Path | None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = out or RESULTS / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    text = json.dumps(result, indent=1, default=str)
    path.write_text(text + "\n")
    if out is None:  # a run named with --out is kept apart (latest.json is tracked in git)
        (RESULTS / "latest.json").write_text(text + "\n")
    PARTIAL.unlink(missing_ok=True)
    return path


def interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    contenders = pick_contenders(args.contenders)
    workloads = [Workload.parse(n.strip()) for n in args.workloads.split(",") if n.strip()]
    versions = ensure_peers(contenders)
    if args.lazarus:
        os.environ["LAZARUS_BENCH_BIN"] = str(args.lazarus.resolve())
    if args.lazarus_base:
        os.environ["LAZARUS_BENCH_BASE_BIN"] = str(args.lazarus_base.resolve())
    elif any(c.build for c in contenders):
        raise SystemExit("the base-* contenders need --lazarus-base PATH")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        os.environ["LAZARUS_BENCH_PROFILE"] = str(args.profile.resolve())
    signal.signal(signal.SIGTERM, interrupt)
    meta = {
        "command": " ".join(["python -m bench.bench_peers", *(argv or sys.argv[1:])]),
        "count": args.count,
        "reps": args.reps,
        "lazarus": lazarus_bin(),
        "lazarus_base": str(args.lazarus_base.resolve()) if args.lazarus_base else None,
        "checkout": git_head(),
        "label": args.label,
        **machine(versions),
    }
    say(json.dumps(meta))
    try:
        with (
            broker(args.bootstrap) as bootstrap,
            tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp,
        ):
            meta["broker"] = "own" if not args.bootstrap else "given"
            ctx = Context(bootstrap, Path(tmp), args.timeout)
            result = run_all(args, ctx, contenders, workloads)
    finally:
        stop_all()
    meta["load_average_end"] = os.getloadavg()
    result = {"meta": meta, **result}
    path = write(result, args.out)
    console = Console(width=140)
    console.print(
        f"count {args.count:,}, reps {args.reps}, nproc {meta['nproc']}, load average "
        f"{meta['load_average_start'][0]:.2f} → {meta['load_average_end'][0]:.2f}"
    )
    render(
        console,
        result["summary"],
        [c.name for c in contenders],
        result["targets"],
        result["rss_growth"],
    )
    for failure in result["failures"]:
        console.print(f"[red]failed[/] {failure}")
    console.print(f"written {path}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
