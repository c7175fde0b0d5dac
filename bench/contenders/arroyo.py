"""`arroyo`: Sentry Arroyo with its DLQ policy.

    python -m bench.contenders.arroyo '<job json>'

A `StreamProcessor` over a `KafkaConsumer` (`build_kafka_consumer_configuration`, arroyo's own
commit management, commits once a second through `CommitOffsets`); the strategy is
`RunTask(check) -> Produce(output) -> CommitOffsets`. A bad record raises
`InvalidMessage.from_value`, and the processor's `DlqPolicy` (`KafkaDlqProducer`, no limit) produces
it to the DLQ; offsets past it are committed only once that produce is acknowledged.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from types import FrameType

from arroyo.backends.kafka import KafkaConsumer, KafkaPayload, KafkaProducer
from arroyo.backends.kafka.configuration import (
    build_kafka_consumer_configuration,
    build_kafka_producer_configuration,
)
from arroyo.commit import ONCE_PER_SECOND
from arroyo.dlq import DlqLimit, DlqPolicy, InvalidMessage, KafkaDlqProducer
from arroyo.processing import StreamProcessor
from arroyo.processing.strategies import (
    CommitOffsets,
    ProcessingStrategy,
    ProcessingStrategyFactory,
    Produce,
    RunTask,
)
from arroyo.types import BrokerValue, Commit, Message, Partition, Topic

from bench.contenders.job import Job
from bench.workloads import checker


class Factory(ProcessingStrategyFactory[KafkaPayload]):
    def __init__(self, job: Job, producer: KafkaProducer) -> None:
        self.output = Topic(job.output)
        self.producer = producer
        self.check = checker(job.fmt)

    def create_with_partitions(
        self, commit: Commit, partitions: Mapping[Partition, int]
    ) -> ProcessingStrategy[KafkaPayload]:
        check = self.check

        def validated(message: Message[KafkaPayload]) -> KafkaPayload:
            try:
                check(message.payload.value)
            except Exception as exc:
                assert isinstance(message.value, BrokerValue)
                raise InvalidMessage.from_value(message.value) from exc
            return message.payload

        produce = Produce(self.producer, self.output, CommitOffsets(commit))
        return RunTask(validated, produce)


def main() -> int:
    job = Job.from_argv()
    servers = [job.bootstrap]
    consumer = KafkaConsumer(
        build_kafka_consumer_configuration(
            {},
            job.group,
            auto_offset_reset="earliest",
            bootstrap_servers=servers,
            enable_auto_commit=False,
        )
    )
    producer = KafkaProducer(build_kafka_producer_configuration({}, bootstrap_servers=servers))
    dlq_producer = KafkaProducer(build_kafka_producer_configuration({}, bootstrap_servers=servers))
    processor = StreamProcessor(
        consumer,
        Topic(job.source),
        Factory(job, producer),
        ONCE_PER_SECOND,
        DlqPolicy(KafkaDlqProducer(dlq_producer, Topic(job.dlq)), DlqLimit()),
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        processor.signal_shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processor.run()
    producer.close().result(10)
    dlq_producer.close().result(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
