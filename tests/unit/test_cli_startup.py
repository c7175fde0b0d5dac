"""What a `dlq` command pays before it starts: the exporter's HTTP server and Prometheus client
load only for `dlq exporter`."""

from __future__ import annotations

import subprocess
import sys

from reprocessor.exporter import Options
from reprocessor.options import EXPORTER_PORT


def test_dlq_commands_start_without_the_exporter() -> None:
    probe = (
        "import sys, reprocessor.cli; "
        "print(sorted(m for m in ('prometheus_client', 'http.server', 'reprocessor.exporter') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_exporter_port_has_one_value() -> None:
    assert Options().port == EXPORTER_PORT == 9465
