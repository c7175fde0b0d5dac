"""reprocessor/deadletters.py: one view over dead letters of every dialect, and kcat JSON.

The golden fixtures in tests/fixtures/foreign/ hold real header encodings (hex) of Spring Kafka's
DeadLetterPublishingRecoverer, Kafka Connect's DeadLetterQueueReporter, Kafka Streams' KIP-1034
handler, arroyo's KafkaDlqProducer and Lazarus's own build_dead_letter; each says in `about`
which code path it follows.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline.core import contract, dialects
from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.errors import Category
from reprocessor.deadletters import (
    MISSING,
    NO_DIALECT,
    DeadLetter,
    ReplayState,
    bytes_from_json,
    from_record,
    lookup,
    placeholder_fingerprint,
    text_of,
    to_kcat_json,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "foreign"
FIXTURE_NAMES = sorted(path.name for path in FIXTURES.glob("*.json"))
NORMALISED = (
    "dialect",
    "source_topic",
    "source_partition",
    "source_offset",
    "source_timestamp_ms",
    "origin",
    "category",
    "error_type",
    "message",
    "attempts",
    "failed_at_ms",
    "pipeline",
    "replay_count",
)
KCAT_FIELDS = [
    "topic",
    "partition",
    "offset",
    "tstype",
    "ts",
    "broker",
    "headers",
    "key",
    "payload",
]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def fixture_record(name: str) -> DeadLetter:
    data = load(name)
    return from_record(
        data["topic"],
        data["partition"],
        data["offset"],
        data["timestamp"],
        _unhex(data["key_hex"]),
        _unhex(data["value_hex"]),
        [(header, _unhex(value)) for header, value in data["headers"]],
    )


def _unhex(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


def lazarus_headers(changes: dict[str, bytes | None] | None = None) -> contract.Headers:
    record = SourceRecord("orders", 2, 10, 1_000, b"k", b"v", (("h", b"1"),))
    failure = Failure(
        category=Category.PROCESSING,
        error_type="builtins.KeyError",
        message="missing key 'sku'",
        failed_at_ms=2_000,
        pipeline="orders-app",
    )
    headers = build_dead_letter(record, failure)
    return [(name, (changes or {}).get(name, value)) for name, value in headers]


def test_there_is_a_fixture_per_dialect() -> None:
    dialect_names = {load(name)["expect"]["dialect"] for name in FIXTURE_NAMES}
    assert dialect_names == {"lazarus", *dialects.DIALECTS}
    assert {"spring-key.json", "malformed-spring.json"} <= set(FIXTURE_NAMES)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_normalised_fields(name: str) -> None:
    dl = fixture_record(name)
    expect = load(name)["expect"]
    assert {field: getattr(dl, field) for field in NORMALISED} == {f: expect[f] for f in NORMALISED}
    assert (
        dl.coordinates == f"{load(name)['topic']}/{load(name)['partition']}/{load(name)['offset']}"
    )
    assert (dl.meta is not None) == (dl.dialect == "lazarus")
    assert (dl.foreign is not None) == (dl.dialect != "lazarus")


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_problems_and_extra(name: str) -> None:
    dl = fixture_record(name)
    expect = load(name)["expect"]
    assert list(dl.problems) == expect["problems"]
    if "extra" in expect:
        assert dl.foreign is not None
        assert {k: v for k, v in dl.foreign.extra if k in expect["extra"]} == expect["extra"]


def test_lazarus_fixture_keeps_the_worker_fingerprint() -> None:
    dl = fixture_record("lazarus.json")
    assert dl.fingerprint == load("lazarus.json")["expect"]["fingerprint"]
    assert dl.meta is not None and dl.meta.worker == "host-1:4242"


@pytest.mark.parametrize("name", [n for n in FIXTURE_NAMES if n != "lazarus.json"])
def test_foreign_fingerprint_is_the_contract_formula_over_a_placeholder(name: str) -> None:
    dl = fixture_record(name)
    parts = [
        f"foreign:{dl.dialect}",
        dl.error_type or "",
        contract.normalise_message(dl.message or ""),
    ]
    expected = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
    assert dl.fingerprint == expected


def test_placeholder_fingerprint_matches_the_contract_for_a_real_category() -> None:
    for category in Category:
        if category is Category.VALIDATION:
            continue  # validation adds field locations
        mine = placeholder_fingerprint(category.value, "a.B", "failed at 12 for 'x'")
        assert mine == contract.fingerprint(category, "a.B", "failed at 12 for 'x'")


def test_foreign_failures_of_one_cause_share_a_fingerprint() -> None:
    def streams(offset: int) -> DeadLetter:
        headers = [
            (dialects.STREAMS_EXCEPTION, b"x.SerializationException"),
            (dialects.STREAMS_MESSAGE, f"bad byte at position {offset}".encode()),
            (dialects.STREAMS_TOPIC, b"t"),
            (dialects.STREAMS_PARTITION, b"0"),
            (dialects.STREAMS_OFFSET, str(offset).encode()),
        ]
        return from_record("dlq", 0, offset, 0, None, None, headers)

    assert streams(1).fingerprint == streams(99).fingerprint


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_kcat_json_round_trips_every_byte(name: str) -> None:
    dl = fixture_record(name)
    out = json.loads(json.dumps(to_kcat_json(dl, state=ReplayState.UNRESOLVED)))
    assert [field for field in out if field in KCAT_FIELDS] == KCAT_FIELDS  # kcat's order
    assert _decode(out, "key") == dl.key
    assert _decode(out, "payload") == dl.value
    names, values = out["headers"][0::2], out["headers"][1::2]
    assert list(zip(names, map(bytes_from_json, values), strict=True)) == list(dl.headers)
    assert out["error"]["dialect"] == dl.dialect
    assert out["error"]["fingerprint"] == dl.fingerprint


def _decode(out: dict[str, Any], field: str) -> bytes | None:
    value = out[field]
    if value is None:
        assert f"{field}_encoding" not in out
        return None
    if out.get(f"{field}_encoding") == "base64":
        return base64.b64decode(value)
    assert f"{field}_encoding" not in out
    return str(value).encode()


def test_kcat_json_flags_base64_only_where_needed() -> None:
    key = to_kcat_json(fixture_record("spring-key.json"), state=ReplayState.UNRESOLVED)
    assert key["key_encoding"] == "base64" and "payload_encoding" not in key
    connect = to_kcat_json(fixture_record("connect.json"), state=ReplayState.UNRESOLVED)
    assert connect["payload_encoding"] == "base64" and connect["key"] == "o-5"
    lazarus = json.loads(
        json.dumps(to_kcat_json(fixture_record("lazarus.json"), state=ReplayState.REPLAYED))
    )
    headers = lazarus["headers"]
    assert headers[headers.index("binary") + 1] == {
        "base64": base64.b64encode(b"\xff\x00\xfe").decode()
    }
    assert lazarus["error"]["state"] == "replayed"


def test_kcat_json_error_object() -> None:
    dl = from_record("orders.dlq", 0, 7, 5, None, None, lazarus_headers())
    error = to_kcat_json(dl, state=ReplayState.DISCARDED, tstype="logappend")
    assert error["tstype"] == "logappend" and error["ts"] == 5 and error["key"] is None
    assert error["error"] == {
        "category": "processing",
        "type": "builtins.KeyError",
        "message": "missing key 'sku'",
        "fingerprint": dl.fingerprint,
        "attempts": 1,
        "failed_at": 2_000,
        "pipeline": "orders-app",
        "origin": "orders/2/10",
        "replay_count": 0,
        "state": "discarded",
        "dialect": "lazarus",
        "rule": None,
        "correlation": None,
        "problems": [],
        "source": {"topic": "orders", "partition": 2, "offset": 10, "timestamp": 1_000},
    }
    assert "decoded" not in error


def test_kcat_json_decoded_is_json_safe() -> None:
    class Order(BaseModel):
        id: str
        at: dt.datetime

    decoded = {
        "when": dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.UTC),
        "amount": decimal.Decimal("12.50"),
        "raw": b"\xff",
        "id": uuid.UUID(int=1),
        "tags": ("a", "b"),
        "nan": float("nan"),
        "model": Order(id="o", at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC)),
    }
    dl = from_record("t", 0, 0, 0, None, None, lazarus_headers())
    out = to_kcat_json(dl, state=ReplayState.UNRESOLVED, decoded=decoded)
    assert json.loads(json.dumps(out, allow_nan=False))["decoded"] == {
        "when": "2025-01-02T03:04:00+00:00",
        "amount": "12.50",
        "raw": {"base64": "/w=="},
        "id": "00000000-0000-0000-0000-000000000001",
        "tags": ["a", "b"],
        "nan": "nan",
        "model": {"id": "o", "at": "2025-01-01T00:00:00Z"},
    }


def test_bytes_from_json_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="not an encoded header value"):
        bytes_from_json(12)


def test_a_record_without_dead_letter_headers_is_unknown() -> None:
    dl = from_record("t", 0, 1, 99, b"k", b"v", [("traceparent", b"x")])
    assert dl.dialect == "unknown" and dl.problems == (NO_DIALECT,)
    assert dl.meta is None and dl.foreign is None and dl.origin is None
    assert dl.seen_ms == 99 and len(dl.fingerprint) == 16
    assert from_record("t", 0, 1, 99, None, None, None).dialect == "unknown"


def test_malformed_lazarus_fingerprint_is_recomputed() -> None:
    dl = from_record("t", 0, 0, 0, None, None, lazarus_headers({contract.ERROR_FINGERPRINT: b"zz"}))
    expected = contract.fingerprint(Category.PROCESSING, "builtins.KeyError", "missing key 'sku'")
    assert dl.fingerprint == expected
    assert any(contract.ERROR_FINGERPRINT in problem for problem in dl.problems)


def test_lazarus_with_unknown_category_still_gets_a_fingerprint() -> None:
    dl = from_record("t", 0, 0, 0, None, None, lazarus_headers({contract.ERROR_CATEGORY: b"x"}))
    assert dl.category is None and len(dl.fingerprint) == 16
    assert any(contract.ERROR_CATEGORY in problem for problem in dl.problems)


def test_the_latest_hop_decides_the_dialect() -> None:
    spring = [(dialects.SPRING_EXCEPTION, b"a.B"), (dialects.SPRING_TOPIC, b"orders")]
    lazarus_last = from_record("t", 0, 0, 0, None, None, [*spring, *lazarus_headers()])
    assert lazarus_last.dialect == "lazarus" and lazarus_last.problems == ()
    spring_last = from_record("t", 0, 0, 0, None, None, [*lazarus_headers(), *spring])
    assert spring_last.dialect == "spring" and spring_last.meta is None
    assert "also carries dlq.* headers; read as spring" in spring_last.problems


def test_replay_count_and_redrive_lineage() -> None:
    replayed = contract.build_replay(lazarus_headers(), dead_letter="orders.dlq/0/1", run_id="r1")
    record = SourceRecord("orders-app.redrive", 0, 5, 3_000, None, None, tuple(replayed))
    failure = Failure(Category.PROCESSING, "E", "again", 4_000, "orders-app")
    dl = from_record("orders.dlq", 0, 2, 4_000, None, None, build_dead_letter(record, failure))
    assert dl.replay_count == 1 and dl.origin == "orders/2/10"
    assert dl.source_topic == "orders-app.redrive"


_NAMES = st.sampled_from(
    [
        *contract.REQUIRED_HEADERS,
        *contract.OPTIONAL_HEADERS,
        dialects.SPRING_PARTITION,
        dialects.SPRING_OFFSET,
        dialects.SPRING_TOPIC,
        dialects.SPRING_KEY_EXCEPTION,
        dialects.CONNECT_PARTITION,
        dialects.STREAMS_OFFSET,
        dialects.ARROYO_OFFSET,
        dialects.ARROYO_PARTITION,
    ]
) | st.text(max_size=12)


@given(
    st.lists(st.tuples(_NAMES, st.none() | st.binary(max_size=24)), max_size=12),
    st.none() | st.binary(max_size=8),
)
def test_from_record_never_raises_and_json_always_round_trips(
    headers: list[tuple[str, bytes | None]], key: bytes | None
) -> None:
    dl = from_record("t", 0, 0, 0, key, None, headers)
    assert len(dl.fingerprint) == 16
    out = json.loads(json.dumps(to_kcat_json(dl, state=ReplayState.UNRESOLVED)))
    assert [bytes_from_json(v) for v in out["headers"][1::2]] == [v for _, v in headers]
    assert _decode(out, "key") == key


def test_lookup_and_text_of() -> None:
    class Item(BaseModel, extra="allow"):
        sku: str

    event = {"items": [Item.model_validate({"sku": "a", "colour": "red"})], "n": None}
    assert lookup(event, ["items", "0", "sku"]) == "a"
    assert lookup(event, ["items", "0", "colour"]) == "red"
    assert lookup(event, ["items", "1", "sku"]) is MISSING
    assert lookup(event, ["items", "x"]) is MISSING
    assert lookup(event, ["n"]) is None and lookup(event, ["n", "x"]) is MISSING
    assert lookup(None, ["a"]) is MISSING
    assert [text_of(v) for v in (None, True, 1.5, b"\xff", {"a": [1]})] == [
        "null",
        "true",
        "1.5",
        "\ufffd",
        '{"a":[1]}',
    ]
