"""The checker itself, on hand-made topic contents (no broker): what counts as lost, unseen,
duplicated and unexpected, and which duplicates a fault window explains."""

from __future__ import annotations

import pytest

from tests.faults.accounting import Checker, Window
from tests.kit import SEQ, Rec


class Canned(Checker):
    def __init__(self, inputs: int, routed: list[int]) -> None:
        super().__init__("unused", "g", ["src"], "out", "dlq", 1)
        self._inputs = {f"s{i}".encode(): ("src", (0, i)) for i in range(inputs)}
        self._routed = [
            Rec("out", 0, n, None, b"", [(SEQ, f"s{i}".encode())]) for n, i in enumerate(routed)
        ]

    def routed(self, isolation: str = "read_committed") -> list[Rec]:
        return self._routed


def test_a_gap_before_routed_records_is_lost_and_a_missing_tail_is_unseen() -> None:
    report = Canned(6, [0, 2, 3]).check("s", "at-least-once", 0)
    assert report.lost == [(0, 1)]
    assert report.unseen == [(0, 4), (0, 5)]
    with pytest.raises(AssertionError, match="lost"):
        report.assert_holds()


def test_duplicates_must_lie_inside_a_fault_window() -> None:
    check = Canned(5, [0, 1, 2, 3, 4, 2, 3])
    check.windows.append(Window("kill:src", {0: 2}, {0: 4}))
    report = check.check("s", "at-least-once", 1)
    assert report.duplicated == {(0, 2): 1, (0, 3): 1} and report.outside == []
    report.assert_holds()
    check.windows[0] = Window("kill:src", {0: 3}, {0: 4})  # committed past offset 2
    report = check.check("s", "at-least-once", 1)
    assert report.outside == [(0, 2)]
    with pytest.raises(AssertionError, match="outside every fault window"):
        report.assert_holds()


def test_exactly_once_allows_no_duplicate_even_inside_a_window() -> None:
    check = Canned(3, [0, 1, 2, 1])
    check.windows.append(Window("kill:src", {0: 0}, {0: 3}))
    with pytest.raises(AssertionError, match="duplicates under read_committed"):
        check.check("s", "exactly-once", 1).assert_holds()


def test_a_routed_record_that_is_no_input_is_unexpected() -> None:
    check = Canned(2, [0, 1])
    check._routed.append(Rec("out", 0, 9, None, b"", [(SEQ, b"phantom")]))
    report = check.check("s", "at-least-once", 0)
    assert report.unexpected == 1
    with pytest.raises(AssertionError, match="no input"):
        report.assert_holds()


def test_a_record_produced_before_the_window_ended_but_landing_later_is_inside_it() -> None:
    """A produce request in flight while the broker was frozen lands after the window was
    marked: its CreateTime (when the worker produced it) puts it inside the window."""
    check = Canned(5, [0, 1, 2, 3, 4, 3])
    check.windows.append(Window("freeze:src", {0: 2}, {0: 3}, until_ms=1_000))
    late = check._routed[3]
    check._routed[3] = Rec(late.topic, 0, late.offset, None, b"", late.headers, 900)
    assert check.check("s", "at-least-once", 1).outside == []
    check._routed[3] = Rec(late.topic, 0, late.offset, None, b"", late.headers, 1_100)
    assert check.check("s", "at-least-once", 1).outside == [(0, 3)]  # produced after the end
