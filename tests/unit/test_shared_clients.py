"""A command's admin client is shared by configuration (`dlqio.shared_admin`, which
`follow.Cluster` uses too): each new one costs a connection
and a metadata round trip."""

from __future__ import annotations

from pipeline.kafka import dlqio
from pipeline.kafka.follow import Cluster

CONF: dict[str, str] = {"bootstrap.servers": "127.0.0.1:1", "client.id": "shared-test"}


def test_one_admin_client_serves_one_configuration_whatever_its_order() -> None:
    first = dlqio.shared_admin(CONF)
    assert dlqio.shared_admin(dict(reversed(list(CONF.items())))) is first
    assert dlqio.shared_admin({**CONF, "client.id": "other"}) is not first
    assert Cluster(CONF)._admin is first  # the cluster's questions share it
    assert Cluster(dict(reversed(list(CONF.items()))))._admin is first


def test_a_configuration_that_cannot_be_a_key_gets_a_client_of_its_own() -> None:
    unhashable = {**CONF, "oauthbearer_token_refresh_cb": [1]}
    # a value KafkaConf does not admit (confluent-kafka takes callbacks there): what it guards
    assert dlqio.conf_key(unhashable) is None  # type: ignore[arg-type]
    assert dlqio.conf_key(CONF) == (
        ("bootstrap.servers", "127.0.0.1:1"),
        ("client.id", "shared-test"),
    )
