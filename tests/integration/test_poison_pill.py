"""The crash-loop poison pill on the real broker with real processes: a record whose processing
kills the worker process (os._exit) is, after `crash_limit` deaths on it, dead-lettered as
`crashed` with its original bytes, and everything else flows. Both delivery modes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.core import contract
from pipeline.core.crashes import parse_mark
from tests.kit import (
    Pipeline,
    WorkerProcess,
    account,
    avro_framed,
    committed_offsets,
    good_order,
    produce,
    read_all,
)


@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_a_record_that_kills_the_process_is_dead_lettered_as_crashed(
    bootstrap: str, tmp_path: Path, delivery: str
) -> None:
    pipe = Pipeline(
        bootstrap,
        tmp_path,
        partitions=1,
        delivery=delivery,
        top='processor = "tests.processors:dies_on_o13"',
        extra="[policy]\ncrash_limit = 3\nretry_budget_ms = 5000\n",
    ).create()
    records = [(f"k{i}".encode(), avro_framed(good_order(i))) for i in range(40)]
    total = produce(bootstrap, pipe.orders, records)
    deaths = 0
    for run in range(8):
        worker = WorkerProcess(pipe.config, tmp_path / f"w{run}.log")
        done = False
        while worker.alive():
            offsets = committed_offsets(bootstrap, pipe.name, pipe.orders, 1)
            if offsets.get(0, 0) >= total:
                done = True
                break
            time.sleep(0.3)
        if done:
            assert worker.stop() == 0, worker.text()
            break
        assert worker.proc.returncode == 137, worker.text()
        deaths += 1
    assert deaths == 4, "the first death, then three on the offset the marks pinned"
    acc = account(bootstrap, [pipe.orders], pipe.output, pipe.dlq)
    assert acc.missing == set()
    (dead,) = acc.dead
    assert dead.key == b"k13" and dead.value == avro_framed(good_order(13))
    meta = contract.parse_dead_letter(dead.headers)
    assert meta is not None and meta.category is not None
    assert (meta.category.value, meta.attempts) == ("crashed", 3)
    if delivery == "exactly-once":
        assert acc.duplicates == 0
    assert [r.key for r in read_all(bootstrap, pipe.dlq)] == [b"k13"]
    assert parse_mark(_metadata(bootstrap, pipe.name, pipe.orders)) is None  # clean stop


def _metadata(bootstrap: str, group: str, topic: str) -> str:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (found,) = consumer.committed([TopicPartition(topic, 0)], timeout=15)
        return str(found.metadata or "")
    finally:
        consumer.close()
