"""Exactly once, whatever happens: `dlq replay` killed with SIGKILL mid-run and re-run, two replays
racing on one DLQ, and `--resume` of a frozen plan. Every check re-reads the target and the
ledger `read_committed`."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.core import contract
from tests.conftest import TopicFactory
from tests.dlq_kit import (
    DlqProcess,
    Letter,
    assert_exactly_once,
    dlq,
    failure,
    fill,
    lazarus_letter,
    ledger_of,
    replays_of,
)
from tests.kit import read_all, wait_until


def letters(count: int, *, start: int = 0, message: str | None = None) -> list[Letter]:
    """Dead letters of 13 keys, several per key (to check per-key order)."""
    why = failure() if message is None else failure(message=message)
    return [
        lazarus_letter("orders", i, f"key-{i % 13}".encode(), f"value-{i}".encode(), why)
        for i in range(start, start + count)
    ]


def coordinates(bootstrap: str, dlq_topic: str) -> set[str]:
    return {f"{r.topic}/{r.partition}/{r.offset}" for r in read_all(bootstrap, dlq_topic)}


def copies_landed(bootstrap: str, target: str) -> int:
    return len(read_all(bootstrap, target))


def assert_per_key_order(bootstrap: str, target: str) -> None:
    """Copies of one key sit in one target partition in their dead letters' DLQ order."""
    seen: dict[bytes | None, list[tuple[int, int, int]]] = {}
    for rec in read_all(bootstrap, target):
        _, dlq_partition, dlq_offset = contract.parse_coordinates(
            rec.text(contract.REPLAY_OF) or ""
        )
        seen.setdefault(rec.key, []).append((rec.partition, dlq_partition, dlq_offset))
    for key, copies in seen.items():
        assert len({partition for partition, _, _ in copies}) == 1, key
        assert len({dlq_partition for _, dlq_partition, _ in copies}) == 1, key
        offsets = [dlq_offset for _, _, dlq_offset in copies]
        assert offsets == sorted(offsets), key


def test_replay_killed_with_sigkill_then_rerun_replays_each_once(
    bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    dlq_topic = topic_factory(partitions=3, suffix="dlq-")
    target = topic_factory(partitions=2, suffix="to-")
    fill(bootstrap, dlq_topic, letters(150))
    command = ("-b", bootstrap, "-t", dlq_topic, "replay", "--to", target, "--yes")
    state = ("--state-dir", str(tmp_path))

    first = DlqProcess(tmp_path / "first.log", *command, *state, "--rate", "40/s")
    wait_until(lambda: copies_landed(bootstrap, target) >= 40, 60, "40 copies")
    first.kill9()
    landed = copies_landed(bootstrap, target)
    assert 40 <= landed < 150, first.text()

    second = dlq(*command, *state)
    assert second.code == 0, second.output
    assert f"replayed {150 - landed} dead letters" in second.stdout
    assert_exactly_once(bootstrap, dlq_topic, target, coordinates(bootstrap, dlq_topic))
    assert_per_key_order(bootstrap, target)

    third = dlq(*command, *state)
    assert third.code == 0 and "nothing to do" in third.stdout, third.output
    assert copies_landed(bootstrap, target) == 150


def test_two_concurrent_replays_publish_each_dead_letter_once(
    bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    dlq_topic = topic_factory(partitions=2, suffix="dlq-")
    target = topic_factory(partitions=2, suffix="to-")
    fill(bootstrap, dlq_topic, letters(300))
    command = ("-b", bootstrap, "-t", dlq_topic, "replay", "--to", target, "--yes")
    state = ("--state-dir", str(tmp_path))

    # slow enough that the fast run, started once the slow one is under way, fences it even
    # on a loaded machine (at 30/s the slow run could finish first)
    slow = DlqProcess(tmp_path / "slow.log", *command, *state, "--rate", "10/s")
    wait_until(lambda: copies_landed(bootstrap, target) >= 20, 60, "the slow run's first copies")
    fast = DlqProcess(tmp_path / "fast.log", *command, *state)
    assert fast.wait() == 0, fast.text()
    code = slow.wait()
    assert code == 1, slow.text()
    assert "fenced: another run took over transactional id" in slow.text()
    assert len(slow.text().strip().splitlines()) <= 3  # one-line error, no traceback

    assert_exactly_once(bootstrap, dlq_topic, target, coordinates(bootstrap, dlq_topic))
    runs = {entry["run"] for entry in ledger_of(bootstrap, dlq_topic).values()}
    assert len(runs) == 2  # both runs decided some, none decided one twice
    assert_per_key_order(bootstrap, target)


def test_resume_continues_exactly_the_frozen_plan(
    bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    dlq_topic = topic_factory(partitions=2, suffix="dlq-")
    target = topic_factory(suffix="to-")
    fill(bootstrap, dlq_topic, letters(40))
    fill(bootstrap, dlq_topic, letters(5, start=100, message="another cause entirely"))
    planned = {c for c, recs in _by_coordinates(bootstrap, dlq_topic).items() if b"value-1" in recs}
    base = ("-b", bootstrap, "-t", dlq_topic)
    state = ("--state-dir", str(tmp_path))
    where = ("--where", "message~items.0.qty")

    first = DlqProcess(
        tmp_path / "first.log",
        *base,
        "replay",
        "--to",
        target,
        "--yes",
        *where,
        *state,
        "--rate",
        "8/s",
    )
    wait_until(lambda: copies_landed(bootstrap, target) >= 6, 60, "the first copies")
    first.kill9()
    (plan_file,) = (tmp_path / "runs").glob("*/*/plan.json")  # runs/<cluster id>/<run>/
    run_id = plan_file.parent.name

    fill(bootstrap, dlq_topic, letters(10, start=200))  # matches the selection, not the plan

    changed = dlq(*base, "replay", "--resume", run_id, "--yes", *where, *state)
    assert changed.code == 2 and "drop" in changed.stderr, changed.output
    unknown = dlq(*base, "replay", "--resume", "r-nope", "--yes", *state)
    assert unknown.code == 2 and "no stored plan" in unknown.stderr, unknown.output

    resumed = dlq(*base, "replay", "--resume", run_id, "--yes", *state)
    assert resumed.code == 0, resumed.output
    copies = replays_of(bootstrap, target)
    assert len(copies) == 40 and all(len(v) == 1 for v in copies.values())
    values = {recs[0].value for recs in copies.values()}
    assert values == {f"value-{i}".encode() for i in range(40)}
    assert {e["run"] for e in ledger_of(bootstrap, dlq_topic).values()} == {run_id}
    assert planned  # (sanity of the helper)


def _by_coordinates(bootstrap: str, topic: str) -> dict[str, bytes]:
    return {
        f"{r.topic}/{r.partition}/{r.offset}": r.value or b"" for r in read_all(bootstrap, topic)
    }


def test_a_plan_over_several_partitions_replays_each_in_order_and_refuses_what_is_gone(
    bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    """The stored plan is read back with one reader over all its partitions: each partition
    still replays in its DLQ order, a planned record deleted since (by delete_records, as
    retention would) is refused, and records appended after the plan are not replayed."""
    dlq_topic = topic_factory(partitions=3, suffix="dlq-")
    target = topic_factory(partitions=2, suffix="to-")
    fill(bootstrap, dlq_topic, letters(90))
    base = ("-b", bootstrap, "-t", dlq_topic)
    state = ("--state-dir", str(tmp_path))
    dry = dlq(*base, "replay", "--to", target, "--dry-run", *state)
    assert dry.code == 0, dry.output
    (plan_file,) = (tmp_path / "runs").glob("*/*/plan.json")
    records = read_all(bootstrap, dlq_topic)
    partitions = {rec.partition for rec in records}
    assert len(partitions) == 3  # (13 keys spread over every partition)
    deleted = min(partitions)
    first_two = sorted((r.offset, r.value) for r in records if r.partition == deleted)[:2]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(dlq_topic, deleted, 2)]).values():
        future.result(30)  # its first two dead letters are gone
    fill(bootstrap, dlq_topic, letters(20, start=500))  # after the plan: not in it

    replayed = dlq(*base, "replay", "--plan", plan_file.parent.name, "--yes", *state)
    assert replayed.code == 3, replayed.output  # two refused: a partial success
    assert replayed.output.count("no longer in the DLQ") == 2, replayed.output
    copies = read_all(bootstrap, target)
    gone = {value for _, value in first_two}
    assert {c.value for c in copies} == {f"value-{i}".encode() for i in range(90)} - gone
    assert len(copies) == 88
    assert_per_key_order(bootstrap, target)
