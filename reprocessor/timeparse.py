"""`--since` / `--until` values and ages: pure functions of the text and an injected `now`.

Accepted: a duration meaning "that long before now" (`30s`, `15m`, `2h`, `7d`, `2w`, `1h30m`:
units s, m, h, d, w, largest first, each at most once); an ISO-8601 date or date-time
(`2025-01-31`, `2025-01-31T12:00`, `2025-01-31T12:00:00+02:00`, `...Z`; a naive one is UTC);
or epoch milliseconds (at least 12 digits, so epoch seconds and bare numbers are refused rather
than read as a moment in January 1970).
"""

from __future__ import annotations

import datetime as dt
import re

MIN_EPOCH_MS_DIGITS = 12
_UNITS_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000}
_DURATION = re.compile(r"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_EPOCH = re.compile(r"[0-9]+")
_ONE_MS = dt.timedelta(milliseconds=1)
_EPOCH_START = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HELP = "a duration like 30s, 15m, 2h, 7d or 1h30m, an ISO-8601 time, or epoch milliseconds"


def parse_when(text: str, now_ms: int) -> int:
    """Epoch milliseconds for `text` (see the module docstring); durations count back from
    `now_ms`. Raises ValueError with a one-line message for anything else."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"empty time: give {_HELP}")
    duration = _duration_ms(stripped.lower())
    if duration is not None:
        return now_ms - duration
    if _EPOCH.fullmatch(stripped):
        if len(stripped) < MIN_EPOCH_MS_DIGITS:
            raise ValueError(
                f"{stripped!r} is ambiguous: give epoch milliseconds (13 digits today), "
                "or add a unit (30s, 15m)"
            )
        return int(stripped)
    return _iso_ms(stripped)


def _duration_ms(text: str) -> int | None:
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        return None
    amounts = [int(group or 0) for group in match.groups()]
    return sum(amount * unit for amount, unit in zip(amounts, _UNITS_MS.values(), strict=True))


def _iso_ms(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {_HELP}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH_START) // _ONE_MS


def format_age(ms: int) -> str:
    """A short age: `3d 4h`, `2h 5m`, `12m`, `45s` (two units at most, zeros left out); a
    negative age (clock skew) shows as `0s`."""
    seconds = max(ms, 0) // 1000
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"
