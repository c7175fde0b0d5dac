"""Commands README.md shows that no other test runs, run as written: "The test broker" by hand
(with a `--name` of this test's own, so a developer's `dev` broker is never touched): `start
--port` prints the bootstrap, `status` says it runs, `restart` keeps the same port and the data,
`stop` stops it and `status` then says so; and one `dlq exporter` given two pipeline configs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from pipeline.errors import Category
from scripts.kafka_broker import DEFAULT_STATE
from tests.conftest import create_topics
from tests.dlq_kit import failure, fill, lazarus_letter
from tests.integration.test_exporter import ExporterProcess, http_get, value
from tests.kit import Pipeline, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def broker_script(name: str, command: str, *options: str) -> tuple[int, str]:
    """`.venv/bin/python scripts/kafka_broker.py COMMAND` for broker `name`: exit code, stdout."""
    argv = [sys.executable, "scripts/kafka_broker.py", "--name", name, command, *options]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    return done.returncode, done.stdout


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


def test_one_exporter_serves_every_pipeline_config_it_is_given(
    bootstrap: str, tmp_path: Path
) -> None:
    """`dlq exporter --config orders.toml --config payments.toml`: one process, each config's
    DLQ depth under its own `pipeline` label (here on a free port, not 9465, which may be taken)."""
    assert "dlq exporter --config orders.toml --config payments.toml" in README
    first = Pipeline(bootstrap, tmp_path).create()
    second = Pipeline(bootstrap, tmp_path).create()
    validation = failure(pipeline=first.name)
    schema = failure(Category.SCHEMA, "pipeline.errors.SchemaError", "schema id 42 is unknown",
                     (), pipeline=second.name)  # fmt: skip
    fill(
        bootstrap,
        first.dlq,
        [lazarus_letter(first.orders, i, b"k", b"v", validation) for i in range(3)],
    )
    fill(
        bootstrap,
        second.dlq,
        [lazarus_letter(second.orders, i, b"k", b"v", schema) for i in range(2)],
    )
    exporter = ExporterProcess(
        tmp_path / "exporter.log", tmp_path / "state",
        "--config", str(first.config), "--config", str(second.config), "--interval", "0.5",
    )  # fmt: skip
    try:
        wait_until(lambda: http_get(exporter.url("/readyz"))[0] == 200, 60, "the exporter ready")
        got = exporter.samples()
    finally:
        exporter.stop()
    for made, category, count in ((first, "validation", 3), (second, "schema", 2)):
        labels = {"pipeline": made.name, "topic": made.dlq}
        assert value(got, "lazarus_dlq_unresolved", category=category, **labels) == count
        assert value(got, "lazarus_dlq_records_total", **labels) == count
