"""Dead-letter log lines, aggregated per cause: a flood of one bad deploy is one line a cause
per interval, not a line per record.

The first dead letter of a fingerprint in an interval is logged in full (its coordinates and
correlation id); the rest only counted, and at the end of the interval one line per cause says
how many more there were. Nothing is lost from the record: every dead letter carries its own
headers; the log is for people watching.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.core.contract import SourceRecord
from pipeline.core.correlation import correlation_id
from pipeline.core.handler import Routed

log = logging.getLogger("lazarus.worker")


@dataclass(slots=True)
class _Cause:
    category: str
    message: str
    first: str
    correlation: str | None
    more: int = 0


class DeadLetterLog:
    """Rate-limited, per-fingerprint dead-letter logging (one line per cause per interval)."""

    def __init__(
        self, pipeline: str, interval_s: float = 10.0, correlation_header: str | None = None
    ) -> None:
        self.pipeline = pipeline
        self.correlation_header = correlation_header
        self.interval_s = interval_s
        self._causes: dict[str, _Cause] = {}
        self._since: float | None = None

    def record(self, rec: SourceRecord, routed: Routed, now: float) -> None:
        failure = routed.failure
        if failure is None:
            return
        if self._since is None:
            self._since = now
        fingerprint = routed.fingerprint or ""
        cause = self._causes.get(fingerprint)
        if cause is not None:
            cause.more += 1
            return
        where = f"{rec.topic}/{rec.partition}/{rec.offset}"
        correlation = correlation_id(rec.headers, self.correlation_header)
        self._causes[fingerprint] = _Cause(
            failure.category.value, failure.message, where, correlation
        )
        log.warning(
            "dead-lettered %s%s: %s: %s",
            where,
            f" (correlation {correlation})" if correlation else "",
            failure.category.value,
            failure.message,
            extra={
                "correlation_id": correlation,
                "pipeline": self.pipeline,
                "topic": rec.topic,
                "partition": rec.partition,
                "offset": rec.offset,
                "fingerprint": fingerprint,
                "category": failure.category.value,
            },
        )

    def flush(self, now: float, *, force: bool = False) -> None:
        """At the end of an interval, one line per cause that had more than its first record."""
        if self._since is None or (not force and now - self._since < self.interval_s):
            return
        for fingerprint, cause in self._causes.items():
            if cause.more:
                log.warning(
                    "dead-lettered %d more like %s%s in the last %.0fs: %s: %s",
                    cause.more,
                    cause.first,
                    f" (correlation {cause.correlation})" if cause.correlation else "",
                    now - self._since,
                    cause.category,
                    cause.message,
                    extra={
                        "pipeline": self.pipeline,
                        "correlation_id": cause.correlation,
                        "fingerprint": fingerprint,
                        "category": cause.category,
                        "count": cause.more,
                    },
                )
        self._causes.clear()
        self._since = None
