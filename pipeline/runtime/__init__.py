"""The worker at run time: the loop (`worker.py`) with its rare paths (`too_large.py`,
`crash_marks.py`), the delivery modes and the metrics. Depends on
the `pipeline.kafka.seam` Protocols, never on confluent-kafka itself."""
