"""Worker throughput on a real broker: raw confluent-kafka loops against the Lazarus worker.

Four runs over the same N Avro orders (Confluent framing, 5% truncated, 4 source partitions),
each on fresh topics and a fresh group, inputs produced before the clock starts:

* `raw`      consume(500, 0.1) -> produce the bytes unchanged -> commit every second;
* `raw-eos`  the same loop with one transaction per consumed batch;
* `alos`     the Lazarus worker (in-process, `build_worker` in a thread), at-least-once,
             Avro decode + `schemas.orders:Order` validation, no processing function;
* `eos`      the same worker with `delivery = "exactly-once"`.

A run is timed from creating its clients to the moment the group's committed offsets reach
the end of every source partition; `first s` is the time to the first handled record (group
join included). A micro-benchmark of the codec and the handler (no Kafka) shows where the
worker's time goes. Nothing here asserts a timing: it measures and prints.

    python -m bench.bench_worker [--count N] [--bootstrap HOST:PORT] [--runs ...] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
import pydantic
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry
from rich import box
from rich.console import Console
from rich.table import Table

from pipeline.app.build import Schemas, build_handler, build_worker
from pipeline.app.logs import Text
from pipeline.app.settings import Settings, load_settings
from pipeline.codecs.avro import AvroCodec
from pipeline.codecs.catalog import LocalCatalog, load_model
from pipeline.codecs.json import validate_python
from pipeline.core.contract import SourceRecord
from pipeline.core.holds import HoldRules
from pipeline.errors import RecordError
from pipeline.runtime.worker import Worker
from scripts.kafka_broker import Broker

REPO = Path(__file__).resolve().parent.parent
ORDER_V1 = fastavro.parse_schema(
    json.loads((REPO / "schemas/avro/orders-value/1.avsc").read_text(encoding="utf-8"))
)
RUNS = ("raw", "raw-eos", "alos", "eos")
BASELINE_OF = {"alos": "raw", "eos": "raw-eos"}
BAD_EVERY = 20  # every 20th record is truncated Avro: 5%
PARTITIONS = 4
BATCH, POLL_S, COMMIT_EVERY_S = 500, 0.1, 1.0
TXN_TIMEOUT_S = 30.0
PRODUCER_TUNING: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "compression.type": "lz4",
    "enable.idempotence": True,  # as Lazarus' producers: like for like
}
CONSUMER_TUNING: dict[str, Any] = {  # as Lazarus' consumers
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
}


class BenchError(Exception):
    """A run could not finish (timeout, worker crash, failed delivery): no number to print."""


@dataclass(frozen=True, slots=True)
class Inputs:
    """Keys and Confluent-framed Avro values, index `i` bad when `is_bad(i)`."""

    records: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Topics:
    """One run's topics; `stem` is also its group id, pipeline name and transactional id."""

    stem: str

    @property
    def source(self) -> str:
        return f"{self.stem}.orders"

    @property
    def output(self) -> str:
        return f"{self.stem}.valid"

    @property
    def dlq(self) -> str:
        return f"{self.stem}.dlq"

    @property
    def redrive(self) -> str:
        return f"{self.stem}.redrive"


@dataclass(frozen=True, slots=True)
class Bench:
    bootstrap: str
    inputs: Inputs
    workdir: Path
    profile: bool
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    records: int
    first_s: float
    total_s: float
    forwarded: int
    dead: int
    profile: cProfile.Profile | None = None

    @property
    def rate(self) -> float:
        return self.records / self.total_s

    @property
    def rate_after_first(self) -> float:
        return self.records / max(self.total_s - self.first_s, 1e-9)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- inputs and topics ------------------------------------------------------------------------
def is_bad(i: int) -> bool:
    return i % BAD_EVERY == BAD_EVERY - 1


def order(i: int) -> dict[str, object]:
    return {
        "order_id": f"o-{i}",
        "customer": {"id": f"c-{i % 7}", "email": f"user{i}@example.com"},
        "items": [{"sku": f"sku-{i % 5}", "qty": 1 + i % 3}],
        "amount": 10.0 + i,
        "currency": "EUR",
        "created_at": 1_760_000_000_000 + i,
    }


def framed(i: int) -> bytes:
    """Confluent-framed Avro (schema id 1); a bad record loses the second half of its body."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, ORDER_V1, order(i))
    body = buf.getvalue()
    return b"\x00" + struct.pack(">I", 1) + (body[: len(body) // 2] if is_bad(i) else body)


def make_inputs(count: int) -> Inputs:
    return Inputs(tuple((f"o-{i}".encode(), framed(i)) for i in range(count)))


def create_topics(bootstrap: str, topics: Topics) -> None:
    layout = {topics.source: PARTITIONS, topics.output: PARTITIONS, topics.dlq: PARTITIONS}
    layout[topics.redrive] = 1
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    futures = admin.create_topics([NewTopic(t, p, 1) for t, p in layout.items()])
    for future in futures.values():
        future.result(timeout=60)


def delete_topics(bootstrap: str, topics: Topics) -> None:
    names = [topics.source, topics.output, topics.dlq, topics.redrive]
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    for name, future in admin.delete_topics(names).items():
        try:
            future.result(timeout=30)
        except Exception as exc:  # clean-up only: say so, keep the measurement
            say(f"could not delete topic {name}: {exc}")


def produce_inputs(bootstrap: str, topic: str, inputs: Inputs) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_TUNING})
    for n, (key, value) in enumerate(inputs.records, 1):
        send(producer, topic, key, value, None)
        if n % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise BenchError(f"could not produce the inputs to {topic}")


def send(producer: Producer, topic: str, key: bytes | None, value: bytes | None, cb: Any) -> None:
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=cb)
            return
        except BufferError:
            producer.poll(0.05)


# -- the raw baselines ------------------------------------------------------------------------
class Acks:
    """Delivery reports of a raw loop; a failed delivery fails the run."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed: KafkaError | None = None

    def report(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.ok += 1
        else:
            self.failed = err


def raw_clients(bench: Bench, topics: Topics, txn: bool) -> tuple[Consumer, Producer]:
    consumer = Consumer(
        {"bootstrap.servers": bench.bootstrap, "group.id": topics.stem, **CONSUMER_TUNING}
    )
    conf = {"bootstrap.servers": bench.bootstrap, **PRODUCER_TUNING}
    producer = Producer({**conf, "transactional.id": topics.stem} if txn else conf)
    if txn:
        producer.init_transactions(TXN_TIMEOUT_S)
    consumer.subscribe([topics.source])
    return consumer, producer


def relay(producer: Producer, topic: str, msgs: list[Message], acks: Acks) -> dict[int, int]:
    """Produce every value unchanged; the next offset to consume, per source partition."""
    positions: dict[int, int] = {}
    for msg in msgs:
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None  # consumed records have both
        send(producer, topic, msg.key(), msg.value(), acks.report)
        positions[partition] = offset + 1
    return positions


def offsets(topic: str, positions: dict[int, int]) -> list[TopicPartition]:
    return [TopicPartition(topic, p, o) for p, o in positions.items()]


def commit_transaction(consumer: Consumer, producer: Producer, done: list[TopicPartition]) -> None:
    producer.send_offsets_to_transaction(done, consumer.consumer_group_metadata(), TXN_TIMEOUT_S)
    producer.commit_transaction(TXN_TIMEOUT_S)


def run_raw(bench: Bench, topics: Topics, txn: bool) -> Result:
    """The raw loop until all inputs are consumed, produced, acknowledged and committed."""
    start = time.perf_counter()
    consumer, producer = raw_clients(bench, topics, txn)
    acks, consumed, total = Acks(), 0, len(bench.inputs.records)
    positions: dict[int, int] = {}
    first, last_commit = 0.0, start
    while consumed < total:
        if time.perf_counter() - start > bench.timeout_s or acks.failed is not None:
            raise BenchError(f"raw loop stopped at {consumed}/{total}: {acks.failed}")
        msgs = [m for m in consumer.consume(BATCH, POLL_S) if m.error() is None]
        if not msgs:
            continue
        first = first or time.perf_counter() - start
        if txn:
            producer.begin_transaction()
        batch = relay(producer, topics.output, msgs, acks)
        positions.update(batch)
        consumed += len(msgs)
        if txn:
            commit_transaction(consumer, producer, offsets(topics.source, batch))
            continue
        producer.poll(0)
        if time.perf_counter() - last_commit >= COMMIT_EVERY_S:
            consumer.commit(offsets=offsets(topics.source, positions), asynchronous=True)
            last_commit = time.perf_counter()
    producer.flush(60)
    if not txn:
        consumer.commit(offsets=offsets(topics.source, positions), asynchronous=False)
    elapsed = time.perf_counter() - start
    consumer.close()
    return Result("raw-eos" if txn else "raw", total, first, elapsed, acks.ok, 0)


# -- the Lazarus worker -----------------------------------------------------------------------
def write_config(bench: Bench, topics: Topics, delivery: str) -> Path:
    path = bench.workdir / f"{topics.stem}.toml"
    path.write_text(
        f'''pipeline = "{topics.stem}"
bootstrap = "{bench.bootstrap}"
delivery = "{delivery}"
schema_dir = "{REPO / "schemas/avro"}"
python_path = ["{REPO}"]
commit_interval_ms = {int(COMMIT_EVERY_S * 1000)}
batch_size = {BATCH}

[sources."{topics.source}"]
format = "avro"
model = "schemas.orders:Order"

[output]
topic = "{topics.output}"

[dlq]
topic = "{topics.dlq}"
''',
        encoding="utf-8",
    )
    return path


class WorkerThread(threading.Thread):
    """`Worker.run()` in a thread, its exception kept for the caller, optionally profiled."""

    def __init__(self, worker: Worker, profiler: cProfile.Profile | None) -> None:
        super().__init__(name="lazarus-worker", daemon=True)
        self.worker = worker
        self.profiler = profiler
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.profiler is not None:
                self.profiler.runcall(self.worker.run)
            else:
                self.worker.run()
        except BaseException as exc:
            self.error = exc


def wait_until(
    ready: Callable[[], bool], runner: WorkerThread, deadline: float, every: float, what: str
) -> float:
    """Poll `ready` until true; the time it became true. Raises `BenchError` when the worker
    died or the deadline passed first."""
    while not ready():
        if not runner.is_alive():
            raise BenchError(f"worker stopped before {what}: {runner.error!r}")
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(every)
    return time.perf_counter()


def all_committed(watcher: Consumer, topic: str, ends: dict[int, int]) -> Callable[[], bool]:
    asked = [TopicPartition(topic, p) for p in ends]

    def check() -> bool:
        got = watcher.committed(asked, timeout=10)
        return all(tp.offset >= ends[tp.partition] for tp in got)

    return check


def source_ends(bootstrap: str, topic: str) -> dict[int, int]:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    ends = {
        p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(PARTITIONS)
    }
    probe.close()
    return ends


def outcome_count(registry: CollectorRegistry, pipeline: str, outcome: str) -> int:
    labels = {"pipeline": pipeline, "outcome": outcome}
    return int(registry.get_sample_value("lazarus_records_total", labels) or 0)


def any_forwarded(registry: CollectorRegistry, pipeline: str) -> Callable[[], bool]:
    return lambda: outcome_count(registry, pipeline, "forwarded") > 0


def run_lazarus(bench: Bench, topics: Topics, delivery: str) -> Result:
    """A worker until the group's committed offsets reach every source partition's end."""
    settings = load_settings(write_config(bench, topics, delivery))
    ends = source_ends(bench.bootstrap, topics.source)
    watcher = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": topics.stem})
    registry, profiler = CollectorRegistry(), cProfile.Profile() if bench.profile else None
    start = time.perf_counter()
    deadline = start + bench.timeout_s
    runner = WorkerThread(build_worker(settings, "0", registry, HoldRules.empty()), profiler)
    runner.start()
    try:
        handled = any_forwarded(registry, topics.stem)
        first = wait_until(handled, runner, deadline, 0.005, "the first record") - start
        done = all_committed(watcher, topics.source, ends)
        total = wait_until(done, runner, deadline, 0.05, "all offsets committed") - start
    finally:
        runner.worker.stop()
        runner.join(60)
        watcher.close()
    forwarded = outcome_count(registry, topics.stem, "forwarded")
    dead = outcome_count(registry, topics.stem, "dead_lettered")
    name = "alos" if delivery == "at-least-once" else "eos"
    return Result(name, sum(ends.values()), first, total, forwarded, dead, profiler)


def one_run(bench: Bench, name: str) -> Result:
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}-{name}")
    create_topics(bench.bootstrap, topics)
    try:
        say(f"{name}: producing {len(bench.inputs.records)} inputs to {topics.source}")
        produce_inputs(bench.bootstrap, topics.source, bench.inputs)
        say(f"{name}: running")
        if name in ("raw", "raw-eos"):
            return run_raw(bench, topics, txn=name == "raw-eos")
        return run_lazarus(bench, topics, "at-least-once" if name == "alos" else "exactly-once")
    finally:
        delete_topics(bench.bootstrap, topics)


# -- where the time goes: no Kafka ------------------------------------------------------------
def us_per_call(call: Callable[[Any], object], items: Sequence[Any]) -> float:
    start = time.perf_counter()
    for item in items:
        try:  # noqa: SIM105 - suppress() would add its own cost to every timed call
            call(item)
        except RecordError:
            pass
    return (time.perf_counter() - start) / max(len(items), 1) * 1e6


def micro(settings: Settings, inputs: Inputs, sample: int = 20_000) -> list[tuple[str, float]]:
    """Microseconds per record of decoding, validating and the whole handler decision."""
    catalog = LocalCatalog(settings.schema_dir)
    plain = AvroCodec(source=catalog)
    model = load_model("schemas.orders:Order")
    full = AvroCodec(source=catalog, model=model)
    picked = list(enumerate(inputs.records[:sample]))
    good = [v for i, (_, v) in picked if not is_bad(i)]
    bad = [v for i, (_, v) in picked if is_bad(i)]
    handler = build_handler(settings, Schemas(settings), HoldRules.empty(), "bench")
    topic, now = next(iter(settings.sources)), time.time()
    recs = [SourceRecord(topic, 0, i, 0, k, v, ()) for i, (k, v) in picked]
    events = [plain.decode(v).event for v in good]
    return [
        ("AvroCodec.decode, no model (good record)", us_per_call(plain.decode, good)),
        ("Order.model_validate alone (pydantic-core)", us_per_call(model.model_validate, events)),
        ("codecs.json.validate_python (+ non-finite walk)",
         us_per_call(lambda e: validate_python(model, e), events)),
        ("AvroCodec.decode + Order (good record)", us_per_call(full.decode, good)),
        ("AvroCodec.decode + Order (truncated record)", us_per_call(full.decode, bad)),
        ("Handler.handle, 95/5 mix (incl. dead-letter headers)",
         us_per_call(lambda r: handler.handle(r, 1, now, now), recs)),
    ]  # fmt: skip


# -- output -----------------------------------------------------------------------------------
def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def facts(bootstrap: str, own: bool) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ck, lib = confluent_kafka.__version__, confluent_kafka.libversion()[0]
    return (
        f"nproc {cpus} · Python {platform.python_version()} · confluent-kafka {ck} · "
        f"librdkafka {lib} · fastavro {fastavro.__version__} · pydantic {pydantic.VERSION} · "
        f"broker {bootstrap} ({'started here' if own else 'given'}) · load avg {load_average()}"
    )


def table(results: list[Result]) -> Table:
    by_name = {r.name: r for r in results}
    out = Table(box=box.SIMPLE_HEAD, title="worker throughput (higher is better)")
    for col in ("run", "records", "out/dlq", "first s", "total s", "rec/s", "rec/s after first"):
        out.add_column(col, justify="left" if col == "run" else "right")
    out.add_column("vs baseline", justify="right")
    for r in results:
        base = by_name.get(BASELINE_OF.get(r.name, ""))
        ratio = f"{r.rate / base.rate:.2f}x {base.name}" if base else "-"
        out.add_row(
            r.name,
            f"{r.records:,}",
            f"{r.forwarded:,}/{r.dead:,}",
            f"{r.first_s:.2f}",
            f"{r.total_s:.2f}",
            f"{r.rate:,.0f}",
            f"{r.rate_after_first:,.0f}",
            ratio,
        )
    return out


def render(console: Console, results: list[Result], costs: list[tuple[str, float]]) -> None:
    console.print(table(results))
    console.print(f"  load avg at the end: {load_average()}")
    for label, us in costs:
        console.print(f"  micro: {label:<52} {us:8.1f} µs/record  ({1e6 / us:>9,.0f} rec/s)")
    for r in results:
        if r.profile is not None:
            console.print(f"\n[bold]cProfile of the {r.name} worker thread, by own time[/]")
            stats = pstats.Stats(r.profile, stream=console.file).sort_stats("tottime")
            stats.print_stats(15)
            stats.print_stats(r"/pipeline/", 20)


# -- entry point ------------------------------------------------------------------------------
def log_to(path: Path) -> None:
    """What `lazarus worker` logs (a warning per dead letter) goes to a file, as in production
    it goes to a log collector: its cost stays in the measurement, its lines off the terminal."""
    handler = logging.FileHandler(path)
    handler.setFormatter(Text())
    root = logging.getLogger("lazarus")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    own = Broker(workdir / "kafka")
    say(f"starting a broker ({own.start():.1f}s)")
    try:
        yield own.bootstrap
    finally:
        own.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="records per run")
    parser.add_argument("--bootstrap", help="a running broker (default: start one here)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the worker thread (slows it down)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=130)
    with tempfile.TemporaryDirectory(prefix="lazarus-bench-") as tmp:
        workdir = Path(tmp)
        log_to(workdir / "worker.log")
        inputs = make_inputs(args.count)
        with broker(args.bootstrap, workdir) as bootstrap:
            console.print(facts(bootstrap, own=args.bootstrap is None))
            bench = Bench(bootstrap, inputs, workdir, args.profile, max(300.0, args.count / 200))
            results = [one_run(bench, name) for name in args.runs]
        settings = load_settings(write_config(bench, Topics("bench-micro"), "at-least-once"))
        costs = micro(settings, inputs)
    if args.profile:
        console.print("[yellow]profiled: the rates above include cProfile's overhead[/]")
    render(console, results, costs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
