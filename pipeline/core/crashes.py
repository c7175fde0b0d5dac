"""The crash-loop poison pill: a record that kills the worker process itself (a processor calling
`os._exit`, memory exhausted, a segfault in a C extension) must not crash-loop the group.

A member marks where it starts in the committed offset's metadata: `lazarus.attempt=<offset>:<n>`
(the n-th attempt from that offset). Progress commits carry no metadata, so the mark survives only
when the process died before committing anything past it. A member that finds a mark on its
committed offset treats the partition as suspect: it processes it one record at a time, marking
each record before routing it and committing it after, so the next crash pins the exact offset.
Once a record's mark says it was attempted `limit` times, it is dead-lettered as `crashed`, with
its original bytes, without being processed again. Pure: the worker does the committing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TP = tuple[str, int]
PREFIX = "lazarus.attempt="
_MARK = re.compile(r"lazarus\.attempt=([0-9]{1,19}):([0-9]{1,9})")


def mark(offset: int, attempt: int) -> str:
    return f"{PREFIX}{offset}:{attempt}"


def parse_mark(metadata: str) -> tuple[int, int] | None:
    """`(offset, attempt)` of a mark, None for any other metadata (never raises)."""
    found = _MARK.fullmatch(metadata or "")
    return None if found is None else (int(found.group(1)), int(found.group(2)))


@dataclass(slots=True)
class Suspect:
    offset: int  # where the last process died, as far as its marks say
    attempts: int  # how many processes died there
    careful_left: int  # records still to process one at a time


@dataclass(frozen=True, slots=True)
class Verdict:
    """For one record of a suspect partition: dead-letter it as `crashed` (`attempts` deaths),
    or write `metadata` on its offset before routing it."""

    crashed: bool
    attempts: int
    metadata: str


@dataclass
class CrashGuard:
    """Which partitions are suspect, and what to do with their next record."""

    limit: int = 3
    careful_records: int = 500
    suspects: dict[TP, Suspect] = field(default_factory=dict)
    unmarked: set[TP] = field(default_factory=set)
    """Partitions without a committed offset: marked at their first record (`first_seen`)."""

    def assigned(self, tp: TP, committed_offset: int, metadata: str) -> str | None:
        """A partition arrived with this committed position. Returns the mark to commit on it
        before anything is processed (None when suspect, or without a committed offset)."""
        found = parse_mark(metadata)
        if found is not None and found[0] == committed_offset:
            self.suspects[tp] = Suspect(committed_offset, found[1], self.careful_records)
            return None  # `before` marks each record while the partition is suspect
        self.suspects.pop(tp, None)
        if committed_offset < 0:
            self.unmarked.add(tp)
            return None
        return mark(committed_offset, 1)

    def first_seen(self, tp: TP, offset: int) -> str:
        """The first record of a partition that had no committed offset: the mark to commit."""
        self.unmarked.discard(tp)
        return mark(offset, 1)

    def is_suspect(self, tp: TP) -> bool:
        return tp in self.suspects

    def before(self, tp: TP, offset: int) -> Verdict:
        """The next record of a suspect partition is at `offset`."""
        suspect = self.suspects[tp]
        attempts = suspect.attempts if offset == suspect.offset else 0
        if attempts >= self.limit:
            return Verdict(True, attempts, "")
        return Verdict(False, attempts, mark(offset, attempts + 1))

    def after(self, tp: TP) -> None:
        """A record of a suspect partition is routed and committed."""
        suspect = self.suspects.get(tp)
        if suspect is None:
            return
        suspect.careful_left -= 1
        if suspect.careful_left <= 0:
            del self.suspects[tp]

    def revoked(self, tp: TP) -> None:
        self.suspects.pop(tp, None)
        self.unmarked.discard(tp)
