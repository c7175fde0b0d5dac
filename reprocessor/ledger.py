"""The ledger: which dead letters are decided (replayed or discarded), by whom, when and how.

The ledger topic `<dlq-topic>.ledger` is compacted and keyed by the dead letter's
`dlq-topic/partition/offset`; its latest record per key is the decision (a null value, a
tombstone, withdraws it). An entry decides a dead letter only when it is not stale: an entry whose
`failed_at` or fingerprint differ from the dead letter at its coordinates was left by a deleted
and recreated DLQ topic (offsets restart) and is ignored, as `ledger_codec.is_stale` says. A dead
letter with no valid entry is unresolved; the DLQ's depth is the count of those.

A replay run's frozen plan is kept beside it (`Plan`, a JSON file in the state folder): the
ledger says what was decided, the plan what a run set out to decide, so `--resume RUN` continues
exactly that selection. This module never talks to Kafka.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from json.encoder import encode_basestring
from pathlib import Path

from pipeline.core.contract import DeadLetterMeta, SourceRecord
from pipeline.core.ledger_codec import (
    LedgerEntry,
    decode_ledger_entry,
    encode_ledger_entry,
    is_stale,
    ledger_key,
)
from pipeline.errors import ConfigError
from reprocessor.deadletters import DeadLetter, ReplayState

log = logging.getLogger("lazarus.dlq.ledger")


@dataclass(frozen=True, slots=True)
class Decision:
    """A dead letter's state and the ledger entry that decided it (None when unresolved)."""

    state: ReplayState
    entry: LedgerEntry | None = None


UNRESOLVED = Decision(ReplayState.UNRESOLVED)


@dataclass
class Ledger:
    """The decisions of one DLQ topic, as read from its ledger topic.

    `malformed` counts records that could not be read (kept out, never fatal: a ledger with one
    bad record must not block every replay); `stale` holds the keys whose entry `decision()`
    found stale (left by a deleted and recreated DLQ topic)."""

    dlq_topic: str
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    malformed: int = 0
    stale: set[str] = field(default_factory=set)

    @classmethod
    def from_records(cls, dlq_topic: str, records: Iterable[SourceRecord]) -> Ledger:
        ledger = cls(dlq_topic)
        for record in records:
            ledger.add(record.key, record.value)
        return ledger

    def add(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one ledger record: the latest per key wins; a tombstone removes the key."""
        try:
            text = (key or b"").decode("utf-8")
        except UnicodeDecodeError:
            self.malformed += 1
            return
        if value is None:
            self.entries.pop(text, None)
            return
        try:
            self.entries[text] = decode_ledger_entry(value)
        except ValueError as exc:
            self.malformed += 1
            log.warning("ledger record %s ignored: %s", text, exc)

    def record(self, coordinates: str, entry: LedgerEntry) -> None:
        """Remember a decision this process just committed."""
        self.entries[coordinates] = entry

    def decision(self, dl: DeadLetter) -> Decision:
        """The dead letter's state: decided by a valid entry, else unresolved."""
        entry = self.entries.get(dl.coordinates)
        if entry is None:
            return UNRESOLVED
        if is_stale(entry, identity(dl)):
            self.stale.add(dl.coordinates)
            return UNRESOLVED
        state = ReplayState.REPLAYED if entry.action == "replayed" else ReplayState.DISCARDED
        return Decision(state, entry)

    def decided(self, coordinates: str, seen_ms: int, fingerprint: str) -> bool:
        """`decision(dl).entry is not None` for the dead letter at `coordinates` with this
        failure time and fingerprint (what `identity` reads), without the dead letter."""
        entry = self.entries.get(coordinates)
        if entry is None:
            return False
        if is_stale(entry, DeadLetterMeta(failed_at_ms=seen_ms, fingerprint=fingerprint)):
            self.stale.add(coordinates)
            return False
        return True

    def __len__(self) -> int:
        return len(self.entries)


def identity(dl: DeadLetter) -> DeadLetterMeta:
    """What a ledger entry records about the dead letter it decides: its failure time (the
    record's timestamp for foreign dialects, which carry none) and its fingerprint."""
    return DeadLetterMeta(failed_at_ms=dl.seen_ms, fingerprint=dl.fingerprint)


def replayed_entry(
    dl: DeadLetter, *, run: str, operator: str, target: str, at_ms: int, fix: Sequence[str] = ()
) -> LedgerEntry:
    """The entry of a replay whose copy landed at `target` (`topic/partition/offset`)."""
    return LedgerEntry(
        action="replayed",
        at=at_ms,
        operator=operator,
        run=run,
        failed_at=dl.seen_ms,
        fingerprint=dl.fingerprint,
        fix=tuple(fix),
        target=target,
    )


_FAILED_AT = 8_070_450_532_247_928_831
_FINGERPRINT = "lazarus-sentinel-fingerprint"
_TARGET = "lazarus-sentinel-target/0/0"
"""Placeholders for the per-record fields of a chunk's ledger entries: never a real time,
fingerprint or target."""


@dataclass(frozen=True, slots=True)
class ReplayedRecords:
    """The ledger records of one chunk's replays (same run, operator, time and fix), as
    `ledger_record(dl, replayed_entry(...))` makes them, at a fraction of the cost: the codec
    encodes the common fields once, around placeholders that each record fills with its dead
    letter's failure time and fingerprint and its copy's target (JSON-escaped as the codec
    escapes them). When a placeholder's text also occurs elsewhere (an operator named like
    it), every record is encoded by the codec instead."""

    run: str
    operator: str
    at_ms: int
    fix: tuple[str, ...]

    def records(
        self, letters: Sequence[DeadLetter], targets: Sequence[str]
    ) -> list[tuple[bytes, bytes]]:
        """(key, value) per dead letter; `targets` are valid `topic/partition/offset`s (from
        delivery reports)."""
        parts = self._parts()
        if parts is None:
            return [
                ledger_record(dl, self.entry(dl, target))
                for dl, target in zip(letters, targets, strict=True)
            ]
        (a, b, c), (t0, t1, t2, t3) = parts
        records = []
        for dl, target in zip(letters, targets, strict=True):
            fill = (str(dl.seen_ms), encode_basestring(dl.fingerprint), encode_basestring(target))
            value = f"{t0}{fill[a]}{t1}{fill[b]}{t2}{fill[c]}{t3}".encode()
            records.append((ledger_key(dl.topic, dl.partition, dl.offset), value))
        return records

    def values(
        self, seen_ms: Sequence[int], fingerprints: Sequence[str], targets: Sequence[str]
    ) -> list[bytes]:
        """The ledger values `records` makes, from the chunk's columns: each dead letter's
        failure time and fingerprint and its copy's target."""
        parts = self._parts()
        if parts is None:
            return [
                encode_ledger_entry(self._entry_of(seen, fingerprint, target))
                for seen, fingerprint, target in zip(seen_ms, fingerprints, targets, strict=True)
            ]
        (a, b, c), (t0, t1, t2, t3) = parts
        text = encode_basestring
        return [
            f"{t0}{fill[a]}{t1}{fill[b]}{t2}{fill[c]}{t3}".encode()
            for fill in zip(
                map(str, seen_ms), map(text, fingerprints), map(text, targets), strict=True
            )
        ]

    def _entry_of(self, seen_ms: int, fingerprint: str, target: str) -> LedgerEntry:
        return LedgerEntry(
            "replayed", self.at_ms, self.operator, self.run, seen_ms, fingerprint,
            fix=self.fix, target=target,
        )  # fmt: skip

    def entry(self, dl: DeadLetter, target: str) -> LedgerEntry:
        return replayed_entry(
            dl, run=self.run, operator=self.operator, target=target, at_ms=self.at_ms, fix=self.fix
        )

    def _parts(self) -> tuple[tuple[int, int, int], tuple[str, str, str, str]] | None:
        """The order of the three placeholders in the encoded template and the text around
        them; None when a placeholder is not found exactly once."""
        template = LedgerEntry(
            "replayed", self.at_ms, self.operator, self.run, _FAILED_AT, _FINGERPRINT,
            fix=self.fix, target=_TARGET,
        )  # fmt: skip
        text = encode_ledger_entry(template).decode()
        tokens = (str(_FAILED_AT), encode_basestring(_FINGERPRINT), encode_basestring(_TARGET))
        if any(text.count(token) != 1 for token in tokens):
            return None
        order = sorted(range(3), key=lambda i: text.index(tokens[i]))
        texts, rest = [], text
        for i in order:
            before, _, rest = rest.partition(tokens[i])
            texts.append(before)
        return (order[0], order[1], order[2]), (texts[0], texts[1], texts[2], rest)


def discarded_entry(
    dl: DeadLetter, *, run: str, operator: str, reason: str, at_ms: int
) -> LedgerEntry:
    """The entry of a discard; raises ValueError when `reason` is empty."""
    return LedgerEntry(
        action="discarded",
        at=at_ms,
        operator=operator,
        run=run,
        failed_at=dl.seen_ms,
        fingerprint=dl.fingerprint,
        reason=reason,
    )


def ledger_record(dl: DeadLetter, entry: LedgerEntry) -> tuple[bytes, bytes]:
    """(key, value) of the ledger record for `entry`."""
    return ledger_key(dl.topic, dl.partition, dl.offset), encode_ledger_entry(entry)


def operator_name(explicit: str | None, configured: str | None = None) -> str:
    """Who decides: `--operator`, else the configured `reprocessor.operator`, else the OS user."""
    if explicit:
        return explicit
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


STATE_ENV = "LAZARUS_STATE_DIR"
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What a replay run set out to do, resolved once at its start: the dead letters' DLQ
    coordinates in replay order, the target and the fix. Never changed afterwards."""

    run: str
    dlq_topic: str
    created_ms: int
    operator: str
    target_mode: str
    target_topic: str | None
    coordinates: tuple[str, ...]
    fix: tuple[tuple[str, str], ...] = ()
    fix_with: str | None = None
    force: bool = False
    where: str = ""
    keep_foreign_headers: bool = False
    selected: int = 0
    refused: int = 0
    cluster: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Raises ValueError when `text` is not a plan."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for name, value in data.items():
            kinds = _PLAN_FIELDS.get(name)
            if kinds is None:
                raise ValueError(f"unknown field {name!r}")
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"{name} is a {type(value).__name__}, not what a plan holds")
        if data.get("target_mode", "") not in _TARGET_MODES:
            raise ValueError(f"target_mode {data['target_mode']!r} is not one of {_TARGET_MODES}")
        coordinates = data.get("coordinates", ())
        fix = data.get("fix", ())
        if not all(isinstance(c, str) for c in coordinates) or not all(
            isinstance(op, list) and len(op) == 2 and all(isinstance(x, str) for x in op)
            for op in fix
        ):
            raise ValueError("coordinates must be strings and fix [kind, argument] pairs")
        data["coordinates"] = tuple(coordinates)
        data["fix"] = tuple((kind, arg) for kind, arg in fix)
        return cls(**data)


_PLAN_FIELDS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("run", "dlq_topic", "operator", "target_mode", "where", "cluster"), (str,)),
    **dict.fromkeys(("target_topic", "fix_with"), (str, type(None))),
    **dict.fromkeys(("created_ms", "selected", "refused"), (int,)),
    **dict.fromkeys(("force", "keep_foreign_headers"), (bool,)),
    **dict.fromkeys(("coordinates", "fix"), (list,)),
}
"""The JSON types of `Plan.to_json`'s fields: a plan.json edited by hand into something else is
refused when it is read (exit 2), not found out half-way through a replay."""
_TARGET_MODES = ("", "redrive", "source", "to")
"""`Plan.target_mode`: a `replay.TargetMode` value, or "" for a saved preview without one."""


def new_run_id(now_ms: int | None = None) -> str:
    """`r-20250131-120000-1a2b3c`: sortable by start time, unique by its random tail."""
    seconds = time.time() if now_ms is None else now_ms / 1000
    return f"r-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(seconds))}-{secrets.token_hex(3)}"


def state_dir(explicit: Path | None = None) -> Path:
    """Where plans are kept: `--state-dir`, else $LAZARUS_STATE_DIR, else
    $XDG_STATE_HOME/lazarus, else ~/.local/state/lazarus."""
    if explicit is not None:
        return explicit
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lazarus"


def save_plan(plan: Plan, folder: Path) -> Path:
    """Write the plan to `<folder>/runs/<run>.json` (atomically: a crash leaves no half file)."""
    path = folder / "runs" / f"{plan.run}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(plan.to_json(), encoding="utf-8")
    partial.replace(path)
    return path


def load_plan(run: str, folder: Path) -> Plan:
    """The stored plan of `run`; ConfigError (exit 2) when there is none or it is unreadable."""
    if not _RUN_ID.fullmatch(run):
        raise ConfigError(f"{run!r} is not a run id")
    path = folder / "runs" / f"{run}.json"
    try:
        return Plan.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no stored plan for run {run} in {path.parent}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the plan of run {run} ({path}) is unreadable: {exc}") from exc
