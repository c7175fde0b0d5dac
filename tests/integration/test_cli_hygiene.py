"""`dlq` hygiene on the real broker: a DLQ topic that does not exist is one line, exit 2, and no
file left in the state folder, whatever the reading command; an index damaged in the middle of
its file (its header intact) is rebuilt, saying so in one line, whether its check at open or a
query finds it; a damaged line of a stored plan is refused before the first dead letter is
replayed. And `lazarus demo` leaves no folder behind, however it ends."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from reprocessor import plans
from tests.conftest import create_topics
from tests.dlq_kit import (
    Result,
    assert_exactly_once,
    dlq,
    failure,
    fill,
    lazarus_letter,
    replays_of,
)
from tests.integration.test_demo import run_demo
from tests.kit import REPO

RUN_ID = re.compile(r"r-\d{8}-\d{6}-[0-9a-f]{6}")


def files_under(folder: Path) -> list[Path]:
    """Every file and folder under `folder` (the state folder itself is not made either)."""
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_a_topic_that_does_not_exist_is_one_line_exit_2_and_no_file(
    bootstrap: str, tmp_path: Path
) -> None:
    """The index's commands left `index/<cluster>/<topic>.v2.sqlite3` behind; `fix --save`,
    `replay` and `discard` a runs folder."""
    missing = f"t-cli-hygiene-nosuchtopic-{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    env = {"LAZARUS_STATE_DIR": str(state)}
    base = ("-q", "-b", bootstrap, "-t", missing)
    said = f"dlq: error: topic {missing} does not exist on {bootstrap}\n"
    wrong = []
    for command in (
        ("stats",),
        ("stats", "--scan"),
        ("group",),
        ("group", "--scan"),
        ("inspect",),
        ("inspect", "--scan"),
        ("inspect", "--where", "category=validation"),
        ("fix", "--set", "id=1"),
        ("fix", "--set", "id=1", "--save"),
        ("replay", "--dry-run", "--to", "elsewhere"),
        ("discard", "--dry-run", "--reason", "x"),
    ):
        result = dlq(*base, *command, env=env)
        left = files_under(state)
        if (result.code, result.stderr, result.stdout, left) != (2, said, "", []):
            wrong.append(f"{command}: {result.output}\n--- left: {left}")
        if state.exists():
            shutil.rmtree(state)
    assert not wrong, "\n\n".join(wrong)
    shown = dlq("-q", "-b", bootstrap, "show", f"{missing}/0/0", env=env)
    assert shown.code == 2, shown.output
    assert shown.stderr == said, shown.output
    assert files_under(state) == []


def dlq_process(*args: str, state: Path) -> Result:
    """`dlq ARGS` as a real process: what it says on stderr is what an operator sees (no test
    runner's log capture)."""
    done = subprocess.run(
        [sys.executable, "-m", "reprocessor.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "LAZARUS_STATE_DIR": str(state)},
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def own_dlq(bootstrap: str, name: str, count: int = 30) -> str:
    topic = f"t-cli-hygiene-{name}-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [topic])
    letters = (
        lazarus_letter("orders", i, f"k{i}".encode(), b'{"id": %d}' % i, failure())
        for i in range(count)
    )
    fill(bootstrap, topic, letters)
    return topic


def timeless(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in line.items() if k != "oldest_unresolved_age_ms"} for line in lines]


def damage_mid_file(path: Path, *, keep_stamp: bool) -> None:
    """Zero every page but the first (the header and schema): SQLite opens the file as if
    nothing were wrong. `keep_stamp`: size and modification time as they were (a disk's own
    damage), so only a query finds it."""
    before = path.stat()
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(bytes(before.st_size - 4096))
    if keep_stamp:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_index_damaged_mid_file_is_rebuilt_and_says_so(bootstrap: str, tmp_path: Path) -> None:
    """Both were found only by a query: `stats` failed with 'database disk image is
    malformed' (exit 1) or answered from what was left."""
    dlq_topic = own_dlq(bootstrap, "midfile")
    base = ("-q", "-b", bootstrap, "-t", dlq_topic)
    first = dlq_process(*base, "stats", "--json", state=tmp_path)
    assert first.code == 0, first.output
    (path,) = tmp_path.glob(f"index/*/{dlq_topic}.*.sqlite3")
    for keep_stamp in (False, True):
        for command, lines in (("stats", None), ("group", 1), ("inspect", 30)):
            assert not (path.parent / f"{path.name}-wal").exists()
            damage_mid_file(path, keep_stamp=keep_stamp)
            again = dlq_process(*base, command, "--json", state=tmp_path)
            assert again.code == 0, (keep_stamp, command, again.output)
            said = [line for line in again.stderr.splitlines() if line.strip()]
            assert len(said) == 1 and f"the DLQ index {path} is rebuilt" in said[0], again.stderr
            if lines is None:
                assert timeless(again.json_lines()) == timeless(first.json_lines())
            else:
                assert len(again.json_lines()) == lines
            with closing(sqlite3.connect(path)) as db:  # closed: it leaves no WAL behind
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert db.execute("SELECT count(*) FROM dl").fetchone() == (30,)


def test_a_damaged_plan_line_is_refused_before_anything_is_replayed(
    bootstrap: str, tmp_path: Path
) -> None:
    """A replay read its plan as it went, a block of lines (`plans.BLOCK`) at a time: a damaged
    line past the first block was found after the dead letters before it had been replayed
    (exit 2 half-way, with copies in the target)."""
    count = plans.BLOCK + 50
    dlq_topic = own_dlq(bootstrap, "plan", count)
    target = f"{dlq_topic}-out"
    create_topics(bootstrap, [target])
    env = {"LAZARUS_STATE_DIR": str(tmp_path)}
    base = ("-q", "-b", bootstrap, "-t", dlq_topic)
    saved = dlq(*base, "fix", "--set", "id=1", "--summary", "--save", env=env)
    assert saved.code == 0, saved.output
    (run,) = set(RUN_ID.findall(saved.stderr))
    (folder,) = tmp_path.glob(f"runs/*/{run}")
    plan_file = folder / "p0.jsonl"
    kept = plan_file.read_text()
    lines = kept.splitlines(keepends=True)
    assert len(lines) == count
    for number, damage in (
        (count, lines[-1][: len(lines[-1]) // 2] + "\n"),  # cut short
        (count - 1, lines[-2].replace('"o":', '"o":-', 1)),  # a negative offset
        (count - 2, lines[-3].replace('"h":"', '"h":"zz', 1)),  # no sha256
    ):
        edited = [*lines]
        edited[number - 1] = damage
        plan_file.write_text("".join(edited))
        refused = dlq(*base, "replay", "-y", "--plan", run, "--to", target, env=env)
        assert replays_of(bootstrap, target) == {}, refused.output  # nothing replayed
        assert refused.code == 2, refused.output
        said = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(said) == 1, refused.stderr
        where = f"dlq: error: the plan file {plan_file} is damaged at line {number} "
        assert said[0].startswith(where), said[0]
    plan_file.write_text(kept)
    done = dlq(*base, "replay", "-y", "--plan", run, "--to", target, env=env)
    assert done.code == 0, done.output
    assert_exactly_once(bootstrap, dlq_topic, target, {f"{dlq_topic}/0/{o}" for o in range(count)})


def demo_env(tmp_path: Path) -> dict[str, str]:
    """The demo's environment: a temporary directory and a home of the test's own, so that
    what it leaves behind is seen (and nothing of another run's)."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    return {
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "120",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(tmp_path / "tmp"),
        "HOME": str(tmp_path / "home"),
    }


def demo_leftovers(tmp_path: Path) -> list[Path]:
    """The demo's folders in the temporary directory, and any `dlq` state in the home."""
    return sorted((tmp_path / "tmp").glob("lazarus-demo-*")) + files_under(tmp_path / "home")


def test_the_demo_leaves_no_folder_behind_when_it_succeeds_or_fails(tmp_path: Path) -> None:
    """Each run left /tmp/lazarus-demo-<random>/ (its config and hold rules), and the plans
    of its replay under ~/.local/state/lazarus/runs/<the mock cluster's id>/."""
    env = demo_env(tmp_path)
    done = run_demo(env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/lazarus-demo-" in done.stdout  # its steps named the config in its folder
    assert demo_leftovers(tmp_path) == []
    nowhere = "127.0.0.1:9"  # nothing listens there: the demo fails (exit 1)
    failed = run_demo("--bootstrap", nowhere, env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "/lazarus-demo-" not in failed.stderr
    assert demo_leftovers(tmp_path) == []


def demo_topics(bootstrap: str) -> set[str]:
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics
    return {name for name in topics if name.startswith("demo-")}


@pytest.mark.parametrize(
    ("signum", "code", "real"),
    [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, False), (signal.SIGTERM, 143, True)],
)
def test_the_demo_stopped_by_a_signal_leaves_no_folder_behind(
    tmp_path: Path, signum: int, code: int, real: bool, request: pytest.FixtureRequest
) -> None:
    """On a real broker, its topics went only at a successful end: stopped, it left them."""
    env = demo_env(tmp_path)
    bootstrap = request.getfixturevalue("bootstrap") if real else None
    before = demo_topics(bootstrap) if bootstrap else set()
    where = ("--bootstrap", bootstrap) if bootstrap else ()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazarus.cli", "demo", *where],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None
    seen = ""
    try:
        while "Produced" not in seen:  # its worker runs: the folder is in use
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        assert list((tmp_path / "tmp").glob("lazarus-demo-*"))
        proc.send_signal(signum)
        exited = proc.wait(60)
    finally:
        proc.kill()
        proc.communicate()
    assert exited == code, seen
    if bootstrap:
        assert demo_topics(bootstrap) == before
    assert demo_leftovers(tmp_path) == []
