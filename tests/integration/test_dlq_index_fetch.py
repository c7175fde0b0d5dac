"""Fetching selected dead letters by offset against the real broker: `follow.Fetcher` reads
exactly the records at the coordinates it is given (read_committed: markers and aborted records
hold none), with one consumer across calls, seeking forward and back; `dlq fix` selects from
the index and fetches only what it selected, and previews what a scan previews."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline.core.contract import Failure, ledger_topic
from pipeline.errors import Category
from pipeline.kafka.follow import Fetcher, fetch_scattered
from reprocessor import fix_preview
from reprocessor.ledger import STATE_ENV
from reprocessor.payloads import Payloads
from reprocessor.selection import parse
from reprocessor.stats import Item, Window, read_ledger
from tests.conftest import TopicFactory, create_topics
from tests.dlq_kit import Letter, dlq, failure, fill, lazarus_letter
from tests.integration.test_dlq_index import SCHEMA, fill_in_transaction, letters


def json_letters(count: int, start: int = 0, why: Failure | None = None) -> list[Letter]:
    return [
        lazarus_letter("orders", start + i, f"k{start + i}".encode(),
                       b'{"id": %d}' % (start + i), why or failure())
        for i in range(count)
    ]  # fmt: skip


def committed_records(bootstrap: str, topic: str, partitions: int) -> dict[tuple[int, int], bytes]:
    """Every record a read_committed reader gets: (partition, offset) -> key."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "t", "isolation.level": "read_committed"}
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=15)[1] for tp in tps}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: dict[tuple[int, int], bytes] = {}
    while any(tp.offset < ends[tp.partition] for tp in consumer.position(tps)):
        for msg in consumer.consume(100, timeout=0.5):
            if msg.error() is None:
                found[(msg.partition() or 0, msg.offset() or 0)] = msg.key() or b""
    consumer.close()
    return found


def test_a_fetcher_reads_exactly_the_records_at_its_coordinates(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=2)
    fill(bootstrap, topic, letters(40))
    fill_in_transaction(bootstrap, topic, letters(6, 100), commit=False)
    fill_in_transaction(bootstrap, topic, letters(6, 200), commit=True)
    fill(bootstrap, topic, letters(10, 300))
    records = committed_records(bootstrap, topic, 2)
    assert len(records) == 56
    ends = {p: 1 + max(o for q, o in records if q == p) for p in (0, 1)}
    holes = [(p, o) for p in (0, 1) for o in range(ends[p] + 3) if (p, o) not in records]
    assert holes  # aborted records, markers and offsets past the end
    wanted = sorted({*list(records)[::3], *holes})
    with Fetcher({"bootstrap.servers": bootstrap}, topic, gap=2) as fetcher:  # seeks often
        got = [(p, o, key) for p, o, _, key, _, _ in fetcher.fetched(wanted)]
        assert got == [(p, o, records[(p, o)]) for p, o in wanted if (p, o) in records]
        back = sorted(records)[:5]  # behind where it stands: it seeks back
        shown = [
            (c.record.partition, c.record.offset, c.record.key) for c in fetcher.consumed(back)
        ]
        assert shown == [(p, o, records[(p, o)]) for p, o in back]


def tagged(partition: int, offsets: list[int]) -> Iterator[tuple[int, str]]:
    return ((o, f"{partition}/{o}") for o in offsets)


def test_a_scattered_fetch_reads_exactly_the_records_at_its_offsets(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    """Every partition at once: each record wanted is read once with its tag, holes (aborted
    records, markers, past the end) are skipped, far offsets are reached by a seek."""
    topic = topic_factory(partitions=3)
    fill(bootstrap, topic, letters(60))
    fill_in_transaction(bootstrap, topic, letters(6, 100), commit=False)
    fill_in_transaction(bootstrap, topic, letters(6, 200), commit=True)
    records = committed_records(bootstrap, topic, 3)
    ends = {p: 1 + max(o for q, o in records if q == p) for p in (0, 1, 2)}
    wanted = {
        0: [o for o in range(ends[0] + 3) if o % 7 in (0, 1) or (0, o) not in records],
        1: [o for o in range(ends[1]) if (1, o) not in records],  # holes only: nothing
        2: sorted({*(o for p, o in records if p == 2), ends[2] + 5}),
    }
    streams = {p: tagged(p, offsets) for p, offsets in wanted.items()}
    got = list(fetch_scattered({"bootstrap.servers": bootstrap}, topic, streams, gap=2))
    bad = [
        (tag, p, o, key)
        for tag, (p, o, _, key, _, _) in got
        if tag != f"{p}/{o}" or key != records.get((p, o))
    ]
    assert not bad, bad[:5]
    expected = {(p, o) for p, offsets in wanted.items() for o in offsets if (p, o) in records}
    assert sorted((p, o) for _, (p, o, *_) in got) == sorted(expected)
    for p in (0, 2):  # in order within a partition
        offsets = [o for _, (q, o, *_) in got if q == p]
        assert offsets == sorted(offsets)


@pytest.fixture
def dlq_topic(bootstrap: str, topic_factory: TopicFactory) -> str:
    topic = topic_factory(partitions=2, suffix="dlq-")
    create_topics(bootstrap, [ledger_topic(topic)], 1, {"cleanup.policy": "compact"})
    return topic


def _seen(items: list[Item]) -> list[tuple[object, ...]]:
    """What a fix reads of each dead letter, in coordinate order."""
    return sorted(
        (i.dl.partition, i.dl.offset, i.dl.key, i.dl.value, i.dl.fingerprint, i.dl.seen_ms,
         i.dl.origin, i.dl.source_topic, i.dl.category, i.state, i.decision.entry)
        for i in items
    )  # fmt: skip


def test_fix_selects_from_the_index_and_fetches_only_the_selected_dead_letters(
    bootstrap: str, dlq_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = dlq_topic
    other = failure(Category.DESERIALIZATION, "pipeline.errors.DecodeError", "truncated", ())
    fill(bootstrap, topic, [*json_letters(30), *json_letters(6, 50, SCHEMA)])
    fill(bootstrap, topic, json_letters(4, 80, other))
    fill_in_transaction(bootstrap, topic, json_letters(3, 90, SCHEMA), commit=False)
    env = {"LAZARUS_STATE_DIR": str(tmp_path)}
    base = ("-b", bootstrap, "-t", topic)
    discard = dlq(*base, "discard", "--where", "category=schema", "--limit", "2",
                  "--reason", "known", "-y", env=env)  # fmt: skip
    assert discard.code == 0, discard.output
    monkeypatch.setenv(STATE_ENV, str(tmp_path))
    conf = {"bootstrap.servers": bootstrap}
    for where in ("category=schema", "category=schema|deserialization and not state=discarded",
                  "partition=1 and offset>3", ""):  # fmt: skip
        win = Window(parse(where))
        indexed = list(fix_preview.fetch_selected(conf, topic, win, quiet=True))
        ledger = read_ledger(conf, topic)
        scanned = list(fix_preview.scan(conf, topic, win, Payloads(None), ledger, None))
        assert _seen(indexed) == _seen(scanned), where
        assert all(
            item.dl.key is not None and item.dl.value == b'{"id": %d}' % int(item.dl.key[1:])
            for item in indexed
        )
    preview = dlq(*base, "--json", "fix", "--where", "category=schema", "--set", "x=1", env=env)
    assert preview.code == 0, preview.output
    lines = preview.json_lines()
    assert len(lines) == 6 and all(line["diff"] == ["+ x: 1"] for line in lines), preview.output
