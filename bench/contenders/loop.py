"""`raw` and `ceiling`: the confluent-kafka loop a hand-written consumer would be.

    python -m bench.contenders.loop '<job json>' raw|ceiling

`raw` relays every value unchanged (no decoding: the client's ceiling). `ceiling` does the work
inline (`bench.workloads.checker`), forwards the good values unchanged and produces the bad ones
to the DLQ with two headers. Both consume in batches of 500, produce asynchronously (idempotent,
lz4, `linger.ms=5`, as Lazarus' producer) and commit the consumed positions asynchronously once a
second: at-least-once without waiting for acks, the cheapest loop that is still useful.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.contenders.job import BATCH, COMMIT_EVERY_S, Job, Stop, headers_for
from bench.kafka_io import send
from bench.workloads import checker

PRODUCER: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "compression.type": "lz4",
    "enable.idempotence": True,
}
CONSUMER: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
}


def main() -> int:
    job, work = Job.from_argv(), sys.argv[2] == "ceiling"
    stop = Stop()
    check = checker(job.fmt) if work else None
    consumer = Consumer({"bootstrap.servers": job.bootstrap, "group.id": job.group, **CONSUMER})
    producer = Producer({"bootstrap.servers": job.bootstrap, **PRODUCER})
    consumer.subscribe([job.source])
    positions: dict[int, int] = {}
    last_commit = time.monotonic()
    while not stop.requested:
        for msg in consumer.consume(BATCH, 0.1):
            if msg.error() is not None:
                continue
            value = msg.value()
            if check is None:
                send(producer, job.output, msg.key(), value)
            else:
                try:
                    check(value or b"")  # a null value fails the check: a dead letter
                    send(producer, job.output, msg.key(), value)
                except Exception as exc:
                    send(producer, job.dlq, msg.key(), value, headers_for(exc))
            positions[msg.partition() or 0] = (msg.offset() or 0) + 1
        producer.poll(0)
        if positions and time.monotonic() - last_commit >= COMMIT_EVERY_S:
            tps = [TopicPartition(job.source, p, o) for p, o in positions.items()]
            consumer.commit(offsets=tps, asynchronous=True)
            last_commit = time.monotonic()
    producer.flush(10)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
