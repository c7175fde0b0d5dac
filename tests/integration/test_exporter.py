"""`dlq exporter` as a real process against the real broker: depth by category and by cause (a
bounded top-N with the rest as `other`), age and expiry, counters, consumer-group lag in records
and seconds (0 for a caught-up group on a transactional topic, whose last offset is a commit
marker), stalled partitions, the objective; depth and counters follow real `dlq replay` and `dlq
discard` runs; /livez, /readyz, and 404 for any other path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline.errors import Category
from scripts.processes import free_port
from tests.dlq_kit import dlq, failure, fill, lazarus_letter
from tests.kit import REPO, Pipeline, produce, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""


class ExporterProcess:
    def __init__(self, log: Path, state: Path, *args: str) -> None:
        self.port = free_port()
        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reprocessor.cli", "exporter", "--port", str(self.port), *args],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "LAZARUS_STATE_DIR": str(state)},
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def samples(self) -> Samples:
        if self.proc.poll() is not None:
            raise AssertionError(f"exporter exited:\n{self.log.read_text()[-3000:]}")
        status, text = http_get(self.url("/metrics"))
        assert status == 200, text
        out: Samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(30) == 0, self.log.read_text()[-3000:]
        self.out.close()


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include `labels` (None when there is none)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


@pytest.fixture
def pipeline(bootstrap: str, tmp_path: Path) -> Pipeline:
    made = Pipeline(bootstrap, tmp_path, top="slo_objective = 0.999")
    return made.create(dlq_config={"retention.ms": str(7 * 86_400_000)})


@pytest.fixture
def exporter(pipeline: Pipeline, tmp_path: Path) -> Iterator[ExporterProcess]:
    process = ExporterProcess(
        tmp_path / "exporter.log",
        tmp_path / "state",
        "--config", str(pipeline.config), "--interval", "0.5", "--top-n", "1",
        "--stall-window", "2", "--cluster", "test",
    )  # fmt: skip
    yield process
    process.stop()


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def test_the_exporter_reports_depth_causes_lag_and_follows_decisions(
    bootstrap: str, pipeline: Pipeline, exporter: ExporterProcess, tmp_path: Path
) -> None:
    name = pipeline.name
    validation = failure(pipeline=name)
    schema = failure(Category.SCHEMA, "pipeline.errors.SchemaError", "schema id 42 is unknown",
                     (), pipeline=name)  # fmt: skip
    held = failure(Category.HELD, "pipeline.errors.Held", "held by rule fraud", (), pipeline=name)
    orders = pipeline.orders
    letters = [lazarus_letter(orders, i, f"k{i}".encode(), b"v", validation) for i in range(5)]
    letters += [lazarus_letter(pipeline.orders, 10 + i, b"s", b"v", schema) for i in range(3)]
    letters += [lazarus_letter(pipeline.orders, 20 + i, b"h", b"v", held) for i in range(2)]
    fill(bootstrap, pipeline.dlq, letters)
    # the group has consumed nothing of orders; it is caught up on its transactional redrive topic
    produce(bootstrap, pipeline.orders, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")])
    redrive = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{name}"})
    redrive.init_transactions(30)
    redrive.begin_transaction()
    redrive.produce(pipeline.redrive, b"x", b"k", partition=0)
    redrive.commit_transaction(30)
    commit(bootstrap, name, {(pipeline.redrive, 0): 1})  # past the record, before the marker

    labels = {"cluster": "test", "pipeline": name, "topic": pipeline.dlq}
    wait_until(lambda: http_get(exporter.url("/readyz"))[0] == 200, 60, "the exporter is ready")
    wait_until(
        lambda: value(exporter.samples(), "lazarus_dlq_records_total", **labels) == 10,
        60,
        "ten dead letters",
    )
    group = {"cluster": "test", "pipeline": name, "group": name}
    on_redrive = {"topic": pipeline.redrive, "partition": "0", **group}
    # a round that ran before the commit above still shows the redrive record as lag
    wait_until(
        lambda: value(exporter.samples(), "lazarus_consumergroup_lag", **on_redrive) == 0,
        60,
        "a round after the redrive commit",
    )
    got = exporter.samples()
    for category, count in (("validation", 5), ("schema", 3), ("held", 2), ("processing", 0)):
        assert value(got, "lazarus_dlq_unresolved", category=category, **labels) == count
    causes = {
        dict(ls)["fingerprint"]: v
        for (n, ls), v in got.items()
        if n == "lazarus_dlq_unresolved_by_cause"
    }
    assert sorted(causes.values()) == [5, 5] and "other" in causes and causes["other"] == 5
    now = time.time()
    oldest = value(got, "lazarus_dlq_oldest_unresolved_timestamp_seconds", **labels)
    expiry = value(got, "lazarus_dlq_unresolved_expiry_timestamp_seconds", **labels)
    assert oldest is not None and now - 600 < oldest <= now
    assert expiry is not None and expiry - oldest == pytest.approx(7 * 86_400, abs=600)
    assert value(got, "lazarus_dlq_retention_bytes", **labels) is None  # unlimited: no series
    assert value(got, "lazarus_slo_objective_ratio", cluster="test", pipeline=name) == 0.999
    assert value(got, "lazarus_exporter_up", cluster="test") == 1

    orders_lag = [
        v for (n, ls), v in got.items()
        if n == "lazarus_consumergroup_lag" and ("topic", pipeline.orders) in ls
    ]  # fmt: skip
    assert sum(orders_lag) == 4 and len(orders_lag) == pipeline.partitions
    for p in range(pipeline.partitions):
        lag = value(
            got, "lazarus_consumergroup_lag", topic=pipeline.orders, partition=str(p), **group
        )
        seconds = value(got, "lazarus_consumergroup_lag_seconds", topic=pipeline.orders,
                        partition=str(p), **group)  # fmt: skip
        assert lag is not None and seconds is not None
        assert (seconds > 0) == (lag > 0)
    assert value(got, "lazarus_consumergroup_lag", **on_redrive) == 0
    assert value(got, "lazarus_consumergroup_lag_seconds", **on_redrive) == 0
    wait_until(
        lambda: any(
            v == 1 for (n, ls), v in exporter.samples().items()
            if n == "lazarus_consumergroup_stalled" and ("topic", pipeline.orders) in ls
        ),
        30,
        "a stalled partition (lag, no commits)",
    )  # fmt: skip
    assert value(exporter.samples(), "lazarus_consumergroup_stalled", **on_redrive) == 0

    # decisions made with the real `dlq` drop the depth and count
    env = {"LAZARUS_STATE_DIR": str(tmp_path / "cli-state")}
    replayed = dlq("--config", str(pipeline.config), "replay", "--where", "category=validation",
                   "--yes", env=env)  # fmt: skip
    assert replayed.code == 0, replayed.output
    discarded = dlq("--config", str(pipeline.config), "discard", "--where", "category=schema",
                    "--reason", "known", "--yes", env=env)  # fmt: skip
    assert discarded.code == 0, discarded.output

    def decided() -> bool:
        s = exporter.samples()
        return (
            value(s, "lazarus_dlq_replayed_total", **labels) == 5
            and value(s, "lazarus_dlq_discarded_total", **labels) == 3
        )

    wait_until(decided, 60, "the decisions in the exporter")
    got = exporter.samples()
    for category, count in (("validation", 0), ("schema", 0), ("held", 2)):
        assert value(got, "lazarus_dlq_unresolved", category=category, **labels) == count
    assert value(got, "lazarus_dlq_records_total", **labels) == 10
    assert value(got, "lazarus_dlq_expired_unresolved_total", **labels) == 0
    causes = {
        dict(ls)["fingerprint"]: v
        for (n, ls), v in got.items()
        if n == "lazarus_dlq_unresolved_by_cause"
    }
    assert sorted(causes.values()) == [0, 2]

    for path, status in (("/livez", 200), ("/readyz", 200), ("/", 404), ("/metricsx", 404)):
        assert http_get(exporter.url(path))[0] == status, path
    text = http_get(exporter.url("/metrics"))[1]
    for secret in ("k1", "items.0.qty", "/0/"):  # no key, message or coordinates as a label
        assert f'"{secret}' not in text
