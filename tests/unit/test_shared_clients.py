"""A command's admin clients are shared by configuration (`dlqio._admin`,
`ledger_guard.shared_cluster`): each new one costs a connection and a metadata round trip."""

from __future__ import annotations

from pipeline.kafka import dlqio
from reprocessor.ledger_guard import shared_cluster

CONF = {"bootstrap.servers": "127.0.0.1:1", "client.id": "shared-test"}


def test_one_cluster_serves_one_configuration_whatever_its_order() -> None:
    first = shared_cluster(CONF)
    assert shared_cluster(dict(reversed(list(CONF.items())))) is first
    assert shared_cluster({**CONF, "client.id": "other"}) is not first


def test_a_configuration_that_cannot_be_a_key_gets_a_client_of_its_own() -> None:
    unhashable = {**CONF, "oauthbearer_token_refresh_cb": [1]}
    assert dlqio.conf_key(unhashable) is None
    assert dlqio.conf_key(CONF) == (
        ("bootstrap.servers", "127.0.0.1:1"),
        ("client.id", "shared-test"),
    )
