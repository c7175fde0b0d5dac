"""What a `dlq` command pays before it starts: the exporter's HTTP server and Prometheus client
load only for `dlq exporter`, the settings (pydantic-settings) only for a command given a
config, pydantic (the hold rules' models) only for a command that reads a hold rule or a
payload, the plans and the replay's modules only for the commands writing plans."""

from __future__ import annotations

import subprocess
import sys

from pipeline.app.settings import ReprocessorSpec
from reprocessor.exporter import Options
from reprocessor.options import EXPORTER_PORT, NO_CONFIG, Defaults, Env


def test_dlq_commands_start_without_the_exporter() -> None:
    probe = (
        "import sys, reprocessor.cli; "
        "print(sorted(m for m in ('prometheus_client', 'http.server', 'reprocessor.exporter') "
        "if m in sys.modules))"
    )
    assert _loaded(probe) == "[]"


def _loaded(probe: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_dlq_commands_start_without_the_settings() -> None:
    probe = (
        "import sys, reprocessor.cli; "
        "print(sorted(m for m in ('pydantic_settings', 'pipeline.app.settings') "
        "if m in sys.modules))"
    )
    assert _loaded(probe) == "[]"


def test_dlq_commands_start_without_pydantic_nor_the_replay() -> None:
    probe = (
        "import sys, reprocessor.cli; "
        "print(sorted(m for m in ('pydantic', 'pipeline.core.holds', 'reprocessor.replay_run', "
        "'reprocessor.fix_preview', 'reprocessor.plans', 'tempfile') if m in sys.modules))"
    )
    assert _loaded(probe) == "[]"


def test_the_command_line_is_built_without_kafka_rich_nor_sqlite() -> None:
    """What `dlq --help` loads: each command imports what it runs when it runs."""
    probe = (
        "import sys, reprocessor.cli; "
        "print(sorted(m for m in ('confluent_kafka', 'rich', 'sqlite3', 'reprocessor.stats', "
        "'reprocessor.render', 'reprocessor.index') if m in sys.modules))"
    )
    assert _loaded(probe) == "[]"


def test_without_a_config_the_settings_defaults_apply() -> None:
    spec = ReprocessorSpec()
    assert Defaults(spec.index, spec.max_replays) == NO_CONFIG
    env = Env(None, "127.0.0.1:9", ("orders.dlq",), {}, False, None)
    assert env.settings is None
    assert (env.use_index, env.max_replays) == (spec.index, spec.max_replays)


def test_the_no_config_defaults_load_no_settings() -> None:
    probe = (
        "import sys; from reprocessor.options import NO_CONFIG; "
        "print([m for m in ('pydantic_settings', 'pipeline.app.settings') if m in sys.modules])"
    )
    assert _loaded(probe) == "[]"


def test_the_exporter_port_has_one_value() -> None:
    assert Options().port == EXPORTER_PORT == 9465
