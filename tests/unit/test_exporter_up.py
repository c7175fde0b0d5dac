"""`lazarus_exporter_up`, without Kafka: an exporter whose cluster has not answered since it
started reports 0 (under `--cluster`, else `unknown`) instead of no series, which would leave
LazarusExporterDown quiet while every DLQ alert is blind; one pipeline reached on a cluster
does not hide another that was not."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.app.settings import load_settings
from pipeline.errors import RuntimeFailure
from reprocessor.exporter import Exporter, Options, clusters_up

REPO = Path(__file__).resolve().parent.parent.parent


class Unreachable:
    """A cluster whose every request fails, as `Cluster` reports a broker transport failure."""

    def __getattr__(self, name: str) -> object:
        def fail(*_: object, **__: object) -> object:
            raise RuntimeFailure("cannot describe the cluster: Local: Broker transport failure")

        return fail


@pytest.fixture
def make_exporter(tmp_path: Path) -> Iterator[Callable[[str | None], Exporter]]:
    """Exporters of examples/orders.toml whose cluster never answers (HTTP server not started)."""
    made: list[Exporter] = []

    def make(cluster_label: str | None) -> Exporter:
        settings = load_settings(REPO / "examples/orders.toml", bootstrap="127.0.0.1:1")
        options = Options(port=0, cluster_label=cluster_label, state=tmp_path)
        exporter = Exporter([settings], options)
        made.append(exporter)
        for target in exporter.targets:
            # a stand-in that answers nothing, not a Cluster (which would try the network)
            target.cluster = Unreachable()  # type: ignore[assignment]
        return exporter

    yield make
    for exporter in made:
        exporter.server.server.server_close()  # stop() when a test started it


def exporter_up(exporter: Exporter) -> dict[str, float]:
    text = generate_latest(exporter.registry).decode()
    return {
        sample.labels["cluster"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "lazarus_exporter_up"
    }


@pytest.mark.parametrize(("label", "expected"), [(None, "unknown"), ("local", "local")])
def test_a_cluster_never_reached_is_reported_down(
    make_exporter: Callable[[str | None], Exporter], label: str | None, expected: str
) -> None:
    exporter = make_exporter(label)
    assert exporter_up(exporter) == {}  # before the first round: nothing measured yet
    exporter.round()
    assert exporter_up(exporter) == {expected: 0.0}
    reason = exporter.health.get()
    assert reason is not None and "Broker transport failure" in reason


def test_an_unreachable_cluster_keeps_the_exporter_live_but_not_ready(
    make_exporter: Callable[[str | None], Exporter],
) -> None:
    """An orchestrator restarts on /livez, routes on /readyz: an exporter that cannot reach its
    cluster (or is still catching up) must not be restart-looped."""
    exporter = make_exporter("local")
    exporter.server.start()
    base = f"http://127.0.0.1:{exporter.port}"
    assert get(f"{base}/readyz") == (503, "not caught up yet\n")
    exporter.round()
    status, body = get(f"{base}/readyz")
    assert status == 503 and "orders-pipeline: cannot describe the cluster" in body
    assert get(f"{base}/livez") == (200, "ok\n")
    assert get(f"{base}/nothing")[0] == 404
    status, body = get(f"{base}/metrics")
    assert status == 200 and 'lazarus_exporter_up{cluster="local"} 0.0' in body
    exporter.server.stop()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_a_cluster_is_up_only_while_every_pipeline_on_it_is_reached() -> None:
    assert clusters_up([("a", True), ("a", False), ("b", True)]) == {"a": False, "b": True}
    assert clusters_up([("a", False), ("a", True)]) == {"a": False}
    assert clusters_up([]) == {}
