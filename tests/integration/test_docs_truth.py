"""README.md's "The test broker" by hand, as written (with a `--name` of this test's own, so a
developer's `dev` broker is never touched): `start --port` prints the bootstrap, `status` says it
runs, `restart` keeps the same port and the data, `stop` stops it and `status` then says so."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from scripts.kafka_broker import DEFAULT_STATE
from tests.conftest import create_topics

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def broker_script(name: str, command: str, *options: str) -> tuple[int, str]:
    """`.venv/bin/python scripts/kafka_broker.py COMMAND` for broker `name`: exit code, stdout."""
    argv = [sys.executable, "scripts/kafka_broker.py", "--name", name, command, *options]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    return done.returncode, done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics)


def test_the_readmes_broker_commands_by_hand() -> None:
    for command in ("start", "status", "restart", "stop"):
        assert f".venv/bin/python scripts/kafka_broker.py {command}" in README
    assert "python scripts/kafka_broker.py start --port 9092" in README
    name = f"docs-{uuid.uuid4().hex[:6]}"
    port = free_port()
    try:
        code, out = broker_script(name, "start", "--port", str(port))
        assert code == 0
        bootstrap = out.strip().splitlines()[-1]
        assert bootstrap == f"127.0.0.1:{port}"  # "prints the bootstrap address"
        code, out = broker_script(name, "status")
        assert code == 0 and out.startswith(f"running on {bootstrap} ")
        create_topics(bootstrap, ["kept-through-restart"])

        code, out = broker_script(name, "restart")  # "same ports, same data"
        assert code == 0 and out.strip().splitlines()[-1] == bootstrap
        assert "kept-through-restart" in topics(bootstrap)
    finally:
        code, _ = broker_script(name, "stop")
        assert code == 0
        shutil.rmtree(DEFAULT_STATE / name, ignore_errors=True)
    code, out = broker_script(name, "status")
    assert (code, out.strip()) == (3, "stopped")
