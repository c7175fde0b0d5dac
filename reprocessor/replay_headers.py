"""The headers of a batch of replayed copies, byte for byte what `contract.build_replay` writes for
each, at a fraction of its cost per record.

A replay writes one copy per dead letter, so `build_replay` ran once per record and was the
largest piece of Python left in it. Over a batch of well-formed Lazarus dead letters
(`index_rows.fast_rows` read their lineage: origin and replay count) the copy's headers are
assembled here from what that reading already checked: the original (non-`dlq.`) headers are
picked out by a chain of C-level maps, the run's header tuple is built once, and a canonical
origin timestamp is kept as the bytes it was. Any record outside that common shape (an origin
that is not `topic/partition/offset`, an origin timestamp that is not canonical decimal digits)
is handed to `build_replay` itself, so the bytes never differ; the unit tests compare the two
over generated headers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import itemgetter

from pipeline.core.contract import (
    ORIGIN,
    ORIGIN_TIMESTAMP,
    PREFIX,
    REPLAY_COUNT,
    REPLAY_OF,
    REPLAY_RUN,
    Header,
    build_replay,
)

_COORDINATE = r"[A-Za-z0-9._-]{1,249}/[0-9]{1,20}/[0-9]{1,20}"
_COORDINATES = re.compile(_COORDINATE)
"""What `build_replay` accepts as `dlq.origin`: a topic name, a partition and an offset."""
_ALL_COORDINATES = re.compile(rf"(?:{_COORDINATE}\n)*{_COORDINATE}")
"""Lines of `_COORDINATES`: a whole column checked by one match."""
_CANONICAL = re.compile(rb"0|[1-9][0-9]{0,18}")
"""A timestamp whose decimal digits `build_replay` writes back unchanged (no sign, no leading
zero, at most 19 digits)."""
_NAME = itemgetter(0)
_DLQ = "\0" + PREFIX
_STAMP = f"\0{ORIGIN_TIMESTAMP}\0"


def replay_headers(
    headers: Sequence[Sequence[Header]],
    origins: Sequence[str | None],
    replay_counts: Sequence[int],
    dead_letters: Sequence[str],
    run_id: str,
) -> list[list[Header]]:
    """`build_replay(headers[i], dead_letter=dead_letters[i], run_id=run_id)` for every `i`,
    given each dead letter's `dlq.origin` (its last occurrence, decoded) and replay count as
    `index_rows.fast_rows` read them. Raises ValueError as `build_replay` does: when one of
    `dead_letters` is not `topic/partition/offset`, or `run_id` is empty."""
    if not dead_letters:
        return []
    if not _every_line(dead_letters):
        return [
            build_replay(items, dead_letter=where, run_id=run_id)
            for items, where in zip(headers, dead_letters, strict=True)
        ]
    if not run_id:
        raise ValueError("a replay needs a run id")
    run = (REPLAY_RUN, run_id.encode("utf-8", errors="replace"))
    texts = [origin or "" for origin in origins]
    valid = _every_line(texts)
    out: list[list[Header]] = []
    rows = zip(headers, texts, replay_counts, dead_letters, strict=True)
    for items, origin, count, where in rows:
        names = "\0" + "\0".join(map(_NAME, items)) + "\0"
        if names.count("\0") != len(items) + 1:  # a NUL inside a name: no shortcut
            out.append(build_replay(items, dead_letter=where, run_id=run_id))
            continue
        copy = _originals(items, names)
        if valid or _COORDINATES.fullmatch(origin):
            at = names.rfind(_STAMP)  # its last occurrence, as `dict(items)` keeps
            stamp = None if at < 0 else items[names.count("\0", 0, at)][1]
            if stamp is not None and not _CANONICAL.fullmatch(stamp):
                out.append(build_replay(items, dead_letter=where, run_id=run_id))
                continue
            copy.append((ORIGIN, origin.encode()))
            if stamp is not None:
                copy.append((ORIGIN_TIMESTAMP, stamp))
        copy += ((REPLAY_COUNT, str(count + 1).encode()), (REPLAY_OF, where.encode()), run)
        out.append(copy)
    return out


def _every_line(texts: Sequence[str]) -> bool:
    """Whether every text is coordinates: one match of `_ALL_COORDINATES` over the texts
    joined by newlines, which must also count one line per text (a text holding a newline,
    such as two coordinates, is none)."""
    joined = "\n".join(texts)
    return joined.count("\n") == len(texts) - 1 and _ALL_COORDINATES.fullmatch(joined) is not None


def _originals(items: Sequence[Header], names: str) -> list[Header]:
    """The headers that are not `dlq.` ones, in order, given their `names` joined and
    surrounded by NULs. A dead letter as the worker writes it holds its originals, then the
    dlq block: when every header from the first `dlq.` one on is one too, the originals are
    the slice before it, found by a few searches of `names` instead of a test per header."""
    first = names.find(_DLQ)
    if first < 0:
        return list(items)
    before = names.count("\0", 0, first)
    if names.count(_DLQ, first) == len(items) - before:
        return list(items[:before])
    return [header for header in items if not header[0].startswith(PREFIX)]
