"""`dlq fix`, `replay` and `discard` on the real broker: fixed Avro and JSON payloads re-encoded
with their original framing and validated by the pipeline's own codecs, the replay headers, the
ledger as audit trail, loop protection, foreign dead letters, discards and a recreated DLQ."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from pipeline.codecs.avro import split_frame
from pipeline.core import contract
from tests.conftest import TopicFactory, create_topics
from tests.dlq_kit import (
    Letter,
    arroyo_headers,
    connect_headers,
    dlq,
    failure,
    fill,
    lazarus_letter,
    ledger_of,
    replays_of,
)
from tests.kit import (
    ORDER_V1,
    Pipeline,
    WorkerProcess,
    avro_framed,
    good_order,
    good_payment,
    read_all,
    wait_until,
)


def broken_orders(pipe: Pipeline) -> list[Letter]:
    """Six orders with a bad quantity; the last two also have a bad currency."""
    letters = []
    for i in range(6):
        order = good_order(i)
        order["items"] = [{"sku": f"sku-{i}", "qty": -i}]
        if i >= 4:
            order["currency"] = "eur"
        why = failure(pipeline=pipe.name)
        letters.append(lazarus_letter(pipe.orders, i, f"k{i}".encode(), avro_framed(order), why))
    return letters


def decode_avro(value: bytes) -> dict[str, Any]:
    import io

    from fastavro import schemaless_reader

    schema_id, body = split_frame(value)
    assert schema_id == 1
    record = schemaless_reader(io.BytesIO(body), ORDER_V1)
    assert isinstance(record, dict)  # an Avro record decodes to a dict of whatever it holds
    return record


def test_fix_preview_and_replay_of_avro(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    fill(bootstrap, pipe.dlq, broken_orders(pipe))
    config = ("--config", str(pipe.config), "--operator", "alice")

    preview = dlq(*config, "--json", "fix", "--set", "items.0.qty=1")
    assert preview.code == 3, preview.output
    verdicts = preview.json_lines()
    assert sorted(v["valid"] for v in verdicts) == [False, False, True, True, True, True]
    assert all(v["diff"][0].startswith("~ items.0.qty: ") for v in verdicts)
    assert all("currency" in v["error"] for v in verdicts if not v["valid"])
    assert read_all(bootstrap, pipe.redrive) == []  # a preview writes nothing

    text = dlq(*config, "fix", "--set", "items.0.qty=1")
    assert "passes validation" in text.stdout and "currency" in text.stdout, text.output

    done = dlq(
        *config, "replay", "--set", "items.0.qty=1", "--state-dir", str(tmp_path), input="y\n"
    )
    assert done.code == 3, done.output
    assert "Replay 4 dead letters" in done.stdout + done.stderr  # the confirmation prompt
    assert f"4 → {pipe.redrive}" in done.stdout
    assert done.stderr.count("currency (string_pattern_mismatch)") == 2

    copies = replays_of(bootstrap, pipe.redrive)
    assert len(copies) == 4
    originals = {r.key: r for r in read_all(bootstrap, pipe.dlq)}
    for of, (copy,) in copies.items():
        original = originals[copy.key]
        assert of == f"{pipe.dlq}/{original.partition}/{original.offset}"
        assert copy.value is not None and copy.value[:5] == (original.value or b"")[:5]
        fixed = decode_avro(copy.value)
        before = decode_avro(original.value or b"")
        assert fixed["items"] == [{"sku": before["items"][0]["sku"], "qty": 1}]
        assert {k: v for k, v in fixed.items() if k != "items"} == {
            k: v for k, v in before.items() if k != "items"
        }
        names = [name for name, _ in copy.headers]
        assert not any(n.startswith(("dlq.error.", "dlq.source.")) for n in names)
        assert copy.text(contract.REPLAY_COUNT) == "1"
        assert copy.text(contract.ORIGIN) == original.text(contract.ORIGIN)
        assert (copy.text(contract.REPLAY_RUN) or "").startswith("r-")

    audit = dlq(*config, "--json", "inspect", "--where", "state=replayed")
    entries = [line["ledger"] for line in audit.json_lines()]
    assert len(entries) == 4
    assert {(e["operator"], tuple(e["fix"])) for e in entries} == {
        ("alice", ("set items.0.qty=1",))
    }

    again = dlq(*config, "--json", "replay", "--set", "items.0.qty=1", "--yes")
    assert again.code == 3, again.output
    (summary,) = again.json_lines()
    assert summary["replayed"] == 0 and len(summary["refused"]) == 2
    assert len(replays_of(bootstrap, pipe.redrive)) == 4

    worker = WorkerProcess(pipe.config, tmp_path / "worker.log")  # the pipeline takes them now
    try:
        wait_until(lambda: worker.check_alive() and len(read_all(bootstrap, pipe.output)) == 4)
    finally:
        assert worker.stop() == 0, worker.text()
    assert {r.key for r in read_all(bootstrap, pipe.output)} == {b"k0", b"k1", b"k2", b"k3"}


def test_fix_and_replay_of_json_to_the_source_topic(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    letters = []
    for i in range(5):
        payment = {**good_payment(i), "currency": "eur"}
        if i == 4:
            payment["amount"] = -5.0
        value = json.dumps(payment).encode()
        letters.append(
            lazarus_letter(pipe.payments, i, f"p{i}".encode(), value, failure(pipeline=pipe.name))
        )
    fill(bootstrap, pipe.dlq, letters)
    config = ("--config", str(pipe.config))

    preview = dlq(*config, "fix", "--set", "currency=EUR", "--rename", "status=state")
    assert preview.code == 3, preview.output
    assert "+ state: 'captured'" in preview.stdout and "- status" in preview.stdout

    module = f"payfix_{uuid.uuid4().hex[:8]}"  # a fix function in the working folder
    (tmp_path / f"{module}.py").write_text(
        "def fix(event):\n"
        "    event['currency'] = event['currency'].upper()\n"
        "    event['amount'] = abs(event['amount'])\n"
    )
    monkeypatch.chdir(tmp_path)
    with_function = dlq(*config, "--json", "fix", "--with", f"{module}:fix")
    assert with_function.code == 0, with_function.output
    assert [v["valid"] for v in with_function.json_lines()] == [True] * 5

    fixed = dlq(
        *config, "replay", "--to-source", "--yes", "--set", "currency=EUR", "--cast", "amount:float"
    )
    assert fixed.code == 3, fixed.output
    assert "amount" in fixed.stderr and "1 of 5" in fixed.stderr
    copies = replays_of(bootstrap, pipe.payments)
    assert len(copies) == 4
    for (copy,) in copies.values():
        payment = json.loads(copy.value or b"")
        i = int((copy.key or b"p9")[1:])
        assert payment == {**good_payment(i), "currency": "EUR"}
    ledger = ledger_of(bootstrap, pipe.dlq)
    assert {tuple(e["fix"]) for e in ledger.values()} == {
        ("set currency='EUR'", "cast amount:float")
    }


def test_loop_protection_and_force(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path, extra="[reprocessor]\nmax_replays = 2\n").create()

    def looped(i: int) -> list[tuple[str, bytes | None]]:
        return [
            (contract.ORIGIN, f"{pipe.orders}/0/{i}".encode()),
            (contract.ORIGIN_TIMESTAMP, b"1760000000000"),
            (contract.REPLAY_COUNT, str(i).encode()),
        ]

    letters = [
        lazarus_letter(
            pipe.redrive,
            i,
            f"k{i}".encode(),
            avro_framed(good_order(i)),
            failure(pipeline=pipe.name),
            headers=looped(i),
        )
        for i in range(4)
    ]
    fill(bootstrap, pipe.dlq, letters)

    refused = dlq("-c", str(pipe.config), "replay", "--yes")
    assert refused.code == 3, refused.output
    assert refused.stderr.count("loop protection: already replayed") == 2
    assert "max_replays 2" in refused.stderr
    assert sorted(
        r.text(contract.REPLAY_COUNT) or "" for r in read_all(bootstrap, pipe.redrive)
    ) == [
        "1",
        "2",
    ]

    forced = dlq("-c", str(pipe.config), "replay", "--yes", "--force")
    assert forced.code == 0, forced.output
    counts = sorted(r.text(contract.REPLAY_COUNT) or "" for r in read_all(bootstrap, pipe.redrive))
    assert counts == ["1", "2", "3", "4"]
    origins = {r.text(contract.ORIGIN) for r in read_all(bootstrap, pipe.redrive)}
    assert origins == {f"{pipe.orders}/0/{i}" for i in range(4)}  # lineage kept


def test_foreign_dead_letters_need_an_explicit_target(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    source = topic_factory(suffix="src-", partitions=2)
    elsewhere = topic_factory(suffix="to-")
    dlq_topic = topic_factory(suffix="dlq-")
    fill(
        bootstrap,
        dlq_topic,
        [
            Letter(b"c1", b"connect-1", connect_headers(source, 1, 5)),
            Letter(b"a1", b"arroyo-1", arroyo_headers(0, 9)),
        ],
    )
    base = ("--bootstrap", bootstrap, "--topic", dlq_topic)

    nowhere = dlq(*base, "replay", "--yes")
    assert nowhere.code == 2, nowhere.output
    assert "name no Lazarus pipeline" in nowhere.stderr and "--to TOPIC" in nowhere.stderr

    arroyo = dlq(*base, "replay", "--yes", "--to-source", "--where", "dialect=arroyo")
    assert arroyo.code == 2 and "arroyo" in arroyo.stderr, arroyo.output

    missing = dlq(*base, "replay", "--yes", "--to", "no-such-target-topic")
    assert missing.code == 2 and "does not exist" in missing.stderr, missing.output

    connect = dlq(*base, "replay", "--yes", "--to-source", "--where", "dialect=connect")
    assert connect.code == 0, connect.output
    (copy,) = read_all(bootstrap, source)
    assert (copy.key, copy.value) == (b"c1", b"connect-1")
    assert copy.text(contract.REPLAY_OF) == f"{dlq_topic}/0/0"
    assert copy.header("__connect.errors.topic") is None  # the foreign error headers stay behind

    arroyo_to = dlq(*base, "replay", "--yes", "--to", elsewhere)
    assert arroyo_to.code == 0, arroyo_to.output
    assert [r.value for r in read_all(bootstrap, elsewhere)] == [b"arroyo-1"]
    assert len(ledger_of(bootstrap, dlq_topic)) == 2  # the ledger topic was created for it


def test_discard_needs_a_reason_and_is_audited(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    fill(bootstrap, pipe.dlq, broken_orders(pipe))
    config = ("--config", str(pipe.config))

    no_reason = dlq(*config, "discard", "--yes")
    assert no_reason.code == 2 and "--reason" in no_reason.stderr, no_reason.output

    done = dlq(
        *config,
        "--operator",
        "bob",
        "discard",
        "--where",
        "key=k4|k5",
        "--reason",
        "test orders, never valid",
        input="y\n",
    )
    assert done.code == 0, done.output
    assert "discarded 2" in done.stdout

    audit = dlq(*config, "--json", "inspect", "--where", "state=discarded")
    ledgers = [line["ledger"] for line in audit.json_lines()]
    assert [(e["operator"], e["reason"], e["action"]) for e in ledgers] == [
        ("bob", "test orders, never valid", "discarded")
    ] * 2

    replay = dlq(*config, "replay", "--yes", "--set", "items.0.qty=1")
    assert replay.code == 0, replay.output  # the discarded (invalid) ones are not selected
    assert len(replays_of(bootstrap, pipe.redrive)) == 4

    stats = dlq(*config, "--json", "stats").json_lines()[0]
    assert (stats["unresolved"], stats["replayed"], stats["discarded"]) == (0, 4, 2)


def test_recreated_dlq_topic_ignores_the_stale_ledger(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    target = topic_factory(suffix="to-")
    dlq_topic = topic_factory(suffix="dlq-")
    old = int(time.time() * 1000) - 60_000
    fill(
        bootstrap,
        dlq_topic,
        [
            lazarus_letter("orders", i, f"k{i}".encode(), b"{}", failure(failed_at_ms=old))
            for i in range(3)
        ],
    )
    base = ("-b", bootstrap, "-t", dlq_topic)
    assert dlq(*base, "replay", "--yes", "--to", target).code == 0

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([dlq_topic], operation_timeout=30)[dlq_topic].result(60)
    wait_until(lambda: recreate(bootstrap, dlq_topic), 60, "the DLQ topic recreated")
    fill(
        bootstrap,
        dlq_topic,
        [
            lazarus_letter("orders", i, f"new{i}".encode(), b"{}", failure(message=f"other {i}"))
            for i in range(3)
        ],
    )

    listed = dlq(*base, "--json", "inspect")
    assert [line["error"]["state"] for line in listed.json_lines()] == ["unresolved"] * 3
    again = dlq(*base, "replay", "--yes", "--to", target)
    assert again.code == 0, again.output
    copies = replays_of(bootstrap, target)
    assert {len(v) for v in copies.values()} == {2}  # each coordinate: old copy, new copy
    keys = sorted(r.key or b"" for recs in copies.values() for r in recs)
    assert keys == sorted([b"k0", b"k1", b"k2", b"new0", b"new1", b"new2"])


def recreate(bootstrap: str, topic: str) -> bool:
    try:
        create_topics(bootstrap, [topic])
    except Exception:
        return False
    return True


def test_tail_and_limit_select_what_they_say(bootstrap: str, topic_factory: TopicFactory) -> None:
    """`--tail` (which the index cannot answer: a scan) and `--limit` (from the index) plan
    only what they select; the plan never takes every unresolved dead letter for them."""
    dlq_topic = topic_factory(suffix="dlq-")
    out = topic_factory(suffix="to-")
    letters = [
        lazarus_letter("orders", i, f"k{i}".encode(), f"v{i}".encode(), failure()) for i in range(5)
    ]
    fill(bootstrap, dlq_topic, letters)
    base = ("--bootstrap", bootstrap, "--topic", dlq_topic)

    tail = dlq(*base, "replay", "--yes", "--to", out, "--tail", "2")
    assert tail.code == 0, tail.output
    assert [r.value for r in read_all(bootstrap, out)] == [b"v3", b"v4"]

    limit = dlq(*base, "replay", "--yes", "--to", out, "--limit", "2")
    assert limit.code == 0, limit.output
    assert [r.value for r in read_all(bootstrap, out)] == [b"v3", b"v4", b"v0", b"v1"]
    assert len(ledger_of(bootstrap, dlq_topic)) == 4
