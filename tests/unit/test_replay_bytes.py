"""The replay's per-record fast paths write exactly the bytes the plain functions wrote: the
copy's headers (`contract.build_replay`, against its former composition of `lineage`,
`original_headers` and `parse_coordinates`, and the batch's `replay_headers` against
`build_replay`) over varied dead letters, Lazarus and foreign, well-formed and malformed; and the
plan lines read back (a regex where `json.loads` was)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import contract
from pipeline.core.contract import Failure, Header, Headers, SourceRecord, build_dead_letter
from pipeline.errors import Category
from reprocessor import plans
from reprocessor.deadletters import from_record
from reprocessor.ledger import Plan
from reprocessor.replay_headers import replay_headers


def reference_build_replay(
    headers: list[Header] | None, *, dead_letter: str, run_id: str
) -> Headers:
    """`build_replay` as it was before its fast path (commit 9eba7b9)."""
    contract.parse_coordinates(dead_letter)
    if not run_id:
        raise ValueError("a replay needs a run id")
    inherited = contract.lineage(headers)
    replayed = contract.original_headers(headers)
    if inherited.origin is not None:
        replayed.append((contract.ORIGIN, inherited.origin.encode("utf-8", errors="replace")))
        if inherited.origin_timestamp_ms is not None:
            origin_ms = str(inherited.origin_timestamp_ms).encode()
            replayed.append((contract.ORIGIN_TIMESTAMP, origin_ms))
    replayed += [
        (contract.REPLAY_COUNT, str((inherited.replay_count or 0) + 1).encode()),
        (contract.REPLAY_OF, dead_letter.encode("utf-8", errors="replace")),
        (contract.REPLAY_RUN, run_id.encode("utf-8", errors="replace")),
    ]
    return replayed


LINEAGE = (contract.ORIGIN, contract.ORIGIN_TIMESTAMP, contract.REPLAY_COUNT)
coordinates = st.one_of(
    st.from_regex(r"[A-Za-z0-9._-]{1,12}/[0-9]{1,4}/[0-9]{1,21}", fullmatch=True),
    st.text(max_size=30),  # malformed: no slashes, bad topic, signs, non-ASCII digits
    st.sampled_from(["a/1/2", "a/b/1/2", "a//1", "/1/2", "a/-1/2", "a/1/٣", "é/1/2", "a/1/2/"]),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "-", "007", "+3", " 1", "1_000", "٣", "9" * 21, "-" + "9" * 20]),
    st.text(max_size=8),
)
raw = st.one_of(
    st.none(),
    st.binary(max_size=12),
    st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"a/1/\xc3"]),
)


@st.composite
def header_lists(draw: st.DrawFn) -> list[Header]:
    """Original headers, any dlq headers (repeated, malformed, non-UTF-8, null) and foreign
    ones, interleaved in any order."""
    names = st.one_of(
        st.sampled_from([*LINEAGE, contract.VERSION, contract.REPLAY_OF, "dlq.x", "dlq."]),
        st.sampled_from(["trace", "dlqx", "Dlq.origin", "__connect.errors.topic", ""]),
        st.text(max_size=8),
    )
    values = st.one_of(
        raw,
        coordinates.map(lambda text: text.encode("utf-8", errors="replace")),
        numbers.map(lambda text: text.encode("utf-8", errors="replace")),
    )
    return draw(st.lists(st.tuples(names, values), max_size=12))


@settings(max_examples=800)
@given(
    headers=header_lists() | st.none(),
    dead_letter=coordinates,
    run_id=st.text(max_size=12),
)
def test_build_replay_writes_the_reference_bytes(
    headers: list[Header] | None, dead_letter: str, run_id: str
) -> None:
    try:
        expected: Headers | str = reference_build_replay(
            headers, dead_letter=dead_letter, run_id=run_id
        )
    except ValueError as exc:
        expected = str(exc)
    try:
        got: Headers | str = contract.build_replay(headers, dead_letter=dead_letter, run_id=run_id)
    except ValueError as exc:
        got = str(exc)
    assert got == expected


def worker_dead_letter(
    originals: list[Header], replays: int, origin: str | None, origin_ms: int, message: str
) -> Headers:
    """A dead letter's headers as the worker writes them, after `replays` earlier replays."""
    lineage: list[Header] = [(contract.REPLAY_COUNT, str(replays).encode())]
    if origin is not None:
        lineage += [
            (contract.ORIGIN, origin.encode("utf-8", errors="replace")),
            (contract.ORIGIN_TIMESTAMP, str(origin_ms).encode()),
        ]
    record = SourceRecord("orders", 2, 77, 1_000, b"k", b"v", (*originals, *lineage))
    failure = Failure(Category.VALIDATION, "E", message, 5_000, "orders-app")
    return contract.build_dead_letter(record, failure)


@settings(max_examples=300)
@given(
    originals=st.lists(st.tuples(st.sampled_from(["a", "trace", "b"]), raw), max_size=4),
    replays=st.integers(0, 2**63),
    origin=st.one_of(st.none(), coordinates),
    origin_ms=st.integers(-(2**63), 2**63),
    message=st.text(max_size=40),
)
def test_build_replay_of_a_lazarus_dead_letter_writes_the_reference_bytes(
    originals: list[Header], replays: int, origin: str | None, origin_ms: int, message: str
) -> None:
    """The common case: a dead letter as the worker writes it (after earlier replays)."""
    headers = worker_dead_letter(originals, replays, origin, origin_ms, message)
    for where in ("orders.dlq/0/5", "o/1/18446744073709551615"):
        expected = reference_build_replay(headers, dead_letter=where, run_id="r-1")
        assert contract.build_replay(headers, dead_letter=where, run_id="r-1") == expected


@pytest.mark.parametrize("bad", ["", "a/1", "a/x/1", "a b/1/2", "a/1/" + "9" * 21])
def test_build_replay_refuses_bad_coordinates_as_before(bad: str) -> None:
    with pytest.raises(ValueError) as new:
        contract.build_replay([], dead_letter=bad, run_id="r")
    with pytest.raises(ValueError) as old:
        reference_build_replay([], dead_letter=bad, run_id="r")
    assert str(new.value) == str(old.value)


@settings(max_examples=300)
@given(
    offset=st.integers(0, 2**63),
    value=st.none() | st.binary(max_size=8),
    hashed=st.booleans(),
    fingerprint=st.text(max_size=20) | st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
    failed_at=st.integers(-(2**63), 2**63),
)
def test_a_plan_line_reads_back_as_json_reads_it(
    tmp_path_factory: pytest.TempPathFactory,
    offset: int,
    value: bytes | None,
    hashed: bool,
    fingerprint: str,
    failed_at: int,
) -> None:
    """The plan's line reader (a regex for the lines `PlanWriter.add` writes without escapes)
    gives what `json.loads` of the line gives."""
    folder = tmp_path_factory.mktemp("plan")
    plan = Plan("r-1", "orders.dlq", 1, "ops", "to", "out", ())
    record = SourceRecord("orders", 0, 1, 1_000, b"k", value, ())
    why = Failure(Category.VALIDATION, "E", "bad", 5_000, "orders-app")
    dl = from_record("orders.dlq", 3, offset, 6_000, b"k", value, build_dead_letter(record, why))
    dl = replace(dl, fingerprint=fingerprint, failed_at_ms=failed_at)
    with plans.PlanWriter(folder, plan) as writer:
        writer.add(dl, value, "out", hashed=hashed)
    (line,) = (folder / "r-1" / "p3.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    data = json.loads(line)
    expected = plans.Entry(3, int(data["o"]), str(data["h"]), str(data["f"]), data["t"])
    assert list(plans.load(folder, "r-1").entries(3)) == [expected]


def fast_lineage(headers: list[Header]) -> tuple[str | None, int] | None:
    """(origin, replay count) as `index_rows.fast_rows` reads them (the last occurrence, UTF-8,
    a count of 1 to 20 ASCII digits); None for a dead letter it would not read."""
    last = dict(headers)
    origin, count = last.get(contract.ORIGIN), last.get(contract.REPLAY_COUNT)
    if origin is None or count is None or not 1 <= len(count) <= 20 or not count.isdigit():
        return None
    try:
        return origin.decode(), int(count)
    except UnicodeDecodeError:
        return None


@settings(max_examples=1500)
@given(
    batch=st.lists(header_lists(), max_size=6),
    where=st.lists(coordinates, min_size=6, max_size=6),
    run_id=st.text(min_size=1, max_size=12),
)
def test_replay_headers_write_the_bytes_of_build_replay(
    batch: list[list[Header]], where: list[str], run_id: str
) -> None:
    """The batch's copy headers are `build_replay`'s, record by record, whatever the headers
    hold (malformed origins and timestamps, repeated and foreign headers)."""
    read = [fast_lineage(headers) for headers in batch]
    kept = [(h, r, w) for h, r, w in zip(batch, read, where, strict=False) if r is not None]
    valid = [(h, r, w) for h, r, w in kept if contract._is_coordinates(w)]
    got = replay_headers(
        [h for h, _, _ in valid],
        [r[0] for _, r, _ in valid],
        [r[1] for _, r, _ in valid],
        [w for _, _, w in valid],
        run_id,
    )
    expected = [contract.build_replay(h, dead_letter=w, run_id=run_id) for h, _, w in valid]
    assert got == expected


@settings(max_examples=300)
@given(
    originals=st.lists(st.tuples(st.sampled_from(["a", "trace", "b"]), raw), max_size=4),
    replays=st.integers(0, 2**63),
    origin=st.one_of(st.none(), coordinates),
    origin_ms=st.integers(-(2**63), 2**63) | st.sampled_from([0, 7, 10**18, 10**19]),
)
def test_replay_headers_of_lazarus_dead_letters_write_the_bytes_of_build_replay(
    originals: list[Header], replays: int, origin: str | None, origin_ms: int
) -> None:
    """The common case: dead letters as the worker writes them (after earlier replays)."""
    headers = worker_dead_letter(originals, replays, origin, origin_ms, "bad")
    read = fast_lineage(headers)
    assert read is not None
    got = replay_headers([headers], [read[0]], [read[1]], ["orders.dlq/0/5"], "r-1")
    assert got == [contract.build_replay(headers, dead_letter="orders.dlq/0/5", run_id="r-1")]
