"""`contract.dead_letter`, the worker's one call per dead letter, sizes the headers as it builds
them instead of measuring the finished record: it must give exactly what `fit_dead_letter` of
`dead_letter_headers` gives, at every size limit, for any record and failure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.contract import (
    Failure,
    SourceRecord,
    dead_letter,
    dead_letter_headers,
    fit_dead_letter,
    headers_size,
    record_size,
)
from pipeline.errors import Category

texts = st.text(max_size=40)
header_values = st.none() | st.binary(max_size=30)
original = st.tuples(st.sampled_from(["a", "é", "dlq.x", "h\ud800"]) | texts, header_values)
lineage = st.sampled_from(
    [
        ("dlq.origin", b"orders/3/17"),
        ("dlq.origin", b"not coordinates"),
        ("dlq.origin.timestamp", b"-5"),
        ("dlq.replay.count", b"2"),
        ("dlq.error.message", b"old"),
    ]
)
records = st.builds(
    SourceRecord,
    topic=st.sampled_from(["orders", "commandes.é"]),
    partition=st.integers(0, 1000),
    offset=st.integers(0, 2**63 - 1),
    timestamp_ms=st.integers(-1, 2**45),
    key=st.none() | st.binary(max_size=20),
    value=st.none() | st.binary(max_size=3000),
    headers=st.lists(original | lineage, max_size=5).map(tuple),
)
details = st.lists(
    st.fixed_dictionaries({"loc": texts, "msg": st.text(max_size=2000), "type": texts}),
    max_size=6,
).map(tuple)
failures = st.builds(
    Failure,
    category=st.sampled_from(list(Category)),
    error_type=texts,
    message=st.text(max_size=1500),
    failed_at_ms=st.integers(0, 2**45),
    pipeline=st.sampled_from(["p", "pipé"]),
    details=details,
    stacktrace=st.none() | st.text(max_size=9000),
    attempts=st.integers(1, 50),
    worker=st.none() | texts,
    schema=st.none() | texts,
    policy_rule=st.none() | texts,
)


@given(records, failures, st.booleans(), st.integers(-200, 300))
def test_dead_letter_is_fit_dead_letter_of_the_headers(
    record: SourceRecord, failure: Failure, stacktrace: bool, margin: int
) -> None:
    headers, digest = dead_letter_headers(record, failure, include_stacktrace=stacktrace)
    size = record_size(record.key, record.value, headers)
    for limit in (size + margin, size, size - 1, 0):
        expected = fit_dead_letter(record.key, record.value, headers, limit)
        fitted, fingerprint = dead_letter(record, failure, limit, include_stacktrace=stacktrace)
        assert fingerprint == digest
        assert fitted.value == expected.value
        assert list(fitted.headers) == list(expected.headers)
        assert fitted.omitted == expected.omitted


def test_headers_size_counts_utf8_names_and_values() -> None:
    headers = [("é", b"xyz"), ("a", None), ("h\ud800", b"")]
    # 10 per header; "é" is 2 bytes, an unencodable surrogate becomes one "?"
    assert headers_size(headers) == 30 + 2 + 1 + 2 + 3
    assert record_size(b"k", b"vv", headers) == 97 + 3 + headers_size(headers)


def test_a_known_cause_with_its_details_in_another_order_is_built_again() -> None:
    """The cause cache compares details in order: the details JSON keeps each entry's order."""
    record = SourceRecord("orders", 0, 1, 0, None, b"v", ())
    first = {"loc": "a", "msg": "m", "type": "t"}
    again = {"type": "t", "msg": "m", "loc": "a"}
    failures = [
        Failure(Category.VALIDATION, "E", "same text", 1, "p", details=(entry,))
        for entry in (first, again, first)
    ]
    built = [dict(dead_letter_headers(record, f)[0])["dlq.error.details"] for f in failures]
    assert built == [
        b'[{"loc":"a","msg":"m","type":"t"}]',
        b'[{"type":"t","msg":"m","loc":"a"}]',
        b'[{"loc":"a","msg":"m","type":"t"}]',
    ]
