"""What `dlq fix --summary` prints, counted as the preview streams: how many fixed records pass,
fail or were not validated, how many records each change touches with its first examples, and
how often each failure reason occurs. Nothing of a record is kept past its `add` (the first
`FIRST` excepted, which a preview of at most that many shows in full), so memory grows with
the number of distinct changes and reasons, never with the selection."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from reprocessor.deadletters import DeadLetter
from reprocessor.payloads import Fixed

FIRST = 10
"""Previews of at most this many records show every record's diff instead of the summary."""
EXAMPLES = 2
"""Distinct changed values shown per change."""


@dataclass
class FixTally:
    """The summary of a fix preview, one record at a time (`add`)."""

    records: int = 0
    passed: int = 0
    unchecked: int = 0
    failed: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    """Records per change (a diff line's path part, `~ qty`), in first-seen order."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """The first EXAMPLES distinct values of each change (a diff line's part after `: `)."""
    reasons: dict[str, int] = field(default_factory=dict)
    first: list[tuple[DeadLetter, Fixed]] = field(default_factory=list)
    """The first FIRST + 1 records, without payloads: enough to tell "at most FIRST"."""

    def add(self, dl: DeadLetter, fixed: Fixed) -> None:
        self.records += 1
        if fixed.error is not None:
            self.failed += 1
            self.reasons[fixed.error] = self.reasons.get(fixed.error, 0) + 1
        elif fixed.checked:
            self.passed += 1
        else:
            self.unchecked += 1
        self.add_diff(fixed.diff)
        if len(self.first) <= FIRST:
            slim = replace(dl, key=None, value=None, headers=())
            self.first.append((slim, replace(fixed, before=None, after=None, value=None)))

    def add_diff(self, lines: list[str], times: int = 1) -> None:
        """Count `lines` (one record's diff) `times` records."""
        changes, examples = self.changes, self.examples
        for line in lines:
            where, _, what = line.partition(": ")
            changes[where] = changes.get(where, 0) + times
            seen = examples.setdefault(where, [])
            if what and len(seen) < EXAMPLES and what not in seen:
                seen.append(what)
