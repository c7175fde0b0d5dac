"""`RegistrySource` against a real schema registry: Apicurio Registry's Confluent-compatible API,
started by `scripts/registry.py` (built from Maven Central, run with `java`, in-memory storage).

The schema is registered with Confluent's own client, the framed record is written with fastavro,
and our codec reads it back through the registry. When the registry cannot start, every test here
errors: nothing skips itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from pipeline.codecs.avro import AvroCodec
from pipeline.errors import SchemaError, SchemaUnavailable
from pipeline.kafka.registry import RegistrySource
from scripts.registry import Registry
from tests.kit import avro_framed, good_order

SUBJECT = "orders-value"
ORDER_V1 = (Path(__file__).resolve().parents[2] / "schemas/avro/orders-value/1.avsc").read_text()


@pytest.fixture(scope="module")
def shared_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    registry = Registry(tmp_path_factory.mktemp("registry"))
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def registry(shared_registry: Registry) -> Registry:
    """The module's registry, running (started again if a test stopped it)."""
    if not shared_registry.running():
        shared_registry.start()
    return shared_registry


@pytest.fixture
def client(registry: Registry) -> Iterator[SchemaRegistryClient]:
    client = SchemaRegistryClient({"url": registry.ccompat_url})
    yield client
    client.close()


@pytest.fixture
def orders_id(client: SchemaRegistryClient) -> int:
    """Register orders-value v1 (idempotent) and return the id the registry gave it."""
    return client.register_schema(SUBJECT, Schema(ORDER_V1, "AVRO"))


def test_registry_starts_in_time(registry: Registry) -> None:
    assert registry.startup_seconds is not None
    assert registry.startup_seconds < 120


def test_decodes_a_record_framed_with_the_registry_id(
    registry: Registry, client: SchemaRegistryClient, orders_id: int
) -> None:
    version = client.get_latest_version(SUBJECT).version
    source = RegistrySource(registry.ccompat_url)
    try:
        decoded = AvroCodec(source=source).decode(avro_framed(good_order(3), schema_id=orders_id))
    finally:
        source.close()
    assert decoded.schema_id == orders_id
    assert decoded.schema_ref == f"registry:{SUBJECT}/{version}/id={orders_id}"
    event = decoded.event
    assert isinstance(event, dict)
    assert event["order_id"] == "o-3"
    assert event["items"] == [{"sku": "sku-3", "qty": 1}]
    assert event["created_at"] == dt.datetime(2025, 10, 9, 8, 53, 20, 3000, tzinfo=dt.UTC)


def test_unknown_id_is_a_schema_error_not_unavailable(registry: Registry, orders_id: int) -> None:
    unknown = orders_id + 1000
    source = RegistrySource(registry.ccompat_url)
    try:
        with pytest.raises(SchemaError) as caught:
            AvroCodec(source=source).decode(avro_framed(good_order(1), schema_id=unknown))
    finally:
        source.close()
    assert not isinstance(caught.value, SchemaUnavailable)
    assert f"schema id {unknown} unknown to the registry" in caught.value.message


def test_stopped_registry_is_unavailable(registry: Registry, orders_id: int) -> None:
    record = avro_framed(good_order(2), schema_id=orders_id)
    warm = RegistrySource(registry.ccompat_url, {"max.retries": 0})
    cold = RegistrySource(registry.ccompat_url, {"max.retries": 0})
    try:
        AvroCodec(source=warm).decode(record)  # fetched and cached while the registry is up
        registry.stop()
        # ids are immutable: a cached one still decodes, an uncached one cannot be fetched
        assert AvroCodec(source=warm).decode(record).schema_id == orders_id
        with pytest.raises(SchemaUnavailable, match=f"schema id {orders_id}"):
            AvroCodec(source=cold).decode(record)
    finally:
        warm.close()
        cold.close()
