"""Correlation ids: the traceparent's trace id first, else the pipeline's named header."""

from __future__ import annotations

import pytest

from pipeline.core.correlation import correlation_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01".encode()


@pytest.mark.parametrize(
    ("headers", "header", "expected"),
    [
        ([("traceparent", PARENT)], None, TRACE),
        ([("x-request-id", b"req-1"), ("traceparent", PARENT)], "x-request-id", TRACE),
        ([("x-request-id", b"req-1")], "x-request-id", "req-1"),
        ([("x-request-id", b"req-1")], None, None),
        ([("traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")], None, None),
        ([("traceparent", b"garbage"), ("x-request-id", b"r")], "x-request-id", "r"),
        ([("x-request-id", b"has space")], "x-request-id", None),
        ([("x-request-id", b"\xff\xfe")], "x-request-id", None),
        ([("x-request-id", b"a" * 129)], "x-request-id", None),
        ([("x-request-id", None)], "x-request-id", None),
        ([], "x-request-id", None),
        (None, None, None),
    ],
)
def test_correlation_id(
    headers: list[tuple[str, bytes | None]] | None, header: str | None, expected: str | None
) -> None:
    assert correlation_id(headers, header) == expected
