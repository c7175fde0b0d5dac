"""The worker at run time: the loop (`worker.py`), the delivery modes and the metrics. Depends on
the `pipeline.kafka.seam` Protocols, never on confluent-kafka itself."""
