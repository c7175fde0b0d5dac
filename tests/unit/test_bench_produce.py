"""bench/bench_produce.py measures what it says: its dead letter carries every header the
contract requires (and the optional ones a worker writes for an invalid order), built by the
worker's own handler, so the figure is the client's cost of a real dead letter's headers."""

from __future__ import annotations

from bench.bench_produce import MODES, contract_headers
from pipeline.core import contract


def test_the_measured_headers_are_a_real_dead_letters() -> None:
    names = [name for name, _ in contract_headers()]
    assert set(contract.REQUIRED_HEADERS) <= set(names)
    assert {contract.ERROR_DETAILS, contract.WORKER} <= set(names)
    assert len(names) == len(set(names)) == 17


def test_every_combination_of_headers_and_reports_is_measured() -> None:
    assert {(m.headers, m.reports) for m in MODES} == {
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    }
