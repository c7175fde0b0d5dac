"""`dlq inspect`, `show`, `group` and `stats` on the real broker: a DLQ filled by the real worker,
DLQs of other tools' dialects (golden header bytes), kcat-compatible JSON lines, and clear
exit-2 errors for bad selections, unknown topics and bad options."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from pipeline.core import contract
from reprocessor.deadletters import bytes_from_json
from tests.conftest import TopicFactory
from tests.dlq_kit import (
    SPRING_OFFSET_41,
    SPRING_PARTITION_2,
    Letter,
    arroyo_headers,
    connect_headers,
    dlq,
    failure,
    fill,
    lazarus_letter,
    spring_headers,
    streams_headers,
)
from tests.kit import (
    Pipeline,
    WorkerProcess,
    avro_framed,
    good_order,
    produce,
    read_all,
    wait_until,
)

NO_FLOOD_GUARD = "[policy]\nflood_window = 100000\nflood_min_records = 100000\n"
"""Every record of these tests fails: the worker's flood guard would pause it."""
KCAT_FIELDS = {"topic", "partition", "offset", "tstype", "ts", "headers", "key", "payload"}


def three_causes(count: int) -> list[tuple[bytes | None, bytes | None]]:
    """`count` invalid orders, each with distinct values, failing for one of three causes."""
    records: list[tuple[bytes | None, bytes | None]] = []
    for i in range(count):
        order = good_order(i)
        if i % 3 == 0:
            order["items"] = [{"sku": f"sku-{i}", "qty": -(i + 1)}]
        elif i % 3 == 1:
            order["customer"] = {"id": f"c-{i}", "email": f"not-an-email-{i}"}
        else:
            order["currency"] = f"e{i % 10}r"
        records.append((f"k{i}".encode(), avro_framed(order)))
    return records


def run_worker_until(pipe: Pipeline, tmp_path: Path, dead: int) -> None:
    worker = WorkerProcess(pipe.config, tmp_path / "worker.log")
    try:
        wait_until(
            lambda: worker.check_alive() and len(read_all(pipe.bootstrap, pipe.dlq)) >= dead,
            120,
            f"{dead} dead letters",
        )
    finally:
        assert worker.stop() == 0, worker.text()


def test_worker_filled_dlq_groups_into_its_three_causes(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path, extra=NO_FLOOD_GUARD).create()
    produce(bootstrap, pipe.orders, three_causes(1000))
    produce(bootstrap, pipe.orders, [(b"truncated", avro_framed(good_order(1))[:-3])])
    run_worker_until(pipe, tmp_path, 1001)

    grouped = dlq("--config", str(pipe.config), "--json", "group", "--where", "category=validation")
    assert grouped.code == 0, grouped.output
    rows = grouped.json_lines()
    assert len(rows) == 3, rows
    assert sorted(r["count"] for r in rows) == [333, 333, 334]
    assert all(r["unresolved"] == r["count"] and r["category"] == "validation" for r in rows)
    messages = " ".join(r["example"] for r in rows)
    for field in ("items.0.qty", "customer.email", "currency"):
        assert field in messages

    table = dlq("--config", str(pipe.config), "group", "--by", "category")
    assert table.code == 0, table.output
    assert "validation" in table.stdout and "1000" in table.stdout
    assert "deserialization" in table.stdout

    by_value = dlq(
        "-c",
        str(pipe.config),
        "--json",
        "group",
        "--by",
        "value.currency",
        "--where",
        "type~ValidationError and value.currency!=EUR",
    )
    assert by_value.code == 0, by_value.output
    assert {r["key"] for r in by_value.json_lines()} == {f"e{d}r" for d in range(10)}


def test_worker_filled_dlq_inspect_show_and_stats(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    produce(bootstrap, pipe.orders, three_causes(30))
    produce(bootstrap, pipe.orders, [(b"truncated", avro_framed(good_order(1))[:-3])])
    run_worker_until(pipe, tmp_path, 31)
    config = ("--config", str(pipe.config))

    listed = dlq(*config, "inspect", "--where", "category=deserialization")
    assert listed.code == 0, listed.output
    assert "truncated" in listed.stdout and "deserialization" in listed.stdout
    assert "1 dead letters" in listed.stderr

    decoded = dlq(
        *config, "--json", "inspect", "--decode", "--where", "value.customer.email~not-an"
    )
    assert decoded.code == 0, decoded.output
    lines = decoded.json_lines()
    assert len(lines) == 10
    assert all(line["decoded"]["customer"]["email"].startswith("not-an") for line in lines)
    assert all(line["error"]["pipeline"] == pipe.name for line in lines)

    (bad,) = [r for r in read_all(bootstrap, pipe.dlq) if r.key == b"truncated"]
    where = f"{pipe.dlq}/{bad.partition}/{bad.offset}"
    shown = dlq(*config, "show", where)
    assert shown.code == 0, shown.output
    for text in (where, "deserialization", "Avro record", f"{pipe.orders}/", "payload (hex)"):
        assert text in shown.stdout, text
    assert contract.ERROR_FINGERPRINT in shown.stdout  # every header is listed

    stats = dlq(*config, "--json", "stats")
    assert stats.code == 0, stats.output
    (line,) = stats.json_lines()
    assert (line["total"], line["unresolved"]) == (31, 31)
    assert line["by_category"]["validation"] == {"total": 30, "unresolved": 30}
    assert line["oldest_unresolved_age_ms"] >= 0

    missing = dlq(*config, "show", f"{pipe.dlq}/0/999999")
    assert missing.code == 2, missing.output
    assert "no record at" in missing.stderr


def foreign_letters(source: str) -> list[Letter]:
    return [
        Letter(b"connect-key", b'{"id": 1}', connect_headers(source, 1, 5)),
        Letter(b"spring-key", b"\xff\xfe binary", spring_headers(source, hops=2)),
        Letter(None, b"streams-value", streams_headers(source, 0, 3)),
        Letter(b"arroyo-key", b'{"arroyo": true}', arroyo_headers(4, 9)),
    ]


def test_foreign_dialects_inspect_group_show(bootstrap: str, topic_factory: TopicFactory) -> None:
    source = topic_factory(suffix="src-")
    dlq_topic = topic_factory(suffix="foreign-dlq-")
    fill(bootstrap, dlq_topic, foreign_letters(source))
    base = ("--bootstrap", bootstrap, "--topic", dlq_topic)

    result = dlq(*base, "--json", "inspect")
    assert result.code == 0, result.output
    by_dialect = {line["error"]["dialect"]: line for line in result.json_lines()}
    assert set(by_dialect) == {"connect", "spring", "streams", "arroyo"}
    for line in by_dialect.values():
        assert set(line) >= KCAT_FIELDS
    connect = by_dialect["connect"]["error"]
    assert connect["source"] == {"topic": source, "partition": 1, "offset": 5, "timestamp": None}
    assert connect["type"] == "org.apache.kafka.connect.errors.DataException"
    spring = by_dialect["spring"]
    # binary ints decoded; the first of the repeated original-* headers is the true origin
    assert spring["error"]["source"]["topic"] == source
    assert (spring["error"]["source"]["partition"], spring["error"]["source"]["offset"]) == (2, 41)
    assert spring["payload_encoding"] == "base64"
    assert base64.b64decode(spring["payload"]) == b"\xff\xfe binary"
    headers = spring["headers"]
    partition_value = headers[headers.index("kafka_dlt-original-partition") + 1]
    assert bytes_from_json(partition_value) == SPRING_PARTITION_2
    offset_value = headers[headers.index("kafka_dlt-original-offset") + 1]
    assert bytes_from_json(offset_value) == SPRING_OFFSET_41
    assert by_dialect["streams"]["key"] is None
    assert by_dialect["arroyo"]["error"]["source"]["topic"] is None
    assert by_dialect["arroyo"]["error"]["source"]["offset"] == 9

    grouped = dlq(*base, "--json", "group", "--by", "dialect")
    assert grouped.code == 0, grouped.output
    assert {r["key"]: r["count"] for r in grouped.json_lines()} == dict.fromkeys(by_dialect, 1)

    table = dlq(*base, "group")
    assert table.code == 0, table.output
    assert "ListenerExecutionFailedException" in table.stdout

    where = f"{dlq_topic}/{by_dialect['spring']['partition']}/{by_dialect['spring']['offset']}"
    shown = dlq(*base, "show", where)
    assert shown.code == 0, shown.output
    assert "spring" in shown.stdout and "consumer_group" not in shown.stderr
    assert "kafka_dlt-original-partition: hex:00000002" in shown.stdout

    selected = dlq(*base, "--json", "inspect", "--where", "dialect=connect|streams and key!=null")
    assert [line["error"]["dialect"] for line in selected.json_lines()] == ["connect"]


def test_tail_since_and_limit(bootstrap: str, topic_factory: TopicFactory) -> None:
    dlq_topic = topic_factory()
    old = int(time.time() * 1000) - 3 * 3600 * 1000
    letters = [
        lazarus_letter("orders", i, f"k{i}".encode(), b"{}", failure(failed_at_ms=old + i))
        for i in range(20)
    ]
    fill(bootstrap, dlq_topic, letters)
    base = ("-b", bootstrap, "-t", dlq_topic, "--json", "inspect")
    assert [r["offset"] for r in dlq(*base, "--tail", "3").json_lines()] == [17, 18, 19]
    assert len(dlq(*base, "--limit", "5").json_lines()) == 5
    assert dlq(*base, "--since", "1h").json_lines() != []  # DLQ timestamps are produce times
    assert dlq(*base, "--until", "1h").json_lines() == []
    assert len(dlq(*base, "--where", "failed_at<" + str(old + 5)).json_lines()) == 5


def test_bad_input_is_a_one_line_error_with_exit_2(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    dlq_topic = topic_factory()
    base = ("--bootstrap", bootstrap, "--topic", dlq_topic)

    bad_field = dlq(*base, "inspect", "--where", "category=validation and colour=red")
    assert bad_field.code == 2, bad_field.output
    assert "column 25" in bad_field.stderr and "unknown field 'colour'" in bad_field.stderr
    assert len(bad_field.stderr.strip().splitlines()) == 1

    bad_op = dlq(*base, "group", "--where", "offset~12")
    assert bad_op.code == 2 and "column 7" in bad_op.stderr, bad_op.output

    bad_category = dlq(*base, "inspect", "--where", "category=validatoin")
    assert bad_category.code == 2 and "one of" in bad_category.stderr, bad_category.output

    unknown = dlq("--bootstrap", bootstrap, "--topic", "no-such-dlq-topic-xyz", "inspect")
    assert unknown.code == 2, unknown.output
    assert "topic no-such-dlq-topic-xyz does not exist" in unknown.stderr

    bad_x = dlq(*base, "-X", "linger.ms", "inspect")
    assert bad_x.code == 2 and "key=value" in bad_x.stderr, bad_x.output

    bad_prop = dlq(*base, "-X", "no.such.property=1", "inspect")
    assert bad_prop.code == 2 and "librdkafka rejected" in bad_prop.stderr, bad_prop.output

    nothing = dlq("inspect")
    assert nothing.code == 2 and "--bootstrap" in nothing.stderr, nothing.output

    bad_since = dlq(*base, "inspect", "--since", "yesterday-ish")
    assert bad_since.code == 2 and "--since" in bad_since.stderr, bad_since.output

    bad_by = dlq(*base, "group", "--by", "colour")
    assert bad_by.code == 2 and "--by" in bad_by.stderr, bad_by.output

    bad_coordinates = dlq(*base, "show", "just-a-topic")
    assert bad_coordinates.code == 2, bad_coordinates.output


def test_json_lines_follow_kcat(bootstrap: str, topic_factory: TopicFactory) -> None:
    dlq_topic = topic_factory()
    letter = lazarus_letter(
        "orders", 3, b"\x00\xffkey", b"\x80 not utf-8", failure(), headers=[("bin", b"\xfe")]
    )
    fill(bootstrap, dlq_topic, [letter, Letter(None, None, letter.headers)])
    result = dlq("-b", bootstrap, "-t", dlq_topic, "--json", "inspect")
    assert result.code == 0, result.output
    first, tombstone = result.json_lines()
    assert set(first) >= KCAT_FIELDS
    assert (first["topic"], first["partition"], first["offset"]) == (dlq_topic, 0, 0)
    assert first["tstype"] == "create" and isinstance(first["ts"], int)
    assert base64.b64decode(first["key"]) == b"\x00\xffkey" and first["key_encoding"] == "base64"
    assert base64.b64decode(first["payload"]) == b"\x80 not utf-8"
    assert first["headers"][:2] == ["bin", {"base64": base64.b64encode(b"\xfe").decode()}]
    assert first["error"]["category"] == "validation" and first["error"]["state"] == "unresolved"
    assert (tombstone["key"], tombstone["payload"]) == (None, None)
    assert json.loads(json.dumps(first)) == first
