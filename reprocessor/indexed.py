"""`dlq stats`, `group` and `inspect` answered from the DLQ index (`reprocessor.index`): open the
topic's index in the state folder, catch it up with what is new, query it. The commands fall back
to a scan (`reprocessor.stats.scan`) when `index_query.answerable` says the index cannot answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from pipeline.errors import RuntimeFailure
from pipeline.kafka.follow import Cluster, KafkaConf
from reprocessor import index_query, render
from reprocessor.grouping import Grouper, GroupRow
from reprocessor.index import DlqIndex, Progress, corrupt, remove_files
from reprocessor.ledger import state_dir
from reprocessor.payloads import Payloads
from reprocessor.stats import Item, TopicStats, Window

T = TypeVar("T")


class IndexDamaged(RuntimeFailure):
    """SQLite found the index damaged at a query, past the open (and its check, when the file
    was not as a `dlq` left it: `index.SEAL`); its files are removed by then. The readers here
    answer once more from the index rebuilt from the topic; a command that had already used
    part of the answer fails with this one line (exit 1), and its next run rebuilds it."""


@contextmanager
def caught_up(
    conf: KafkaConf,
    topic: str,
    folder: Path | None = None,
    progress: Progress | None = None,
    *,
    quiet: bool = False,
) -> Iterator[DlqIndex]:
    """The index of `topic`, caught up with the broker; ConfigError when the topic does not
    exist, RuntimeFailure when the cluster cannot be reached, `IndexDamaged` when SQLite finds
    the file damaged while it is caught up or read. Without `progress`, a catch-up that takes
    more than a second shows a bar on stderr (records, rate, ETA) unless `quiet`; the bar is
    gone before the index is yielded."""
    cluster = Cluster(conf)  # on the command's one admin client (`dlqio.shared_admin`)
    with DlqIndex.open(cluster, topic, state_dir(folder)) as index:
        try:
            if progress is None:
                with render.progress(None, f"index {topic}", quiet=quiet) as bar:
                    index.catch_up(cluster, bar)
            else:
                index.catch_up(cluster, progress)
            yield index
        except sqlite3.DatabaseError as exc:
            if not corrupt(exc):
                raise
            index.close()
            remove_files(index.path, f"it is damaged ({exc})")
            raise IndexDamaged(
                f"the DLQ index {index.path} is damaged ({exc}): it was removed, and the next "
                "command rebuilds it from the topic"
            ) from exc


def once_more(answer: Callable[[], T]) -> T:
    """`answer()`, computed again (once) from the rebuilt index when the index was damaged."""
    try:
        return answer()
    except IndexDamaged:
        return answer()


def rows_once_more(rows: Callable[[], Iterator[T]]) -> Iterator[T]:
    """`rows()`, read again (once) from the rebuilt index when the index turned out damaged
    before the first row was yielded; after that, `IndexDamaged` (rows already used)."""
    given = False
    try:
        for row in rows():
            given = True
            yield row
    except IndexDamaged:
        if given:
            raise
        yield from rows()


def items(
    conf: KafkaConf,
    topics: Sequence[str],
    window: Window,
    payloads: Payloads,
    *,
    quiet: bool = False,
) -> Iterator[Item]:
    """The selected dead letters of every topic, payloads fetched by offset (and decoded when
    the window says so)."""
    for topic in topics:
        for item in rows_once_more(_items(conf, topic, window, quiet)):
            yield replace(item, payload=payloads.decode(item.dl)) if window.decode else item


def _items(
    conf: KafkaConf, topic: str, window: Window, quiet: bool
) -> Callable[[], Iterator[Item]]:
    def read() -> Iterator[Item]:
        with caught_up(conf, topic, quiet=quiet) as index:
            yield from index_query.items(index, conf, window)

    return read


def stats(
    conf: KafkaConf,
    topics: Sequence[str],
    window: Window,
    limit: int | None,
    *,
    quiet: bool = False,
) -> list[TopicStats]:
    def one(topic: str) -> Callable[[], TopicStats]:
        def answer() -> TopicStats:
            with caught_up(conf, topic, quiet=quiet) as index:
                return index_query.topic_stats(index, window, limit)

        return answer

    return [once_more(one(topic)) for topic in topics]


def groups(
    conf: KafkaConf,
    topics: Sequence[str],
    by: str,
    window: Window,
    limit: int | None,
    *,
    quiet: bool = False,
) -> list[GroupRow]:
    """Groups by a header field: SQL over one topic without a selection or limit, else the
    dead letters rebuilt from index rows fed to a Grouper (several topics group together)."""
    return once_more(lambda: _groups(conf, topics, by, window, limit, quiet))


def _groups(
    conf: KafkaConf,
    topics: Sequence[str],
    by: str,
    window: Window,
    limit: int | None,
    quiet: bool,
) -> list[GroupRow]:
    if len(topics) == 1:
        with caught_up(conf, topics[0], quiet=quiet) as index:
            rows = index_query.group_rows(index, by, window, limit)
            if rows is not None:
                return rows
    grouper = Grouper(by)
    left = limit
    for topic in topics:
        with caught_up(conf, topic, quiet=quiet) as index:
            for dl, state in index_query.letters(index, window, left):
                grouper.add(dl, state)
                left = None if left is None else left - 1
        if left == 0:
            break
    return grouper.rows()
