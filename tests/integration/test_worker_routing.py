"""The worker on the real broker: every category gets the contract's exact headers, the original
bytes survive, good records are forwarded unchanged, replays keep their lineage."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pipeline.core import contract
from tests.kit import (
    SEQ,
    Pipeline,
    Rec,
    WorkerProcess,
    account,
    avro_framed,
    committed_offsets,
    good_order,
    good_payment,
    produce,
    read_all,
    wait_until,
)

TRACE = ("trace", b"\x00\x01\xff")


def order_inputs() -> list[tuple[bytes | None, bytes | None]]:
    good = [avro_framed(good_order(i)) for i in range(20)]
    bad_qty = good_order(100)
    bad_qty["items"] = [{"sku": "x", "qty": -4}, {"sku": "y", "qty": 0}]
    return [
        *[(f"k{i}".encode(), v) for i, v in enumerate(good)],
        (b"truncated", avro_framed(good_order(1))[:-3]),
        (b"magic", b"\x07" + avro_framed(good_order(2))[1:]),
        (b"unknown-id", avro_framed(good_order(3), schema_id=99)),
        (b"qty", avro_framed(bad_qty)),
        (b"trailing", avro_framed(good_order(4)) + b"\x00\x00"),
        (b"tombstone", None),
        (None, avro_framed(good_order(5))),
    ]


def payment_inputs() -> list[tuple[bytes | None, bytes | None]]:
    nan = good_payment(1)
    nan["amount"] = float("nan")
    missing = good_payment(2)
    del missing["currency"]
    return [
        *[(f"p{i}".encode(), json.dumps(good_payment(i)).encode()) for i in range(10)],
        (b"not-json", b'{"payment_id": "p-1", '),
        (b"nan", json.dumps(nan).encode()),
        (b"missing", json.dumps(missing).encode()),
        (b"utf8", b'{"payment_id": "\xff\xfe"}'),
    ]


def run_until_committed(pipe: Pipeline, tmp_path: Path, expected: dict[str, int]) -> str:
    worker = WorkerProcess(pipe.config, tmp_path / "worker.log")
    try:
        for topic, count in expected.items():

            def committed(topic: str = topic, count: int = count) -> bool:
                return worker.check_alive() and (
                    sum(
                        max(o, 0)
                        for o in committed_offsets(pipe.bootstrap, pipe.name, topic, 2).values()
                    )
                    >= count
                )

            wait_until(committed, 90, f"offsets of {topic} committed")
    finally:
        code = worker.stop()
    assert code == 0, worker.text()
    return worker.text()


def dead_by_key(dead: list[Rec]) -> dict[bytes | None, Rec]:
    return {r.key: r for r in dead}


def test_every_category_gets_the_contract_headers(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    started_ms = int(time.time() * 1000)
    n_orders = produce(bootstrap, pipe.orders, order_inputs(), headers=[TRACE])
    n_payments = produce(bootstrap, pipe.payments, payment_inputs(), headers=[TRACE])
    run_until_committed(pipe, tmp_path, {pipe.orders: n_orders, pipe.payments: n_payments})

    acc = account(bootstrap, [pipe.orders, pipe.payments], pipe.output, pipe.dlq)
    assert acc.missing == set()
    assert acc.duplicates == 0
    assert len(acc.outputs) == 20 + 1 + 1 + 10  # good orders, tombstone, null-key order, payments

    inputs = {r.header(SEQ): r for r in acc.inputs}
    for out in acc.outputs:  # forwarded unchanged: no re-encoding
        src = inputs[out.header(SEQ)]
        assert (out.key, out.value, out.headers) == (src.key, src.value, src.headers)

    dead = dead_by_key(acc.dead)
    expected = {
        b"truncated": "deserialization",
        b"magic": "deserialization",
        b"trailing": "deserialization",
        b"unknown-id": "schema",
        b"qty": "validation",
        b"not-json": "deserialization",
        b"utf8": "deserialization",
        b"nan": "validation",
        b"missing": "validation",
    }
    assert {k: r.text(contract.ERROR_CATEGORY) for k, r in dead.items()} == expected
    for letter in acc.dead:
        src = inputs[letter.header(SEQ)]
        assert_contract_headers(letter, src, pipe.name, started_ms)

    qty = json.loads(dead[b"qty"].text(contract.ERROR_DETAILS) or "[]")
    assert sorted(d["loc"] for d in qty) == ["items.0.qty", "items.1.qty"]
    assert "-4" not in (dead[b"qty"].text(contract.ERROR_MESSAGE) or "")
    assert "trailing" in (dead[b"trailing"].text(contract.ERROR_MESSAGE) or "")
    assert "99" in (dead[b"unknown-id"].text(contract.ERROR_MESSAGE) or "")
    assert "amount" in (dead[b"nan"].text(contract.ERROR_MESSAGE) or "")


def assert_contract_headers(letter: Rec, src: Rec, pipeline: str, started_ms: int) -> None:
    """Original key, value and headers byte-for-byte; each required dlq.* header exactly once."""
    assert (letter.key, letter.value) == (src.key, src.value)
    originals = [h for h in letter.headers if not h[0].startswith("dlq.")]
    assert originals == src.headers
    assert letter.headers[: len(src.headers)] == src.headers  # originals first, in order
    names = [k for k, _ in letter.headers if k.startswith("dlq.")]
    assert len(names) == len(set(names))
    assert set(contract.REQUIRED_HEADERS) <= set(names)
    meta = contract.parse_dead_letter(letter.headers)
    assert meta is not None and meta.problems == ()
    assert meta.version == 1
    assert (meta.source_topic, meta.source_partition, meta.source_offset) == (
        src.topic,
        src.partition,
        src.offset,
    )
    assert meta.origin == f"{src.topic}/{src.partition}/{src.offset}"
    assert meta.replay_count == 0
    assert meta.pipeline == pipeline
    assert meta.attempts == 1
    assert meta.failed_at_ms is not None and meta.failed_at_ms >= started_ms
    assert re.fullmatch(r"[0-9a-f]{16}", meta.fingerprint or "")
    assert meta.worker is not None and meta.worker.count(":") >= 1


def test_replayed_record_keeps_lineage_and_is_decoded_with_origin_schema(
    bootstrap: str, tmp_path: Path
) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    bad = good_order(7)
    bad["items"] = [{"sku": "x", "qty": -1}]
    produce(bootstrap, pipe.orders, [(b"k7", avro_framed(bad))], headers=[TRACE])
    run_until_committed(pipe, tmp_path, {pipe.orders: 1})
    (letter,) = read_all(bootstrap, pipe.dlq)
    first = contract.parse_dead_letter(letter.headers)
    assert first is not None

    # an operator's replays: one still broken, one fixed (decoded with the origin's schema)
    where = f"{pipe.dlq}/{letter.partition}/{letter.offset}"
    replay_headers = contract.build_replay(letter.headers, dead_letter=where, run_id="run-1")
    fixed = avro_framed(good_order(7))
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    producer.produce(pipe.redrive, letter.value, b"k7", headers=[*replay_headers, (SEQ, b"again")])
    producer.produce(pipe.redrive, fixed, b"k7", headers=[*replay_headers, (SEQ, b"fixed")])
    assert producer.flush(30) == 0
    run_until_committed(pipe, tmp_path, {pipe.redrive: 2})

    dead = [r for r in read_all(bootstrap, pipe.dlq) if r.header(SEQ) == b"again"]
    assert len(dead) == 1
    again = dead[0]
    meta = contract.parse_dead_letter(again.headers)
    assert meta is not None
    assert [k for k, _ in again.headers].count(contract.ORIGIN) == 1
    assert meta.origin == first.origin
    assert meta.origin_timestamp_ms == first.origin_timestamp_ms
    assert meta.replay_count == 1
    assert meta.source_topic == pipe.redrive
    assert meta.category is not None and meta.category.value == "validation"
    assert meta.fingerprint == first.fingerprint  # same cause, same fingerprint

    outputs = [r for r in read_all(bootstrap, pipe.output) if r.header(SEQ) == b"fixed"]
    assert len(outputs) == 1 and outputs[0].value == fixed
