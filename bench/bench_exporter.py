"""`dlq exporter` and the DLQ index over a large DLQ, next to a raw confluent-kafka consume of the
same topic, in the same run, on the same broker.

    python -m bench.bench_exporter [--bootstrap HOST:PORT] [--count N] [--partitions P]

Without --bootstrap a broker is started with `scripts/kafka_broker.py` (and stopped after). The
DLQ holds N dead letters with three causes (`bench.bench_replay.fill_dlq`). Measured, in order:

1. raw consume: every record to the end, touching key, value and headers (records/s);
2. cold `dlq --json group` (the first scan builds the index) and then warm `dlq --json stats` and
   `dlq --json group` (the index is caught up, nothing new to read), in this process;
3. the real `dlq exporter` process with an empty state folder: seconds from start until `/readyz`
   answers 200 (its first catch-up of the whole DLQ), its records/s, and its peak RSS (VmHWM from
   /proc) once ready and after a few more scrapes (left out with --no-exporter).

Also printed: the CPU seconds (every thread of this process, and the helper processes of a first
scan shared between processes) of the raw consume and of the cold scan, per record, and their
ratio: what a shared machine's load changes least.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.bench_group import raw_consume
from bench.bench_replay import broker, fill_dlq
from reprocessor.cli import main as dlq_main
from scripts.processes import free_port
from tests.conftest import create_topics

REPO = Path(__file__).resolve().parent.parent


def run_dlq(*args: str) -> float:
    """`dlq ARGS` in this process (output discarded); seconds."""
    return timed(_run_dlq, *args)[0]


def timed(call: Callable[..., object], *args: str) -> tuple[float, float]:
    """`call(*args)` in this process; (seconds, CPU seconds of the whole process: every
    thread's, librdkafka's included, and the child processes it waited for, such as the
    helpers of a first scan), the CPU being what other work on a shared machine changes
    least."""
    cpu, started = cpu_s(), time.monotonic()
    call(*args)
    return time.monotonic() - started, cpu_s() - cpu


def cpu_s() -> float:
    """CPU seconds of this process and of the children it waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _run_dlq(*args: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            dlq_main(list(args))
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"dlq {' '.join(args)} exited with {exc.code}") from None


def write_config(folder: Path, bootstrap: str, dlq_topic: str, source: str) -> Path:
    config = folder / "bench.toml"
    config.write_text(
        f'pipeline = "bench"\nbootstrap = "{bootstrap}"\n'
        f'[sources."{source}"]\nformat = "bytes"\n[output]\ntopic = "{source}"\n'
        f'[dlq]\ntopic = "{dlq_topic}"\n'
    )
    return config


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def exporter_catch_up(config: Path, state: Path) -> tuple[float, float, float]:
    """Start `dlq exporter`, wait for /readyz; (seconds to ready, VmHWM MB when ready, VmHWM MB
    after ten more scrapes of /metrics)."""
    port = free_port()
    env = {**os.environ, "LAZARUS_STATE_DIR": str(state)}
    log = open(state / "exporter.log", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprocessor.cli", "exporter", "-c", str(config),
         "--port", str(port), "--interval", "1"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        while get(f"http://127.0.0.1:{port}/readyz") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"exporter exited: {(state / 'exporter.log').read_text()}")
            time.sleep(0.05)
        ready_s = time.monotonic() - started
        ready_rss = peak_rss_mb(proc.pid)
        for _ in range(10):
            assert get(f"http://127.0.0.1:{port}/metrics") == 200
            time.sleep(0.2)
        return ready_s, ready_rss, peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--topic", help="A DLQ this bench filled before (with --bootstrap).")
    parser.add_argument(
        "--no-exporter", action="store_true", help="Leave out the exporter process (step 3)."
    )
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as folder:
        topic = args.topic or f"bench-exporter-{uuid.uuid4().hex[:6]}.dlq"
        source = f"{topic}-source"
        if args.topic is None:
            create_topics(bootstrap, [topic, source], args.partitions)
            filled = fill_dlq(bootstrap, topic, args.count)
            print(f"filled {topic}: {args.count:,} dead letters, {filled:.1f}s", file=sys.stderr)
        state = Path(folder)
        os.environ["LAZARUS_STATE_DIR"] = str(state / "cli")
        raw_cpu = cpu_s()
        raw_count, raw_s = raw_consume(bootstrap, topic)
        raw_cpu = cpu_s() - raw_cpu
        base = ("-b", bootstrap, "-t", topic, "--json")
        cold_s, cold_cpu = timed(_run_dlq, *base, "group")
        warm_stats_s = run_dlq(*base, "stats")
        warm_group_s = run_dlq(*base, "group")
        (state / "exporter").mkdir()
        config = write_config(state, bootstrap, topic, source)
        ready_s, ready_rss, later_rss = (
            (float("nan"),) * 3
            if args.no_exporter
            else exporter_catch_up(config, state / "exporter")
        )
        n = raw_count
        print(f"{'mode':<44} {'seconds':>9} {'records/s':>11}")
        for name, seconds in (
            ("raw consume (confluent-kafka)", raw_s),
            ("dlq group, cold (first scan builds the index)", cold_s),
            ("dlq exporter, start to /readyz", ready_s),
        ):
            print(f"{name:<44} {seconds:>9.2f} {n / seconds:>11,.0f}")
        print(f"{'dlq stats, warm':<44} {warm_stats_s:>9.2f}")
        print(f"{'dlq group, warm':<44} {warm_group_s:>9.2f}")
        print(f"cold scan at {raw_s / cold_s:.0%} of the raw consume's rate; "
              f"exporter catch-up at {raw_s / ready_s:.0%}")  # fmt: skip
        print(f"CPU seconds: raw consume {raw_cpu:.2f} ({raw_cpu / n * 1e6:.1f} us/record), "
              f"cold scan {cold_cpu:.2f} ({cold_cpu / n * 1e6:.1f} us/record, "
              f"{raw_cpu / cold_cpu:.0%} of it)")  # fmt: skip
        print(f"exporter peak RSS (VmHWM): {ready_rss:.0f} MB when ready, "
              f"{later_rss:.0f} MB after 10 scrapes")  # fmt: skip
        print(f"records: {n:,}; load average: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
