"""The test broker script's pure parts."""

from __future__ import annotations

from scripts.kafka_broker import new_cluster_id
from scripts.processes import mvn_reason


def test_cluster_ids_never_look_like_options() -> None:
    """A random id starting with "-" once failed storage formatting (1 in 64 starts)."""
    ids = [new_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_mvn_reason_is_the_first_meaningful_error_line() -> None:
    output = (
        "[ERROR] Failed to execute goal on project test-broker: Could not resolve dependencies\n"
        "[ERROR] -> [Help 1]\n[ERROR] To see the full stack trace of the errors, re-run Maven\n"
    )
    assert mvn_reason(output).startswith("Failed to execute goal on project test-broker")
    assert mvn_reason("") == "no error text (run mvn without -q to see more)"
