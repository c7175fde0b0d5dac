"""Issue 12's operator-facing options and defects on the real broker: global options in either
place, `--where` with or/not/parentheses and `rule=`, foreign dialects' pipelines and categories,
saved plans, the ledger never silently recreated, oversize dead letters, and the small ones."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pipeline.errors import Category
from tests.dlq_kit import (
    Letter,
    connect_headers,
    dlq,
    failure,
    fill,
    lazarus_letter,
    replays_of,
    spring_headers,
)
from tests.kit import REPO, Pipeline, good_payment

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
