"""What `dlq fix` reads: every selected dead letter of a DLQ with its value and ledger decision.

When the DLQ index can answer the selection (header fields only, `index_query.answerable`), it
selects, and only the selected records are fetched, by offset, for their key and value: the
dead letter's other fields are the index's (no header is read again). Otherwise the topic is
read as `stats.scan` reads it, except that a well-formed Lazarus record is read by the index's
one-pass `fast_row` instead of `from_record`'s full header parse (the details JSON included),
which took a third of a 100,000-record preview. The full parse stays for what `fast_row`
refuses (foreign, malformed, oversize) and for a selection on the stack trace, the one
selectable field `fast_row` does not read."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from itertools import chain, islice
from typing import Any

from pipeline.core.contract import VALUE_OMITTED, DeadLetterMeta, SourceRecord
from pipeline.kafka import dlqio
from pipeline.kafka.dlqio import KafkaConf
from pipeline.kafka.follow import fetch_scattered
from reprocessor import index_query, indexed, render
from reprocessor.deadletters import DeadLetter, ReplayState, from_record
from reprocessor.index_rows import RowView, fast_row
from reprocessor.ledger import Ledger
from reprocessor.options import Env, window
from reprocessor.payloads import Payloads
from reprocessor.stats import PROGRESS_EVERY, Item, ScanProgress, Window, read_ledger

Bar = ScanProgress | None
Chosen = tuple[RowView, ReplayState]


def items(env: Env, opts: dict[str, Any]) -> Iterator[Item]:
    """The dead letters `dlq fix` previews, at most --limit in all: selected by the index and
    fetched by offset when it can answer the selection, else each topic scanned (`scan`)."""
    conf, win = env.conf(), window(opts)
    if env.use_index and index_query.answerable(win):
        found = (
            indexed.rows_once_more(partial(fetch_selected, conf, topic, win, quiet=env.quiet))
            for topic in env.topics()
        )
    else:
        found = (_scanned(env, topic, win) for topic in env.topics())
    return islice(chain.from_iterable(found), opts["limit"])


def fetch_selected(conf: KafkaConf, topic: str, win: Window, *, quiet: bool) -> Iterator[Item]:
    """The dead letters of `topic` the index selects, each with the key and value of its
    record read by offset, every partition at once (`follow.fetch_scattered`), as they arrive;
    a record deleted since it was indexed is left out. The dead letter's other fields are its
    index row's: no stack trace, details' problems nor headers (a fix reads none of them)."""
    with indexed.caught_up(conf, topic, quiet=quiet) as index:
        wanted = {
            p: _by_offset(index_query.selected(index, win, partition=p)) for p in index.partitions()
        }
        with render.progress(None, f"read {topic}", quiet=quiet) as bar:
            for count, ((view, state), record) in enumerate(
                fetch_scattered(conf, topic, wanted), start=1
            ):
                _, _, _, key, value, _ = record
                yield Item(view.letter(key, value), index_query.decision(index, view, state))
                if count % PROGRESS_EVERY == 0:
                    bar(PROGRESS_EVERY)


def _by_offset(found: Iterator[Chosen]) -> Iterator[tuple[int, Chosen]]:
    for view, state in found:
        yield view.offset, (view, state)


def _scanned(env: Env, topic: str, win: Window) -> Iterator[Item]:
    """One DLQ topic's `scan`, with a progress bar when it takes more than a second."""
    conf = env.conf()
    with render.progress(None, f"read {topic}", quiet=env.quiet) as bar:
        yield from scan(conf, topic, win, env.payloads, read_ledger(conf, topic), bar)


def scan(
    conf: KafkaConf, topic: str, win: Window, payloads: Payloads, ledger: Ledger, bar: Bar
) -> Iterator[Item]:
    """`stats.scan` of `topic` with the cheaper dead letters of `letter`."""
    full = any(term.field == "stacktrace" for term in win.selection.terms)
    decode = win.decode or win.selection.needs_payload
    for consumed in _read(conf, topic, win, bar):
        dl = _full(consumed.record) if full else letter(consumed.record)
        if not win.admits(dl):
            continue
        decision = ledger.decision(dl)
        event = payloads.decode(dl).event if decode else None
        if win.selection.matches(dl, decision.state, event):
            yield Item(dl, decision, None, consumed.tstype)


def _read(conf: KafkaConf, topic: str, win: Window, bar: Bar) -> Iterator[dlqio.Consumed]:
    with dlqio.TopicReader(conf, topic, dlqio.ReadSpec(win.tail, since_ms=win.since_ms)) as r:
        if bar is not None:
            bar.expect(r.expected)
        for read, consumed in enumerate(r.records(), start=1):
            if bar is not None and read % PROGRESS_EVERY == 0:
                bar(PROGRESS_EVERY)
            yield consumed


def letter(r: SourceRecord) -> DeadLetter:
    """The dead letter of a DLQ record, as `from_record` reads it but without the stack trace,
    the details' problems and the meta (the hold rule excepted) when `fast_row` accepts it."""
    row = None
    if r.headers and r.timestamp_ms >= 0:
        row = fast_row(r.partition, r.offset, r.timestamp_ms, r.value, r.headers)
    if row is None or (r.value is None and any(n == VALUE_OMITTED for n, _ in r.headers)):
        return _full(r)
    (_, _, _, ts, _, failed_at, category, digest, error_type, message, source_topic,
     source_partition, source_offset, origin, pipeline, schema, rule, attempts, replays, _,
     dialect) = row  # fmt: skip
    meta = None if rule is None else DeadLetterMeta(schema=schema, policy_rule=rule)
    return DeadLetter(  # one call: `letter_of` and then `replace` cost twice as much
        r.topic, r.partition, r.offset, ts, r.key, r.value, tuple(r.headers), dialect, meta,
        None, source_topic, source_partition, source_offset, origin, category, error_type,
        message, None, digest, attempts, failed_at, pipeline, replays, (),
    )  # fmt: skip


def _full(r: SourceRecord) -> DeadLetter:
    return from_record(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
