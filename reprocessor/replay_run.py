"""`dlq replay` and `dlq fix --save` around stored plans (`reprocessor.plans`): select, write the
plan to disk as it is computed, then replay it by reading it back a partition at a time, so the
selection is never held in memory.

Planning reads the selection from the DLQ index when it can (no fix, a selection the index
answers: nothing but header fields is needed) and otherwise scans the topic, decoding and fixing
each dead letter once to record the sha256 of the value it will be replayed with. Replaying
fences earlier runs (`init_transactions`) and reads the ledger to its end, as the contract says;
then, partition by partition, it reads the planned dead letters again from the DLQ (from the
first planned offset, stopping after the last), checks each is what the plan saw, and writes the
copies and their ledger entries a chunk per transaction. The index selects; the ledger decides.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Generator, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import click

from pipeline.core.contract import (
    VALUE_OMITTED,
    DeadLetterMeta,
    SourceRecord,
    format_coordinates,
    ledger_topic,
)
from pipeline.errors import EXIT_OK, ConfigError, PartialSuccess
from pipeline.kafka import dlqio
from pipeline.kafka.follow import Cluster
from reprocessor import index_query, indexed, plans, render, replay_batches
from reprocessor.deadletters import DeadLetter, ReplayState, from_record
from reprocessor.index import DlqIndex
from reprocessor.index_query import PlanRow
from reprocessor.index_rows import Row, RowView, fast_row
from reprocessor.ledger import Plan, new_run_id, state_dir
from reprocessor.options import PLAN_OPTIONS, Env, change_of, fix_pairs, window
from reprocessor.payloads import Fixed
from reprocessor.plan_ledger import plan_ledger
from reprocessor.plans import SHOWN_REFUSALS, StoredPlan, Summary
from reprocessor.replay import (
    Copy,
    Pacer,
    Recipe,
    Refusal,
    Refused,
    Run,
    Tally,
    Target,
    TargetMode,
    prepare,
    refusal_of,
    transactional_id,
)
from reprocessor.replay_batches import Copies, PlanMatch, copies_of
from reprocessor.replay_gc import few_collections
from reprocessor.stats import Window, read_ledger, scan

READ_AHEAD = {
    "queued.max.messages.kbytes": 1024,
    "queued.min.messages": 5000,
    "fetch.max.bytes": 2 << 20,
    "fetch.queue.backoff.ms": 10,
}
"""What the replay's reader fetches ahead of the transactions: per partition 1 MB or 5,000
records (a chunk or two), 2 MB per fetch. librdkafka's defaults (64 MB or 100,000 records per
partition, 50 MB per fetch) cost 150 MB of RSS on 4 partitions and buy nothing: the
transactions are the bottleneck. A partition over these bounds is fetched again after 10 ms,
not librdkafka's default second (`fetch.queue.backoff.ms`, which its documentation says to
lower with low bounds): with it, the replay's reader sat with nothing to read for 0.5-0.6 s at
a time, once or twice per 100,000 dead letters. -X overrides."""


def runs_dir(env: Env, explicit: Path | None) -> Path:
    """This cluster's plans folder (`<state>/runs/<cluster id>`)."""
    return plans.runs_folder(state_dir(explicit), Cluster(env.conf()).cluster_id())


def new_plan(env: Env, topic: str, opts: dict[str, Any], *, target: bool = True) -> Plan:
    """A plan from the command line; bad options raise (exit 2) before any I/O. Without
    `target` (a saved `fix` preview) the target is chosen when the plan is replayed."""
    mode = ""
    if target:
        if opts["to_topic"] and opts["to_source"]:
            raise click.UsageError("--to and --to-source contradict each other")
        mode = _mode(opts).value
    change_of(fix_pairs(opts), opts["fix_with"])
    return Plan(
        run=new_run_id(),
        dlq_topic=topic,
        created_ms=render.now_ms(),
        operator=env.operator,
        target_mode=mode,
        target_topic=opts.get("to_topic"),
        coordinates=(),
        fix=tuple(fix_pairs(opts)),
        fix_with=opts["fix_with"],
        force=bool(opts.get("force")),
        where=opts["where"] or "",
        keep_foreign_headers=bool(opts.get("keep_foreign_headers")),
    )


def _mode(opts: dict[str, Any]) -> TargetMode:
    if opts["to_source"]:
        return TargetMode.SOURCE
    return TargetMode.TO if opts["to_topic"] else TargetMode.REDRIVE


def allowed_targets(env: Env) -> frozenset[str] | None:
    """The topics the configured pipeline owns, which a replay may write to without `--to`."""
    settings = env.settings
    if settings is None:
        return None
    return frozenset({settings.redrive_topic, *settings.sources})


def recipe_of(env: Env, plan: Plan) -> Recipe:
    """How the plan's dead letters become copies (a preview plan's target: redrive)."""
    found = change_of(plan.fix, plan.fix_with)
    return Recipe(
        run=plan.run,
        target=Target(
            TargetMode(plan.target_mode or "redrive"), plan.target_topic, allowed_targets(env)
        ),
        fix=None if found is None else env.payloads.fixer(found[0]),
        fix_description=() if found is None else found[1],
        max_replays=env.max_replays,
        force=plan.force,
        keep_foreign_headers=plan.keep_foreign_headers,
    )


def stored_plan(
    env: Env, topic: str, run: str, folder: Path, opts: dict[str, Any], *, resume: bool
) -> StoredPlan:
    """A stored plan to replay. `--resume` takes it as it is; `--plan` may also choose the
    target of a saved preview. Selection and fix options are refused (exit 2): the plan fixed
    them once and for all."""
    flag = "--resume" if resume else "--plan"
    given = [name for name in PLAN_OPTIONS if opts.get(name)]
    targets = {"to_topic", "to_source"}
    if given and (resume or not set(given) <= targets):
        raise click.UsageError(
            f"{flag} replays the stored plan as it is: drop selection"
            + (", target" if resume else "")
            + " and fix options"
        )
    stored = plans.load(folder, run)
    plan = stored.plan
    if plan.dlq_topic != topic:
        raise click.UsageError(f"plan {run} replays {plan.dlq_topic}, not {topic}")
    if given and plan.target_mode:
        raise click.UsageError(f"plan {run} already replays to its target: drop --to/--to-source")
    stored.check()  # a damaged line is refused now, not found after the lines before it replayed
    if not plan.target_mode:
        if opts["to_topic"] and opts["to_source"]:
            raise click.UsageError("--to and --to-source contradict each other")
        chosen = replace(plan, target_mode=_mode(opts).value, target_topic=opts["to_topic"])
        stored = stored.save(chosen)
    return stored


def summary_of(stored: StoredPlan) -> Summary:
    """What a stored plan holds, its refusals read back (the first ones kept)."""
    plan = stored.plan
    shown: list[Refused] = []
    for refused in stored.refused():
        if len(shown) >= SHOWN_REFUSALS:
            break
        shown.append(refused)
    planned = {plan.target_topic: plan.selected - plan.refused} if plan.target_topic else {}
    return Summary(plan.selected, planned, shown, plan.refused)


def write_plan(
    env: Env, plan: Plan, folder: Path, opts: dict[str, Any], recipe: Recipe
) -> tuple[StoredPlan, Summary]:
    """Select the unresolved dead letters (at most --limit) and write the plan as they are
    read. ConfigError (exit 2), with no plan left behind, when the target cannot place some."""
    win, limit, topic = window(opts), opts["limit"], plan.dlq_topic
    with few_collections(), plans.PlanWriter(folder, plan) as writer:
        if recipe.fix is None and index_query.selects_by_time_only(win):
            with _index(env, topic) as index:
                wanted = TARGET_READS[recipe.target.mode]
                _plan_rows(writer, index_query.unresolved(index, win, limit, wanted), recipe)
        elif recipe.fix is None and index_query.answerable(win):
            views = indexed.rows_once_more(partial(_indexed, env, topic, win))
            for view in itertools.islice(views, limit):
                _plan_row(writer, view, recipe)
        else:
            for letter in itertools.islice(_scanned(env, topic, win), limit):
                found = restored(env, letter)
                if isinstance(found, Refused):
                    writer.refuse(letter, found.reason)
                else:
                    _plan_one(writer, found, recipe)
        summary = writer.summary
        if summary.homeless:
            raise recipe.target.homeless(summary.homeless, summary.homeless_dialects)
        writer.plan = replace(plan, selected=summary.selected, refused=summary.refused_count)
    return StoredPlan(writer.plan, writer.folder), summary


def _plan_row(writer: plans.PlanWriter, view: RowView, recipe: Recipe) -> None:
    """Plan a dead letter from its index row: no value to fix or hash (the replay reads and
    checks it), and no `DeadLetter` made: `Target.topic_of` and `replay.refusal_of` give the
    target and refusal its letter as read from the topic has."""
    topic = recipe.target.topic_of(view.dialect, view.pipeline, view.origin, view.source_topic)
    reason = refusal_of(view.replay_count, recipe, topic)
    if reason is None:
        writer.add(view, None, topic, hashed=False)
    else:
        writer.refuse(view, reason, homeless=topic is None)


TARGET_READS = {
    TargetMode.TO: frozenset[str](),
    TargetMode.REDRIVE: frozenset({"pipeline", "dialect"}),
    TargetMode.SOURCE: frozenset({"origin", "source_topic", "dialect"}),
}
"""What `Target.topic_of` reads of a row in each mode, and the dialect of a row it may find no
topic for (a homeless refusal names it): `index_query.unresolved`'s `wanted` columns."""


def _plan_rows(writer: plans.PlanWriter, rows: Iterable[PlanRow], recipe: Recipe) -> None:
    """`_plan_row` of each row `index_query.unresolved` reads: the same targets, refusals and
    plan lines, from plain tuples."""
    topic_of, add = recipe.target.topic_of, writer.add_line
    dlq = writer.plan.dlq_topic
    for row in rows:
        partition, offset, seen_ms, fingerprint, pipeline, origin, source, count, dialect = row
        topic = topic_of(dialect, pipeline, origin, source)
        reason = refusal_of(count, recipe, topic)
        if reason is None:
            add(partition, offset, "", fingerprint, seen_ms, topic)
        else:
            where = format_coordinates(dlq, partition, offset)
            refused = _Unplanned(partition, offset, seen_ms, fingerprint, dialect, where)
            writer.refuse(refused, reason, homeless=topic is None)


@dataclass(frozen=True, slots=True)
class _Unplanned:
    """A refused row of `index_query.unresolved`, as `PlanWriter.refuse` reads it."""

    partition: int
    offset: int
    seen_ms: int
    fingerprint: str
    dialect: str
    coordinates: str


def _plan_one(writer: plans.PlanWriter, dl: DeadLetter, recipe: Recipe) -> None:
    """Plan a dead letter read from the topic: fixed (when the plan has a fix) and hashed."""
    result = prepare(dl, recipe)
    if isinstance(result, Copy):
        writer.add(dl, result.value, result.topic)
    else:
        writer.refuse(dl, result.reason, homeless=recipe.target.topic_for(dl) is None)


@contextmanager
def discard_selection(env: Env, topic: str, opts: dict[str, Any]) -> Iterator[StoredPlan]:
    """The unresolved dead letters `opts` select (at most --limit), in a plan in a temporary
    folder, removed afterwards: a discard counts them, asks, then decides exactly those,
    reading them back, so the selection is never held in memory. From the index when it can
    answer the selection (no value is needed), else from a scan."""
    win = window(opts)
    plan = Plan(new_run_id(), topic, render.now_ms(), env.operator, "", None, ())
    indexed = index_query.answerable(win)
    letters: Iterator[plans.Subject] = (_indexed if indexed else _scanned)(env, topic, win)
    with tempfile.TemporaryDirectory(prefix="lazarus-discard-") as folder:
        with plans.PlanWriter(Path(folder), plan) as writer:
            for dl in itertools.islice(letters, opts["limit"]):
                writer.add(dl, None, None, hashed=False)
            writer.plan = replace(plan, selected=writer.summary.selected)
        yield StoredPlan(writer.plan, writer.folder)


@dataclass
class PreviewPlan:
    """A `dlq fix` preview being stored as a plan without a target, as it streams: each
    unresolved dead letter with the sha256 of its fixed value, or refused with the reason its
    fix fails. `stored` is set once the preview ends."""

    writer: plans.PlanWriter
    stored: StoredPlan | None = None

    def add(self, dl: DeadLetter, fixed: Fixed) -> None:
        if fixed.error is None:
            self.writer.add(dl, fixed.value, None)
        else:
            self.writer.refuse(dl, fixed.error)


@contextmanager
def save_preview(env: Env, opts: dict[str, Any]) -> Iterator[PreviewPlan]:
    """A `PreviewPlan` in this cluster's plans folder; removed again when the preview fails."""
    plan = new_plan(env, env.topic(), opts, target=False)
    with plans.PlanWriter(runs_dir(env, None), plan) as writer:
        preview = PreviewPlan(writer)
        yield preview
        summary = writer.summary
        writer.plan = replace(plan, selected=summary.selected, refused=summary.refused_count)
    preview.stored = StoredPlan(writer.plan, writer.folder)


def slim(pair: tuple[DeadLetter, Fixed]) -> tuple[DeadLetter, Fixed]:
    """A previewed fix without its payloads (key, value, headers, decoded events): what a
    `dlq fix` summary reads, in a fraction of the memory."""
    dl, fixed = pair
    return (
        replace(dl, key=None, value=None, headers=()),
        replace(fixed, before=None, after=None, value=None),
    )


def _indexed(env: Env, topic: str, win: Window) -> Iterator[RowView]:
    """The selected dead letters no ledger entry decided, in each partition's offset order,
    from the index (it can answer `win`): rows as the selection sees them, no `DeadLetter`."""
    with _index(env, topic) as index:
        for view, state in index_query.selected(index, win):
            if state is ReplayState.UNRESOLVED:
                yield view


@contextmanager
def _index(env: Env, topic: str) -> Iterator[DlqIndex]:
    """The DLQ's index, caught up (a progress bar while it reads)."""
    shown = render.progress(None, f"index {topic}", quiet=env.quiet)
    with shown as advance, indexed.caught_up(env.conf(), topic, progress=advance) as index:
        yield index


def _scanned(env: Env, topic: str, win: Window) -> Iterator[DeadLetter]:
    """`_indexed` from a scan of the topic: each dead letter read in full (its value too)."""
    conf = env.conf()
    with render.progress(None, f"read {topic}", quiet=env.quiet) as bar:
        for item in scan(conf, topic, win, env.payloads, read_ledger(conf, topic), bar):
            if item.decision.entry is None:
                yield item.dl


def check_targets(env: Env, topics: set[str]) -> None:
    """ConfigError (exit 2) when a target topic does not exist."""
    missing = dlqio.missing_topics(env.conf(), sorted(topics)) if topics else []
    if missing:
        raise ConfigError(f"target topic {', '.join(missing)} does not exist: create it first")


@dataclass
class _Hooks:
    """What a streaming replay reports: refusals (the first ones kept, all counted) and target
    topics, checked once each before the first transaction writing to them."""

    env: Env
    checked: set[str] = field(default_factory=set)
    refusals: list[Refused] = field(default_factory=list)
    refused_count: int = 0

    def refused(self, refusal: Refusal | Refused) -> None:
        self.refused_count += 1
        if len(self.refusals) < SHOWN_REFUSALS:
            self.refusals.append(Refused(refusal.coordinates, refusal.reason))

    def check_targets(self, topics: set[str]) -> None:
        new = topics - self.checked
        if new:
            check_targets(self.env, new)
            self.checked |= new


def execute(
    env: Env, stored: StoredPlan, recipe: Recipe, rate: float | None
) -> tuple[Tally, _Hooks]:
    """Fence earlier runs, read the ledger to its end (keeping the planned dead letters'
    entries, `plan_ledger`), then replay the plan as it is read back a batch at a time
    (`replay_batches`). The DLQ's reader is opened first, so its first fetches arrive while
    the fence and the ledger read wait on the broker (reading the DLQ decides nothing: what
    the ledger says is applied to each batch after the fence, as before)."""
    plan, hooks, match = stored.plan, _Hooks(env), PlanMatch(stored)
    with few_collections(), _plan_reader(env, match) as reader:
        job = _job(env, plan.dlq_topic, plan.run)
        ledger = job.start(lambda: plan_ledger(env.conf(), stored))
        todo = plan.selected - plan.refused
        with render.progress(todo, f"replay {plan.run}", quiet=env.quiet) as bar:
            batches = planned_batches(env, match, reader, recipe)
            pacer, fix = Pacer(rate), recipe.fix_description
            tally = replay_batches.replay_batches(job, batches, ledger, pacer, bar, hooks, fix)
    return tally, hooks


def _job(env: Env, dlq_topic: str, run_id: str) -> Run:
    """A run on the DLQ's one transactional id; creates the (compacted) ledger topic when the
    DLQ never had one (a foreign DLQ), or the operator passed --recreate-ledger."""
    conf = env.conf("producer")
    dlqio.ensure_compacted(conf, ledger_topic(dlq_topic))
    sink = dlqio.TxnProducer(conf, transactional_id(dlq_topic))
    return Run(sink, ledger_topic(dlq_topic), run_id, env.operator)


def _plan_reader(env: Env, match: PlanMatch) -> AbstractContextManager[dlqio.TopicReader | None]:
    """One reader over every planned partition, each from its first planned offset (so their
    fetches overlap); None when nothing is planned."""
    if not match.lines:
        return nullcontext(None)
    spec = dlqio.ReadSpec(partitions=tuple(match.lines), starts=match.starts())
    return dlqio.TopicReader(env.conf(), match.topic, spec, tuning=READ_AHEAD)


def planned_batches(
    env: Env, match: PlanMatch, reader: dlqio.TopicReader | None, recipe: Recipe
) -> Generator[tuple[Copies, list[Refused]], None, None]:
    """The plan's copies and refusals, a poll at a time (`replay_batches`), read back with
    `reader` (`_plan_reader`), each partition's records merged with its plan lines, both in
    offset order. Partitions interleave; each keeps its order, hence each key's. Holds one
    poll's records and a block of plan lines per partition."""
    if reader is not None:
        slow = _Slow(env, recipe)
        for batch in reader.batches():
            planned, done = match.match(batch)
            for partition in done:
                reader.finish(partition)
            copies, refused = copies_of(batch, planned, recipe, slow)
            yield copies, planned.gone + refused
    gone = match.rest()
    while left := list(itertools.islice(gone, 1000)):
        yield Copies(), left


@dataclass(frozen=True, slots=True)
class _Slow:
    """The per-record path of a planned record (`replay_batches.Slow`)."""

    env: Env
    recipe: Recipe

    def __call__(self, r: SourceRecord, entry: plans.Entry) -> Copy | Refused:
        return _planned(self.env, r, entry, self.recipe)


def _planned(env: Env, r: SourceRecord, entry: plans.Entry, recipe: Recipe) -> Copy | Refused:
    """The copy of the planned record `r`, or why it is refused, one record at a time."""
    found = restored(env, _letter(r))
    return found if isinstance(found, Refused) else _checked(found, entry, recipe)


def restored(env: Env, dl: DeadLetter) -> DeadLetter | Refused:
    """An oversize dead letter (null value, `dlq.value.omitted`) with its value re-read from
    its `dlq.source.*` coordinates, when the record there is the original (same size and
    sha256); a refusal saying why otherwise. Any other dead letter as it is."""
    omitted = None if dl.meta is None else dl.meta.value_omitted
    if omitted is None or dl.value is not None:
        return dl
    topic, partition, offset = dl.source_topic, dl.source_partition, dl.source_offset
    why = f"its value was omitted (oversize, {omitted.size:,} bytes)"
    if topic is None or partition is None or offset is None:
        return Refused(dl.coordinates, f"{why} and it names no source record to re-read")
    where = f"{topic}/{partition}/{offset}"
    try:
        found = dlqio.read_one(env.conf(), topic, partition, offset)
    except ConfigError as exc:
        return Refused(dl.coordinates, f"{why}; its source {where} cannot be read: {exc}")
    if found is None:
        return Refused(dl.coordinates, f"{why}; the original at {where} is gone (retention)")
    if not omitted.matches(found.record.value):
        return Refused(dl.coordinates, f"{why}; the record at {where} is not the original")
    return replace(dl, value=found.record.value)


def _letter(r: SourceRecord) -> DeadLetter:
    """The dead letter of a DLQ record: the index's fast path for a well-formed Lazarus one
    (one pass over its headers, no details JSON), `from_record` for anything else (foreign,
    malformed, or oversize: its `dlq.value.omitted` needs the full reading)."""
    ts = r.timestamp_ms if r.timestamp_ms >= 0 else 0
    row = fast_row(r.partition, r.offset, ts, r.value, r.headers) if r.headers else None
    if row is None or (r.value is None and any(n == VALUE_OMITTED for n, _ in r.headers)):
        return from_record(r.topic, r.partition, r.offset, ts, r.key, r.value, r.headers)
    return _fast_letter(r, row)


def _fast_letter(r: SourceRecord, row: Row) -> DeadLetter:
    """The dead letter of a well-formed Lazarus record from its `fast_row`, with the record's
    key, value and headers, in one constructor call: `letter_of` (a header-less letter for the
    index, field by field) and then `dataclasses.replace` cost a fifth of a replayed record."""
    (_, _, _, ts, _, failed_at, category, fingerprint, error_type, message, source_topic,
     source_partition, source_offset, origin, pipeline, schema, rule, attempts, replays, _,
     dialect) = row  # fmt: skip
    meta = None if rule is None else DeadLetterMeta(schema=schema, policy_rule=rule)
    return DeadLetter(
        r.topic, r.partition, r.offset, ts, r.key, r.value, r.headers, dialect, meta, None,
        source_topic, source_partition, source_offset, origin, category, error_type, message,
        None, fingerprint, attempts, failed_at, pipeline, replays, (),
    )  # fmt: skip


def _checked(dl: DeadLetter, entry: plans.Entry, recipe: Recipe) -> Copy | Refused:
    result = prepare(dl, recipe)
    if isinstance(result, Refusal):
        return Refused(dl.coordinates, result.reason)
    if not entry.same(dl, result.value):
        return Refused(dl.coordinates, f"changed since plan {recipe.run} was made: not replayed")
    return result


def finish(refused: int, selected: int) -> int:
    if refused:
        raise PartialSuccess(f"{refused} of {selected} selected dead letters not replayed")
    return EXIT_OK
