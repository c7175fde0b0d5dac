"""`lazarus demo`: the whole story on one machine, end to end, checked by its own accounting.

With no `--bootstrap` it starts librdkafka's in-process mock cluster (nothing to install), so the
`dlq` steps run in this process too. It produces a realistic order stream with a realistic mix
of failures, runs a worker over it, then does what an operator would: `dlq stats`, `dlq group`,
a `dlq fix` preview and a `dlq replay`, runs the worker again over the redrive topic, and
re-reads every topic to prove that nothing was lost or duplicated. Exit 0 only if that holds.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lazarus import demo_cluster, demo_data
from pipeline.app.build import build_worker, create_topics
from pipeline.app.settings import Settings, load_settings
from pipeline.core import contract
from pipeline.core.holds import HoldRules, load_rules
from pipeline.errors import ConfigError, RuntimeFailure
from reprocessor.ledger import STATE_ENV

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"


@dataclass(frozen=True)
class Names:
    pipeline: str

    @property
    def orders(self) -> str:
        return f"{self.pipeline}.orders"

    @property
    def payments(self) -> str:
        return f"{self.pipeline}.payments"

    @property
    def output(self) -> str:
        return f"{self.pipeline}.valid"

    @property
    def dlq(self) -> str:
        return f"{self.pipeline}.dlq"

    @property
    def redrive(self) -> str:
        return f"{self.pipeline}.redrive"

    def topics(self, ledger: str) -> list[str]:
        """Every topic the demo uses, `ledger` (the DLQ's ledger topic) included."""
        return [self.orders, self.payments, self.output, self.dlq, self.redrive, ledger]


MOCK_REPROCESSOR = """
[reprocessor]
index = false  # librdkafka's mock cluster cannot describe itself: dlq scans instead
"""


def write_config(folder: Path, names: Names, bootstrap: str, mock: bool) -> Path:
    expires = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    holds = folder / "holds.toml"
    holds.write_text(demo_data.hold_rules(expires))
    consumer = '"group.protocol" = "consumer"' if mock else '"session.timeout.ms" = 6000'
    config = folder / "demo.toml"
    config.write_text(
        f"""pipeline = "{names.pipeline}"
bootstrap = "{bootstrap}"
delivery = "{"at-least-once" if mock else "exactly-once"}"
schema_dir = "{SCHEMAS / "avro"}"
python_path = ["{REPO}"]
processor = "lazarus.demo_data:enrich"
commit_interval_ms = 100

[sources."{names.orders}"]
format = "avro"
model = "schemas.orders:Order"

[sources."{names.payments}"]
format = "json"
model = "schemas.orders:Payment"

[output]
topic = "{names.output}"

[dlq]
topic = "{names.dlq}"
stacktraces = false

[policy]
holds = "{holds}"
initial_backoff_ms = 50
max_backoff_ms = 200
retry_budget_ms = 5000

[consumer]
{consumer}

[producer]
"transaction.timeout.ms" = 20000
"message.timeout.ms" = 15000
"""
        + (MOCK_REPROCESSOR if mock else "")
    )
    return config


class Story:
    """Narration and the person-typed commands, with rich."""

    def __init__(self, console: Console, config: Path) -> None:
        self.console = console
        self.config = config

    def say(self, text: str) -> None:
        self.console.print(f"[bold cyan]▸[/] {text}")

    def command(self, *args: str) -> int:
        """Run a `dlq` command in this process (the mock cluster lives here) as typed."""
        from reprocessor.cli import cli

        shown = " ".join(shlex.quote(a) for a in args)
        config = shlex.quote(str(self.config))
        self.console.print(f"\n[bold]$ dlq --config {escape(config)} {escape(shown)}[/]")
        try:
            result = cli.main(
                args=["--config", str(self.config), *args], prog_name="dlq", standalone_mode=False
            )
        except SystemExit as exc:  # a command that exits on its own
            return int(exc.code or 0)
        return result if isinstance(result, int) else 0


def run_worker_until_done(settings: Settings, topics: list[str], console: Console) -> None:
    """Run one worker in a thread until every record of `topics` is committed."""
    holds = load_rules(settings.policy.holds) if settings.policy.holds else HoldRules.empty()
    worker = build_worker(settings, "demo", CollectorRegistry(), holds)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="demo-worker", daemon=True)
    thread.start()
    try:
        demo_cluster.wait_committed(settings, topics, 90, alive=thread.is_alive)
    finally:
        worker.stop()
        thread.join(30)
    if failures:
        raise RuntimeFailure(f"the demo worker failed: {failures[0]!r}") from failures[0]
    if thread.is_alive():
        raise RuntimeFailure("the demo worker did not stop within 30s")


def outcome_table(names: Names, bootstrap: str, inputs: int) -> Table:
    dead = demo_cluster.read_topic(bootstrap, names.dlq)
    outputs = demo_cluster.read_topic(bootstrap, names.output)
    by_category = Counter(
        (contract.parse_dead_letter(r.headers) or contract.DeadLetterMeta()).category for r in dead
    )
    table = Table(title="First pass, re-read from the topics", show_edge=False)
    table.add_column("outcome")
    table.add_column("records", justify="right")
    table.add_row("input", str(inputs))
    table.add_row("forwarded to " + names.output, str(len(outputs)))
    for category, count in sorted(by_category.items(), key=lambda kv: -kv[1]):
        table.add_row(f"dead-lettered: {category}", str(count))
    return table


def produce_sample(settings: Settings) -> list[str]:
    """`lazarus sample`: the demo stream into a pipeline's own source topics."""
    avro = next((t for t, s in settings.sources.items() if s.format == "avro"), None)
    json_topic = next((t for t, s in settings.sources.items() if s.format == "json"), None)
    if avro is None or json_topic is None:
        raise ConfigError("`lazarus sample` needs one avro and one json source topic")
    lines = [
        f"created topic {t}"
        for t in demo_cluster.create_sources(settings.bootstrap, [avro, json_topic])
    ]
    records = demo_data.stream(SCHEMAS / "avro/orders-value/1.avsc")
    demo_cluster.produce(settings.bootstrap, {"orders": avro, "payments": json_topic}, records)
    counts = Counter(r.topic for r in records)
    lines.append(
        f"produced {counts['orders']} orders to {avro} "
        f"and {counts['payments']} payments to {json_topic}"
    )
    return lines


def run_demo(
    bootstrap: str | None, console: Console | None = None, *, keep_topics: bool = False
) -> int:
    """The story; returns the exit code (0 only if the final accounting holds). On a real
    broker the topics it created are deleted when it ends, however it ends, unless
    `keep_topics` (`_tidied`); its folder in the temporary directory goes too, unless the
    topics stay (`_scratch`)."""
    console = console or Console()
    started = time.monotonic()
    with _cluster(bootstrap) as (address, mock), _scratch(keep=keep_topics and not mock) as folder:
        names = Names(f"demo-{uuid.uuid4().hex[:6]}")
        config = write_config(folder, names, address, mock)
        settings = load_settings(config)
        story = Story(console, config)
        _intro(story, address, mock)
        topics = names.topics(settings.ledger_topic)
        with _tidied(story, address, config, topics, real=not mock, keep=keep_topics):
            if mock:
                demo_cluster.touch_topics(address, topics)
            else:
                demo_cluster.create_sources(address, [names.orders, names.payments])
                create_topics(settings)
            ok = _story(story, settings, names, address, console)
    console.print(f"\n[dim]demo finished in {time.monotonic() - started:.1f}s[/]")
    return 0 if ok else 1


def _story(story: Story, settings: Settings, names: Names, address: str, console: Console) -> bool:
    """Produce, run the worker, do what the operator does, run it again, account."""
    records = demo_data.stream(SCHEMAS / "avro/orders-value/1.avsc")
    demo_cluster.produce(address, {"orders": names.orders, "payments": names.payments}, records)
    story.say(f"Produced {len(records)} order and payment events, some of them broken.")
    run_worker_until_done(settings, [names.orders, names.payments], console)
    console.print(outcome_table(names, address, len(records)))
    _operator(story)
    story.say("The worker picks the replays up from its redrive topic.")
    run_worker_until_done(settings, [names.redrive], console)
    return demo_cluster.final_accounting(console, names, address, records)


@contextmanager
def _tidied(
    story: Story, address: str, config: Path, topics: list[str], *, real: bool, keep: bool
) -> Iterator[None]:
    """On a real broker, the demo's topics are deleted when it ends, however it ends (an
    error, Ctrl-C, SIGTERM: then quietly, and the error is the one said), unless `keep`."""
    if not real:
        yield
        return
    try:
        yield
    except BaseException:
        if not keep:
            with suppress(Exception):  # the demo's own failure is what to say
                demo_cluster.delete_topics(address, topics)
        raise
    _tidy(story, address, config, topics, keep)


def _tidy(story: Story, address: str, config: Path, topics: list[str], keep: bool) -> None:
    """Delete the demo's topics from the real broker, or say where they were left."""
    if keep:
        story.say(
            f"Left the demo's topics on {address}: {', '.join(topics)} "
            f"(config: {config}; without --keep-topics the demo removes them)."
        )
        return
    demo_cluster.delete_topics(address, topics)
    story.say(
        f"Removed the demo's topics from {address} ({len(topics)}); --keep-topics keeps them."
    )


def _intro(story: Story, address: str, mock: bool) -> None:
    where = "librdkafka's in-process mock cluster" if mock else f"the broker at {address}"
    story.say(f"Lazarus demo on {where}.")
    if mock:
        story.say(
            "The mock cluster cannot emulate transactions, so this run is at-least-once; "
            "`--bootstrap HOST:PORT` runs the same story exactly-once on a real broker."
        )
    else:
        story.say("Running exactly-once: outputs, dead letters and offsets in one transaction.")


def _operator(story: Story) -> None:
    story.say("Paged: the DLQ grows. What is in there?")
    story.command("stats")
    story.command("group")
    where = 'category=validation and message~"currency (missing)"'
    story.say("Four payments lack a currency. Preview a fix: default it to EUR.")
    story.command("fix", "--where", where, "--default", "currency=EUR")
    story.say("Replay them through the pipeline's redrive topic, exactly once.")
    story.command("replay", "--where", where, "--default", "currency=EUR", "--yes")
    story.command("stats")


@contextmanager
def _scratch(*, keep: bool) -> Iterator[Path]:
    """The demo's folder (`/tmp/lazarus-demo-*`: its config, hold rules and, as the `dlq`
    state folder, the plans and index of its `dlq` steps), removed when the demo ends, however
    it ends (an error, Ctrl-C, SIGTERM: `cli_support` raises both where the demo is), unless
    `keep`: the topics left on a real broker (--keep-topics), which its config names."""
    folder = Path(tempfile.mkdtemp(prefix="lazarus-demo-"))
    previous = os.environ.get(STATE_ENV)
    os.environ[STATE_ENV] = str(folder / "state")
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(STATE_ENV, None)
        else:
            os.environ[STATE_ENV] = previous
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _cluster(bootstrap: str | None) -> Iterator[tuple[str, bool]]:
    if bootstrap:
        yield bootstrap, False
        return
    with demo_cluster.mock_cluster() as address:
        yield address, True
