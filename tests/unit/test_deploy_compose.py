"""docker-compose.yml without an engine: compose-go (the loader Docker Compose itself uses, built
from deploy/compose-check) loads it and reports schema and semantic errors; the loaded project
then has to hold up: mounted host paths exist, every `lazarus`/`dlq` command is a real entry point
with real options, health-gated dependencies point at services with a healthcheck, and Kafka has a
listener for containers and one for the host."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from pipeline.app.settings import load_settings
from reprocessor.ledger import STATE_ENV

REPO = Path(__file__).resolve().parent.parent.parent
CHECKER = REPO / "deploy/compose-check"
COMPOSE = REPO / "docker-compose.yml"
BIN = Path(sys.executable).parent  # the venv's console scripts
APP_IMAGE = "lazarus:local"


def build_checker() -> Path:
    """The compose-check binary, cached under .cache/ by the hash of its sources."""
    sources = [*sorted(CHECKER.glob("*.go")), CHECKER / "go.mod", CHECKER / "go.sum"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    binary = REPO / ".cache/compose-check" / f"compose-check-{digest}"
    if binary.exists():
        return binary
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")  # the image's Go
    if go is None:
        raise AssertionError("go is not on PATH: the compose check needs the Go toolchain")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    result = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=CHECKER,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"go build of deploy/compose-check failed:\n{result.stderr}"
    return binary


def load(path: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(checker()), "-f", str(path), "-d", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


_checker: list[Path] = []


def checker() -> Path:
    if not _checker:
        _checker.append(build_checker())
    return _checker[0]


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    result = load(COMPOSE, REPO)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def services(project: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(project["services"])


def app_services(project: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services(project).items() if s.get("image") == APP_IMAGE}


def test_compose_go_loads_the_file_with_every_service(project: dict[str, Any]) -> None:
    expected = {"kafka", "topics", "worker", "exporter", "prometheus", "grafana", "lazarus"}
    assert set(services(project)) == expected


def test_compose_go_reports_schema_and_semantic_errors(tmp_path: Path) -> None:
    bad_type = tmp_path / "type.yml"
    bad_type.write_text("services:\n  a:\n    image: x\n    restart: 5\n")
    result = load(bad_type, tmp_path)
    assert result.returncode == 1 and "restart must be a string" in result.stderr, result.stderr
    bad_key = tmp_path / "key.yml"
    bad_key.write_text("services:\n  a:\n    image: x\n    portz: [1]\n")
    result = load(bad_key, tmp_path)
    assert result.returncode == 1 and "portz" in result.stderr, result.stderr
    unknown = tmp_path / "unknown.yml"
    unknown.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n      b:\n"
        "        condition: service_healthy\n"
    )
    result = load(unknown, tmp_path)
    assert result.returncode == 1 and '"b"' in result.stderr, result.stderr


def test_every_bind_mount_exists(project: dict[str, Any]) -> None:
    for name, service in services(project).items():
        for volume in service.get("volumes") or []:
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"


def test_paths_in_commands_exist_through_their_mounts(project: dict[str, Any]) -> None:
    """`--config.file=/etc/prometheus/prometheus.yml` must be a file the mount provides."""
    checked = 0
    for name, service in services(project).items():
        mounts = {
            PurePosixPath(v["target"]): Path(v["source"])
            for v in service.get("volumes") or []
            if v["type"] == "bind"
        }
        for arg in service.get("command") or []:
            path = PurePosixPath(arg.split("=", 1)[-1])
            for target, source in mounts.items():
                if path.is_relative_to(target):
                    assert (source / path.relative_to(target)).exists(), f"{name}: {arg}"
                    checked += 1
    assert checked >= 1


def test_app_services_use_the_built_image(project: dict[str, Any]) -> None:
    apps = app_services(project)
    assert set(apps) == {"topics", "worker", "exporter", "lazarus"}
    for name, service in apps.items():
        assert Path(service["build"]["context"]) == REPO, name
        assert not service.get("entrypoint"), f"{name}: no pip install at start any more"
    dockerfile = (REPO / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"Dockerfile copies a missing {source}"


def subcommand(command: list[str]) -> list[str]:
    """`lazarus worker --config x` -> ["lazarus", "worker"]: the words before the first option."""
    words = []
    for word in command:
        if word.startswith("-"):
            break
        words.append(word)
    return words


@pytest.mark.parametrize("name", ["topics", "worker", "exporter", "lazarus"])
def test_every_command_is_a_real_entry_point(project: dict[str, Any], name: str) -> None:
    command = services(project)[name]["command"]
    words = subcommand(command)
    assert words[0] in {"lazarus", "dlq"}, command
    result = subprocess.run(
        [str(BIN / words[0]), *words[1:], "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(words)} --help:\n{result.stdout}{result.stderr}"
    for option in (w.split("=")[0] for w in command if w.startswith("--") and w != "--help"):
        assert option in result.stdout, f"{name}: {' '.join(words)} has no {option}"
    for word in command:
        if word.endswith(".toml"):
            assert (REPO / word).exists(), f"{name}: {word}"


def test_health_gated_dependencies_have_healthchecks(project: dict[str, Any]) -> None:
    all_services = services(project)
    gated = 0
    for name, service in all_services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy":
                assert all_services[dependency].get("healthcheck"), f"{name} -> {dependency}"
                gated += 1
    assert gated >= 4
    for name in ("kafka", "worker", "exporter", "prometheus", "grafana"):
        assert all_services[name].get("healthcheck"), name
        assert all_services[name].get("restart") == "unless-stopped", name


def test_kafka_listens_for_containers_and_for_the_host(project: dict[str, Any]) -> None:
    kafka = services(project)["kafka"]
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "PLAINTEXT_HOST://127.0.0.1:9092" in advertised  # the README's default bootstrap
    assert "PLAINTEXT://kafka:29092" in advertised
    assert any(p["published"] == "9092" and p["target"] == 9092 for p in kafka["ports"])
    for name, service in app_services(project).items():
        assert service["environment"]["LAZARUS_BOOTSTRAP"] == "kafka:29092", name


def test_metrics_are_reachable_where_prometheus_scrapes(project: dict[str, Any]) -> None:
    all_services = services(project)
    assert all_services["worker"]["environment"]["LAZARUS_METRICS_HOST"] == "0.0.0.0"
    assert all_services["worker"]["environment"]["LAZARUS_METRICS_PORT"] == "9464"
    scrape = (REPO / "deploy/prometheus/prometheus.yml").read_text()
    for target in re.findall(r'"([a-z-]+:\d+)"', scrape):
        host, port = target.split(":")
        if host == "localhost":
            continue
        ports = {p["target"] for p in all_services[host].get("ports") or []}
        assert int(port) in ports, f"{target} is not a port of service {host}"


@pytest.mark.parametrize("name", ["topics", "worker", "exporter", "lazarus"])
def test_every_lazarus_variable_reaches_the_settings(
    project: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic-settings ignores a LAZARUS_* variable that names no field, so a misspelt one
    (or a renamed field) would leave, say, the worker's metrics on loopback, out of
    Prometheus' reach, with every test above still green."""
    service = services(project)[name]
    environment: dict[str, str] = service.get("environment") or {}
    config = next((w for w in service["command"] if w.endswith(".toml")), "examples/orders.toml")
    for variable in [v for v in os.environ if v.startswith("LAZARUS_")]:
        monkeypatch.delenv(variable)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    settings = load_settings(REPO / config)
    checked = 0
    for variable, value in environment.items():
        if not variable.startswith("LAZARUS_") or variable == STATE_ENV:
            continue
        got: object = settings
        for part in variable.removeprefix("LAZARUS_").lower().split("__"):
            assert hasattr(got, part), f"{name}: {variable} names no setting"
            got = getattr(got, part)
        assert str(got) == value, f"{name}: {variable}={value} loaded as {got!r}"
        checked += 1
    assert checked >= 1, f"{name}: no LAZARUS_* setting in its environment"


def test_the_exporter_keeps_its_index_on_a_volume(project: dict[str, Any]) -> None:
    """The image's state folder (LAZARUS_STATE_DIR) is a named volume of the exporter, so a
    recreated container catches up from its index, not from the start of every DLQ."""
    dockerfile = (REPO / "Dockerfile").read_text()
    match = re.search(rf"^ENV {STATE_ENV}=(\S+)$", dockerfile, re.M)
    assert match, f"the Dockerfile sets no {STATE_ENV}"
    volumes = services(project)["exporter"].get("volumes") or []
    assert any(v["type"] == "volume" and v["target"] == match.group(1) for v in volumes), (
        f"no volume at {match.group(1)}"
    )
