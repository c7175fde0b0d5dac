"""Handler.handle: one record's route, decided without Kafka. Decode -> hold -> process -> outputs,
a dead letter, or "retry after a delay"; tombstones; redrive records decoded with their origin's
schema; and the dead letter itself, checked against the contract module's reader."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.codecs.avro import AvroCodec, ParsedSchema, split_frame
from pipeline.codecs.base import Decoded
from pipeline.codecs.catalog import LocalCatalog
from pipeline.codecs.json import JsonCodec
from pipeline.core import contract
from pipeline.core.classify import WITHHELD
from pipeline.core.contract import DeadLetterMeta, Header, SourceRecord
from pipeline.core.handler import Context, Handler, Output, RetryAfter, Routed
from pipeline.core.holds import HoldRules, parse_rules
from pipeline.core.policy import RetryPolicy
from pipeline.errors import Category, Retryable, SchemaUnavailable
from schemas.orders import Payment
from tests.kit import avro_framed, good_order, good_payment

REPO = Path(__file__).resolve().parents[2]
CATALOG = LocalCatalog(REPO / "schemas" / "avro")

ORDERS = "shop.orders"
PAYMENTS = "shop.payments"
OUTPUT = "orders.valid"
DLQ = "orders.dlq"
REDRIVE = "orders.redrive"
PIPELINE = "orders"
WORKER = "host-1:4242"

NOW = 1_760_000_100.25  # wall-clock seconds
NOW_MS = 1_760_000_100_250
TIMESTAMP_MS = 1_760_000_000_000
SECRET = "4111-1111-1111-1111"
RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=4.0, budget_s=30.0)
HEADERS: tuple[Header, ...] = (("trace", b"t-1"), ("empty", None), ("trace", b"t-2"))


def redact_cards(text: str) -> str:
    return text.replace(SECRET, "<card>")


def withheld(type_name: str) -> str:
    """What the default policy (`error_messages = "redact"`) records of a user exception."""
    return f"{type_name} raised by the processor ({WITHHELD})"


def make(**changes: Any) -> Handler:
    values: dict[str, Any] = {
        "pipeline": PIPELINE,
        "output_topic": OUTPUT,
        "dlq_topic": DLQ,
        "redrive_topic": REDRIVE,
        "codecs": {ORDERS: AvroCodec(source=CATALOG), PAYMENTS: JsonCodec(Payment)},
        "output_codec": None,
        "processor": None,
        "retry": RETRY,
        "retryable": (TimeoutError,),
        "redact": None,  # the default policy: user exception text withheld
        "worker_id": WORKER,
        "rng": random.Random(7),
    }
    values.update(changes)
    return Handler(**values)


def record(
    value: bytes | None = None,
    *,
    topic: str = ORDERS,
    key: bytes | None = b"order-1",
    headers: tuple[Header, ...] = HEADERS,
    partition: int = 2,
    offset: int = 41,
) -> SourceRecord:
    if value is None and topic == ORDERS:
        value = avro_framed(good_order(1))
    return SourceRecord(topic, partition, offset, TIMESTAMP_MS, key, value, headers)


def tombstone(**kw: Any) -> SourceRecord:
    return SourceRecord(ORDERS, 2, 41, TIMESTAMP_MS, b"order-1", None, kw.get("headers", HEADERS))


def payment_bytes(**changes: object) -> bytes:
    return json.dumps({**good_payment(1), **changes}).encode()


def routed(outcome: object) -> Routed:
    assert isinstance(outcome, Routed), outcome
    return outcome


def dead_letter(outcome: object) -> tuple[Output, DeadLetterMeta]:
    """The single DLQ output of `outcome`, and its dlq.* headers parsed by the contract reader."""
    result = routed(outcome)
    assert result.outcome == "dead_lettered"
    assert len(result.outputs) == 1
    out = result.outputs[0]
    assert out.topic == DLQ
    meta = contract.parse_dead_letter(out.headers)
    assert meta is not None
    assert meta.problems == ()
    assert result.fingerprint == meta.fingerprint
    return out, meta


def header_names(out: Output) -> list[str]:
    return [name for name, _ in out.headers]


def never_called(event: object, ctx: Context) -> object:
    raise AssertionError("the processing function must not run")


def raising(exc: BaseException) -> Callable[[object, Context], object]:
    def process(event: object, ctx: Context) -> object:
        raise exc

    return process


def hold_rules(body: str, *, expires: str = "2999-01-01T00:00:00Z", name: str = "h1") -> HoldRules:
    text = f'[[hold]]\nname = "{name}"\nreason = "INC-7"\nexpires = {expires}\n{body}\n'
    return parse_rules(text.encode(), Path("holds.toml"))


class FlakySource:
    """A schema source that answers `ok_calls` look-ups, then fails like an unreachable registry."""

    def __init__(self, ok_calls: int) -> None:
        self.ok_calls = ok_calls
        self.calls = 0

    def by_id(self, schema_id: int) -> ParsedSchema:
        self.calls += 1
        if self.calls > self.ok_calls:
            raise ConnectionError("registry unreachable")
        return CATALOG.by_id(schema_id)


class RecordingCodec:
    """An output codec that records what it was asked to encode."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, int | None]] = []

    def decode(self, data: bytes) -> Decoded:
        raise NotImplementedError

    def encode(self, event: object, *, schema_id: int | None = None) -> bytes:
        self.calls.append((event, schema_id))
        return f"encoded-{len(self.calls)}".encode()


# --- forwarding and processing -----------------------------------------------------------------


def test_without_a_processor_valid_records_are_forwarded_byte_for_byte() -> None:
    rec = record()
    result = routed(make().handle(rec, 1, NOW, NOW))
    assert result == Routed((Output(OUTPUT, rec.key, rec.value, HEADERS),), "forwarded")


def test_the_processor_gets_the_decoded_event_and_the_records_context() -> None:
    seen: list[tuple[object, Context]] = []

    def process(event: object, ctx: Context) -> object:
        seen.append((event, ctx))
        return event

    make(processor=process).handle(record(), 2, NOW - 1, NOW)
    [(event, ctx)] = seen
    assert isinstance(event, dict) and event["order_id"] == "o-1"
    assert ctx == Context(ORDERS, 2, 41, b"order-1", HEADERS, TIMESTAMP_MS, 2, ORDERS)


def test_a_json_event_is_the_model_instance() -> None:
    seen: list[object] = []
    make(processor=lambda e, c: seen.append(e)).handle(
        record(payment_bytes(), topic=PAYMENTS), 1, NOW, NOW
    )
    assert seen == [Payment.model_validate(good_payment(1))]


@pytest.mark.parametrize("result", [None, []])
def test_a_processor_returning_nothing_drops_the_record(result: object) -> None:
    out = routed(make(processor=lambda e, c: result).handle(record(), 1, NOW, NOW))
    assert out == Routed((), "dropped")


def test_a_returned_event_is_encoded_with_the_records_own_writer_schema() -> None:
    def process(event: Any, ctx: Context) -> object:
        return {**event, "amount": 99.5}

    rec = record(avro_framed(good_order(3), schema_id=1))
    result = routed(make(processor=process).handle(rec, 1, NOW, NOW))
    assert result.outcome == "processed"
    [out] = result.outputs
    assert (out.topic, out.key, out.headers) == (OUTPUT, rec.key, HEADERS)
    assert out.value is not None
    assert split_frame(out.value)[0] == 1
    decoded = AvroCodec(source=CATALOG).decode(out.value).event
    assert isinstance(decoded, dict)  # no model: the record as a dict
    assert decoded["amount"] == 99.5
    assert decoded["order_id"] == "o-3"


def test_a_returned_list_becomes_one_output_per_event_in_order() -> None:
    def split(event: Any, ctx: Context) -> object:
        return [{**event, "order_id": f"{event['order_id']}-{i}"} for i in range(3)]

    result = routed(make(processor=split).handle(record(), 1, NOW, NOW))
    assert result.outcome == "processed"
    ids = [AvroCodec(source=CATALOG).decode(o.value or b"").event for o in result.outputs]
    assert [e["order_id"] for e in ids if isinstance(e, dict)] == ["o-1-0", "o-1-1", "o-1-2"]
    assert {o.key for o in result.outputs} == {b"order-1"}


def test_a_configured_output_codec_encodes_without_the_input_schema_id() -> None:
    codec = RecordingCodec()
    result = routed(
        make(processor=lambda e, c: ["a", "b"], output_codec=codec).handle(record(), 1, NOW, NOW)
    )
    assert codec.calls == [("a", None), ("b", None)]
    assert [o.value for o in result.outputs] == [b"encoded-1", b"encoded-2"]


def test_a_json_event_returned_is_encoded_as_json() -> None:
    def refund(event: Any, ctx: Context) -> object:
        return event.model_copy(update={"status": "refunded"})

    result = routed(make(processor=refund).handle(record(payment_bytes(), topic=PAYMENTS), 1, 0, 0))
    [out] = result.outputs
    assert json.loads(out.value or b"")["status"] == "refunded"


def test_an_output_that_does_not_fit_the_schema_is_dead_lettered_as_validation() -> None:
    rec = record()
    out, meta = dead_letter(make(processor=lambda e, c: {"nope": 1}).handle(rec, 1, NOW, NOW))
    assert meta.category is Category.VALIDATION
    assert out.value == rec.value


# --- the dead letter ---------------------------------------------------------------------------


def test_a_dead_letter_keeps_the_record_and_carries_every_required_header() -> None:
    rec = record(
        b"\x07not avro",
        headers=(*HEADERS, ("dlq.error.category", b"forged"), ("after", b"\xff\x00")),
    )
    out, meta = dead_letter(make().handle(rec, 1, NOW - 5, NOW))
    assert (out.key, out.value) == (rec.key, rec.value)
    originals = [*HEADERS, ("after", b"\xff\x00")]
    assert list(out.headers[: len(originals)]) == originals
    assert all(contract.is_dlq_header(n) for n in header_names(out)[len(originals) :])
    dlq_names = [n for n in header_names(out) if contract.is_dlq_header(n)]
    assert len(dlq_names) == len(set(dlq_names))  # each dlq header exactly once
    assert meta.version == 1
    assert (meta.source_topic, meta.source_partition, meta.source_offset) == (ORDERS, 2, 41)
    assert meta.source_timestamp_ms == TIMESTAMP_MS
    assert meta.origin == f"{ORDERS}/2/41"
    assert meta.origin_timestamp_ms == TIMESTAMP_MS
    assert meta.category is Category.DESERIALIZATION
    assert meta.failed_at_ms == NOW_MS
    assert meta.pipeline == PIPELINE
    assert meta.worker == WORKER
    assert meta.attempts == 1
    assert meta.replay_count == 0
    assert meta.schema is None  # nothing was decoded
    fingerprint = contract.fingerprint(meta.category, meta.error_type or "", meta.message or "")
    assert meta.fingerprint == fingerprint


def test_the_routed_failure_matches_the_headers() -> None:
    result = routed(make(processor=raising(ValueError("no"))).handle(record(), 2, NOW, NOW))
    assert result.failure is not None
    assert result.failure.category is Category.PROCESSING
    assert result.failure.attempts == 2
    assert result.failure.failed_at_ms == NOW_MS
    assert result.failure.pipeline == PIPELINE
    assert result.failure.worker == WORKER
    assert result.failure.schema is not None and result.failure.schema.startswith("file:")


def test_a_null_key_stays_null() -> None:
    out, _ = dead_letter(make().handle(record(b"\x07x", key=None), 1, NOW, NOW))
    assert out.key is None


# --- decode failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "topic", "category", "error_type", "message"),
    [
        (
            b"\x07abcdef",
            ORDERS,
            Category.DESERIALIZATION,
            "pipeline.errors.DeserializationError",
            "bad magic byte 0x07: not the Confluent wire format (expected 0x00)",
        ),
        (
            avro_framed(good_order(1), schema_id=99),
            ORDERS,
            Category.SCHEMA,
            "pipeline.errors.SchemaError",
            "schema id 99 is not in the local catalog",
        ),
        (
            b"{not json",
            PAYMENTS,
            Category.DESERIALIZATION,
            "pydantic_core.ValidationError",  # the wrapped library error names the cause
            None,
        ),
        (
            payment_bytes(currency="eur"),
            PAYMENTS,
            Category.VALIDATION,
            "pydantic_core.ValidationError",
            "1 validation error for Payment: currency (string_pattern_mismatch)",
        ),
    ],
)
def test_undecodable_records_are_dead_lettered_without_processing(
    value: bytes, topic: str, category: Category, error_type: str, message: str | None
) -> None:
    out, meta = dead_letter(
        make(processor=never_called).handle(record(value, topic=topic), 1, 0, 0)
    )
    assert meta.category is category
    assert meta.error_type == error_type
    if message is not None:
        assert meta.message == message
    assert meta.attempts == 1
    assert meta.stacktrace is None  # the decoder's frames say nothing useful
    assert contract.ERROR_STACKTRACE not in header_names(out)


def test_validation_details_name_the_field_not_the_value() -> None:
    out, meta = dead_letter(
        make().handle(record(payment_bytes(currency=SECRET), topic=PAYMENTS), 1, 0, 0)
    )
    assert meta.details == (
        {
            "loc": "currency",
            "msg": "String should match pattern '^[A-Z]{3}$'",
            "type": "string_pattern_mismatch",
        },
    )
    assert all(SECRET.encode() not in (v or b"") for n, v in out.headers if n.startswith("dlq."))


def test_a_topic_without_a_codec_is_a_schema_failure() -> None:
    _, meta = dead_letter(make().handle(record(b"x", topic="shop.unknown"), 1, 0, 0))
    assert meta.category is Category.SCHEMA
    assert meta.message == "no schema configured for topic shop.unknown"


# --- processing failures, retries --------------------------------------------------------------


def test_a_non_retryable_error_is_dead_lettered_at_once_with_its_message_withheld() -> None:
    processor = raising(ValueError(f"card {SECRET} rejected"))
    out, meta = dead_letter(make(processor=processor).handle(record(), 1, NOW, NOW))
    assert meta.category is Category.PROCESSING
    assert meta.error_type == "ValueError"
    assert meta.message == withheld("ValueError")
    assert meta.attempts == 1
    assert meta.stacktrace is not None and "raise exc" in meta.stacktrace
    assert meta.stacktrace.endswith(f"ValueError: {withheld('ValueError')}")
    assert meta.schema is not None and "orders-value/1.avsc" in meta.schema
    assert all(b"rejected" not in (v or b"") for _, v in out.headers)


def test_a_pipeline_that_keeps_messages_records_them_through_its_redaction_hook() -> None:
    processor = raising(ValueError(f"card {SECRET} rejected"))
    handler = make(processor=processor, redact=redact_cards)
    out, meta = dead_letter(handler.handle(record(), 1, NOW, NOW))
    assert meta.message == "card <card> rejected"
    assert meta.stacktrace is not None and meta.stacktrace.endswith("card <card> rejected")
    assert all(SECRET.encode() not in (v or b"") for _, v in out.headers)


def test_one_processor_exception_type_is_one_fingerprint_whatever_its_text() -> None:
    first = routed(
        make(processor=raising(ValueError("card 1 for alice"))).handle(record(), 1, NOW, NOW)
    )
    second = routed(
        make(processor=raising(ValueError("bob's order"))).handle(record(), 1, NOW, NOW)
    )
    assert first.fingerprint == second.fingerprint


def test_stacktraces_can_be_switched_off() -> None:
    handler = make(processor=raising(ValueError("no")), stacktraces=False)
    out, meta = dead_letter(handler.handle(record(), 1, NOW, NOW))
    assert meta.stacktrace is None
    assert contract.ERROR_STACKTRACE not in header_names(out)
    result = routed(handler.handle(record(), 1, NOW, NOW))
    assert result.failure is not None and result.failure.stacktrace is None


@pytest.mark.parametrize(
    ("error", "type_name"),
    [
        (TimeoutError(f"slow for {SECRET}"), "TimeoutError"),
        (Retryable("busy"), "pipeline.errors.Retryable"),
    ],
)
def test_a_retryable_error_with_attempts_left_asks_for_a_retry(
    error: Exception, type_name: str
) -> None:
    handler = make(processor=raising(error), rng=random.Random(3))
    outcome = handler.handle(record(), 1, NOW - 1, NOW)
    assert isinstance(outcome, RetryAfter)
    expected = RETRY.next_retry(1, NOW - 1, NOW, random.Random(3))
    assert outcome.delay_s == expected
    assert 0.0 <= outcome.delay_s <= RETRY.backoff_cap(1)
    assert SECRET not in outcome.error
    assert outcome.error == withheld(type_name)  # the text of the breaker and pause log lines


def test_a_retry_of_a_pipeline_that_keeps_messages_has_the_hooks_text() -> None:
    handler = make(processor=raising(TimeoutError(f"slow for {SECRET}")), redact=redact_cards)
    outcome = handler.handle(record(), 1, NOW - 1, NOW)
    assert isinstance(outcome, RetryAfter)
    assert outcome.error == "slow for <card>"


def test_a_retry_without_a_message_names_the_type() -> None:
    handler = make(processor=raising(TimeoutError()), redact=redact_cards)
    outcome = handler.handle(record(), 1, NOW, NOW)
    assert isinstance(outcome, RetryAfter)
    assert outcome.error == "TimeoutError"


def test_a_retry_is_clipped_to_the_budget() -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=10.0, max_backoff_s=10.0, budget_s=2.0)
    handler = make(processor=raising(TimeoutError()), retry=policy)
    outcome = handler.handle(record(), 1, NOW - 1.5, NOW)
    assert isinstance(outcome, RetryAfter)
    assert outcome.delay_s <= 0.5 + 1e-9


def test_retries_exhausted_by_attempts_dead_letter_the_record() -> None:
    handler = make(processor=raising(TimeoutError(f"slow for {SECRET}")))
    out, meta = dead_letter(handler.handle(record(), 3, NOW - 2.5, NOW))
    assert meta.category is Category.RETRIES_EXHAUSTED
    assert meta.error_type == "TimeoutError"
    assert meta.message == f"gave up after 3 attempts in 2.5s: {withheld('TimeoutError')}"
    assert meta.attempts == 3
    assert out.value == record().value


def test_retries_exhausted_by_the_budget_dead_letter_the_record() -> None:
    handler = make(processor=raising(Retryable("busy")))
    _, meta = dead_letter(handler.handle(record(), 2, NOW - 30.0, NOW))
    assert meta.category is Category.RETRIES_EXHAUSTED
    assert meta.attempts == 2
    assert meta.message == (
        f"gave up after 2 attempts in 30.0s: {withheld('pipeline.errors.Retryable')}"
    )
    assert meta.error_type == "pipeline.errors.Retryable"


def test_a_non_retryable_error_on_a_later_attempt_reports_that_attempt() -> None:
    _, meta = dead_letter(make(processor=raising(KeyError("k"))).handle(record(), 2, NOW, NOW))
    assert meta.category is Category.PROCESSING
    assert meta.attempts == 2


# --- schema source outages ---------------------------------------------------------------------


def test_an_unreachable_schema_source_asks_for_a_retry_never_a_dead_letter() -> None:
    handler = make(codecs={ORDERS: AvroCodec(source=FlakySource(0))}, processor=never_called)
    outcome = handler.handle(record(), 1, NOW, NOW)
    assert isinstance(outcome, RetryAfter)
    assert 0.0 <= outcome.delay_s <= RETRY.backoff_cap(1)
    assert "schema source failed looking up schema id 1" in outcome.error


def test_a_schema_outage_past_the_retry_budget_still_asks_for_a_retry() -> None:
    handler = make(codecs={ORDERS: AvroCodec(source=FlakySource(0))})
    for attempt, first_at in ((3, NOW), (1, NOW - 60.0), (50, NOW - 3600.0)):
        outcome = handler.handle(record(), attempt, first_at, NOW)
        assert outcome == RetryAfter(
            RETRY.max_backoff_s, "schema source failed looking up schema id 1 (ConnectionError)"
        )


def test_schema_unavailable_raised_by_a_source_is_retried_too() -> None:
    class Down:
        def by_id(self, schema_id: int) -> ParsedSchema:
            raise SchemaUnavailable("registry answered 503")

    outcome = make(codecs={ORDERS: AvroCodec(source=Down())}).handle(record(), 1, NOW, NOW)
    assert isinstance(outcome, RetryAfter)
    assert outcome.error == "registry answered 503"


def test_an_outage_while_encoding_the_outputs_asks_for_a_retry() -> None:
    handler = make(codecs={ORDERS: AvroCodec(source=FlakySource(1))}, processor=lambda e, c: e)
    outcome = handler.handle(record(), 1, NOW, NOW)
    assert isinstance(outcome, RetryAfter)


# --- tombstones --------------------------------------------------------------------------------


def test_tombstones_are_forwarded_by_default() -> None:
    result = routed(make(processor=never_called).handle(tombstone(), 1, NOW, NOW))
    assert result == Routed((Output(OUTPUT, b"order-1", None, HEADERS),), "forwarded")


def test_tombstones_can_be_dead_lettered_by_policy() -> None:
    handler = make(tombstones="dead-letter", processor=never_called)
    out, meta = dead_letter(handler.handle(tombstone(), 1, NOW, NOW))
    assert (out.key, out.value) == (b"order-1", None)
    assert meta.category is Category.VALIDATION
    assert meta.error_type == "lazarus.Tombstone"
    assert meta.message == "tombstone (null value) not accepted by policy"


def test_a_tombstone_of_a_held_key_is_held_too() -> None:
    handler = make(holds=hold_rules('key = "order-1"'))
    _, meta = dead_letter(handler.handle(tombstone(), 1, NOW, NOW))
    assert meta.category is Category.HELD


# --- redrive -----------------------------------------------------------------------------------


def lineage(origin: str, *, replay_count: int = 1) -> tuple[Header, ...]:
    return (
        *HEADERS,
        (contract.ORIGIN, origin.encode()),
        (contract.ORIGIN_TIMESTAMP, b"1700000000000"),
        (contract.REPLAY_COUNT, str(replay_count).encode()),
        (contract.REPLAY_OF, b"orders.dlq/0/9"),
        (contract.REPLAY_RUN, b"run-1"),
    )


@pytest.mark.parametrize(
    ("origin", "value", "kind"),
    [
        (f"{ORDERS}/0/5", avro_framed(good_order(5)), dict),
        (f"{PAYMENTS}/1/7", payment_bytes(), Payment),
    ],
)
def test_a_redrive_record_is_decoded_with_its_origin_topics_schema(
    origin: str, value: bytes, kind: type
) -> None:
    seen: list[object] = []
    rec = record(value, topic=REDRIVE, headers=lineage(origin))
    result = routed(make(processor=lambda e, c: seen.append(e)).handle(rec, 1, NOW, NOW))
    assert result.outcome == "dropped"
    [event] = seen
    assert isinstance(event, kind)


def test_a_redrive_record_without_a_processor_is_forwarded() -> None:
    rec = record(avro_framed(good_order(5)), topic=REDRIVE, headers=lineage(f"{ORDERS}/0/5"))
    assert routed(make().handle(rec, 1, NOW, NOW)).outcome == "forwarded"


def test_a_redrive_record_failing_again_keeps_its_lineage() -> None:
    rec = record(payment_bytes(currency="eur"), topic=REDRIVE, headers=lineage(f"{PAYMENTS}/1/7"))
    out, meta = dead_letter(make().handle(rec, 1, NOW, NOW))
    assert meta.category is Category.VALIDATION
    assert meta.source_topic == REDRIVE
    assert meta.origin == f"{PAYMENTS}/1/7"
    assert meta.origin_timestamp_ms == 1_700_000_000_000
    assert meta.replay_count == 1
    assert contract.REPLAY_OF not in header_names(out)
    assert contract.REPLAY_RUN not in header_names(out)
    assert list(out.headers[: len(HEADERS)]) == list(HEADERS)


@pytest.mark.parametrize(
    "headers",
    [
        HEADERS,
        (*HEADERS, (contract.ORIGIN, b"not-coordinates")),
        (*HEADERS, (contract.ORIGIN, b"\xff\xfe/0/1")),
    ],
)
def test_a_redrive_record_without_a_valid_origin_is_a_schema_failure(
    headers: tuple[Header, ...],
) -> None:
    rec = record(avro_framed(good_order(1)), topic=REDRIVE, headers=headers)
    _, meta = dead_letter(make(processor=never_called).handle(rec, 1, NOW, NOW))
    assert meta.category is Category.SCHEMA
    assert meta.message == f"record on {REDRIVE} carries no valid dlq.origin header"


def test_a_redrive_record_from_an_unconfigured_origin_is_a_schema_failure() -> None:
    rec = record(b"{}", topic=REDRIVE, headers=lineage("shop.gone/0/1"))
    _, meta = dead_letter(make().handle(rec, 1, NOW, NOW))
    assert meta.category is Category.SCHEMA
    assert meta.message == "no schema configured for topic shop.gone"


# --- holds -------------------------------------------------------------------------------------


def test_a_matching_field_rule_parks_the_record_before_processing() -> None:
    rules = hold_rules('field = "customer.id"\nequals = "c-1"', name="bad-customer")
    handler = make(holds=rules, processor=never_called)
    out, meta = dead_letter(handler.handle(record(), 1, NOW, NOW))
    assert meta.category is Category.HELD
    assert meta.error_type == "lazarus.Held"
    assert meta.message == "held by rule bad-customer: INC-7"
    assert meta.policy_rule == f"hold:bad-customer@{rules.version}"
    assert meta.schema is not None and "orders-value/1.avsc" in meta.schema
    assert out.value == record().value


def test_a_rule_that_does_not_match_lets_the_record_through() -> None:
    rules = hold_rules('field = "customer.id"\nequals = "c-2"')
    assert routed(make(holds=rules).handle(record(), 1, NOW, NOW)).outcome == "forwarded"


def test_an_expired_rule_holds_nothing() -> None:
    rules = hold_rules('key = "order-1"', expires="2020-01-01T00:00:00Z")
    assert routed(make(holds=rules).handle(record(), 1, NOW, NOW)).outcome == "forwarded"


def test_a_key_rule_parks_even_an_undecodable_record() -> None:
    handler = make(holds=hold_rules('key = "order-1"'))
    _, meta = dead_letter(handler.handle(record(b"\x07garbage"), 1, NOW, NOW))
    assert meta.category is Category.HELD
    assert meta.schema is None


def test_a_field_rule_cannot_match_an_undecodable_record() -> None:
    handler = make(holds=hold_rules('field = "customer.id"\nequals = "c-1"'))
    _, meta = dead_letter(handler.handle(record(b"\x07garbage"), 1, NOW, NOW))
    assert meta.category is Category.DESERIALIZATION


def test_a_topic_rule_matches_a_redrive_record_by_its_origin_topic() -> None:
    handler = make(holds=hold_rules(f'topic = "{ORDERS}"\nkey = "order-1"'))
    rec = record(avro_framed(good_order(1)), topic=REDRIVE, headers=lineage(f"{ORDERS}/0/5"))
    _, meta = dead_letter(handler.handle(rec, 1, NOW, NOW))
    assert meta.category is Category.HELD
    other = record(payment_bytes(), topic=PAYMENTS)
    assert routed(handler.handle(other, 1, NOW, NOW)).outcome == "forwarded"


def test_a_topic_rule_matches_an_undecodable_redrive_record_by_its_origin_topic() -> None:
    handler = make(holds=hold_rules(f'topic = "{ORDERS}"\nkey = "order-1"'))
    rec = record(b"\x07garbage", topic=REDRIVE, headers=lineage(f"{ORDERS}/0/5"))
    _, meta = dead_letter(handler.handle(rec, 1, NOW, NOW))
    assert meta.category is Category.HELD


# --- size ----------------------------------------------------------------------------------------


def test_a_dead_letter_too_large_for_the_dlq_drops_the_optional_headers() -> None:
    rec = record(payment_bytes(currency="eur", order_id="o" * 2000), topic=PAYMENTS)
    full = routed(make().handle(rec, 1, NOW, NOW)).outputs[0]
    assert contract.ERROR_DETAILS in header_names(full)
    size = contract.record_size(full.key, full.value, full.headers)

    fits = routed(make(dlq_max_bytes=size).handle(rec, 1, NOW, NOW)).outputs[0]
    assert fits.headers == full.headers

    out, meta = dead_letter(make(dlq_max_bytes=size - 1).handle(rec, 1, NOW, NOW))
    assert list(out.headers) == contract.drop_optional(full.headers)
    assert contract.ERROR_DETAILS not in header_names(out)
    assert meta.category is Category.VALIDATION  # the required headers survive
    assert (out.key, out.value) == (rec.key, rec.value)


def test_a_too_large_processing_failure_drops_its_stacktrace() -> None:
    handler = make(processor=raising(ValueError("no")))
    full = routed(handler.handle(record(), 1, NOW, NOW)).outputs[0]
    assert contract.ERROR_STACKTRACE in header_names(full)
    size = contract.record_size(full.key, full.value, full.headers)
    small = make(processor=raising(ValueError("no")), dlq_max_bytes=size - 1)
    out, meta = dead_letter(small.handle(record(), 1, NOW, NOW))
    assert contract.ERROR_STACKTRACE not in header_names(out)
    assert meta.message == withheld("ValueError")
    assert meta.fingerprint is not None
