"""The dead-letter contract: pipeline/core/contract.py and .../dialects.py against the page."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import dialects
from pipeline.core.contract import (
    ATTEMPTS,
    CONTRACT_VERSION,
    DETAILS_LIMIT,
    ERROR_CATEGORY,
    ERROR_DETAILS,
    ERROR_FINGERPRINT,
    ERROR_MESSAGE,
    ERROR_STACKTRACE,
    ERROR_TYPE,
    FAILED_AT,
    HEADER_OVERHEAD,
    MESSAGE_LIMIT,
    OPTIONAL_HEADERS,
    ORIGIN,
    ORIGIN_TIMESTAMP,
    PIPELINE,
    POLICY_RULE,
    PREFIX,
    RECORD_OVERHEAD,
    REPLAY_COUNT,
    REPLAY_HEADERS,
    REPLAY_OF,
    REPLAY_RUN,
    REQUIRED_HEADERS,
    SCHEMA,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TIMESTAMP,
    SOURCE_TOPIC,
    STACKTRACE_LIMIT,
    VALUE_OMITTED,
    VERSION,
    WORKER,
    DeadLetterMeta,
    Failure,
    Header,
    Headers,
    OmittedValue,
    SourceRecord,
    build_dead_letter,
    build_replay,
    dead_letter_headers,
    details_json,
    drop_optional,
    fingerprint,
    fit_dead_letter,
    format_coordinates,
    ledger_topic,
    lineage,
    normalise_message,
    omitted_value_header,
    original_headers,
    parse_coordinates,
    parse_dead_letter,
    record_size,
    redrive_topic,
    truncate_utf8,
    truncate_utf8_tail,
)
from pipeline.core.dialects import ForeignMeta, read_foreign
from pipeline.core.ledger_codec import (
    LedgerEntry,
    decode_ledger_entry,
    encode_ledger_entry,
    is_stale,
    ledger_key,
)
from pipeline.errors import Category

ELLIPSIS = "…".encode()
VALIDATION_ERROR = "pydantic_core.ValidationError"

RECORD = SourceRecord(
    topic="orders",
    partition=3,
    offset=42,
    timestamp_ms=1_700_000_000_000,
    key=b"order-7",
    value=b'{"qty": -1}',
    headers=(("traceparent", b"00-abc-01"), ("empty", None), ("traceparent", b"\xff\x00")),
)
FAILURE = Failure(
    category=Category.VALIDATION,
    error_type=VALIDATION_ERROR,
    message="1 validation error for Order",
    failed_at_ms=1_700_000_360_000,
    pipeline="billing",
    details=({"loc": "items.0.qty", "msg": "Input should be greater than 0", "type": "gt"},),
    stacktrace="Traceback (most recent call last):\nValidationError: 1 validation error",
    attempts=3,
    worker="host-1:4242",
    schema="orders-value/3/101",
    policy_rule="validation-to-dlq@ab12cd",
)


def only(headers: Sequence[Header], name: str) -> bytes | None:
    """The value of `name`, asserting it occurs exactly once."""
    values = [value for header, value in headers if header == name]
    assert len(values) == 1, f"{name} occurs {len(values)} times in {headers}"
    return values[0]


def names(headers: Sequence[Header]) -> list[str]:
    return [name for name, _ in headers]


def built(**changes: Any) -> Headers:
    return build_dead_letter(RECORD, dataclasses.replace(FAILURE, **changes))


# --- the page ------------------------------------------------------------------------------------


def contract_page() -> str:
    """The contract page: `shared/` beside the repository; `docs/` only when that is missing."""
    repo = Path(__file__).resolve().parents[2]
    shared = repo.parent / "shared" / "DLQ-CONTRACT.md"
    fallback = repo / "docs" / "DLQ-CONTRACT.md"
    path = shared if shared.exists() else fallback
    if not path.exists():
        pytest.fail(f"the contract page is missing: looked for {shared}, then {fallback}")
    return path.read_text(encoding="utf-8")


def page_section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", contract_page(), re.M | re.S)
    assert match, f"the contract page has no section {title!r}"
    return match.group(1)


def header_table() -> list[tuple[list[str], str, str]]:
    """(header names, required cell, meaning) per row of the page's header table."""
    rows = []
    for line in page_section("Headers").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1], "|".join(cells[2:])))
    assert rows, "no rows found in the page's header table"
    return rows


def test_page_lists_exactly_the_required_headers_in_order() -> None:
    page = [
        name for row_names, required, _ in header_table() if required == "yes" for name in row_names
    ]
    assert list(REQUIRED_HEADERS) == page


def test_page_lists_exactly_the_optional_dead_letter_headers() -> None:
    page = [
        name for row_names, required, _ in header_table() if required == "no" for name in row_names
    ]
    assert [h for h in OPTIONAL_HEADERS if h not in REPLAY_HEADERS] == page


def test_page_required_column_is_yes_or_no() -> None:
    assert {required for _, required, _ in header_table()} == {"yes", "no"}


def test_page_replay_section_defines_the_replay_headers() -> None:
    section = page_section("Replay")
    for name in REPLAY_HEADERS:
        assert f"`{name}`" in section
    assert "`<dlq.pipeline>.redrive`" in section
    assert redrive_topic("<dlq.pipeline>") == "<dlq.pipeline>.redrive"


def test_page_ledger_section_names_the_ledger_topic() -> None:
    assert "`<dlq-topic>.ledger`" in page_section("Ledger")
    assert ledger_topic("<dlq-topic>") == "<dlq-topic>.ledger"


def test_page_categories_are_the_category_enum() -> None:
    (meaning,) = [meaning for row, _, meaning in header_table() if row == [ERROR_CATEGORY]]
    assert set(re.findall(r"`([a-z_]+)`", meaning)) == {c.value for c in Category}


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        (ERROR_MESSAGE, MESSAGE_LIMIT),
        (ERROR_DETAILS, DETAILS_LIMIT),
        (ERROR_STACKTRACE, STACKTRACE_LIMIT),
    ],
)
def test_page_size_limits(name: str, limit: int) -> None:
    (meaning,) = [meaning for row, _, meaning in header_table() if row == [name]]
    match = re.search(r"at most (\d+) KiB", meaning)
    assert match, f"no size limit for {name} on the page"
    assert int(match.group(1)) * 1024 == limit


def test_page_version_is_the_contract_version() -> None:
    (meaning,) = [meaning for row, _, meaning in header_table() if row == [VERSION]]
    assert f"`{CONTRACT_VERSION}`" in meaning
    assert "(version 1)" in contract_page().splitlines()[0]


def test_page_dialect_headers_are_all_known_to_the_reader() -> None:
    section = page_section("Reading other tools' dead letters")
    known = {
        value for key, value in vars(dialects).items() if key.isupper() and isinstance(value, str)
    }
    on_page = {
        name
        for name in re.findall(r"`([^`\s]+)`", section)
        if name.startswith(("__connect.", "kafka_dlt-", "__streams.", "original_"))
        and not name.endswith("*")
    }
    assert on_page, "no dialect headers found on the page"
    assert on_page <= known, f"not read by pipeline/core/dialects.py: {sorted(on_page - known)}"


# --- one test per row of the header table --------------------------------------------------------


def test_row_version() -> None:
    assert only(built(), VERSION) == b"1"


def test_row_source_topic_partition_offset() -> None:
    headers = built()
    assert only(headers, SOURCE_TOPIC) == b"orders"
    assert only(headers, SOURCE_PARTITION) == b"3"
    assert only(headers, SOURCE_OFFSET) == b"42"


def test_row_source_timestamp() -> None:
    assert only(built(), SOURCE_TIMESTAMP) == b"1700000000000"


def test_row_origin_is_this_record_on_first_failure() -> None:
    assert only(built(), ORIGIN) == b"orders/3/42"


def test_row_origin_timestamp_is_this_record_on_first_failure() -> None:
    assert only(built(), ORIGIN_TIMESTAMP) == b"1700000000000"


@pytest.mark.parametrize("category", list(Category))
def test_row_error_category(category: Category) -> None:
    assert only(built(category=category), ERROR_CATEGORY) == category.value.encode()


def test_row_error_type() -> None:
    assert only(built(), ERROR_TYPE) == b"pydantic_core.ValidationError"


def test_row_error_message() -> None:
    assert only(built(), ERROR_MESSAGE) == b"1 validation error for Order"


def test_row_error_details() -> None:
    expected = b'[{"loc":"items.0.qty","msg":"Input should be greater than 0","type":"gt"}]'
    assert only(built(), ERROR_DETAILS) == expected
    assert ERROR_DETAILS not in names(built(details=()))


def test_row_error_stacktrace() -> None:
    expected = b"Traceback (most recent call last):\nValidationError: 1 validation error"
    assert only(built(), ERROR_STACKTRACE) == expected
    assert ERROR_STACKTRACE not in names(built(stacktrace=None))
    switched_off = build_dead_letter(RECORD, FAILURE, include_stacktrace=False)
    assert ERROR_STACKTRACE not in names(switched_off)


def test_row_error_fingerprint() -> None:
    assert only(built(), ERROR_FINGERPRINT) == b"78e9a881f2cba680"


def test_row_attempts() -> None:
    assert only(built(), ATTEMPTS) == b"3"


def test_row_failed_at() -> None:
    assert only(built(), FAILED_AT) == b"1700000360000"


def test_row_pipeline() -> None:
    assert only(built(), PIPELINE) == b"billing"


def test_row_worker() -> None:
    assert only(built(), WORKER) == b"host-1:4242"
    assert WORKER not in names(built(worker=None))


def test_row_schema() -> None:
    assert only(built(), SCHEMA) == b"orders-value/3/101"
    assert SCHEMA not in names(built(schema=None))


def test_row_policy_rule() -> None:
    assert only(built(), POLICY_RULE) == b"validation-to-dlq@ab12cd"
    assert POLICY_RULE not in names(built(policy_rule=None))


def test_row_replay_count_is_zero_on_first_failure() -> None:
    assert only(built(), REPLAY_COUNT) == b"0"


def test_dead_letter_header_order_follows_the_table() -> None:
    dlq = [name for name in names(built()) if name.startswith(PREFIX)]
    table = [name for row, _, _ in header_table() for name in row]
    assert dlq == [name for name in table if name != VALUE_OMITTED]  # only on oversize ones


def test_minimal_failure_carries_exactly_the_required_headers() -> None:
    minimal = Failure(Category.PROCESSING, "builtins.ValueError", "bad", 1, "p")
    dlq = [name for name in names(build_dead_letter(RECORD, minimal)) if name.startswith(PREFIX)]
    assert dlq == list(REQUIRED_HEADERS)


# --- truncation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["é", "€", "😀", "a"])
@pytest.mark.parametrize("limit", [MESSAGE_LIMIT, DETAILS_LIMIT, 5, 3, 2, 0])
def test_truncate_utf8_multibyte(char: str, limit: int) -> None:
    text = char * 10_000
    cut = truncate_utf8(text, limit)
    assert len(cut) <= limit
    decoded = cut.decode("utf-8")
    if limit >= 3:
        assert decoded.endswith("…")
        kept = decoded[:-1]
        assert kept == char * len(kept)
        assert len(cut) > limit - len(ELLIPSIS) - len(char.encode())  # as much as fits
    else:
        assert set(decoded) <= {char}


def test_truncate_utf8_leaves_short_text_alone() -> None:
    assert truncate_utf8("é" * 512, MESSAGE_LIMIT) == ("é" * 512).encode()
    assert truncate_utf8("", 0) == b""


def test_truncate_utf8_rejects_negative_limit() -> None:
    with pytest.raises(ValueError, match="negative"):
        truncate_utf8("x", -1)


def test_message_header_truncated_at_one_kib() -> None:
    for char in ("é", "€", "😀"):
        value = only(built(message=char * 2000), ERROR_MESSAGE)
        assert value is not None
        assert len(value) <= MESSAGE_LIMIT
        assert value.decode("utf-8").endswith("…")


def test_stacktrace_keeps_its_end_within_eight_kib() -> None:
    trace = "€" * 2000 + "\n" + "😀" * 2000 + "\nValueError: the last line"
    value = only(built(stacktrace=trace), ERROR_STACKTRACE)
    assert value is not None
    assert len(value) <= STACKTRACE_LIMIT
    text = value.decode("utf-8")
    assert text.startswith("…")
    assert text.endswith("\nValueError: the last line")


@given(st.text(), st.integers(min_value=0, max_value=64))
def test_truncate_utf8_property(text: str, limit: int) -> None:
    cut = truncate_utf8(text, limit)
    assert len(cut) <= limit
    decoded = cut.decode("utf-8")  # never splits a character
    if cut == text.encode():
        return
    prefix = decoded.removesuffix("…") if limit >= 3 else decoded
    assert text.startswith(prefix)


@given(st.text(), st.integers(min_value=3, max_value=64))
def test_truncate_utf8_tail_property(text: str, limit: int) -> None:
    cut = truncate_utf8_tail(text, limit)
    assert len(cut) <= limit
    decoded = cut.decode("utf-8")
    assert decoded == text or text.endswith(decoded.removeprefix("…"))


# --- details -------------------------------------------------------------------------------------


def test_details_json_is_compact_and_none_when_empty() -> None:
    assert details_json([]) is None
    assert details_json([{"loc": "a", "msg": "é"}]) == '[{"loc":"a","msg":"é"}]'.encode()


def test_details_json_drops_trailing_entries_with_a_marker() -> None:
    details = [{"loc": f"items.{i}.qty", "msg": "€" * 40, "type": "gt"} for i in range(500)]
    data = details_json(details)
    assert data is not None
    assert len(data) <= DETAILS_LIMIT
    parsed = json.loads(data)
    kept = len(parsed) - 1
    assert parsed[:kept] == details[:kept]
    assert parsed[-1] == {"loc": "…", "msg": f"{500 - kept} more", "type": "truncated"}


def test_details_json_caps_one_huge_value() -> None:
    data = details_json([{"loc": "a", "msg": "x" * 20_000}, {"loc": "b", "msg": "ok"}])
    assert data is not None
    parsed = json.loads(data)
    assert [entry["loc"] for entry in parsed] == ["a", "b"]
    assert len(parsed[0]["msg"].encode()) <= MESSAGE_LIMIT


details_strategy = st.lists(
    st.dictionaries(st.sampled_from(["loc", "msg", "type"]), st.text(max_size=300)), max_size=60
)


@given(details_strategy, st.integers(min_value=0, max_value=2000))
def test_details_json_property(details: list[dict[str, str]], limit: int) -> None:
    data = details_json(details, limit)
    if data is None:
        return
    assert len(data) <= limit
    parsed = json.loads(data)
    assert isinstance(parsed, list)


# --- build and parse -----------------------------------------------------------------------------


def test_round_trip() -> None:
    meta = parse_dead_letter(built())
    assert meta == DeadLetterMeta(
        version=1,
        source_topic="orders",
        source_partition=3,
        source_offset=42,
        source_timestamp_ms=1_700_000_000_000,
        origin="orders/3/42",
        origin_timestamp_ms=1_700_000_000_000,
        category=Category.VALIDATION,
        error_type=VALIDATION_ERROR,
        message="1 validation error for Order",
        details=FAILURE.details,
        stacktrace=FAILURE.stacktrace,
        fingerprint="78e9a881f2cba680",
        attempts=3,
        failed_at_ms=1_700_000_360_000,
        pipeline="billing",
        worker="host-1:4242",
        schema="orders-value/3/101",
        policy_rule="validation-to-dlq@ab12cd",
        replay_count=0,
        problems=(),
    )


def test_original_headers_kept_byte_for_byte_in_order() -> None:
    headers = built()
    assert headers[:3] == list(RECORD.headers)
    assert original_headers(headers) == list(RECORD.headers)


def test_build_returns_a_new_list_and_leaves_the_record_alone() -> None:
    headers = [("a", b"1")]
    record = dataclasses.replace(RECORD, headers=tuple(headers))
    first = build_dead_letter(record, FAILURE)
    first.append(("mutated", None))
    assert build_dead_letter(record, FAILURE) != first
    assert headers == [("a", b"1")]


def test_a_cause_built_once_is_reused_only_for_the_same_cause() -> None:
    """The dlq.error.* block is cached per cause: every part of the cause is in its key, and the
    fingerprint returned is the header's."""
    reference = built()
    for _ in range(3):
        headers, digest = dead_letter_headers(RECORD, FAILURE)
        assert headers == reference
        assert only(headers, ERROR_FINGERPRINT) == digest.encode()
    other_loc = ({"loc": "items.1.qty", "msg": "Input should be greater than 0", "type": "gt"},)
    assert only(built(details=other_loc), ERROR_DETAILS) != only(reference, ERROR_DETAILS)
    assert only(built(stacktrace="other"), ERROR_STACKTRACE) == b"other"
    assert ERROR_STACKTRACE not in names(
        build_dead_letter(RECORD, FAILURE, include_stacktrace=False)
    )
    assert only(built(message="2 validation errors"), ERROR_MESSAGE) == b"2 validation errors"
    assert only(built(category=Category.SCHEMA), ERROR_FINGERPRINT) != only(
        reference, ERROR_FINGERPRINT
    )
    assert only(built(worker=None), PIPELINE) == b"billing"
    assert WORKER not in names(built(worker=None))


def test_a_cause_with_a_huge_text_is_encoded_but_not_kept() -> None:
    from pipeline.core import contract

    huge = "x" * 100_000
    before = contract._cached_error_block.cache_info().currsize
    first, second = built(message=huge), built(message=huge)
    assert first == second
    assert only(first, ERROR_MESSAGE) == truncate_utf8(huge, MESSAGE_LIMIT)
    assert contract._cached_error_block.cache_info().currsize == before


def test_incoming_dlq_headers_are_replaced_not_duplicated() -> None:
    old = built(pipeline="old", attempts=9)
    record = dataclasses.replace(RECORD, headers=(*old, ("after", b"x")))
    headers = build_dead_letter(record, FAILURE)
    for name in (*REQUIRED_HEADERS, WORKER, SCHEMA, POLICY_RULE, ERROR_DETAILS, ERROR_STACKTRACE):
        only(headers, name)
    assert only(headers, PIPELINE) == b"billing"
    assert only(headers, ATTEMPTS) == b"3"
    assert original_headers(headers) == [*RECORD.headers, ("after", b"x")]


def test_replayed_record_failing_again_keeps_its_lineage() -> None:
    first = built()
    replay = build_replay(first, dead_letter="orders.dlq/0/17", run_id="run-1")
    redrive = SourceRecord("billing.redrive", 0, 5, 1_800_000_000_000, b"k", b"v", tuple(replay))
    again = build_dead_letter(redrive, FAILURE)
    assert only(again, ORIGIN) == b"orders/3/42"
    assert only(again, ORIGIN_TIMESTAMP) == b"1700000000000"
    assert only(again, REPLAY_COUNT) == b"1"
    assert only(again, SOURCE_TOPIC) == b"billing.redrive"
    assert REPLAY_OF not in names(again)
    assert REPLAY_RUN not in names(again)
    assert original_headers(again) == list(RECORD.headers)


def test_last_occurrence_of_an_incoming_lineage_header_wins() -> None:
    headers = ((ORIGIN, b"a/0/1"), (REPLAY_COUNT, b"4"), (ORIGIN, b"b/2/3"), (REPLAY_COUNT, b"5"))
    out = build_dead_letter(dataclasses.replace(RECORD, headers=headers), FAILURE)
    assert only(out, ORIGIN) == b"b/2/3"
    assert only(out, REPLAY_COUNT) == b"5"
    assert only(out, ORIGIN_TIMESTAMP) == b"1700000000000"  # none inherited: this record's


def test_malformed_incoming_lineage_falls_back_to_this_record() -> None:
    headers = ((ORIGIN, b"not coordinates"), (ORIGIN_TIMESTAMP, b"5"), (REPLAY_COUNT, b"x"))
    out = build_dead_letter(dataclasses.replace(RECORD, headers=headers), FAILURE)
    assert only(out, ORIGIN) == b"orders/3/42"
    assert only(out, ORIGIN_TIMESTAMP) == b"1700000000000"
    assert only(out, REPLAY_COUNT) == b"0"


def test_lineage_reads_valid_values_only() -> None:
    assert lineage(None) == lineage([])
    read = lineage([(ORIGIN, b"t/1/2"), (ORIGIN_TIMESTAMP, b"-1"), (REPLAY_COUNT, b"\xff")])
    assert (read.origin, read.origin_timestamp_ms, read.replay_count) == ("t/1/2", -1, None)


def test_drop_optional_removes_every_optional_header_the_page_lists() -> None:
    headers = [*built(), omitted_value_header(b"x")]
    dropped = drop_optional(headers)
    optional = {n for n in names(headers) if n in OPTIONAL_HEADERS} - {VALUE_OMITTED}
    assert optional == {ERROR_DETAILS, ERROR_STACKTRACE, WORKER, SCHEMA, POLICY_RULE}
    assert names(dropped) == [n for n in names(headers) if n not in optional]
    assert VALUE_OMITTED in names(dropped)  # it describes a value already left out
    assert ERROR_DETAILS in names(headers)  # a new list


def test_a_dead_letter_keeps_its_value_when_dropping_every_optional_header_makes_it_fit() -> None:
    """The page: a value is omitted only when the record does not fit "even after the optional
    headers are dropped" (worker, schema and policy rule included, not details and stack
    trace alone)."""
    headers = built()
    without_texts = [(n, v) for n, v in headers if n not in (ERROR_DETAILS, ERROR_STACKTRACE)]
    limit = record_size(RECORD.key, RECORD.value, drop_optional(headers))
    assert record_size(RECORD.key, RECORD.value, without_texts) > limit
    fitted = fit_dead_letter(RECORD.key, RECORD.value, headers, limit)
    assert (fitted.value, fitted.omitted) == (RECORD.value, False)


def test_record_size() -> None:
    assert record_size(None, None, []) == RECORD_OVERHEAD
    headers: list[Header] = [("é", b"12"), ("n", None)]
    expected = RECORD_OVERHEAD + 3 + 4 + 2 * HEADER_OVERHEAD + 2 + 2 + 1
    assert record_size(b"abc", b"1234", headers) == expected


def test_parse_returns_none_without_version() -> None:
    assert parse_dead_letter(None) is None
    assert parse_dead_letter([]) is None
    assert parse_dead_letter([(h, v) for h, v in built() if h != VERSION]) is None


def test_parse_records_problems_instead_of_raising() -> None:
    headers: list[Header] = [
        (VERSION, b"2"),
        (SOURCE_PARTITION, b"three"),
        (SOURCE_OFFSET, None),
        (SOURCE_TIMESTAMP, b"\xff"),
        (ORIGIN, b"nowhere"),
        (ERROR_CATEGORY, b"gremlins"),
        (ERROR_DETAILS, b"{not json"),
        (ERROR_FINGERPRINT, b"XYZ"),
        (ATTEMPTS, b"-1"),
    ]
    meta = parse_dead_letter(headers)
    assert meta is not None
    assert meta.version == 2
    assert meta.source_partition is None
    assert meta.category is None
    assert meta.details == ()
    assert meta.origin == "nowhere"
    assert meta.fingerprint == "XYZ"
    assert meta.attempts is None
    problems = "\n".join(meta.problems)
    for expected in (
        "dlq.version is 2",
        "dlq.source.topic is missing",
        "dlq.source.partition is not a decimal number: 'three'",
        "dlq.source.offset has no value",
        "dlq.source.timestamp is not UTF-8",
        "dlq.origin is not topic/partition/offset",
        "dlq.error.category is not a known category: 'gremlins'",
        "dlq.error.details is not a JSON array of objects",
        "dlq.error.fingerprint is not 16 hex chars",
        "dlq.attempts is not a decimal number",
        "dlq.pipeline is missing",
        "dlq.replay.count is missing",
    ):
        assert expected in problems


def test_parse_takes_the_last_occurrence() -> None:
    meta = parse_dead_letter([*built(), (PIPELINE, b"later"), (ATTEMPTS, b"7")])
    assert meta is not None
    assert (meta.pipeline, meta.attempts, meta.problems) == ("later", 7, ())


def test_parse_survives_deeply_nested_details() -> None:
    meta = parse_dead_letter([*built(), (ERROR_DETAILS, b"[" * 100_000 + b"]" * 100_000)])
    assert meta is not None
    assert meta.problems == ("dlq.error.details is not a JSON array of objects",)


def test_parse_details_with_non_string_values() -> None:
    meta = parse_dead_letter([*built(), (ERROR_DETAILS, b'[{"loc": ["a", 0], "n": 1}]')])
    assert meta is not None
    assert meta.details == ({"loc": '["a", 0]', "n": "1"},)


header_names = st.one_of(
    st.text(max_size=12),
    st.sampled_from([ORIGIN, ORIGIN_TIMESTAMP, REPLAY_COUNT, VERSION, REPLAY_OF, "dlq.x", "dlq"]),
)
header_lists = st.lists(st.tuples(header_names, st.none() | st.binary(max_size=16)), max_size=8)
optional_text = st.none() | st.text(max_size=40)


@given(
    headers=header_lists,
    category=st.sampled_from(Category),
    message=st.text(max_size=1500),
    stacktrace=optional_text,
    worker=optional_text,
    details=details_strategy,
)
def test_round_trip_property(
    headers: list[Header],
    category: Category,
    message: str,
    stacktrace: str | None,
    worker: str | None,
    details: list[dict[str, str]],
) -> None:
    failure = dataclasses.replace(
        FAILURE,
        category=category,
        message=message,
        stacktrace=stacktrace,
        worker=worker,
        details=tuple(details),
    )
    out = build_dead_letter(dataclasses.replace(RECORD, headers=tuple(headers)), failure)
    assert original_headers(out) == [(n, v) for n, v in headers if not n.startswith(PREFIX)]
    for name in REQUIRED_HEADERS:
        only(out, name)
    meta = parse_dead_letter(out)
    assert meta is not None
    assert meta.problems == ()
    assert meta.category is category
    assert meta.message == truncate_utf8(message, MESSAGE_LIMIT).decode()
    assert meta.worker == worker
    assert (meta.stacktrace is None) == (stacktrace is None)
    assert meta.fingerprint == fingerprint(
        category, VALIDATION_ERROR, message, [d["loc"] for d in details if "loc" in d]
    )


# --- fingerprint ---------------------------------------------------------------------------------

GOLDEN = [
    (
        Category.VALIDATION,
        VALIDATION_ERROR,
        "1 validation error for Order",
        ["items.0.qty"],
        "78e9a881f2cba680",
    ),
    (
        Category.VALIDATION,
        VALIDATION_ERROR,
        "2 validation errors for Order",
        ["items.0.qty", "customer.email"],
        "b0dac41cbb3ac0e1",
    ),
    (
        Category.DESERIALIZATION,
        "pipeline.errors.DeserializationError",
        "unknown magic byte 0x07",
        [],
        "4d94e4f88b7b2843",
    ),
    (
        Category.SCHEMA,
        "pipeline.errors.SchemaError",
        "schema id 1234 not found in registry",
        [],
        "22936076335ce4b9",
    ),
    (Category.PROCESSING, "builtins.KeyError", "'customer_id'", [], "42f98e6286f50c86"),
    (
        Category.RETRIES_EXHAUSTED,
        "httpx.ConnectTimeout",
        "timed out after 30.0 seconds",
        [],
        "35ee0c2bbc588250",
    ),
    (Category.HELD, "pipeline.policy.Held", "", [], "b504d72339404ccd"),
    # This release's one change to what the fingerprint covers (README, "One cause, one
    # fingerprint"): locations name no key the record chose, so `tags.<key>` is one cause, not
    # one per key (`pipeline.codecs.locations`), and a processor's exception text is withheld
    # by default, so one exception type is one cause (`classify.user_message`).
    (
        Category.VALIDATION,
        VALIDATION_ERROR,
        "1 validation error for Account: tags.<key> (int_parsing)",
        ["tags.<key>"],
        "73209370bf219343",
    ),
    (
        Category.VALIDATION,
        VALIDATION_ERROR,
        "1 validation error for Payment: <extra field> (extra_forbidden)",
        ["<extra field>"],
        "0447bcc3cdda9b80",
    ),
    (
        Category.VALIDATION,
        VALIDATION_ERROR,
        "1 validation error for Account: pets.0.<tag>.barks (int_parsing)",
        ["pets.0.<tag>.barks"],
        "4c9107e54f9d6420",
    ),
    (
        Category.PROCESSING,
        "app.CardDeclined",
        "app.CardDeclined raised by the processor "
        '(message redacted; set policy.error_messages = "keep" to record it)',
        [],
        "f320ba910b6b7ab1",
    ),
]


@pytest.mark.parametrize(("category", "error_type", "message", "locations", "expected"), GOLDEN)
def test_fingerprint_golden_vectors(
    category: Category, error_type: str, message: str, locations: list[str], expected: str
) -> None:
    assert fingerprint(category, error_type, message, locations) == expected


def test_fingerprint_algorithm_spelled_out() -> None:
    joined = "\x00".join(
        ["validation", VALIDATION_ERROR, "<num> validation error for Order", "items.qty"]
    )
    assert hashlib.sha256(joined.encode()).hexdigest()[:16] == "78e9a881f2cba680"


def test_same_cause_different_values_same_fingerprint() -> None:
    a = fingerprint(
        Category.PROCESSING,
        "app.Rejected",
        "order 1234 for 'alice@example.com' rejected at 3.5 "
        "(trace 550e8400-e29b-41d4-a716-446655440000)",
    )
    b = fingerprint(
        Category.PROCESSING,
        "app.Rejected",
        'order 99 for "bob" rejected at -2 (trace 123e4567-e89b-12d3-a456-426614174000)',
    )
    assert a == b
    v1 = fingerprint(
        Category.VALIDATION, VALIDATION_ERROR, "1 error", ["items.0.qty", "items.3.qty"]
    )
    v2 = fingerprint(Category.VALIDATION, VALIDATION_ERROR, "7 error", ["items[12].qty"])
    assert v1 == v2


def test_different_field_different_fingerprint() -> None:
    qty = fingerprint(Category.VALIDATION, VALIDATION_ERROR, "1 error", ["items.0.qty"])
    price = fingerprint(Category.VALIDATION, VALIDATION_ERROR, "1 error", ["items.0.price"])
    assert qty != price
    assert fingerprint(Category.PROCESSING, "a.B", "x") != fingerprint(
        Category.PROCESSING, "a.C", "x"
    )
    assert fingerprint(Category.PROCESSING, "a.B", "x") != fingerprint(Category.HELD, "a.B", "x")


def test_locations_count_only_for_validation() -> None:
    plain = fingerprint(Category.PROCESSING, "a.B", "x")
    assert fingerprint(Category.PROCESSING, "a.B", "x", ["items.0.qty"]) == plain


def test_fingerprint_shape() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint(Category.CRASHED, "", ""))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("order 12 of 3.5e2 items", "order <num> of <num> items"),
        ("value 'abc' and \"def\" and b'\\x00'", "value <str> and <str> and <str>"),
        ("can't parse 'x'", "can't parse <str>"),
        ("id 550E8400-E29B-41D4-A716-446655440000", "id <uuid>"),
        ("ptr 0x7ffd at deadbeef1234", "ptr <hex> at <hex>"),
        ("int64  field\n\t items.3.qty", "int64 field items.<num>.qty"),
    ],
)
def test_normalise_message(message: str, expected: str) -> None:
    assert normalise_message(message) == expected


# --- replay --------------------------------------------------------------------------------------


def test_replay_headers() -> None:
    replay = build_replay(built(), dead_letter="orders.dlq/0/17", run_id="run-1")
    assert replay == [
        *RECORD.headers,
        (ORIGIN, b"orders/3/42"),
        (ORIGIN_TIMESTAMP, b"1700000000000"),
        (REPLAY_COUNT, b"1"),
        (REPLAY_OF, b"orders.dlq/0/17"),
        (REPLAY_RUN, b"run-1"),
    ]
    assert parse_dead_letter(replay) is None  # a replayed record is not a dead letter


def test_second_replay_increments_and_replaces() -> None:
    first = build_replay(built(), dead_letter="orders.dlq/0/17", run_id="run-1")
    again = build_dead_letter(dataclasses.replace(RECORD, headers=tuple(first)), FAILURE)
    second = build_replay(again, dead_letter="orders.dlq/1/2", run_id="run-2")
    assert only(second, REPLAY_COUNT) == b"2"
    assert only(second, REPLAY_OF) == b"orders.dlq/1/2"
    assert only(second, REPLAY_RUN) == b"run-2"
    assert only(second, ORIGIN) == b"orders/3/42"


def test_replay_without_lineage() -> None:
    headers: list[Header] = [("a", b"1"), (ORIGIN_TIMESTAMP, b"5")]  # no origin: no timestamp
    replay = build_replay(headers, dead_letter="x/0/0", run_id="r")
    assert replay == [("a", b"1"), (REPLAY_COUNT, b"1"), (REPLAY_OF, b"x/0/0"), (REPLAY_RUN, b"r")]


def test_replay_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="topic/partition/offset"):
        build_replay([], dead_letter="orders.dlq", run_id="r")
    with pytest.raises(ValueError, match="run id"):
        build_replay([], dead_letter="x/0/0", run_id="")


# --- coordinates ---------------------------------------------------------------------------------


def test_coordinates() -> None:
    assert parse_coordinates("orders.v1-eu_2/3/42") == ("orders.v1-eu_2", 3, 42)
    assert format_coordinates("orders", 3, 42) == "orders/3/42"
    assert parse_coordinates(format_coordinates("a", 0, 0)) == ("a", 0, 0)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("orders/3", "expected topic/partition/offset"),
        ("a/b/3/4", "not a Kafka topic name"),
        ("/3/4", "not a Kafka topic name"),
        ("orders/x/4", "partition 'x'"),
        ("orders/3/-4", "offset '-4'"),
        ("orders/3/", "offset ''"),
    ],
)
def test_bad_coordinates(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        parse_coordinates(text)


# --- ledger --------------------------------------------------------------------------------------

REPLAYED = LedgerEntry(
    action="replayed",
    at=1_800_000_000_000,
    operator="ana",
    run="run-1",
    failed_at=1_700_000_360_000,
    fingerprint="78e9a881f2cba680",
    fix=("set items.0.qty",),
    target="billing.redrive/0/5",
)


def test_ledger_names() -> None:
    assert ledger_topic("orders.dlq") == "orders.dlq.ledger"
    assert redrive_topic("billing") == "billing.redrive"
    assert ledger_key("orders.dlq", 0, 17) == b"orders.dlq/0/17"


def test_ledger_encode_decode() -> None:
    data = encode_ledger_entry(REPLAYED)
    assert json.loads(data) == {
        "action": "replayed",
        "at": 1_800_000_000_000,
        "operator": "ana",
        "run": "run-1",
        "fix": ["set items.0.qty"],
        "failed_at": 1_700_000_360_000,
        "fingerprint": "78e9a881f2cba680",
        "target": "billing.redrive/0/5",
    }
    assert decode_ledger_entry(data) == REPLAYED
    discard = LedgerEntry("discarded", 1, "ana", "run-2", 2, "0" * 16, reason="test data")
    assert decode_ledger_entry(encode_ledger_entry(discard)) == discard


def test_ledger_entry_rules() -> None:
    with pytest.raises(ValueError, match="reason"):
        LedgerEntry("discarded", 1, "ana", "run", 2, "f")
    with pytest.raises(ValueError, match="topic/partition/offset"):
        LedgerEntry("replayed", 1, "ana", "run", 2, "f")


DISCARD_JSON = {"action": "discarded", "at": 1, "operator": "a", "run": "r", "failed_at": 1}


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"not json",
        b"[]",
        b'{"action": "replayed"}',
        json.dumps({**DISCARD_JSON, "fingerprint": "f", "reason": "x", "action": "lost"}).encode(),
        json.dumps({**DISCARD_JSON, "fingerprint": "f", "reason": "x", "at": True}).encode(),
        json.dumps({**DISCARD_JSON, "fingerprint": "f"}).encode(),  # a discard needs a reason
        json.dumps({**DISCARD_JSON, "fingerprint": "f", "reason": "x", "fix": [1]}).encode(),
        json.dumps({**DISCARD_JSON, "reason": "x"}).encode(),
        b"[" * 100_000,
    ],
)
def test_ledger_decode_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_ledger_entry(data)


def test_ledger_stale() -> None:
    meta = parse_dead_letter(built())
    assert meta is not None
    assert not is_stale(REPLAYED, meta)
    assert is_stale(dataclasses.replace(REPLAYED, failed_at=1), meta)
    assert is_stale(dataclasses.replace(REPLAYED, fingerprint="0" * 16), meta)
    assert not is_stale(REPLAYED, DeadLetterMeta())  # nothing to disprove it


# --- foreign dialects ----------------------------------------------------------------------------

CONNECT: list[Header] = [
    ("traceparent", b"00-abc-01"),
    ("__connect.errors.topic", b"payments"),
    ("__connect.errors.partition", b"2"),
    ("__connect.errors.offset", b"1234"),
    ("__connect.errors.connector.name", b"jdbc-sink"),
    ("__connect.errors.task.id", b"0"),
    ("__connect.errors.stage", b"VALUE_CONVERTER"),
    ("__connect.errors.class.name", b"io.confluent.connect.avro.AvroConverter"),
    ("__connect.errors.exception.class.name", b"org.apache.kafka.connect.errors.DataException"),
    ("__connect.errors.exception.message", b"Failed to deserialize data"),
    ("__connect.errors.exception.stacktrace", b"org.apache.kafka...\n\tat ..."),
]

SPRING: list[Header] = [
    ("kafka_dlt-original-topic", b"payments"),
    ("kafka_dlt-original-partition", struct.pack(">i", 2)),
    ("kafka_dlt-original-offset", struct.pack(">q", 1_234_567_890_123)),
    ("kafka_dlt-original-timestamp", struct.pack(">q", 1_700_000_000_000)),
    ("kafka_dlt-original-timestamp-type", b"CreateTime"),
    ("kafka_dlt-original-consumer-group", b"payments-app"),
    (
        "kafka_dlt-exception-fqcn",
        b"org.springframework.kafka.listener.ListenerExecutionFailedException",
    ),
    ("kafka_dlt-exception-cause-fqcn", b"java.lang.IllegalStateException"),
    ("kafka_dlt-exception-message", b"Listener failed"),
    ("kafka_dlt-exception-stacktrace", b"org.springframework...\n\tat ..."),
]

STREAMS: list[Header] = [
    ("__streams.errors.exception", b"org.apache.kafka.common.errors.SerializationException"),
    ("__streams.errors.message", b"Size of data received is not 8"),
    ("__streams.errors.stacktrace", b"org.apache.kafka...\n\tat ..."),
    ("__streams.errors.topic", b"payments"),
    ("__streams.errors.partition", b"2"),
    ("__streams.errors.offset", b"1234"),
]

ARROYO: list[Header] = [("original_partition", b"2"), ("original_offset", b"1234")]


def test_connect_fixture() -> None:
    assert read_foreign(CONNECT) == ForeignMeta(
        dialect="connect",
        source_topic="payments",
        source_partition=2,
        source_offset=1234,
        source_timestamp_ms=None,
        error_type="org.apache.kafka.connect.errors.DataException",
        message="Failed to deserialize data",
        stacktrace="org.apache.kafka...\n\tat ...",
        extra=(
            ("connector", "jdbc-sink"),
            ("task", "0"),
            ("stage", "VALUE_CONVERTER"),
            ("class", "io.confluent.connect.avro.AvroConverter"),
        ),
        problems=(),
    )


def test_spring_fixture() -> None:
    assert read_foreign(SPRING) == ForeignMeta(
        dialect="spring",
        source_topic="payments",
        source_partition=2,
        source_offset=1_234_567_890_123,
        source_timestamp_ms=1_700_000_000_000,
        error_type="org.springframework.kafka.listener.ListenerExecutionFailedException",
        message="Listener failed",
        stacktrace="org.springframework...\n\tat ...",
        extra=(
            ("consumer_group", "payments-app"),
            ("timestamp_type", "CreateTime"),
            ("cause", "java.lang.IllegalStateException"),
        ),
        problems=(),
    )


def test_spring_repeated_original_headers_first_is_the_origin() -> None:
    second_hop: list[Header] = [
        ("kafka_dlt-original-topic", b"payments-retry-0"),
        ("kafka_dlt-original-partition", struct.pack(">i", 0)),
        ("kafka_dlt-original-offset", struct.pack(">q", 7)),
        ("kafka_dlt-original-timestamp", struct.pack(">q", 1_700_000_005_000)),
    ]
    meta = read_foreign([*SPRING[:4], *second_hop, *SPRING[4:]])
    assert meta is not None
    assert (meta.source_topic, meta.source_partition, meta.source_offset) == (
        "payments",
        2,
        1_234_567_890_123,
    )
    assert meta.source_timestamp_ms == 1_700_000_000_000
    assert ("hops", "2") in meta.extra
    assert meta.problems == ()


def test_spring_key_exception() -> None:
    headers: list[Header] = [
        *SPRING[:6],
        ("kafka_dlt-key-exception-fqcn", b"org.apache.kafka.common.errors.SerializationException"),
        ("kafka_dlt-key-exception-message", b"bad key"),
        ("kafka_dlt-key-exception-stacktrace", b"trace"),
    ]
    meta = read_foreign(headers)
    assert meta is not None
    assert meta.error_type == "org.apache.kafka.common.errors.SerializationException"
    assert (meta.message, meta.stacktrace) == ("bad key", "trace")
    assert ("failed_part", "key") in meta.extra
    assert meta.problems == ()


def test_spring_wrong_length_binary_is_a_problem() -> None:
    headers = [
        *SPRING[:1],
        ("kafka_dlt-original-partition", b"2"),
        ("kafka_dlt-original-offset", struct.pack(">i", 5)),
        *SPRING[3:],
    ]
    meta = read_foreign(headers)
    assert meta is not None
    assert (meta.source_partition, meta.source_offset) == (None, None)
    assert meta.problems == (
        "kafka_dlt-original-partition is 1 bytes, expected 4 (big-endian)",
        "kafka_dlt-original-offset is 4 bytes, expected 8 (big-endian)",
    )


def test_streams_fixture() -> None:
    assert read_foreign(STREAMS) == ForeignMeta(
        dialect="streams",
        source_topic="payments",
        source_partition=2,
        source_offset=1234,
        source_timestamp_ms=None,
        error_type="org.apache.kafka.common.errors.SerializationException",
        message="Size of data received is not 8",
        stacktrace="org.apache.kafka...\n\tat ...",
    )


def test_arroyo_fixture() -> None:
    assert read_foreign(ARROYO) == ForeignMeta(
        dialect="arroyo",
        source_topic=None,
        source_partition=2,
        source_offset=1234,
        source_timestamp_ms=None,
        error_type=None,
        message=None,
        stacktrace=None,
    )


def test_no_dialect() -> None:
    assert read_foreign(None) is None
    assert read_foreign([("traceparent", b"x")]) is None
    assert read_foreign(built()) is None


def test_malformed_connect() -> None:
    headers: list[Header] = [
        ("__connect.errors.partition", b"two"),
        ("__connect.errors.offset", b"1"),
        ("__connect.errors.offset", b"2"),
        ("__connect.errors.exception.class.name", b"\xff"),
    ]
    meta = read_foreign(headers)
    assert meta is not None
    assert (meta.source_topic, meta.source_partition, meta.source_offset) == (None, None, 1)
    assert meta.problems == (
        "__connect.errors.topic is missing",
        "__connect.errors.partition is not a decimal number: 'two'",
        "__connect.errors.offset is repeated 2 times; the first is used",
        "__connect.errors.exception.class.name is not UTF-8",
    )


def test_malformed_streams_and_arroyo() -> None:
    streams = read_foreign([*STREAMS[:3], ("__streams.errors.partition", None)])
    assert streams is not None
    assert streams.problems == (
        "__streams.errors.topic is missing",
        "__streams.errors.partition has no value",
        "__streams.errors.offset is missing",
    )
    arroyo = read_foreign([("original_offset", b"-3")])
    assert arroyo is not None
    assert arroyo.problems == (
        "original_partition is missing",
        "original_offset is not a decimal number: '-3'",
    )


def test_two_dialects_read_the_latest_hop() -> None:
    meta = read_foreign([*CONNECT, *SPRING])
    assert meta is not None
    assert meta.dialect == "spring"
    assert meta.problems == ("also carries connect headers; read as spring",)


foreign_names = st.sampled_from(
    [value for key, value in vars(dialects).items() if key.isupper() and isinstance(value, str)]
)


@given(st.lists(st.tuples(foreign_names, st.none() | st.binary(max_size=10)), max_size=12))
def test_read_foreign_never_raises(headers: list[Header]) -> None:
    meta = read_foreign(headers)
    assert meta is None or meta.dialect in dialects.DIALECTS


# --- oversize records ("Oversize records" on the page) ---------------------------------------


def test_fit_dead_letter_keeps_a_record_that_fits() -> None:
    headers = built()
    fitted = fit_dead_letter(RECORD.key, RECORD.value, headers, 1_000_000)
    assert (fitted.value, fitted.headers, fitted.omitted) == (RECORD.value, headers, False)


def test_fit_dead_letter_drops_optional_headers_first() -> None:
    headers = built()
    limit = record_size(RECORD.key, RECORD.value, drop_optional(headers))
    fitted = fit_dead_letter(RECORD.key, RECORD.value, headers, limit)
    assert fitted.value == RECORD.value
    assert fitted.headers == drop_optional(headers)
    assert not fitted.omitted


def test_fit_dead_letter_omits_an_oversize_value_and_says_what_it_was() -> None:
    value = b"x" * 5000
    headers = built()
    fitted = fit_dead_letter(RECORD.key, value, headers, 2000)
    assert fitted.omitted and fitted.value is None
    expected = f"size=5000;sha256={hashlib.sha256(value).hexdigest()}".encode()
    assert only(fitted.headers, VALUE_OMITTED) == expected
    dlq = [name for name in names(fitted.headers) if name.startswith(PREFIX)]
    table = [name for row, _, _ in header_table() for name in row]
    assert dlq == [n for n in table if n not in OPTIONAL_HEADERS or n == VALUE_OMITTED]
    assert [h for h in fitted.headers if not h[0].startswith(PREFIX)] == list(RECORD.headers)
    meta = parse_dead_letter(fitted.headers)
    assert meta is not None and meta.problems == ()
    assert meta.value_omitted == OmittedValue(5000, hashlib.sha256(value).hexdigest())
    assert meta.value_omitted.matches(value)
    assert not meta.value_omitted.matches(value + b"!")
    assert not meta.value_omitted.matches(None)


def test_omitted_header_for_a_tombstone() -> None:
    assert omitted_value_header(None) == (
        VALUE_OMITTED,
        b"size=0;sha256=" + hashlib.sha256(b"").hexdigest().encode(),
    )


@pytest.mark.parametrize("text", [b"size=1", b"size=x;sha256=00", b"sha256=" + b"0" * 64])
def test_malformed_value_omitted_is_a_problem(text: bytes) -> None:
    meta = parse_dead_letter([*built(), (VALUE_OMITTED, text)])
    assert meta is not None and meta.value_omitted is None
    assert f"{VALUE_OMITTED} is not size=<bytes>;sha256=<64 hex>" in meta.problems


def test_replay_never_carries_value_omitted() -> None:
    headers = fit_dead_letter(RECORD.key, b"x" * 5000, built(), 2000).headers
    replayed = build_replay(headers, dead_letter="dlq/0/1", run_id="r")
    assert VALUE_OMITTED not in names(replayed)


# --- header parsing never raises (a 5,000-digit dlq.replay.count crashed the worker) -----------


def test_huge_numbers_in_headers_are_problems_not_crashes() -> None:
    huge = b"9" * 5000
    headers = [*built(), (REPLAY_COUNT, huge), (SOURCE_OFFSET, huge), (ORIGIN, b"t/0/" + huge)]
    meta = parse_dead_letter(headers)
    assert meta is not None
    assert meta.replay_count is None and meta.source_offset is None
    assert any(p.startswith(f"{REPLAY_COUNT} is not a decimal number") for p in meta.problems)
    assert lineage(headers).replay_count is None
    assert lineage(headers).origin is None
    rebuilt = build_dead_letter(dataclasses.replace(RECORD, headers=tuple(headers)), FAILURE)
    assert only(rebuilt, REPLAY_COUNT) == b"0"
    with pytest.raises(ValueError, match="not a number"):
        parse_coordinates("t/0/" + "9" * 5000)
    assert build_replay(headers, dead_letter="dlq/0/1", run_id="r")[-3] == (REPLAY_COUNT, b"1")


def test_huge_numbers_in_foreign_headers_are_problems() -> None:
    headers = [
        ("__connect.errors.topic", b"orders"),
        ("__connect.errors.partition", b"7" * 5000),
        ("__connect.errors.offset", b"1"),
    ]
    meta = read_foreign(headers)
    assert meta is not None
    assert any("is not a decimal number" in p for p in meta.problems)
