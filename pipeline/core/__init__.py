"""The pure core: the header contract, error classification, policies, holds, the offset tracker
and the record handler. Plain functions and dataclasses over bytes; no Kafka, no I/O."""
