"""RegistrySource against a small in-process HTTP server that answers the endpoints
confluent-kafka's SchemaRegistryClient calls (`GET /schemas/ids/{id}`,
`GET /schemas/ids/{id}/versions`, `GET /subjects/{subject}/versions/{version}`)."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from pipeline.codecs.avro import AvroCodec
from pipeline.errors import ConfigError, SchemaError, SchemaUnavailable
from pipeline.kafka.registry import RegistrySource

REPO = Path(__file__).resolve().parents[2]
ORDER_V1 = (REPO / "schemas/avro/orders-value/1.avsc").read_text()
PASSWORD = "s3cret-pw"
CUSTOMER = json.dumps(
    {
        "type": "record",
        "name": "Customer",
        "namespace": "com.example",
        "fields": [{"name": "id", "type": "string"}],
    }
)
INVOICE = json.dumps(
    {
        "type": "record",
        "name": "Invoice",
        "namespace": "com.example",
        "fields": [
            {"name": "buyer", "type": "com.example.Customer"},
            {"name": "seller", "type": "com.example.Customer"},
        ],
    }
)


@dataclass
class Request:
    path: str
    query: str
    authorization: str | None


@dataclass
class FakeRegistry:
    """What the server answers; `status` forces an HTTP status for a path."""

    schemas: dict[int, dict[str, object]] = field(default_factory=dict)
    versions: dict[int, list[dict[str, object]]] = field(default_factory=dict)
    subject_versions: dict[tuple[str, int], dict[str, object]] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def answer(self, path: str) -> tuple[int, object]:
        if path in self.status:
            return self.status[path], {"error_code": self.status[path] * 100, "message": "forced"}
        if match := re.fullmatch(r"/schemas/ids/(\d+)", path):
            found: object = self.schemas.get(int(match[1]))
            return (
                (200, found)
                if found
                else (404, {"error_code": 40403, "message": "Schema not found"})
            )
        if match := re.fullmatch(r"/schemas/ids/(\d+)/versions", path):
            found = self.versions.get(int(match[1]))
            return (
                (200, found)
                if found
                else (404, {"error_code": 40403, "message": "Schema not found"})
            )
        if match := re.fullmatch(r"/subjects/([^/]+)/versions/(\d+)", path):
            found = self.subject_versions.get((unquote(match[1]), int(match[2])))
            return (
                (200, found)
                if found
                else (404, {"error_code": 40401, "message": "Subject not found"})
            )
        return 404, {"error_code": 404, "message": "no route"}


class Handler(BaseHTTPRequestHandler):
    server: RegistryServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        registry = self.server.registry
        registry.requests.append(Request(url.path, url.query, self.headers.get("Authorization")))
        status, body = registry.answer(url.path)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


class RegistryServer(ThreadingHTTPServer):
    registry: FakeRegistry


@pytest.fixture
def registry() -> Iterator[tuple[FakeRegistry, str]]:
    server = RegistryServer(("127.0.0.1", 0), Handler)
    server.registry = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.registry, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def source_for(url: str, **conf: str) -> RegistrySource:
    return RegistrySource(url, {"max.retries": "0", **conf})


def test_fetches_parses_and_caches_by_id(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    fake.schemas[7] = {"schema": ORDER_V1}
    fake.versions[7] = [{"subject": "orders-value", "version": 3}]
    source = source_for(url)
    parsed = source.by_id(7)
    assert (parsed.schema_id, parsed.subject, parsed.version) == (7, "orders-value", 3)
    assert parsed.ref == "registry:orders-value/3/id=7"
    assert source.by_id(7) is parsed
    assert [(r.path, r.query) for r in fake.requests] == [
        ("/schemas/ids/7", ""),
        ("/schemas/ids/7/versions", "offset=0&limit=-1"),
    ]


def test_decodes_confluent_framed_records_through_the_codec(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, url = registry
    fake.schemas[7] = {"schema": ORDER_V1, "schemaType": "AVRO"}
    fake.versions[7] = [{"subject": "orders-value", "version": 3}]
    codec = AvroCodec(source=source_for(url))
    event = {
        "order_id": "o-1",
        "customer": {"id": "c-1", "email": "a@b.co"},
        "items": [{"sku": "s", "qty": 1}],
        "amount": 1.0,
        "currency": "EUR",
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
    }
    decoded = codec.decode(codec.encode(event, schema_id=7))
    assert decoded.event == event
    assert decoded.schema_ref == "registry:orders-value/3/id=7"


def test_unknown_id_is_a_schema_error_and_not_unavailable(
    registry: tuple[FakeRegistry, str],
) -> None:
    _, url = registry
    with pytest.raises(SchemaError) as caught:
        source_for(url).by_id(99)
    assert type(caught.value) is SchemaError
    assert caught.value.message == "schema id 99 unknown to the registry"


def test_server_errors_are_unavailable_and_not_cached(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    fake.schemas[7] = {"schema": ORDER_V1}
    fake.status["/schemas/ids/7"] = 503
    source = source_for(url)
    with pytest.raises(
        SchemaUnavailable, match=r"registry answered HTTP 503 \(error code 50300\) for schema id 7"
    ):
        source.by_id(7)
    del fake.status["/schemas/ids/7"]
    assert source.by_id(7).ref == "registry:id=7"


def test_failing_versions_lookup_is_not_cached_as_a_bare_ref(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, url = registry
    fake.schemas[7] = {"schema": ORDER_V1}
    fake.versions[7] = [{"subject": "orders-value", "version": 3}]
    fake.status["/schemas/ids/7/versions"] = 500
    source = source_for(url)
    with pytest.raises(SchemaUnavailable):
        source.by_id(7)
    del fake.status["/schemas/ids/7/versions"]
    assert source.by_id(7).ref == "registry:orders-value/3/id=7"


def test_unreachable_registry_leaks_no_credentials() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = source_for(f"http://127.0.0.1:{port}", **{"basic.auth.user.info": f"svc:{PASSWORD}"})
    with pytest.raises(SchemaUnavailable) as caught:
        source.by_id(1)
    assert caught.value.message == "registry request failed for schema id 1 (ConnectError)"


def test_sends_basic_auth_and_keeps_it_out_of_errors(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    fake.status["/schemas/ids/5"] = 401
    with pytest.raises(SchemaUnavailable) as caught:
        source_for(url, **{"basic.auth.user.info": f"svc:{PASSWORD}"}).by_id(5)
    expected = "Basic " + base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    assert fake.requests[0].authorization == expected
    assert "HTTP 401" in caught.value.message
    assert PASSWORD not in caught.value.message


def test_non_avro_schema_is_a_schema_error(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    fake.schemas[8] = {"schema": '{"type": "object"}', "schemaType": "JSON"}
    with pytest.raises(SchemaError, match="schema id 8 is a JSON schema, not Avro"):
        source_for(url).by_id(8)


def test_invalid_avro_text_is_a_schema_error(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    fake.schemas[9] = {
        "schema": '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nope"}]}'
    }
    with pytest.raises(
        SchemaError, match=r"schema id 9 from the registry: not a valid Avro schema \(UnknownType"
    ):
        source_for(url).by_id(9)


def test_references_are_resolved_once_each(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    reference = {"name": "com.example.Customer", "subject": "customer-value", "version": 1}
    fake.schemas[10] = {"schema": INVOICE, "references": [reference, reference]}
    fake.subject_versions[("customer-value", 1)] = {
        "subject": "customer-value",
        "version": 1,
        "id": 4,
        "schema": CUSTOMER,
    }
    codec = AvroCodec(source=source_for(url))
    event = {"buyer": {"id": "b"}, "seller": {"id": "s"}}
    assert codec.decode(codec.encode(event, schema_id=10)).event == event
    assert [r.path for r in fake.requests].count("/subjects/customer-value/versions/1") == 1


def test_missing_reference_is_a_schema_error(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    reference = {"name": "com.example.Customer", "subject": "customer-value", "version": 2}
    fake.schemas[11] = {"schema": INVOICE, "references": [reference]}
    with pytest.raises(
        SchemaError, match=r"schema reference 'com.example.Customer' \(customer-value/2\) unknown"
    ):
        source_for(url).by_id(11)


def test_bad_settings_are_config_errors_without_secrets() -> None:
    with pytest.raises(ConfigError, match=r"'max\.retries' must be a number"):
        RegistrySource("http://127.0.0.1:1", {"max.retries": "many"})
    with pytest.raises(ConfigError) as caught:
        RegistrySource(
            f"http://svc:{PASSWORD}@127.0.0.1:1", {"basic.auth.user.info": f"svc:{PASSWORD}"}
        )
    assert "userinfo credentials in the URL" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        RegistrySource(f"ftp://svc:{PASSWORD}@registry")
    assert str(caught.value).startswith("schema registry settings rejected: Invalid url")
    assert PASSWORD not in str(caught.value)
