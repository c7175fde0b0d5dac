"""bench/bench_metrics.py measures what it says: the variants route the same records and differ
only in what reaches prometheus-client (everything, flushed once a second or after every batch,
or nothing)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from bench.bench_metrics import VARIANTS, run


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_routes_the_records_and_only_never_hides_them(variant: str) -> None:
    registry = CollectorRegistry()
    assert run(2000, variant, registry) > 0

    def counted(outcome: str) -> float:
        labels = {"pipeline": "bench", "outcome": outcome}
        return registry.get_sample_value("lazarus_records_total", labels) or 0.0

    exported = (counted("forwarded"), counted("dead_lettered"))
    assert exported == ((0.0, 0.0) if variant == "never" else (1900.0, 100.0))
