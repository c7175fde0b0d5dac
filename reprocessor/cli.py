"""`dlq`: inspect, group, fix, replay and discard dead letters. Each command parses, calls, renders
and returns an exit code from `pipeline.app.cli_support`'s table (0 ok, 1 runtime failure,
2 usage or configuration, 3 partial success); every expected failure is one line, a traceback only
with `--debug`. Kafka I/O is `pipeline.kafka.dlqio`, reading `reprocessor.stats`, writing
`reprocessor.replay`, printing `reprocessor.render`. The options shared by several commands come
first, then one function per command.

Each command imports the modules it runs in its body: building the command line, which is all
`dlq --help` does, needs click and the options, not the Kafka client, rich nor SQLite (some 60 ms
of every start; `test_cli_startup` holds it), and a reading command loads no replay module.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.app import logs
from pipeline.app.cli_support import confirm, run
from pipeline.core.contract import parse_coordinates
from pipeline.core.ledger_codec import encode_ledger_entry
from pipeline.errors import EXIT_OK, ConfigError, PartialSuccess
from reprocessor import grouping
from reprocessor.deadletters import from_record, to_kcat_json
from reprocessor.ledger import STATE_ENV
from reprocessor.options import (
    EXPORTER_PORT,
    INSPECT_DEFAULT_LIMIT,
    WHERE_GRAMMAR,
    Env,
    FixCommand,
    GlobalsGroup,
    change_of,
    fix_options,
    fix_pairs,
    global_options,
    parse_rate,
    selection_options,
    window,
)

if TYPE_CHECKING:
    from reprocessor.ledger import Plan
    from reprocessor.replay import Refused, Tally
    from reprocessor.stats import Item, Window


@click.group(
    cls=GlobalsGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=WHERE_GRAMMAR,
)
@global_options
@click.pass_context
def cli(ctx: click.Context, /, debug: bool, **opts: Any) -> None:
    """Inspect, group, fix and replay Kafka dead letters, exactly once.

    Works from a Lazarus pipeline's config (--config) or on any DLQ (--bootstrap and --topic),
    Kafka Connect, Spring Kafka, Kafka Streams and arroyo dead letters included."""
    from pipeline.kafka.clients import KAFKA_LOG  # every command but --help talks to Kafka

    # librdkafka's own log lines (fatal ones included) repeat what the one-line error says
    logging.getLogger(KAFKA_LOG.name).setLevel(logging.DEBUG if debug else logging.CRITICAL + 1)
    ctx.obj = Env(**opts)


def items_of(env: Env, opts: dict[str, Any], *, decode: bool = False) -> Iterator[Item]:
    """The selected dead letters of every DLQ topic, at most --limit in all: from the local
    index when the command offers `--scan` and it was not given, unless the selection needs
    what only a scan reads; else each topic read by `stats.scan`."""
    from reprocessor import index_query, indexed

    conf, win = env.conf(), window(opts, decode=decode)
    if not opts.get("scan_topic", True) and env.use_index and index_query.answerable(win):
        found = indexed.items(conf, env.topics(), win, env.payloads, quiet=env.quiet)
        return itertools.islice(found, opts["limit"])
    scans = (_scanned(env, topic, win) for topic in env.topics())
    return itertools.islice(itertools.chain.from_iterable(scans), opts["limit"])


def _scanned(env: Env, topic: str, win: Window) -> Iterator[Item]:
    """One DLQ topic's scan, with a progress bar when it takes more than a second."""
    from reprocessor import render
    from reprocessor.stats import read_ledger, scan

    conf = env.conf()
    with render.progress(None, f"read {topic}", quiet=env.quiet) as bar:
        yield from scan(conf, topic, win, env.payloads, read_ledger(conf, topic), bar)


def kcat(item: Item, *, decoded: bool) -> dict[str, object]:
    """kcat -J fields, `error`, the decoded payload if asked, and the deciding ledger entry."""
    shown = item.payload.shown if decoded and item.payload is not None else None
    out = to_kcat_json(item.dl, state=item.state, decoded=shown, tstype=item.tstype)
    entry = item.decision.entry
    out["ledger"] = None if entry is None else json.loads(encode_ledger_entry(entry))
    return out


SCAN_OPTION = click.option(
    "--scan", "scan_topic", is_flag=True, help="Read the whole topic, not the local index."
)


@cli.command()
@selection_options
@click.option("--decode", "-d", is_flag=True, help="Show payloads decoded with their schema.")
@SCAN_OPTION
@click.pass_obj
def inspect(env: Env, /, decode: bool, **opts: Any) -> int:
    """List dead letters: when, where from, key, cause, attempts, replay state (and, for
    decided ones, who decided when, in which run, with which fix)."""
    from reprocessor import render

    if env.as_json:
        for item in items_of(env, opts, decode=decode):
            render.json_line(kcat(env.masks.item(item), decoded=decode))
        return EXIT_OK
    capped = opts["limit"] is None
    limited = {**opts, "limit": opts["limit"] or INSPECT_DEFAULT_LIMIT}
    listed = [env.masks.item(item) for item in items_of(env, limited, decode=decode)]
    audit = any(item.decision.entry is not None for item in listed)
    render.inspect_table(listed, decoded=decode, audit=audit)
    more = (
        " (the first ones; --limit N for more)"
        if capped and len(listed) == INSPECT_DEFAULT_LIMIT
        else ""
    )
    render.note(f"{len(listed)} dead letters{more}")
    return EXIT_OK


@cli.command()
@click.argument("coordinates", metavar="TOPIC/PARTITION/OFFSET")
@click.pass_obj
def show(env: Env, /, coordinates: str) -> int:
    """One dead letter in full: every header, the decoded payload, stack trace, lineage."""
    from pipeline.kafka import dlqio
    from reprocessor import render
    from reprocessor.stats import Item, read_ledger

    try:
        topic, partition, offset = parse_coordinates(coordinates)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if env.config is None and not env.topic_overrides:
        env.topic_overrides = (topic,)  # the coordinates name the DLQ: --topic adds nothing
    env.check_ledger(topic)
    conf = env.conf()
    consumed = dlqio.read_one(conf, topic, partition, offset)
    if consumed is None:
        raise ConfigError(f"there is no record at {coordinates}")
    r = consumed.record
    dl = from_record(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
    decision = read_ledger(conf, topic).decision(dl)
    item = env.masks.item(Item(dl, decision, env.payloads.decode(dl), consumed.tstype))
    if env.as_json:
        render.json_line(kcat(item, decoded=True))
    else:
        render.show_item(item)
    return EXIT_OK


@cli.command()
@selection_options
@click.option(
    "--by",
    default="fingerprint",
    show_default=True,
    help=f"Group by {', '.join(grouping.GROUP_KEYS)} or value.<path>.",
)
@SCAN_OPTION
@click.pass_obj
def group(env: Env, /, by: str, scan_topic: bool, **opts: Any) -> int:
    """Count dead letters by cause: count, first/last seen, example, decided counts."""
    from reprocessor import index_query, indexed, render

    scan_topic = scan_topic or not env.use_index
    try:
        grouper = grouping.Grouper(by)
    except ValueError as exc:
        raise click.UsageError(f"--by: {exc}") from exc
    win = window(opts)
    if not scan_topic and index_query.answerable(win, by):
        rows = indexed.groups(env.conf(), env.topics(), by, win, opts["limit"], quiet=env.quiet)
    else:
        for item in items_of(env, {**opts, "scan_topic": True}, decode=grouper.needs_payload):
            grouper.add(item.dl, item.state, item.decoded)
        rows = grouper.rows()
    rows = env.masks.rows(by, rows)
    if env.as_json:
        for row in rows:
            render.json_line({"by": by, **asdict(row)})
    else:
        render.group_table(rows, by, render.now_ms())
    return EXIT_OK


@cli.command()
@selection_options
@SCAN_OPTION
@click.pass_obj
def stats(env: Env, /, scan_topic: bool, **opts: Any) -> int:
    """Per DLQ topic: total, unresolved (the real depth), by category and by cause.

    Also the oldest unresolved age, and the top causes (fingerprints) by unresolved count, each
    with its first and last failure and an example."""
    from reprocessor import index_query, indexed, render
    from reprocessor.stats import TopicStats

    scan_topic = scan_topic or not env.use_index
    conf, win = env.conf(), window(opts)
    found = []
    if not scan_topic and index_query.answerable(win):
        found = indexed.stats(conf, env.topics(), win, opts["limit"], quiet=env.quiet)
    for topic in env.topics() if scan_topic or not index_query.answerable(win) else ():
        topic_stats = TopicStats(topic)
        for item in itertools.islice(_scanned(env, topic, win), opts["limit"]):
            topic_stats.add(item)
        found.append(topic_stats)
    now = render.now_ms()
    if env.as_json:
        for topic_stats in found:
            render.json_line(topic_stats.to_json(now))
    else:
        render.stats_table(found, now)
    return EXIT_OK


@cli.command(cls=FixCommand)
@selection_options
@fix_options
@click.option(
    "--diff/--summary",
    "per_record",
    default=None,
    help="A diff per record (the default up to 10 records), or a summary.",
)
@click.option(
    "--save",
    is_flag=True,
    help="Store this preview as a plan (its id is printed): `dlq replay --plan ID` replays "
    "exactly these dead letters with exactly these fixed values.",
)
@click.pass_obj
def fix(env: Env, /, per_record: bool | None, save: bool, **opts: Any) -> int:
    """Preview a fix, writing nothing to Kafka: the diff, and whether each fixed record passes
    the pipeline's own validation. Exit 3 when some do not (they would not be replayed)."""
    from reprocessor import fix_preview, render, replay_run
    from reprocessor.fix_tally import FIRST, FixTally

    found = change_of(fix_pairs(opts), opts["fix_with"])
    if found is None:
        raise click.UsageError("give a fix: --set, --delete, --rename, --default, --cast or --with")
    saving = replay_run.save_preview(env, opts) if save else contextlib.nullcontext(None)
    tally = FixTally()  # the summary's counts and first examples: bounded, unlike the selection
    with saving as preview:
        for item in fix_preview.items(env, opts):
            pair = (item.dl, env.payloads.fix(item.dl, found[0]))
            if preview is not None and item.decision.entry is None:
                preview.add(*pair)
            shown = (pair[0], env.masks.fixed(pair[1]))  # --mask: a display copy only
            if env.as_json:
                render.json_line(render.fix_json(*shown))
            elif per_record:
                render.fix_diffs([shown])
            tally.add(*shown)
    if preview is not None and preview.stored is not None:
        stored = preview.stored
        render.note(
            f"plan {stored.plan.run} stored ({stored.plan.selected} unresolved dead letters): "
            f"`dlq replay --plan {stored.plan.run}` replays exactly this preview"
        )
    if not env.as_json and not tally.records:
        render.say("nothing to fix: no dead letter selected")
    elif not env.as_json and not per_record:
        if per_record is None and tally.records <= FIRST:
            render.fix_diffs(tally.first)
        else:
            render.fix_summary(tally)
    count, failed = tally.records, tally.failed
    if failed:
        raise PartialSuccess(f"{failed} of {count} fixed records fail (not replayable)")
    return EXIT_OK


@cli.command(cls=FixCommand)
@selection_options
@fix_options
@click.option("--to", "to_topic", metavar="TOPIC", help="Replay to TOPIC.")
@click.option("--to-source", is_flag=True, help="Replay to the topic named in dlq.origin.")
@click.option("--dry-run", is_flag=True, help="Show the plan and the refusals; write nothing.")
@click.option("--rate", callback=parse_rate, metavar="N/s", help="At most N dead letters/s.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Replay past max_replays (loop protection).")
@click.option(
    "--keep-foreign-headers",
    is_flag=True,
    help="Copies of Connect/Spring/Streams/arroyo dead letters keep those tools' error headers.",
)
@click.option("--resume", metavar="RUN", help="Continue the stored plan of RUN as it is.")
@click.option(
    "--plan",
    "plan_id",
    metavar="ID",
    help="Replay exactly the stored plan ID (from `fix --save` or a --dry-run), to --to, "
    "--to-source or the redrive topic.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar=STATE_ENV,
    help="Where plans are stored, per cluster (default ~/.local/state/lazarus).",
)
@click.pass_obj
def replay(
    env: Env, /, resume: str | None, plan_id: str | None, state_dir: Path | None, **opts: Any
) -> int:
    """Re-publish dead letters, optionally fixed, exactly once: each copy and its ledger entry
    in one transaction. Default target: the failing pipeline's redrive topic. The plan is
    stored first (its id is printed) and replayed as it is read back, in bounded memory; a
    dead letter that changed since its plan was made is refused. Exit 3 when some selected
    dead letters are refused (listed)."""
    from reprocessor import plans, render, replay_run

    if resume is not None and plan_id is not None:
        raise click.UsageError("--resume and --plan contradict each other: give one")
    if opts["to_topic"] is not None and not opts["to_topic"].strip():
        raise click.UsageError("--to is empty: name the topic to replay to")
    run_id = resume if resume is not None else plan_id
    if run_id is None:
        window(opts)  # a bad selection fails before any I/O (the ledger check reads Kafka)
    else:
        plans.check_run_id(run_id)  # "" too: an empty id is refused, not taken for no plan
    topic = env.topic()
    if run_id is not None:
        folder = replay_run.runs_dir(env, state_dir)
        stored = replay_run.stored_plan(env, topic, run_id, folder, opts, resume=resume is not None)
        summary = replay_run.summary_of(stored)
    else:
        plan = replay_run.new_plan(env, topic, opts)  # bad options fail before any I/O
        recipe = replay_run.recipe_of(env, plan)
        folder = replay_run.runs_dir(env, state_dir)
        stored, summary = replay_run.write_plan(env, plan, folder, opts, recipe)
        replay_run.check_targets(env, set(summary.planned))
    plan, selected = stored.plan, summary.selected
    if summary.refused and not env.as_json:
        render.refusals(summary.refused, total=summary.refused_count)
    if opts["dry_run"] or not summary.replayable:
        _report(env, plan, summary.planned, None, summary.refused, dry_run=opts["dry_run"])
        if summary.replayable:
            render.note(f"plan {plan.run} stored: `dlq replay --plan {plan.run}` replays it")
        return replay_run.finish(summary.refused_count, selected)
    if not opts["yes"]:
        text = render.plan_text("Replay", summary.replayable, topic, summary.planned)
        confirm(text + "?")
    render.note(f"run {plan.run}: plan in {stored.folder} (--resume {plan.run} continues it)")
    tally, late = replay_run.execute(env, stored, replay_run.recipe_of(env, plan), opts["rate"])
    env.remember_ledger(topic)  # a ledger this run created is known from now on
    if late.refusals and not env.as_json:
        render.refusals(late.refusals, total=late.refused_count)
    refused = [*summary.refused, *late.refusals]
    _report(env, plan, summary.planned, tally, refused, dry_run=False)
    return replay_run.finish(summary.refused_count + late.refused_count, selected)


def _report(
    env: Env,
    plan: Plan,
    planned: dict[str, int],
    tally: Tally | None,
    refused: Sequence[Refused],
    *,
    dry_run: bool,
) -> None:
    from reprocessor import render

    render.replay_report(
        as_json=env.as_json,
        run=plan.run,
        dlq_topic=plan.dlq_topic,
        planned=planned,
        done=None if tally is None else tally.by_target,
        skipped=0 if tally is None else tally.skipped,
        refused=refused,
        dry_run=dry_run,
    )


@cli.command()
@selection_options
@click.option("--reason", required=True, help="Why (mandatory; kept in the ledger).")
@click.option("--dry-run", is_flag=True, help="Show what would be discarded; write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def discard(env: Env, /, reason: str, dry_run: bool, yes: bool, **opts: Any) -> int:
    """Resolve dead letters without replaying them; the reason goes to the ledger."""
    from reprocessor import render, replay_run
    from reprocessor.stats import read_ledger

    if not reason.strip():
        raise click.UsageError("--reason must say why")
    window(opts)  # a bad selection fails before any I/O (the ledger check reads Kafka)
    topic = env.topic()
    with replay_run.discard_selection(env, topic, opts) as stored:
        count, run = stored.plan.selected, stored.plan.run
        text = render.plan_text("Discard", count, topic, {}) + f" (reason: {reason})"
        if dry_run or not count:
            render.discard_report(env.as_json, topic, text, None, None, dry_run=dry_run)
            return EXIT_OK
        if not yes:
            confirm(text + "?")
        job = replay_run._job(env, topic, run)
        ledger = job.start(lambda: read_ledger(env.conf(), topic))
        with render.progress(count, f"discard {run}") as advance:
            tally = job.discard(stored.letters(), reason, ledger, advance)
    env.remember_ledger(topic)  # a ledger this run created is known from now on
    render.discard_report(env.as_json, topic, text, run, tally, dry_run=False)
    return EXIT_OK


@cli.command("exporter")
@click.option(
    "--config",
    "-c",
    "configs",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Pipeline config whose DLQ and group to follow (repeatable; default: dlq --config).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", type=click.IntRange(0, 65535), default=EXPORTER_PORT, show_default=True)
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
    help="Seconds between catch-ups.",
)  # fmt: skip
@click.option(
    "--top-n", type=click.IntRange(min=1), default=10, show_default=True,
    help="Causes exported by fingerprint; the rest are summed as 'other'.",
)  # fmt: skip
@click.option("--cluster", help="The `cluster` label (default: the cluster id).")
@click.option(
    "--stall-window", type=click.FloatRange(min=0), default=120.0, show_default=True,
    help="Seconds a committed offset may stay put, with lag, before it counts as stalled.",
)  # fmt: skip
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar=STATE_ENV,
    help="Where the DLQ index is kept (default ~/.local/state/lazarus).",
)
@click.pass_obj
def exporter_command(env: Env, /, configs: tuple[Path, ...], **opts: Any) -> int:
    """Serve DLQ depth, age, expiry and consumer-group lag for Prometheus: /metrics, /livez,
    /readyz. Follows each config's DLQ and ledger incrementally (a local index), and its
    group's lag on its source and redrive topics."""
    files = list(configs) or ([env.config] if env.config is not None else [])
    if not files:
        raise click.UsageError("give --config FILE (repeatable)")
    logs.setup()
    from pipeline.app.settings import load_settings  # here too: pydantic-settings, 0.1-0.2 s
    from reprocessor import exporter  # here: the other commands start without it (EXPORTER_PORT)

    options = exporter.Options(
        host=opts["host"],
        port=opts["port"],
        interval_s=opts["interval"],
        top_n=opts["top_n"],
        cluster_label=opts["cluster"],
        stall_window_s=opts["stall_window"],
        state=opts["state_dir"],
    )
    exporter.run([load_settings(path) for path in files], options)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    run(cli, "dlq", argv)


if __name__ == "__main__":
    main()
