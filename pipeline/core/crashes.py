"""The crash-loop poison pill: a record that kills the worker process itself (a processor calling
`os._exit`, memory exhausted, a segfault in a C extension) must not crash-loop the group.

A member marks where it starts in the committed offset's metadata:
`lazarus.attempt=<offset>:<n>@<process>` (the n-th attempt from that offset, by this process).
Progress commits carry no metadata, so the mark survives only when the process died before
committing anything past it, or lost the partition before a commit landed (a broker or network
outage). A member that finds another process's mark on its committed offset treats the partition
as suspect: it processes it one record at a time, marking each record before routing it and
committing it after, so the next crash pins the exact offset. Its own mark (the partition lost
and regained by the same living process) is no death.
Once a record's mark says it was attempted `limit` times, it is dead-lettered as `crashed`, with
its original bytes, without being processed again. Pure: the worker does the committing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

TP = tuple[str, int]
PREFIX = "lazarus.attempt="
_MARK = re.compile(r"lazarus\.attempt=([0-9]{1,19}):([0-9]{1,9})(?:@([0-9a-f]{1,32}))?")


def mark(offset: int, attempt: int, process: str = "") -> str:
    return f"{PREFIX}{offset}:{attempt}" + (f"@{process}" if process else "")


def parse_mark(metadata: str) -> tuple[int, int] | None:
    """`(offset, attempt)` of a mark, None for any other metadata (never raises)."""
    found = _parse(metadata)
    return None if found is None else found[:2]


def _parse(metadata: str) -> tuple[int, int, str] | None:
    """`(offset, attempt, process)` of a mark (process '' for a mark of an older version)."""
    found = _MARK.fullmatch(metadata or "")
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2)), found.group(3) or ""


@dataclass(slots=True)
class Suspect:
    offset: int  # where the last process died, as far as its marks say
    attempts: int  # how many processes died there
    careful_left: int  # records still to process one at a time
    seen: bool = False  # a record of the partition was read since it was assigned


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
    process: str = field(default_factory=lambda: secrets.token_hex(8))
    """Who this process is in its marks: a member never takes its own mark for a death."""
    suspects: dict[TP, Suspect] = field(default_factory=dict)
    unmarked: set[TP] = field(default_factory=set)
    """Partitions without a committed offset, or whose start mark the coordinator refused:
    marked at their first record (`first_seen`), which waits while that is refused."""

    def assigned(self, tp: TP, committed_offset: int, metadata: str) -> str | None:
        """A partition arrived with this committed position. Returns the mark to commit on it
        before anything is processed (None when suspect, or without a committed offset)."""
        found = _parse(metadata)
        if found is not None and found[0] == committed_offset:
            _, attempt, process = found
            deaths = attempt - 1 if process == self.process else attempt
            if deaths > 0:
                self.suspects[tp] = Suspect(committed_offset, deaths, self.careful_records)
                return None  # `before` marks each record while the partition is suspect
        self.suspects.pop(tp, None)
        if committed_offset < 0:
            self.unmarked.add(tp)
            return None
        return mark(committed_offset, 1, self.process)

    def first_seen(self, tp: TP, offset: int) -> str:
        """The first record of a partition that had no committed offset: the mark to commit."""
        self.unmarked.discard(tp)
        return mark(offset, 1, self.process)

    def is_suspect(self, tp: TP) -> bool:
        return tp in self.suspects

    def before(self, tp: TP, offset: int) -> Verdict:
        """The next record of a suspect partition is at `offset`."""
        suspect = self.suspects[tp]
        if not suspect.seen:
            # The first record read from the committed offset is the one the last process died
            # on, wherever it is: offsets are not dense (a transactional input's commit markers,
            # aborted records), and the committed offset may be a marker's.
            suspect.seen = True
            suspect.offset = max(suspect.offset, offset)
        attempts = suspect.attempts if offset == suspect.offset else 0
        if attempts >= self.limit:
            return Verdict(True, attempts, "")
        return Verdict(False, attempts, mark(offset, attempts + 1, self.process))

    def after(self, tp: TP) -> None:
        """A record of a suspect partition is routed and committed."""
        suspect = self.suspects.get(tp)
        if suspect is None:
            return
        suspect.careful_left -= 1
        if suspect.careful_left <= 0:
            del self.suspects[tp]

    def left_behind(self, tp: TP, offset: int) -> str:
        """The metadata a clean stop (or a revoke) commits at `offset`, where this member's mark
        stands with nothing committed past it: none, unless that is the suspect record's mark
        and the record was not handled. Its deaths stay then, in a mark no process owns (every
        reader counts them all, this process's own attempt not among them): else a record that
        kills every other run would never reach `limit`."""
        suspect = self.suspects.get(tp)
        if suspect is None or suspect.offset != offset or suspect.attempts == 0:
            return ""
        return mark(offset, suspect.attempts)

    def revoked(self, tp: TP) -> None:
        self.suspects.pop(tp, None)
        self.unmarked.discard(tp)
