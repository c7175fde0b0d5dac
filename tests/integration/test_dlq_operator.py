"""Issue 12's operator-facing options and defects on the real broker: global options in either
place, `--where` with or/not/parentheses and `rule=`, foreign dialects' pipelines and categories,
saved plans, the ledger never silently recreated, oversize dead letters, and the small ones."""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from confluent_kafka.admin import AdminClient

from pipeline.core import contract
from pipeline.errors import Category
from tests.conftest import create_topics
from tests.dlq_kit import (
    DlqProcess,
    Letter,
    connect_headers,
    dlq,
    failure,
    fill,
    lazarus_letter,
    ledger_of,
    replays_of,
    spring_headers,
)
from tests.kit import REPO, Pipeline, good_payment, read_all, wait_until

TopicFactory = Callable[..., str]


def held_letter(offset: int, rule: str) -> Letter:
    why = failure(
        Category.HELD,
        "lazarus.Held",
        f"held by rule {rule}: fraud review",
        details=({"rule": rule, "expires": "2099-01-01T00:00:00Z", "expires_at_ms": "1"},),
    )
    held = replace(why, policy_rule=f"hold:{rule}@0123456789ab")
    return lazarus_letter("orders", offset, f"k{offset}".encode(), b"{}", held)


def mixed(count: int) -> list[Letter]:
    """validation, processing and held (two rules) dead letters, in turn."""
    letters = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            letters.append(lazarus_letter("orders", i, f"k{i}".encode(), b"{}", failure()))
        elif kind == 1:
            why = failure(Category.PROCESSING, "TimeoutError", "upstream timed out", ())
            letters.append(lazarus_letter("orders", i, f"k{i}".encode(), b"{}", why))
        else:
            letters.append(held_letter(i, "fraud-review" if kind == 2 else "tenant-acme"))
    return letters


def test_global_options_work_after_the_command_name(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory()
    fill(bootstrap, topic, mixed(8))
    before = dlq("--json", "-b", bootstrap, "-t", topic, "inspect")
    after = dlq("inspect", "--json", "--bootstrap", bootstrap, "--topic", topic)
    assert before.code == 0 and after.code == 0, after.output
    assert len(after.json_lines()) == 8
    assert after.json_lines() == before.json_lines()
    stats = dlq("stats", "-b", bootstrap, "-t", topic, "--json")
    assert stats.code == 0, stats.output
    assert stats.json_lines()[0]["total"] == 8


def test_where_or_not_parentheses_and_rule(bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = topic_factory()
    fill(bootstrap, topic, mixed(12))

    def offsets(where: str) -> list[int]:
        result = dlq("-b", bootstrap, "-t", topic, "--json", "inspect", "--where", where)
        assert result.code == 0, result.output
        return [line["offset"] for line in result.json_lines()]

    assert offsets("category=validation or type=TimeoutError") == [0, 1, 4, 5, 8, 9]
    assert offsets("not category=held and not (offset<4 or offset>8)") == [4, 5, 8]
    assert offsets("rule=fraud-review") == [2, 6, 10]
    assert offsets("rule=fraud-review|tenant-acme and offset>=6") == [6, 7, 10, 11]
    assert offsets("(rule=null or rule=tenant-acme) and age<1h") == [0, 1, 3, 4, 5, 7, 8, 9, 11]
    lines = dlq("-b", bootstrap, "-t", topic, "--json", "inspect", "-w", "offset=2").json_lines()
    assert lines[0]["error"]["rule"] == "fraud-review"

    bad = dlq("-b", bootstrap, "-t", topic, "inspect", "--where", "(category=held or")
    assert bad.code == 2, bad.output
    assert "--where, column 16: dangling 'or'" in bad.stderr


def test_where_on_failure_times(bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = topic_factory()
    now = int(time.time() * 1000)
    old = failure(failed_at_ms=now - 3 * 3_600_000)
    fill(
        bootstrap,
        topic,
        [
            lazarus_letter("orders", 0, b"a", b"{}", old),
            lazarus_letter("orders", 1, b"b", b"{}", failure(failed_at_ms=now)),
        ],
    )
    recent = dlq("-b", bootstrap, "-t", topic, "--json", "inspect", "-w", "failed_at>2h")
    aged = dlq("-b", bootstrap, "-t", topic, "--json", "inspect", "-w", "age>=2h30m")
    assert [line["offset"] for line in recent.json_lines()] == [1], recent.output
    assert [line["offset"] for line in aged.json_lines()] == [0], aged.output


def test_with_resolves_against_the_configs_python_path(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    payment = json.dumps({**good_payment(1), "currency": "eur"}).encode()
    why = failure(pipeline=pipe.name)
    fill(bootstrap, pipe.dlq, [lazarus_letter(pipe.payments, 0, b"p0", payment, why)])
    module = f"payfix_{uuid.uuid4().hex[:8]}"
    (tmp_path / "fixes").mkdir()
    (tmp_path / "fixes" / f"{module}.py").write_text(
        "def fix(event):\n    event['currency'] = event['currency'].upper()\n"
    )
    text = pipe.config.read_text()
    pipe.config.write_text(
        text.replace(f'python_path = ["{REPO}"]', f'python_path = ["{REPO}", "fixes"]')
    )
    assert Path.cwd() != tmp_path / "fixes"  # not run from inside the folder
    fixed = dlq("--config", str(pipe.config), "fix", "--with", f"{module}:fix", "--json")
    assert fixed.code == 0, fixed.output
    (line,) = fixed.json_lines()
    assert line["valid"] and line["diff"] == ["~ currency: 'eur' -> 'EUR'"]


def test_foreign_pipelines_categories_and_replayed_headers(
    bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic, target = topic_factory(), topic_factory()
    connect = [
        Letter(b"c", b"{}", [("tenant", b"a"), *connect_headers("orders", 0, i)]) for i in range(3)
    ]
    spring = [Letter(b"s", b"{}", [("trace", b"t"), *spring_headers("payments")]) for _ in range(2)]
    fill(bootstrap, topic, connect + spring)
    base = ("-b", bootstrap, "-t", topic)

    by_group = dlq(*base, "--json", "inspect", "--where", "pipeline=billing")
    assert [line["offset"] for line in by_group.json_lines()] == [3, 4], by_group.output
    assert by_group.json_lines()[0]["error"]["pipeline"] == "billing"
    stats = dlq(*base, "--json", "stats").json_lines()[0]
    assert stats["by_category"]["deserialization"] == {"total": 3, "unresolved": 3}
    # a Spring consumer group selects, but it is no Lazarus pipeline: it has no redrive topic
    # (planned from the index as from a scan of the topic)
    homeless = dlq(*base, "replay", "--yes", "--where", "pipeline=billing")
    assert homeless.code == 2, homeless.output
    assert "2 selected dead letters (spring) name no Lazarus pipeline" in homeless.output

    plain = dlq(*base, "replay", "--to", target, "--yes", "--where", "category=deserialization")
    assert plain.code == 0, plain.output
    kept = dlq(
        *base,
        "replay",
        "--to",
        target,
        "--yes",
        "--where",
        "pipeline=billing",
        "--keep-foreign-headers",
    )
    assert kept.code == 0, kept.output
    copies = replays_of(bootstrap, target)
    assert len(copies) == 5
    for coordinates, (copy,) in copies.items():
        names = [name for name, _ in copy.headers]
        foreign = [n for n in names if n.startswith(("__connect.errors.", "kafka_dlt-"))]
        if coordinates.endswith(("/3", "/4")):
            assert names[0] == "trace" and len(foreign) == 10, names
        else:
            assert names[0] == "tenant" and not foreign, names


def payment_letters(pipe: Pipeline, start: int, count: int, *, bad: int = -1) -> list[Letter]:
    """Payments with a lower-case currency (fixed by `--set currency=EUR`); `bad` gets a negative
    amount, which the fix does not mend (not replayable)."""
    letters = []
    for i in range(start, start + count):
        payment = {**good_payment(i), "currency": "eur"}
        if i == bad:
            payment["amount"] = -5.0
        value = json.dumps(payment).encode()
        why = failure(pipeline=pipe.name)
        letters.append(lazarus_letter(pipe.payments, i, f"p{i}".encode(), value, why))
    return letters


def plan_id(text: str) -> str:
    found = re.search(r"plan (r-[0-9a-z-]+) stored", text)
    assert found is not None, text
    return found.group(1)


def test_fix_save_then_replay_plan_replays_exactly_the_preview(
    bootstrap: str, tmp_path: Path
) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    fill(bootstrap, pipe.dlq, payment_letters(pipe, 0, 30, bad=29))
    state = {"LAZARUS_STATE_DIR": str(tmp_path / "state")}
    config = ("--config", str(pipe.config))

    preview = dlq(*config, "fix", "--set", "currency=EUR", "--save", env=state)
    assert preview.code == 3, preview.output  # one of 30 stays invalid
    plan = plan_id(preview.stderr)
    fill(bootstrap, pipe.dlq, payment_letters(pipe, 30, 5))  # after the preview: not in it

    mixed = dlq(*config, "replay", "--plan", plan, "--to-source", "--where", "x=1", env=state)
    assert mixed.code == 2 and "drop selection" in mixed.stderr, mixed.output
    done = dlq(*config, "replay", "--plan", plan, "--to-source", "--yes", env=state)
    assert done.code == 3, done.output
    assert "1 of 30 selected dead letters not replayed" in done.stderr
    copies = replays_of(bootstrap, pipe.payments)
    assert len(copies) == 29
    assert all(json.loads(c.value or b"")["currency"] == "EUR" for (c,) in copies.values())
    ledger = ledger_of(bootstrap, pipe.dlq)
    assert set(ledger) == set(copies)
    assert {tuple(e["fix"]) for e in ledger.values()} == {("set currency='EUR'",)}

    again = dlq(*config, "replay", "--resume", plan, "--yes", env=state)
    assert again.code == 3, again.output  # the same refusal; nothing replayed twice
    assert len(replays_of(bootstrap, pipe.payments)) == 29


def test_a_plan_refuses_dead_letters_that_changed_since(
    bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic, target = topic_factory(), topic_factory()
    fill(bootstrap, topic, [lazarus_letter("orders", i, b"k", b"{}", failure()) for i in range(4)])
    state = {"LAZARUS_STATE_DIR": str(tmp_path / "state")}
    base = ("-b", bootstrap, "-t", topic)
    dry = dlq(*base, "replay", "--to", target, "--dry-run", env=state)
    assert dry.code == 0, dry.output
    plan = plan_id(dry.stderr)
    assert replays_of(bootstrap, target) == {}

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    deadline = time.monotonic() + 60
    while True:
        try:
            create_topics(bootstrap, [topic], 1)
            break
        except Exception:  # the deletion is still under way
            assert time.monotonic() < deadline
            time.sleep(0.5)
    other = failure(Category.PROCESSING, "KeyError", "missing key 'sku'", ())
    fill(bootstrap, topic, [lazarus_letter("orders", i, b"k", b"{}", other) for i in range(3)])

    done = dlq(*base, "replay", "--plan", plan, "--yes", "--json", env=state)
    assert done.code == 3, done.output
    (report,) = done.json_lines()
    reasons = {r["coordinates"]: r["reason"] for r in report["refused"]}
    assert set(reasons) == {f"{topic}/0/{i}" for i in range(4)}
    assert all("changed since plan" in reasons[f"{topic}/0/{i}"] for i in range(3))
    assert "no longer in the DLQ" in reasons[f"{topic}/0/3"]
    assert replays_of(bootstrap, target) == {}


def test_a_deleted_ledger_is_never_silently_recreated(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    fill(bootstrap, pipe.dlq, payment_letters(pipe, 0, 3))
    state = {"LAZARUS_STATE_DIR": str(tmp_path / "state")}
    config = ("--config", str(pipe.config))
    first = dlq(*config, "replay", "--to-source", "--yes", env=state)
    assert first.code == 0, first.output

    ledger = contract.ledger_topic(pipe.dlq)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([ledger], operation_timeout=30)[ledger].result(60)
    for command in (("stats",), ("inspect",), ("group",), ("replay", "--to-source", "--yes")):
        refused = dlq(*config, *command, env=state)
        assert refused.code == 2, (command, refused.output)
        assert f"the ledger topic {ledger} was deleted" in refused.stderr, refused.output
    assert len(replays_of(bootstrap, pipe.payments)) == 3  # nothing replayed a second time

    accepted = dlq(*config, "--json", "stats", "--recreate-ledger", env=state)
    assert accepted.code == 0, accepted.output
    assert accepted.json_lines()[0]["unresolved"] == 3


def test_ctrl_c_exits_130(bootstrap: str, topic_factory: TopicFactory, tmp_path: Path) -> None:
    topic, target = topic_factory(), topic_factory()
    fill(bootstrap, topic, [lazarus_letter("orders", i, b"k", b"{}", failure()) for i in range(50)])
    args = ("-b", bootstrap, "-t", topic, "replay", "--to", target, "--yes", "--rate", "2/s")
    proc = DlqProcess(tmp_path / "dlq.log", *args, env={"LAZARUS_STATE_DIR": str(tmp_path)})
    wait_until(lambda: len(replays_of(bootstrap, target)) >= 1, 60, "a first copy")
    proc.proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, proc.text()
    assert "dlq: interrupted" in proc.text()


def test_oversize_dead_letters_are_shown_and_replayed_from_their_source(
    bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    source, topic, target = topic_factory(), topic_factory(), topic_factory()
    original = bytes(range(256)) * 12  # 3,072 bytes
    fill(bootstrap, source, [Letter(b"k", original, [])])

    def oversize(offset: int, omitted_of: bytes) -> Letter:
        built = lazarus_letter(source, offset, b"k", original, failure())
        return Letter(b"k", None, [*built.headers, contract.omitted_value_header(omitted_of)])

    fill(bootstrap, topic, [oversize(0, original), oversize(5, original), oversize(0, b"x" * 9)])
    base = ("-b", bootstrap, "-t", topic)
    state = {"LAZARUS_STATE_DIR": str(tmp_path)}

    shown = dlq(*base, "show", f"{topic}/0/0", env=state)
    assert shown.code == 0, shown.output
    assert "omitted (oversize: 3,072 bytes" in shown.stdout
    assert f"the original is at {source}/0/0" in " ".join(shown.stdout.split())

    done = dlq(*base, "replay", "--to", target, "--yes", "--json", env=state)
    assert done.code == 3, done.output
    (report,) = done.json_lines()
    reasons = {r["coordinates"]: r["reason"] for r in report["refused"]}
    assert "is gone (retention)" in reasons[f"{topic}/0/1"]
    assert "is not the original" in reasons[f"{topic}/0/2"]
    (copy,) = read_all(bootstrap, target)
    assert copy.value == original and copy.text(contract.REPLAY_OF) == f"{topic}/0/0"


def test_the_small_ones(bootstrap: str, tmp_path: Path, topic_factory: TopicFactory) -> None:
    plain = topic_factory()
    fill(bootstrap, plain, [Letter(b"k", b"just a record", [("tenant", b"a")])])
    shown = dlq("-b", bootstrap, "-t", plain, "show", f"{plain}/0/0")
    assert shown.code == 0, shown.output
    assert "not a dead letter: carries neither dlq.* headers" in " ".join(shown.stdout.split())

    pipe = Pipeline(bootstrap, tmp_path).create()
    long = "1 validation error for Payment, checked after enrichment and currency lookup: currency"
    letters = payment_letters(pipe, 0, 12)
    letters[0] = lazarus_letter(
        pipe.payments, 0, b"p0", letters[0].value, failure(message=long, pipeline=pipe.name)
    )
    fill(bootstrap, pipe.dlq, letters)
    config = ("--config", str(pipe.config))
    one = dlq(*config, "group", "--where", "key=p0")
    assert one.code == 0, one.output
    assert "1 dead letter in 1 group by fingerprint" in one.stderr
    piped = dlq(*config, "inspect", "--where", "key=p0")
    assert piped.code == 0, piped.output
    assert "currency lookup: currency" in " ".join(piped.stdout.split())  # not cut when piped
    summary = dlq(*config, "fix", "--set", "currency=EUR", "--summary")
    assert summary.code == 0, summary.output
    (row,) = [line for line in summary.stdout.splitlines() if "~ currency" in line]
    assert "12" in row and "'eur' -> 'EUR'" in row
