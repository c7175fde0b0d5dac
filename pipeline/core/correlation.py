"""A record's correlation id: what ties its log lines and its dead letter to one request.

The W3C `traceparent` header's trace id when the record carries a valid one, else the value of
a header the pipeline names (`correlation_header = "x-request-id"`). Replays keep every original
header, so a replayed record stays on its trace. Pure; never raises.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

TRACEPARENT = "traceparent"
MAX_LENGTH = 128
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}(?:-.*)?")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def correlation_id(
    headers: Sequence[tuple[str, bytes | None]] | None, header: str | None = None
) -> str | None:
    """The trace id of the last valid `traceparent` (not all zeros), else the last value of
    `header` when it is printable ASCII of at most 128 characters, else None."""
    trace: str | None = None
    named: str | None = None
    for name, value in headers or ():
        if value is None:
            continue
        if name == TRACEPARENT:
            found = _TRACEPARENT.fullmatch(_ascii(value))
            if found is not None and found.group(1) != "0" * 32:
                trace = found.group(1)
        elif header is not None and name == header:
            text = _ascii(value).strip()
            if text and len(text) <= MAX_LENGTH and _PRINTABLE.fullmatch(text):
                named = text
    return trace or named


def _ascii(value: bytes) -> str:
    return value.decode("ascii", errors="replace")
