"""`quix`: Quix Streams, the way its documentation writes a validating pipeline.

    .cache/bench-quix/bin/python -m bench.contenders.quix '<job json>'

An `Application` (at-least-once, `commit_interval=1.0` like every contender), a `StreamingDataFrame`
over the source with bytes in and out, `.apply(check)` doing the same work as `ceiling`, the good
values sent on with `.to_topic(output)`. A record whose `apply` raises goes to the application's
`on_processing_error` callback, which produces it to the DLQ (raw value, key, two headers) with a
producer from `app.get_producer()` and returns True so processing goes on. Its state folder (Quix
makes one per consumer group, `./state` by default) is a temporary one, removed after the run.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from typing import Any

# quixstreams lives only in .cache/bench-quix (its pins exclude the runtime's confluent-kafka),
# never in the project's venv, where mypy runs
from quixstreams import Application  # type: ignore[import-not-found]

from bench.contenders.job import COMMIT_EVERY_S, Job, headers_for
from bench.workloads import checker


def main() -> int:
    job = Job.from_argv()
    check = checker(job.fmt)
    producer_box: list[Any] = []

    def dead_letter(exc: BaseException, row: Any, _logger: logging.Logger) -> bool:
        if row is None:
            return False
        producer_box[0].produce(
            topic=job.dlq, key=row.key, value=row.value, headers=headers_for(exc)
        )
        return True

    def validated(value: bytes) -> bytes:
        check(value)
        return value

    with tempfile.TemporaryDirectory(prefix="lazarus-bench-quix-") as state_dir:
        app = Application(
            broker_address=job.bootstrap,
            consumer_group=job.group,
            auto_offset_reset="earliest",
            commit_interval=COMMIT_EVERY_S,
            processing_guarantee="at-least-once",
            on_processing_error=dead_letter,
            auto_create_topics=False,
            loglevel="WARNING",
            state_dir=state_dir,
        )
        source = app.topic(job.source, key_deserializer="bytes", value_deserializer="bytes")
        output = app.topic(job.output, key_serializer="bytes", value_serializer="bytes")
        sdf = app.dataframe(source)
        sdf = sdf.apply(validated)
        sdf.to_topic(output)
        with app.get_producer() as producer:
            producer_box.append(producer)
            app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
