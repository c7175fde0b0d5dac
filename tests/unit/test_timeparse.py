"""reprocessor/timeparse.py: --since/--until values and ages."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprocessor.timeparse import format_age, parse_when

NOW = 1_760_000_000_000
S, M, H, DAY = 1_000, 60_000, 3_600_000, 86_400_000


def epoch_ms(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> int:
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1000


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30s", 30 * S),
        ("15m", 15 * M),
        ("2h", 2 * H),
        ("7d", 7 * DAY),
        ("2w", 14 * DAY),
        ("1h30m", H + 30 * M),
        ("1d2h3m4s", DAY + 2 * H + 3 * M + 4 * S),
        (" 10M ", 10 * M),
        ("0s", 0),
    ],
)
def test_durations_count_back_from_now(text: str, ago: int) -> None:
    assert parse_when(text, NOW) == NOW - ago


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-31", epoch_ms(2025, 1, 31)),
        ("2025-01-31T12:00", epoch_ms(2025, 1, 31, 12)),
        ("2025-01-31 12:00:05", epoch_ms(2025, 1, 31, 12, 0, 5)),
        ("2025-01-31T12:00:00Z", epoch_ms(2025, 1, 31, 12)),
        ("2025-01-31T12:00:00+02:00", epoch_ms(2025, 1, 31, 10)),
        ("2025-01-31T12:00:00.250-01:00", epoch_ms(2025, 1, 31, 13) + 250),
        ("1700000000000", 1_700_000_000_000),
        ("100000000000", 100_000_000_000),
    ],
)
def test_timestamps(text: str, expected: int) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty time"),
        ("   ", "empty time"),
        ("30", "'30' is ambiguous"),
        ("1700000000", "is ambiguous: give epoch milliseconds"),
        ("1.5h", "is not a duration like 30s"),
        ("10x", "is not a duration"),
        ("h", "is not a duration"),
        ("1m1h", "is not a duration"),
        ("yesterday", "is not a duration"),
        ("2025-13-01", "is not a duration"),
        ("-5m", "is not a duration"),
    ],
)
def test_anything_else_is_a_one_line_value_error(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_when(text, NOW)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@given(st.integers(0, 10**6), st.sampled_from([("s", S), ("m", M), ("h", H), ("d", DAY)]))
def test_any_single_unit_duration(amount: int, unit: tuple[str, int]) -> None:
    assert parse_when(f"{amount}{unit[0]}", NOW) == NOW - amount * unit[1]


@given(st.datetimes(min_value=dt.datetime(1975, 1, 1), max_value=dt.datetime(2200, 1, 1)))
def test_naive_iso_times_are_utc(moment: dt.datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    expected = (
        moment.replace(tzinfo=dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ) // dt.timedelta(milliseconds=1)
    assert parse_when(moment.isoformat(), NOW) == expected


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (999, "0s"),
        (45 * S, "45s"),
        (12 * M + 5 * S, "12m"),
        (2 * H, "2h"),
        (2 * H + 5 * M, "2h 5m"),
        (3 * DAY + 4 * H + 59 * M, "3d 4h"),
        (3 * DAY + 30 * M, "3d"),
        (400 * DAY, "400d"),
        (-5 * S, "0s"),
    ],
)
def test_format_age(ms: int, text: str) -> None:
    assert format_age(ms) == text
