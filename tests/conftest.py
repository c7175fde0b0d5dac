"""Shared fixtures: one real Kafka broker for the whole run, unique topics per test.

The broker comes from `scripts/kafka_broker.py` (official jars from Maven Central, started with
`java`). Set LAZARUS_TEST_BOOTSTRAP to use a broker you already run (e.g. one started with
`python scripts/kafka_broker.py start`). When the broker cannot start, every integration test
errors: nothing skips itself.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from scripts.kafka_broker import Broker

_startup: dict[str, float] = {}

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A test run started as a background job of a script (`bash .ci/run &`, nohup) inherits
    # SIGINT ignored, and so would every process a test starts: an ignored signal stays ignored
    # across exec, and Python then installs no KeyboardInterrupt handler. The tests that press
    # Ctrl-C on a `dlq` or `lazarus` process would see it carry on. A handled signal is reset to
    # its default on exec, so the children start as from a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, seconds in _startup.items():
        terminalreporter.write_line(f"kafka broker start-up ({name}): {seconds:.1f}s")


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the session's shared broker. Never stop or restart it in a test."""
    external = os.environ.get("LAZARUS_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    broker = Broker(tmp_path_factory.mktemp("kafka-shared"))
    _startup["shared"] = broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Broker]]:
    """A broker of the test's own, for tests that stop, kill or restart it."""
    started: list[Broker] = []

    def make(**extra: str) -> Broker:
        broker = Broker(tmp_path_factory.mktemp("kafka-own"), extra=dict(extra))
        _startup[f"own #{len(_startup)}"] = broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.kill()


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker of the module's own with the SASL profile: clients log in with SCRAM-SHA-512 on
    `sasl_bootstrap` (users from `add_user`), ACLs are enforced there; `bootstrap` (PLAINTEXT)
    is the super-user listener for set-up and for reading topics back."""
    broker = Broker(tmp_path_factory.mktemp("kafka-sasl"), sasl=True)
    _startup["sasl"] = broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def create_topics(
    bootstrap: str, names: list[str], partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(n, num_partitions=partitions, replication_factor=1, config=config or {})
            for n in names
        ],
        operation_timeout=30,
    )
    for future in futures.values():
        future.result(timeout=60)


class TopicFactory(Protocol):
    """The `topic_factory` fixture: creates a uniquely named topic, returns its name."""

    def __call__(
        self, partitions: int = 1, config: dict[str, str] | None = None, suffix: str = ""
    ) -> str: ...


@pytest.fixture
def topic_factory(bootstrap: str, request: pytest.FixtureRequest) -> TopicFactory:
    """Create a uniquely named topic (so tests never see each other's data) and return its name."""
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:60].strip("-")

    def make(partitions: int = 1, config: dict[str, str] | None = None, suffix: str = "") -> str:
        name = f"t-{stem}-{suffix}{uuid.uuid4().hex[:8]}"
        create_topics(bootstrap, [name], partitions, config)
        return name

    return make


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
