"""`dlq stats`, `group` and `inspect` answered from the DLQ index (`reprocessor.index`): open the
topic's index in the state folder, catch it up with what is new, query it. The commands fall back
to a scan (`reprocessor.stats.scan`) when `index_query.answerable` says the index cannot answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from pipeline.kafka.follow import Cluster, KafkaConf
from reprocessor import index_query, render
from reprocessor.grouping import Grouper, GroupRow
from reprocessor.index import DlqIndex, Progress
from reprocessor.ledger import state_dir
from reprocessor.payloads import Payloads
from reprocessor.stats import Item, TopicStats, Window


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
    exist, RuntimeFailure when the cluster cannot be reached. Without `progress`, a catch-up
    that takes more than a second shows a bar on stderr (records, rate, ETA) unless `quiet`;
    the bar is gone before the index is yielded."""
    cluster = Cluster(conf)  # on the command's one admin client (`dlqio.shared_admin`)
    with DlqIndex.open(cluster, topic, state_dir(folder)) as index:
        if progress is None:
            with render.progress(None, f"index {topic}", quiet=quiet) as bar:
                index.catch_up(cluster, bar)
        else:
            index.catch_up(cluster, progress)
        yield index


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
        with caught_up(conf, topic, quiet=quiet) as index:
            for item in index_query.items(index, conf, window):
                yield replace(item, payload=payloads.decode(item.dl)) if window.decode else item


def stats(
    conf: KafkaConf,
    topics: Sequence[str],
    window: Window,
    limit: int | None,
    *,
    quiet: bool = False,
) -> list[TopicStats]:
    found = []
    for topic in topics:
        with caught_up(conf, topic, quiet=quiet) as index:
            found.append(index_query.topic_stats(index, window, limit))
    return found


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
