"""The DLQ index against the real broker: a catch-up reads only what is new (read_committed:
aborted dead letters and transaction markers are never counted); a deleted and recreated topic is
detected by its topic id; offsets deleted from the log count their unresolved dead letters as
expired; `dlq stats`, `group` and `inspect --where` answer from the index what a scan answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.core.contract import Failure, ledger_topic
from pipeline.errors import Category
from pipeline.kafka.follow import Cluster, Follower
from reprocessor import index as index_module
from reprocessor.index import DlqIndex
from reprocessor.index_query import depth
from tests.conftest import TopicFactory, create_topics
from tests.dlq_kit import Letter, dlq, failure, fill, lazarus_letter

SCHEMA = failure(
    Category.SCHEMA, "pipeline.errors.SchemaError", "schema id 42 is not in the local catalog", ()
)


def letters(count: int, start: int = 0, why: Failure | None = None) -> list[Letter]:
    return [
        lazarus_letter("orders", start + i, f"k{start + i}".encode(), b"v", why or failure())
        for i in range(count)
    ]


def fill_in_transaction(bootstrap: str, topic: str, batch: list[Letter], commit: bool) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{topic}-{commit}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for letter in batch:
        producer.produce(topic, letter.value, letter.key, headers=list(letter.headers))
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


@pytest.fixture
def dlq_topic(bootstrap: str, topic_factory: TopicFactory) -> str:
    topic = topic_factory(partitions=2, suffix="dlq-")
    create_topics(bootstrap, [ledger_topic(topic)], 1, {"cleanup.policy": "compact"})
    return topic


def open_index(bootstrap: str, topic: str, folder: Path) -> tuple[Cluster, DlqIndex]:
    cluster = Cluster({"bootstrap.servers": bootstrap})
    return cluster, DlqIndex.open(cluster, topic, folder)


def test_catch_up_reads_only_what_is_new_and_counts_what_read_committed_receives(
    bootstrap: str, dlq_topic: str, tmp_path: Path
) -> None:
    fill(bootstrap, dlq_topic, letters(30))
    cluster, index = open_index(bootstrap, dlq_topic, tmp_path)
    with index:
        assert index.catch_up(cluster).records == 30
        assert index.catch_up(cluster).records == 0
        fill_in_transaction(bootstrap, dlq_topic, letters(7, 100, SCHEMA), commit=True)
        fill_in_transaction(bootstrap, dlq_topic, letters(5, 200), commit=False)
        fill(bootstrap, dlq_topic, letters(3, 300))
        assert index.catch_up(cluster).records == 10
        got = depth(index)
        assert (got.records, got.unresolved) == (40, 40)
        assert got.unresolved_by_category == {"validation": 33, "schema": 7}
    # a second index on the same file (another process) resumes where the first stopped
    cluster, again = open_index(bootstrap, dlq_topic, tmp_path)
    with again:
        assert again.catch_up(cluster).records == 0


class Recorder:
    """A progress bar that remembers what it was told."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.counts: list[int] = []

    def __call__(self, count: int) -> None:
        self.counts.append(count)

    def expect(self, total: int) -> None:
        self.total = total


def test_a_first_scan_in_bulk_builds_the_same_index_and_reports_progress(
    bootstrap: str, dlq_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first scan larger than BULK_ROWS fills the table without its secondary indexes and
    creates them at the end; the catch-up tells its bar how many offsets it will read."""
    fill(bootstrap, dlq_topic, letters(30))
    fill_in_transaction(bootstrap, dlq_topic, letters(5, 100), commit=False)
    monkeypatch.setattr(index_module, "BULK_ROWS", 10)
    cluster, index = open_index(bootstrap, dlq_topic, tmp_path)
    bar = Recorder()
    with index:
        assert index.catch_up(cluster, bar).records == 30
        names = {row[0] for row in index.db.execute("SELECT name FROM sqlite_master")}
        assert "dl_cause" in names
        got = depth(index)
        assert (got.records, got.unresolved) == (30, 30)
    assert bar.total is not None and bar.total >= 30  # an upper bound: markers take offsets
    assert sum(bar.counts) == 30


def test_a_recreated_topic_is_detected_by_its_topic_id(
    bootstrap: str, dlq_topic: str, tmp_path: Path
) -> None:
    fill(bootstrap, dlq_topic, letters(20))
    cluster, index = open_index(bootstrap, dlq_topic, tmp_path)
    with index:
        index.catch_up(cluster)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.delete_topics([dlq_topic], operation_timeout=30)[dlq_topic].result(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                create_topics(bootstrap, [dlq_topic], 2)
                break
            except Exception:  # the deletion is still under way
                time.sleep(0.5)
        fill(bootstrap, dlq_topic, letters(4, 0, SCHEMA))
        done = index.catch_up(cluster)
        assert done.reset is not None and "recreated" in done.reset
        got = depth(index)
        assert (got.records, got.unresolved_by_category) == (4, {"schema": 4})


def test_deleted_offsets_count_their_unresolved_dead_letters_as_expired(
    bootstrap: str, dlq_topic: str, tmp_path: Path
) -> None:
    topic = dlq_topic
    fill(bootstrap, topic, [*letters(10)])
    cluster, index = open_index(bootstrap, topic, tmp_path)
    with index:
        index.catch_up(cluster)
        rows = list(index.rows("SELECT partition, offset FROM dl ORDER BY partition, offset"))
        partition = int(str(rows[0][0]))
        in_partition = [int(str(o)) for p, o in rows if p == partition]
        decided = f"{topic}/{partition}/{in_partition[0]}"
        where = f"partition={partition} and offset={in_partition[0]}"
        result = dlq(
            "-b", bootstrap, "-t", topic, "discard", "--where", where, "--reason", "t", "-y"
        )
        assert result.code == 0, result.output
        # the broker deletes the first three records of that partition (as retention would)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        cut = TopicPartition(topic, partition, in_partition[3] if len(in_partition) > 3 else 3)
        admin.delete_records([cut])[cut].result(30)
        done = index.catch_up(cluster)
        expected_gone = min(3, len(in_partition))
        assert (done.expired, done.expired_unresolved) == (expected_gone, expected_gone - 1)
        got = depth(index)
        assert got.records == 10 and got.discarded == 1
        assert got.expired_unresolved == expected_gone - 1
        assert got.unresolved == 10 - expected_gone
        assert decided not in {
            f"{topic}/{p}/{o}" for p, o in index.rows("SELECT partition, offset FROM dl")
        }


def test_stats_group_and_inspect_answer_from_the_index_what_a_scan_answers(
    bootstrap: str, dlq_topic: str, tmp_path: Path
) -> None:
    topic = dlq_topic
    fill(bootstrap, topic, [*letters(12), *letters(5, 50, SCHEMA)])
    env = {"LAZARUS_STATE_DIR": str(tmp_path)}
    base = ("-b", bootstrap, "-t", topic, "--json")
    discard = dlq(*base[:4], "discard", "--where", "category=schema", "--limit", "2",
                  "--reason", "known", "-y", env=env)  # fmt: skip
    assert discard.code == 0, discard.output
    for command in (["stats"], ["group"], ["group", "--by", "category"],
                    ["stats", "--where", "category=validation or state=discarded"]):  # fmt: skip
        indexed = dlq(*base, *command, env=env)
        scanned = dlq(*base, *command, "--scan", env=env)
        assert indexed.code == 0 and scanned.code == 0, indexed.output + scanned.output
        assert _comparable(indexed.json_lines()) == _comparable(scanned.json_lines()), command
    found = dlq(*base, "inspect", "--where", "category=schema and state=unresolved", env=env)
    assert found.code == 0, found.output
    listed = found.json_lines()
    assert len(listed) == 3 and {row["error"]["state"] for row in listed} == {"unresolved"}
    assert all(row["key"].startswith("k5") for row in listed)  # payloads and keys fetched
    decided = dlq(*base, "inspect", "--where", "state=discarded", env=env).json_lines()
    assert [row["ledger"]["reason"] for row in decided] == ["known", "known"]


def test_stats_breaks_down_by_cause(bootstrap: str, dlq_topic: str, tmp_path: Path) -> None:
    """`dlq stats` lists causes (fingerprints) by unresolved count, with first and last failure
    and an example, from the index and from a scan alike; the table shows them too."""
    topic = dlq_topic
    broken = failure(Category.DESERIALIZATION, "pipeline.errors.DecodeError", "truncated", ())
    fill(bootstrap, topic, [*letters(8), *letters(5, 50, SCHEMA), *letters(3, 80, broken)])
    env = {"LAZARUS_STATE_DIR": str(tmp_path)}
    base = ("-b", bootstrap, "-t", topic)
    discard = dlq(*base, "discard", "--where", "category=validation", "--limit", "6",
                  "--reason", "known", "-y", env=env)  # fmt: skip
    assert discard.code == 0, discard.output
    for how in ((), ("--scan",)):
        found = dlq(*base, "--json", "stats", *how, env=env)
        assert found.code == 0, found.output
        [topic_stats] = found.json_lines()
        causes = topic_stats["by_cause"]
        assert topic_stats["causes"] == 3, how
        assert [(c["category"], c["unresolved"], c["total"]) for c in causes] == [
            ("schema", 5, 5), ("deserialization", 3, 3), ("validation", 2, 8)
        ], how  # fmt: skip
        assert causes[1]["example"] == "truncated" and causes[1]["first_seen_ms"] > 0
        assert causes[0]["last_seen_ms"] >= causes[0]["first_seen_ms"]
        assert len({c["fingerprint"] for c in causes}) == 3
    shown = dlq(*base, "stats", env=env)
    assert shown.code == 0, shown.output
    assert "3 causes by fingerprint" in shown.output and "truncated" in shown.output


_ORDER_OR_TIME = ("example", "example_coordinates", "oldest_unresolved_age_ms")


def _comparable(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Rows without what depends on the read order (a group's example) or on the clock."""
    out = []
    for row in rows:
        kept = {k: v for k, v in row.items() if k not in _ORDER_OR_TIME}
        by_cause, by_category = kept.get("by_cause"), kept.get("by_category")
        if isinstance(by_cause, list):
            kept["by_cause"] = _comparable(by_cause)
        if isinstance(by_category, dict):
            kept["by_category"] = dict(sorted(by_category.items()))
        out.append(kept)
    return sorted(out, key=repr)


def test_a_follower_ending_at_a_marker_finishes_while_the_topic_keeps_growing(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    """The last record before the end is a commit marker and new records keep arriving behind
    it (a replay writing its ledger): the follower stops at the end while the writes go on. It
    used to wait for a poll that returned nothing, which a busy topic never gives."""
    topic = topic_factory(partitions=1, suffix="ledger-")
    fill_in_transaction(bootstrap, topic, letters(5), commit=True)  # offsets 0-4, marker at 5
    cluster = Cluster({"bootstrap.servers": bootstrap})
    ends = {p: m.end for p, m in cluster.marks(topic, 1).items()}
    assert ends == {0: 6}

    done, quiet = threading.Event(), threading.Event()

    def keep_writing() -> None:  # a record every 0.1 s for up to 30 s: never an idle poll
        writer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        for _ in range(300):
            if done.is_set():
                return
            writer.produce(topic, b"more")
            writer.flush(5)
            time.sleep(0.1)
        quiet.set()

    thread = threading.Thread(target=keep_writing, daemon=True)
    thread.start()
    seen: list[int] = []
    last: dict[int, int] = {}
    with Follower(cluster.conf, topic, {0: 0}, ends, stall_s=60) as follower:
        for batch, positions in follower.batches():
            seen.extend(offset for _, offset, *_ in batch)
            last.update(positions)
    done.set()
    thread.join()
    assert not quiet.is_set(), "the follower only stopped once the topic fell quiet"
    assert seen == [0, 1, 2, 3, 4]
    assert last == {0: 6}
