"""`dlq exporter`: DLQ depth, age, expiry and consumer-group lag for Prometheus, long-running.

Every interval the follow loop catches up, for each pipeline config it was given, the DLQ's
on-disk index (`reprocessor.index`: only what is new is read; a restart resumes from the index),
measures the pipeline group's lag on its source and redrive topics (`reprocessor.lag`), and swaps
the snapshots that `/metrics` renders (`reprocessor.exporter_metrics`). Memory does not grow with
the DLQ: which dead letters are unresolved lives on disk.

HTTP (loopback by default): `/metrics`; `/livez` (the process serves); `/readyz` (200 once every
DLQ was caught up and the last round reached the cluster, else 503 with the reason, so an
orchestrator never restart-loops an exporter that is merely catching up); any other path 404.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry

from pipeline.app.health_http import HealthServer
from pipeline.app.settings import Settings
from pipeline.errors import ConfigError, LazarusError
from pipeline.kafka.follow import Cluster
from reprocessor.exporter_metrics import (
    DlqSnapshot,
    ExporterCollector,
    PipelineSnapshot,
    Snapshots,
)
from reprocessor.index import DlqIndex, corrupt, remove_files
from reprocessor.index_query import depth
from reprocessor.lag import LagTracker
from reprocessor.ledger import state_dir
from reprocessor.options import EXPORTER_PORT

log = logging.getLogger("lazarus.dlq.exporter")
UNREACHED = "unknown"
"""The `cluster` label of a cluster never reached yet, when `--cluster` does not name it."""


@dataclass(frozen=True, slots=True)
class Options:
    host: str = "127.0.0.1"
    port: int = EXPORTER_PORT
    interval_s: float = 15.0
    top_n: int = 10
    cluster_label: str | None = None
    stall_window_s: float = 120.0
    state: Path | None = None


@dataclass
class Target:
    """One pipeline config: its cluster, its DLQ's index (opened lazily, in the loop's thread)
    and its group's lag tracker."""

    settings: Settings
    cluster: Cluster
    lag: LagTracker
    index: DlqIndex | None = None
    label: str | None = None
    caught_up: bool = False
    reached: bool | None = None
    """Whether the last round reached the cluster; None before the first round."""

    @property
    def lag_topics(self) -> list[str]:
        return [*self.settings.sources, self.settings.redrive_topic]


@dataclass
class Health:
    ready_reason: str | None = "not caught up yet"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, reason: str | None) -> None:
        with self.lock:
            self.ready_reason = reason

    def get(self) -> str | None:
        with self.lock:
            return self.ready_reason


class Exporter:
    """The follow loop and the HTTP server. `serve()` blocks until `stop()` (or SIGTERM)."""

    def __init__(self, settings: Sequence[Settings], options: Options) -> None:
        self.options = options
        self.snapshots = Snapshots(top_n=options.top_n)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ExporterCollector(self.snapshots))
        self.health = Health()
        self.stopping = threading.Event()
        self.targets = [
            Target(s, Cluster(s.client_properties("consumer")), LagTracker(options.stall_window_s))
            for s in settings
        ]
        try:
            self.server = HealthServer(
                options.host, options.port, self.registry, ready=self.health.get
            )
        except OSError as exc:  # the port taken, an address not of this host, a bad name
            where = f"{options.host}:{options.port}"
            raise ConfigError(f"cannot serve on {where}: {exc.strerror or exc}") from exc

    @property
    def port(self) -> int:
        return self.server.port

    def serve(self) -> None:
        self.server.start()
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                self.round()
                self.stopping.wait(max(0.0, self.options.interval_s - (time.monotonic() - started)))
        finally:
            self.server.stop()
            for target in self.targets:
                if target.index is not None:
                    target.index.close()

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def round(self) -> None:
        """Catch every DLQ up and measure every group; a cluster that fails is reported down
        (and the exporter not ready) until a later round reaches it."""
        problems = []
        for target in self.targets:
            try:
                self._follow(target)
                target.reached = True
            except Exception as exc:  # a long-running exporter reports, then tries again
                target.reached = False
                self._drop_damaged(target, exc)
                problems.append(f"{target.settings.pipeline}: {exc}")
                expected = isinstance(exc, LazarusError)
                log.warning("pipeline %s: %s", target.settings.pipeline, exc, exc_info=not expected)
        self.snapshots.replace_up(
            clusters_up((self._label(t), t.reached) for t in self.targets if t.reached is not None)
        )
        waiting = [t.settings.pipeline for t in self.targets if not t.caught_up]
        if problems:
            self.health.set("; ".join(problems))
        elif waiting:
            self.health.set(f"catching up: {', '.join(waiting)}")
        else:
            self.health.set(None)

    def _follow(self, target: Target) -> None:
        settings, cluster = target.settings, target.cluster
        if target.index is None:
            target.index = DlqIndex.open(cluster, settings.dlq.topic, state_dir(self.options.state))
            target.label = self.options.cluster_label or target.index.cluster_id
        started = time.monotonic()
        done = target.index.catch_up(cluster)
        target.index.seal()  # as this round left it: a `dlq` opening it meanwhile trusts it
        if done.records or done.ledger_records:
            log.info(
                "%s: indexed %d dead letters and %d ledger records in %.1fs",
                settings.dlq.topic,
                done.records,
                done.ledger_records,
                time.monotonic() - started,
            )
        target.caught_up = True
        label = target.label or "unknown"
        meta = cluster.topics([settings.dlq.topic]).get(settings.dlq.topic)
        self.snapshots.put_dlq(
            DlqSnapshot(
                label,
                settings.pipeline,
                settings.dlq.topic,
                depth(target.index),
                None if meta is None else meta.retention_ms,
                None if meta is None else meta.retention_bytes,
            )
        )
        lag = target.lag.measure(cluster, settings.pipeline, target.lag_topics, time.time())
        self.snapshots.put_pipeline(
            PipelineSnapshot(label, settings.pipeline, lag, settings.slo_objective)
        )

    def _drop_damaged(self, target: Target, exc: Exception) -> None:
        """An index SQLite found damaged past its open is removed: the next round rebuilds it
        from the topic (a cache), instead of failing every round."""
        if target.index is not None and isinstance(exc, sqlite3.DatabaseError) and corrupt(exc):
            target.index.close()
            remove_files(target.index.path, f"it is damaged ({exc})")
            target.index, target.caught_up = None, False

    def _label(self, target: Target) -> str:
        return target.label or self.options.cluster_label or UNREACHED


def clusters_up(reached: Iterable[tuple[str, bool]]) -> dict[str, bool]:
    """`lazarus_exporter_up` per cluster label: up only while every pipeline on it was reached
    in the last round. A cluster never reached has the label `--cluster` gives it, else
    `unknown`, so an exporter started while its cluster is down reports 0 instead of nothing
    (LazarusExporterDown would never fire: the scrape itself succeeds)."""
    up: dict[str, bool] = {}
    for label, ok in reached:
        up[label] = up.get(label, True) and ok
    return up


def run(settings: Sequence[Settings], options: Options) -> None:
    """Serve until SIGTERM or SIGINT."""
    exporter = Exporter(settings, options)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        exporter.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exporter.serve()
