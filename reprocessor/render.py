"""Everything `dlq` prints, and the only module that imports rich: tables, the progress bar,
diffs, one-line notes. `--json` output is plain JSON lines (kcat's `-J` fields plus `error`), one
object per line, never styled.

Consoles are made per call, writing to whatever `sys.stdout`/`sys.stderr` are at that moment
(click's test runner swaps them). Off a terminal, lines are 160 columns wide and nothing animates.
Payload values appear only where the operator asked for them (`--decode`, `show`, fix diffs), and
what `--mask` names arrives here already masked (`reprocessor.masking`, applied by the commands).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape as markup_escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from reprocessor.deadletters import NO_DIALECT, UNKNOWN, DeadLetter, jsonable
from reprocessor.grouping import GroupRow
from reprocessor.ledger import Decision
from reprocessor.payloads import Fixed
from reprocessor.stats import Item, TopicStats
from reprocessor.timeparse import format_age

if TYPE_CHECKING:  # what only the replay and fix commands load (the replay: some 4 ms)
    from reprocessor.fix_tally import FixTally
    from reprocessor.replay import Refusal, Refused, Tally

CONTROLS = {
    code: f"\\x{code:02x}"
    for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
    if code not in (0x09, 0x0A)
}
"""Control characters (C0 but tab and line feed, DEL, C1) and how they are shown: `\\x1b`."""


def escape(text: str) -> str:
    """`text` for rich markup, with every control character shown as `\\xNN`: a terminal never
    receives an escape sequence (clear screen, colours, a title) from a dead letter's message,
    headers or payload, whoever wrote them."""
    return markup_escape(text.translate(CONTROLS))


WIDTH = 160
CELL = 60
"""Characters of a message, key or payload shown in a table cell before it is cut."""


def console(*, err: bool = False) -> Console:
    probe = Console(stderr=err)
    width = None if probe.is_terminal else WIDTH
    return Console(stderr=err, highlight=False, width=width, soft_wrap=False)


def now_ms() -> int:
    return int(time.time() * 1000)


def json_line(obj: object) -> None:
    """One JSON object per line on stdout (for `jq`)."""
    out = sys.stdout
    out.write(json.dumps(jsonable(obj), ensure_ascii=False) + "\n")
    out.flush()


def note(text: str) -> None:
    """A dim one-line remark on stderr (kept out of stdout, which scripts parse)."""
    console(err=True).print(f"[dim]{escape(text)}[/dim]")


def warn(text: str) -> None:
    console(err=True).print(f"[yellow]warning:[/yellow] {escape(text)}")


def say(text: str) -> None:
    console().print(escape(text))


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def cut(text: str | None, limit: int | None = CELL) -> str:
    """`text` on one line, cut to `limit` characters with `…` (None: never cut)."""
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def plural(count: int, noun: str) -> str:
    """`1 group`, `2 groups`, `1,000 dead letters`."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def message_cell(limit: int) -> int | None:
    """How much of an error message a table cell shows: cut on a terminal, whole when piped
    (a script or a ticket must see the field or rule at its end; the column folds it)."""
    return limit if console().is_terminal else None


def show_bytes(data: bytes | None) -> str:
    """Text when the bytes are printable UTF-8 (line breaks and tabs allowed), else `hex:...`:
    a terminal never receives raw control characters from a record."""
    if data is None:
        return "null"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + data.hex()
    return text if text.replace("\n", "").replace("\t", "").isprintable() else "hex:" + data.hex()


def state_text(decision: Decision) -> str:
    entry = decision.entry
    if entry is None:
        return decision.state.value
    return f"{decision.state.value} by {entry.operator} {when(entry.at)}"


def _source(dl: DeadLetter) -> str:
    parts = (dl.source_topic or "?", dl.source_partition, dl.source_offset)
    return "/".join("?" if p is None else str(p) for p in parts)


def inspect_table(items: Sequence[Item], *, decoded: bool, audit: bool) -> None:
    """The `dlq inspect` table; `audit` adds who decided, in which run, with which fix."""
    table = Table(show_lines=False, header_style="bold")
    for name in ("failed at", "dead letter", "source", "key", "category", "error", "att", "state"):
        table.add_column(name, overflow="fold")
    if decoded:
        table.add_column("payload", overflow="fold")
    if audit:
        table.add_column("run / fix / reason / target", overflow="fold")
    for item in items:
        dl = item.dl
        error = ": ".join(part for part in (dl.error_type, dl.message) if part) or "-"
        row = [
            when(dl.seen_ms),
            dl.coordinates,
            _source(dl),
            cut(show_bytes(dl.key), 24),
            dl.category or dl.dialect,
            cut(error, message_cell(CELL)),
            "-" if dl.attempts is None else str(dl.attempts),
            state_text(item.decision),
        ]
        if decoded:
            row.append(cut(_payload_text(item), CELL))
        if audit:
            row.append(_audit(item.decision))
        table.add_row(*(escape(cell) for cell in row))
    console().print(table)


def _payload_text(item: Item) -> str:
    payload = item.payload
    if payload is None:
        return "-"
    shown = payload.shown
    return shown if isinstance(shown, str) else json.dumps(jsonable(shown), ensure_ascii=False)


def _audit(decision: Decision) -> str:
    entry = decision.entry
    if entry is None:
        return "-"
    parts = [f"run {entry.run}"]
    if entry.fix:
        parts.append("fix: " + "; ".join(entry.fix))
    if entry.reason:
        parts.append(f"reason: {entry.reason}")
    if entry.target:
        parts.append(f"→ {entry.target}")
    return ", ".join(parts)


def show_item(item: Item) -> None:
    """`dlq show`: one dead letter in full."""
    dl, out = item.dl, console()
    out.print(f"[bold]{escape(dl.coordinates)}[/bold]  ({dl.dialect}, {when(dl.timestamp_ms)})")
    fields = (
        ("state", state_text(item.decision) + "  " + _audit(item.decision)),
        ("key", show_bytes(dl.key)),
        ("category", dl.category or "-"),
        ("error type", dl.error_type or "-"),
        ("message", dl.message or "-"),
        ("fingerprint", dl.fingerprint),
        ("attempts", "-" if dl.attempts is None else str(dl.attempts)),
        ("failed at", when(dl.failed_at_ms)),
        ("pipeline", dl.pipeline or "-"),
        ("source", _source(dl)),
        ("origin (lineage)", dl.origin or "-"),
        ("replay count", str(dl.replay_count)),
        ("correlation", dl.trace or "-"),
    )
    if dl.dialect == UNKNOWN and dl.foreign is None:
        out.print(f"[yellow]not a dead letter:[/yellow] {escape(NO_DIALECT)}")
    for name, value in fields:
        out.print(f"[bold]{name:>17}[/bold]  {escape(value)}")
    omitted = None if dl.meta is None else dl.meta.value_omitted
    if omitted is not None:
        out.print(f"[bold]{'value':>17}[/bold]  {escape(omitted_text(dl))}")
    for problem in dl.problems:
        out.print(f"[yellow]{'problem':>17}[/yellow]  {escape(problem)}")
    out.print("[bold]headers[/bold]")
    for header, raw in dl.headers:
        out.print(f"  {escape(header)}: {escape(cut(show_bytes(raw), 400))}")
    _show_payload(out, item)
    if dl.stacktrace:
        out.print("[bold]stack trace[/bold]")
        out.print(escape(dl.stacktrace))


def omitted_text(dl: DeadLetter) -> str:
    """Where the value of an oversize dead letter still is (the contract's "Oversize records":
    the DLQ copy has none), and how `dlq replay` proves it found the same bytes."""
    omitted = None if dl.meta is None else dl.meta.value_omitted
    if omitted is None:
        return "-"
    where = "an unknown record (no dlq.source.* headers)"
    if dl.source_topic is not None:
        where = f"{dl.source_topic}/{dl.source_partition}/{dl.source_offset}"
    return (
        f"omitted (oversize: {omitted.size:,} bytes, sha256 {omitted.sha256[:16]}…); the "
        f"original is at {where} while its retention keeps it, and `dlq replay` re-reads it there"
    )


def _show_payload(out: Console, item: Item) -> None:
    payload = item.payload
    if payload is None:
        return
    out.print(f"[bold]payload[/bold] ({escape(payload.how)})")
    if payload.problem:
        out.print(f"  [yellow]not decodable by the pipeline:[/yellow] {escape(payload.problem)}")
    shown = payload.shown
    text = shown if isinstance(shown, str) else json.dumps(jsonable(shown), indent=2)
    out.print(escape(text))


def group_table(rows: Sequence[GroupRow], by: str, now: int) -> None:
    table = Table(header_style="bold")
    for name in (by, "count", "first seen", "last seen", "unresolved", "replayed", "discarded"):
        table.add_column(name, overflow="fold", justify="right" if name != by else "left")
    table.add_column("example", overflow="fold")
    for row in rows:
        first, last = _seen(row, now)
        decided = [str(n) for n in (row.unresolved, row.replayed, row.discarded)]
        table.add_row(escape(row.key), str(row.count), first, last, *decided, _example(row, 90))
    console().print(table)
    total = sum(row.count for row in rows)
    note(f"{plural(total, 'dead letter')} in {plural(len(rows), 'group')} by {by}")


def stats_table(stats: Sequence[TopicStats], now: int) -> None:
    out = console()
    for s in stats:
        oldest = "-" if s.oldest_unresolved_ms is None else format_age(now - s.oldest_unresolved_ms)
        out.print(
            f"[bold]{escape(s.topic)}[/bold]: {s.total} dead letters, "
            f"[bold]{s.unresolved} unresolved[/bold] (oldest {oldest}), "
            f"{s.replayed} replayed, {s.discarded} discarded"
        )
        table = Table(header_style="bold")
        for name in ("category", "total", "unresolved"):
            table.add_column(name, justify="left" if name == "category" else "right")
        for category, (total, open_) in sorted(s.by_category.items(), key=lambda kv: -kv[1][0]):
            table.add_row(escape(category), str(total), str(open_))
        out.print(table)
        _cause_table(s, now)


def _seen(row: GroupRow, now: int) -> tuple[str, str]:
    """A group's first and last failure, as ages."""
    return f"{format_age(now - row.first_seen_ms)} ago", f"{format_age(now - row.last_seen_ms)} ago"


def _example(row: GroupRow, width: int) -> str:
    example = f"{row.error_type or '-'}: {row.example} ({row.example_coordinates})"
    return escape(cut(example, message_cell(width)))


def _cause_table(s: TopicStats, now: int) -> None:
    """The top causes (fingerprints) by unresolved count, with an example of each."""
    causes, shown = s.all_causes(), s.top_causes()
    if not shown:
        return
    table = Table(header_style="bold", title_justify="left")
    for name in ("cause", "unresolved", "total", "first seen", "last seen"):
        table.add_column(name, overflow="fold", justify="left" if name == "cause" else "right")
    table.add_column("example", overflow="fold")
    for row in shown:
        counts = f"{row.unresolved}", f"{row.count}"
        table.add_row(escape(row.key), *counts, *_seen(row, now), _example(row, 70))
    console().print(table)
    more = f" (the {len(shown)} with the most unresolved shown)" if len(causes) > len(shown) else ""
    note(f"{plural(len(causes), 'cause')} by fingerprint{more}")


def fix_diffs(results: Sequence[tuple[DeadLetter, Fixed]]) -> None:
    """One block per record: its diff and whether the fixed record passes validation."""
    out = console()
    for dl, fixed in results:
        out.print(f"[bold]{escape(dl.coordinates)}[/bold]  {_verdict(fixed)}")
        for line in fixed.diff or ["(no change)"]:
            colour = {"+": "green", "-": "red", "~": "yellow"}.get(line[:1], "dim")
            out.print(f"  [{colour}]{escape(line)}[/{colour}]")


def _verdict(fixed: Fixed) -> str:
    if fixed.error is not None:
        return f"[red]✗ {escape(fixed.error)}[/red]"
    if not fixed.checked:
        return "[yellow]? not validated (no schema configured for its topic)[/yellow]"
    return "[green]✓ passes validation[/green]"


def fix_summary(tally: FixTally) -> None:
    """For many records: how many pass, the changes made, the reasons of the failures."""
    out = console()
    out.print(
        f"{tally.records} records: [green]{tally.passed} pass validation[/green], "
        f"[red]{tally.failed} fail[/red], {tally.unchecked} not validated"
    )
    table = Table(header_style="bold", title="changes")
    table.add_column("change")
    table.add_column("records", justify="right")
    table.add_column("for example", overflow="fold")
    for change, count in _sorted(tally.changes):
        shown = "; ".join(cut(what, 60) for what in tally.examples.get(change, [])) or "-"
        table.add_row(escape(change), str(count), escape(shown))
    out.print(table)
    for reason, count in _sorted(tally.reasons)[:20]:
        out.print(f"  [red]{count}x {escape(cut(reason, 140))}[/red]")


def _sorted(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def plan_text(action: str, count: int, dlq_topic: str, by_target: Mapping[str, int]) -> str:
    """`Replay 40 dead letters of p.dlq: 38 → p.redrive, 2 → orders`."""
    where = ", ".join(f"{n} → {topic}" for topic, n in sorted(by_target.items()))
    return f"{action} {count} dead letters of {dlq_topic}" + (f": {where}" if where else "")


def refusals(
    items: Sequence[Refusal | Refused], *, total: int | None = None, limit: int = 50
) -> None:
    """The dead letters that will not be (or were not) replayed, and why, on stderr. `total`
    counts them when `items` holds only the first ones."""
    out = console(err=True)
    count = len(items) if total is None else total
    out.print(f"[red]{count} selected dead letters not replayed:[/red]")
    for refusal in items[:limit]:
        out.print(f"  {escape(refusal.coordinates)}: {escape(refusal.reason)}")
    if count > limit:
        out.print(f"  … and {count - limit} more (--json lists them)")


class _Rate(ProgressColumn):
    """Records per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s")


class Bar:
    """A progress bar on stderr that appears only once its work has taken `delay_s` (so quick
    commands print nothing), and never off a terminal or when `quiet`. Call it with a count to
    advance it; `expect(total)` sets the total once it is known (a scan learns it after opening
    its partitions)."""

    def __init__(self, what: str, total: int | None, *, quiet: bool, delay_s: float = 1.0):
        err = console(err=True)
        self._live = not quiet and err.is_terminal
        self._bar = Progress(
            TextColumn(escape(what)),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            disable=not self._live,
        )
        self._task = self._bar.add_task(what, total=total)
        self._show_at = time.monotonic() + delay_s
        self._shown = False

    def __call__(self, count: int) -> None:
        if not self._live:
            return
        self._bar.advance(self._task, count)
        if not self._shown and time.monotonic() >= self._show_at:
            self._shown = True
            self._bar.start()

    def expect(self, total: int) -> None:
        if self._live:
            self._bar.update(self._task, total=total)

    def close(self) -> None:
        if self._shown:
            self._bar.stop()
            self._shown = False


@contextmanager
def progress(total: int | None, what: str, *, quiet: bool = False) -> Iterator[Bar]:
    """A `Bar` (records, rate, ETA) on stderr for work that takes more than a second; off a
    terminal or with `quiet`, nothing. Yields the bar: `advance(n)` is calling it."""
    bar = Bar(what, total, quiet=quiet)
    try:
        yield bar
    finally:
        bar.close()


def replay_report(
    *,
    as_json: bool,
    run: str,
    dlq_topic: str,
    planned: Mapping[str, int],
    done: Mapping[str, int] | None,
    skipped: int,
    refused: Sequence[Refusal | Refused],
    dry_run: bool,
) -> None:
    """What a replay did (`done`: copies per target) or, for a dry run, would do (`planned`).
    The refusals are listed in JSON only: on a terminal they were listed before the prompt."""
    if as_json:
        json_line(
            {
                "run": run,
                "dlq_topic": dlq_topic,
                "dry_run": dry_run,
                "planned": dict(planned),
                "replayed": sum((done or {}).values()),
                "targets": dict(done or {}),
                "skipped": skipped,
                "refused": [{"coordinates": r.coordinates, "reason": r.reason} for r in refused],
            }
        )
        return
    if done is None:
        text = plan_text("Replay", sum(planned.values()), dlq_topic, planned)
        say(("dry run: " if dry_run else "nothing to do: ") + text)
        return
    say(plan_text(f"run {run}: replayed", sum(done.values()), dlq_topic, done))
    if skipped:
        note(f"{skipped} were decided meanwhile by another run (skipped)")


def fix_json(dl: DeadLetter, fixed: Fixed) -> dict[str, object]:
    return {
        "coordinates": dl.coordinates,
        "diff": fixed.diff,
        "error": fixed.error,
        "valid": fixed.error is None and fixed.checked,
        "checked": fixed.checked,
    }


def discard_report(
    as_json: bool, topic: str, text: str, run: str | None, tally: Tally | None, *, dry_run: bool
) -> None:
    """What a discard did (`tally`), or would do (`text`, for a dry run or nothing to do)."""
    if as_json:
        done = {"discarded": 0, "skipped": 0} if tally is None else asdict(tally)
        json_line({"run": run, "dlq_topic": topic, "dry_run": dry_run, **done})
    elif tally is None:
        say(("dry run: " if dry_run else "nothing to do: ") + text)
    else:
        say(f"run {run}: discarded {tally.done} dead letters of {topic}")
        if tally.skipped:
            note(f"{tally.skipped} were decided meanwhile by another run (skipped)")
