"""What one record costs the handler, by kind: good, truncated (undecodable) and invalid (breaks
the model) Avro and JSON orders, as `Handler.handle` decides their route: decode, classify,
dead-letter headers and fingerprint, fitting. No broker, no worker loop: the pure core only.

CPU time of this process (`time.process_time`), the best of `--reps` rounds of `--count` calls
per kind, so a loaded machine inflates it less than a median would. `--base DIR` runs the same
measurement in another checkout (a `git worktree` of an older commit) in a child process,
alternating with this one for `--rounds` rounds, and prints new ÷ base per kind.

    python -m bench.bench_deadletter [--count 10000] [--reps 5] [--base DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.base import Codec
from pipeline.codecs.catalog import LocalCatalog
from pipeline.codecs.json import JsonCodec
from pipeline.core.contract import SourceRecord
from pipeline.core.handler import Handler
from pipeline.core.policy import RetryPolicy
from schemas.orders import Order
from tests.kit import avro_framed, good_order

REPO = Path(__file__).resolve().parent.parent
KINDS = ("good", "truncated", "invalid")


def measure(count: int, reps: int) -> dict[str, float]:
    """µs per `handle` call for each format and kind, with the `pipeline` this process
    imported (a `--base` child imports its checkout's: PYTHONPATH and cwd)."""
    codecs: dict[str, Codec] = {
        "avro": AvroCodec(source=LocalCatalog(Path.cwd() / "schemas/avro"), model=Order),
        "json": JsonCodec(model=Order),
    }
    out: dict[str, float] = {}
    for fmt, codec in codecs.items():
        handler = handler_for(codec)
        for kind, records in zip(KINDS, sample_records(fmt), strict=True):
            for rec in records:  # warm the per-cause caches, as a running worker has them
                handler.handle(rec, 1, 0.0, 1.0)
            best = min(_timed(handler, records, count) for _ in range(reps))
            out[f"{fmt} {kind}"] = best / count * 1e6
    return out


def _timed(handler: Handler, records: list[SourceRecord], count: int) -> float:
    handle = handler.handle
    started = time.process_time()
    for i in range(count):
        handle(records[i % len(records)], 1, 0.0, 1.0)
    return time.process_time() - started


def handler_for(codec: Codec) -> Handler:
    """A handler forwarding good records and dead-lettering the rest (no processor)."""
    return Handler(
        pipeline="bench",
        output_topic="out",
        dlq_topic="dlq",
        redrive_topic="bench.redrive",
        codecs={"orders": codec},
        output_codec=None,
        processor=None,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=1, budget_s=30),
        retryable=(),
        rng=random.Random(0),
    )


def sample_records(fmt: str) -> tuple[list[SourceRecord], list[SourceRecord], list[SourceRecord]]:
    """200 good, truncated and invalid (an item of quantity 0) records of `fmt`."""
    good, truncated, invalid = [], [], []
    for i in range(200):
        order, bad = good_order(i), good_order(i)
        bad["items"][0]["qty"] = 0
        if fmt == "avro":
            value, broken, cut = avro_framed(order), avro_framed(bad), avro_framed(order)[:-7]
        else:
            value = json.dumps(order).encode()
            broken, cut = json.dumps(bad).encode(), value[: len(value) // 2]
        good.append(value)
        truncated.append(cut)
        invalid.append(broken)

    def assample_records(values: list[bytes]) -> list[SourceRecord]:
        return [
            SourceRecord("orders", i % 4, i, 1_760_000_000_000 + i, b"k%d" % i, v, ())
            for i, v in enumerate(values)
        ]

    return assample_records(good), assample_records(truncated), assample_records(invalid)


def _in(checkout: Path, count: int, reps: int) -> dict[str, float]:
    """`measure` in a child process run in `checkout`: its `pipeline`, `schemas` and `tests`."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--count", str(count), "--reps", str(reps)],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--base", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.count, args.reps)))
        return
    print(f"load average {' '.join(map(str, os.getloadavg()))}")
    trees = {"this": REPO} if args.base is None else {"this": REPO, "base": args.base.resolve()}
    best: dict[str, dict[str, float]] = {name: {} for name in trees}
    for round_ in range(args.rounds if args.base is not None else 1):
        order = list(trees.items()) if round_ % 2 == 0 else list(reversed(trees.items()))
        for name, tree in order:
            for key, value in _in(tree, args.count, args.reps).items():
                best[name][key] = min(value, best[name].get(key, value))
    print(f"µs per handle(), best of {args.reps} x {args.count:,} calls per kind:")
    for key, value in best["this"].items():
        base = best.get("base", {}).get(key)
        versus = "" if base is None else f"  base {base:6.2f}  this ÷ base {value / base:.2f}"
        print(f"  {key:15} {value:6.2f}{versus}")
    print(f"load average after: {' '.join(map(str, os.getloadavg()))}")


if __name__ == "__main__":
    main()
