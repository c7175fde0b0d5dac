"""A real Prometheus server for tests: Debian's `prometheus` (installed by scripts/bootstrap),
started on a free loopback port with the project's alert rules and the scrape config a test gives,
and queried through its HTTP API.

Never the service the package's install script may have started: each server here has its own
port, config and TSDB folder, and is stopped by the test that started it. When the binary is
missing, starting fails loudly (nothing skips itself).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.kit import free_port

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy/prometheus/rules"
DASHBOARDS = REPO / "deploy/grafana/dashboards"
T = TypeVar("T")
# What Grafana substitutes before it sends a panel's query; "All" of a variable is `.*`.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$cluster": ".*",
    "$pipeline": ".*",
}


class PromQLError(AssertionError):
    """Prometheus refused a query (it does not parse, or cannot be evaluated)."""


def scrape_job(job: str, *targets: str) -> dict[str, Any]:
    """One `scrape_configs` entry: `job` scraping `targets` ("host:port") every second."""
    return {"job_name": job, "static_configs": [{"targets": list(targets)}]}


class Prometheus:
    """One Prometheus server; use as a context manager (started on enter, stopped on exit).

    Scrapes and evaluates rules every `interval`, so alerts go pending within seconds; firing
    after an alert's `for:` is what the promtool unit tests prove.
    """

    def __init__(
        self,
        workdir: Path,
        scrape_configs: list[dict[str, Any]] | None = None,
        interval: str = "1s",
        rules: Path = RULES,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.log = workdir / "prometheus.log"
        config = {  # JSON is YAML: no YAML library needed
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(rules / "*.yml")],
            "scrape_configs": scrape_configs or [],
        }
        self.config.write_text(json.dumps(config, indent=2))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise AssertionError("prometheus is not on PATH: run scripts/bootstrap")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        self.wait_for(self._ready, timeout, "prometheus to be ready")
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited with {self.proc.returncode}:\n{self.text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a success, PromQLError with Prometheus' own message
        on an error answer."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise PromQLError(
                f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
            ) from exc
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result's samples (`metric` labels and `value`). Raises
        PromQLError when the expression does not parse or cannot be evaluated."""
        data = self.api("query", query=expr)
        result = data["result"]
        return result if isinstance(result, list) else [{"metric": {}, "value": result}]

    def value(self, expr: str) -> float | None:
        """The single sample's value of `expr`, None when the result is empty."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} returned {len(result)} samples: {result}"
        return float(result[0]["value"][1])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts: each with `labels`, `annotations` and `state` (pending or firing)."""
        return list(self.api("alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        """The rule groups as the server loaded them (`/api/v1/rules`)."""
        return list(self.api("rules")["groups"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def wait_for(self, probe: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
        """Call `probe` until it returns something truthy; that value. On timeout, fails with
        the server's log tail."""
        deadline = time.monotonic() + timeout
        while True:
            got = probe()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}\n{self.text()[-2000:]}"
                )
            time.sleep(0.5)

    def wait_for_scrape(self, job: str, timeout: float = 60.0) -> None:
        """Until every target of `job` was scraped successfully at least once."""

        def healthy() -> bool:
            mine = [t for t in self.targets() if t["labels"].get("job") == job]
            return bool(mine) and all(t["health"] == "up" for t in mine)

        self.wait_for(healthy, timeout, f"a successful scrape of job {job}")


def panel_queries(directory: Path = DASHBOARDS) -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every query of every panel, rows included."""
    found = []
    for path in sorted(directory.glob("*.json")):
        stack = list(json.loads(path.read_text())["panels"])
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def variable_queries(directory: Path = DASHBOARDS) -> list[tuple[str, str, str, str]]:
    """(dashboard file, variable, metric, label) of every `label_values(metric, label)` query
    variable: Grafana's own syntax, which no panel test sends to Prometheus."""
    found = []
    for path in sorted(directory.glob("*.json")):
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"])
            if match is None:
                raise AssertionError(f"{path.name}: ${variable['name']}: {variable['definition']}")
            found.append((path.name, variable["name"], match.group(1), match.group(2)))
    return found


def as_promql(expr: str) -> str:
    """A panel's expression as Grafana sends it, its variables substituted."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
KEYWORDS |= {"unless", "offset", "bool", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions or
    aggregations (followed by `(`), keywords, label names (inside `{}` or a `by (...)` clause),
    strings, durations or the exponent of a number."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text, flags=re.I
    )
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":
            continue  # 1e9, 5m
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in KEYWORDS:
            continue
        names.add(match.group())
    return names
