"""A uniform batch read for replay (`reprocessor.replay_columns`) says what the record-by-record
readers say: accepted exactly when `fast_row` reads every record (and `build_replay` keeps each
origin and origin timestamp as they are), with `fast_row`'s fields, and copy headers that are
`build_replay`'s bytes, over worker-written dead letters with one field of one record spoiled in
every way a header can be."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import contract
from pipeline.core.contract import Failure, Header, SourceRecord, build_dead_letter
from pipeline.errors import Category
from reprocessor.index_rows import fast_row
from reprocessor.replay_columns import uniform_lineage
from reprocessor.replay_headers import replay_headers

ORIGIN_MS = st.integers(0, 2**63) | st.sampled_from([0, 7, 10**18])


def worker_headers(
    originals: list[Header], replays: int, origin: str | None, origin_ms: int, rule: str | None
) -> list[Header]:
    """A dead letter's headers as the worker writes them, after `replays` earlier replays."""
    lineage: list[Header] = [(contract.REPLAY_COUNT, str(replays).encode())]
    if origin is not None:
        lineage += [
            (contract.ORIGIN, origin.encode()),
            (contract.ORIGIN_TIMESTAMP, str(origin_ms).encode()),
        ]
    record = SourceRecord("orders", 2, 77, 1_000, b"k", b"v", (*originals, *lineage))
    failure = Failure(Category.VALIDATION, "E", "bad", 5_000, "orders-app", policy_rule=rule)
    return list(build_dead_letter(record, failure))


SPOILED = st.sampled_from(
    [None, b"", b"\xff", b"\xc3", b"x", b"-1", b"01", b"1" * 21, b"a/1/2\nb/3/4", b"zz", b"1"]
)


@st.composite
def batches(draw: st.DrawFn) -> list[list[Header]]:
    """Up to five dead letters of one layout (same originals, same lineage headers), one of
    whose values may be spoiled, or whose names may be reordered or repeated."""
    originals = draw(st.lists(st.sampled_from(["trace", "a", "dlqx"]), max_size=3))
    has_origin = draw(st.booleans())
    rule = draw(st.sampled_from([None, "hold-eu"]))
    size = draw(st.integers(1, 5))
    out = []
    for i in range(size):
        origin = f"orders/{i}/{draw(st.integers(0, 10**6))}" if has_origin else None
        values: list[Header] = [(name, b"v%d" % i) for name in originals]
        replays = draw(st.integers(0, 5))
        out.append(worker_headers(values, replays, origin, draw(ORIGIN_MS), rule))
    how = draw(st.sampled_from(["as written", "spoil a value", "move one last", "repeat one"]))
    victim = out[draw(st.integers(0, size - 1))]
    at = draw(st.integers(0, len(victim) - 1))
    if how == "spoil a value":
        victim[at] = (victim[at][0], draw(SPOILED))
    elif how == "move one last":  # every record, so the layout stays uniform
        for headers in out:
            headers.append(headers.pop(at))
    elif how == "repeat one":
        for headers in out:
            headers.append((headers[at][0], draw(SPOILED) or b"7"))
    return out


def canonical(headers: list[Header]) -> bool:
    """Whether `build_replay` keeps the dead letter's origin and origin timestamp as they are."""
    last = dict(headers)
    origin = last.get(contract.ORIGIN)
    if origin is None or not contract._is_coordinates(contract._text(origin)):
        return False
    if contract.ORIGIN_TIMESTAMP not in last:
        return True
    stamp = last[contract.ORIGIN_TIMESTAMP]
    return stamp is not None and re.fullmatch(rb"0|[1-9][0-9]{0,18}", stamp) is not None


@settings(max_examples=1500)
@given(batch=batches())
def test_a_uniform_batch_reads_as_fast_row_and_build_replay(batch: list[list[Header]]) -> None:
    rows = [fast_row(0, i, 0, b"v", headers) for i, headers in enumerate(batch)]
    lineage = uniform_lineage(batch)
    names = {tuple(name for name, _ in headers) for headers in batch}
    readable = None not in rows and len(names) == 1
    if readable and all(canonical(headers) for headers in batch):
        assert lineage is not None
    if lineage is None:
        return
    assert readable
    assert lineage.fingerprints == [row[7] for row in rows if row]
    assert lineage.failed_at == [row[4] for row in rows if row]
    assert lineage.replay_counts == [row[18] for row in rows if row]
    assert lineage.pipelines == [row[14] for row in rows if row]
    assert lineage.origins == [row[13] for row in rows if row]
    assert lineage.source_topics == [row[10] for row in rows if row]
    where = [f"orders.dlq/0/{i}" for i in range(len(batch))]
    expected = [
        contract.build_replay(headers, dead_letter=w, run_id="r-1")
        for headers, w in zip(batch, where, strict=True)
    ]
    assert lineage.copy_headers(where, "r-1") == expected


def test_an_origin_holding_a_newline_is_not_kept() -> None:
    """Two coordinates on two lines are no coordinates: `build_replay` drops such an origin,
    and neither batch reader keeps it (a column checked by one match counts its lines)."""
    headers = worker_headers([], 0, "orders/0/1", 5, None)
    spoiled = [
        (name, b"a/1/2\nb/3/4" if name == contract.ORIGIN else value) for name, value in headers
    ]
    expected = contract.build_replay(spoiled, dead_letter="orders.dlq/0/1", run_id="r-1")
    assert (contract.ORIGIN, b"a/1/2\nb/3/4") not in expected
    assert uniform_lineage([spoiled, headers]) is None
    got = replay_headers([spoiled], ["a/1/2\nb/3/4"], [0], ["orders.dlq/0/1"], "r-1")
    assert got == [expected]
