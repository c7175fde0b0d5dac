"""Stored plans: what a replay (or a saved `dlq fix` preview) selected, on disk, so that a replay
streams in bounded memory and replays exactly what was previewed.

A plan lives in `<state>/runs/<cluster id>/<run>/` (plans of different clusters never mix):

- `plan.json`: the `ledger.Plan` header (DLQ topic, target, fix, who, when, counts);
- `p<partition>.jsonl`: one line per selected dead letter of that partition, in offset order,
  `{"o": offset, "h": sha256 of the value to replay (fixed, when there is a fix), "f":
  fingerprint, "t": failure time}`: what `dlq replay --plan` checks again before it writes, so a
  dead letter that changed since the preview (a recreated topic, a different fix function) is
  refused instead of replayed;
- `refused.jsonl`: `{"c": coordinates, "r": reason}` of the selected dead letters refused at
  planning time.

Lines are written as the selection is read and read back partition by partition, so neither the
plan nor the replay holds the selection in memory. This module never talks to Kafka.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

from pipeline.errors import ConfigError
from reprocessor.deadletters import DeadLetter
from reprocessor.ledger import Plan
from reprocessor.replay import Refused

SHOWN_REFUSALS = 1000
"""Refusals a summary keeps in memory for display; the plan's file keeps all of them."""
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_PARTITION_FILE = re.compile(r"p([0-9]+)\.jsonl")
_INT = r"(-?(?:0|[1-9][0-9]*))"  # what JSON calls an integer, no more
_PLAN_LINE = re.compile(
    rf'\{{"o":{_INT},"h":"([0-9a-z]*)","f":"([0-9A-Za-z._-]*)","t":{_INT}\}}\n?'
)
"""A plan line as `PlanWriter.add` writes it, when no field needs a JSON escape: read with one
regex match instead of `json.loads` (a replay reads one per record). Anything else (an escaped
fingerprint, an edited file) is read by `json.loads`, which gives the same values."""
_PLAN_LINES = re.compile(
    rf'^\{{"o":{_INT},"h":"([0-9a-z]*)","f":"([0-9A-Za-z._-]*)","t":{_INT}\}}$', re.MULTILINE
)
"""`_PLAN_LINE` over a block of lines at once (one match per line, or the block is read line
by line)."""
MAX_OFFSET = 2**63 - 1
_FINE = r'\{"o":(?:0|[1-9][0-9]{0,17}),"h":"(?:[0-9a-f]{64}|null|)","f":"[0-9A-Za-z._-]*","t":'
_FINE_LINES = re.compile(rf"(?:{_FINE}-?(?:0|[1-9][0-9]*)\}}\n)*")
"""Plan lines as `PlanWriter.add` writes them whose offset (at most 18 digits) and value hash
need no closer look: `StoredPlan.check` matches a block of them at once (some 5x faster than
parsing each line); a block with any other line is read line by line for the first wrong one."""
_DIGEST = re.compile(r"[0-9a-f]{64}|null|")
"""A plan line's value hash: sha256 hex, `null` (a tombstone), or empty (not read)."""
BLOCK = 2048
"""Plan lines read at once by `StoredPlan.blocks`."""


def value_hash(value: bytes | None) -> str:
    """sha256 hex of a value to replay; `null` for a tombstone."""
    return "null" if value is None else hashlib.sha256(value).hexdigest()


def same(seen: tuple[str, str, int], value: bytes | None, fingerprint: str, seen_ms: int) -> bool:
    """`Entry.same` for a plan line that saw `seen` (value sha256, fingerprint, failure time)
    and a dead letter with this fingerprint and failure time, to be replayed with `value`."""
    digest, planned_fingerprint, planned_ms = seen
    return (
        (not digest or digest == value_hash(value))
        and fingerprint == planned_fingerprint
        and seen_ms == planned_ms
    )


def runs_folder(state: Path, cluster_id: str) -> Path:
    """Where one cluster's plans live: `<state>/runs/<cluster id>`."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in cluster_id) or "unknown"
    return state / "runs" / safe


@dataclass(frozen=True, slots=True)
class Entry:
    """One planned dead letter: where it is and what the plan saw there."""

    partition: int
    offset: int
    value_sha256: str
    fingerprint: str
    failed_at_ms: int

    def same(self, dl: DeadLetter, value: bytes | None) -> bool:
        """Whether `dl`, about to be replayed with `value`, is what the plan saw. A plan made
        from the index without a fix has no value hash (the records were not read): the
        failure time and fingerprint identify the dead letter then."""
        return same(
            (self.value_sha256, self.fingerprint, self.failed_at_ms),
            value,
            dl.fingerprint,
            dl.seen_ms,
        )

    def letter(self, topic: str) -> DeadLetter:
        """The planned dead letter as far as the ledger knows it (coordinates, failure time,
        fingerprint): enough to check and write its ledger entry without reading it again."""
        return DeadLetter(
            topic=topic, partition=self.partition, offset=self.offset,
            timestamp_ms=self.failed_at_ms, key=None, value=None, headers=(), dialect="",
            meta=None, foreign=None, source_topic=None, source_partition=None,
            source_offset=None, origin=None, category=None, error_type=None, message=None,
            stacktrace=None, fingerprint=self.fingerprint, attempts=None,
            failed_at_ms=self.failed_at_ms, pipeline=None, replay_count=0, problems=(),
        )  # fmt: skip


class Subject(Protocol):
    """What a plan line or a refusal records of a selected dead letter: a `DeadLetter` (read
    from the topic), or an index row as the selection sees it (`index_rows.RowView`), which
    spares planning a `DeadLetter` per row."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def seen_ms(self) -> int: ...
    @property
    def coordinates(self) -> str: ...
    @property
    def dialect(self) -> str: ...


@dataclass
class Summary:
    """What a plan holds: selected dead letters, copies per target topic (known when the target
    is), refusals (the first `SHOWN_REFUSALS` kept here, all counted), and the dead letters no
    target could place (with their dialects)."""

    selected: int = 0
    planned: dict[str, int] = field(default_factory=dict)
    refused: list[Refused] = field(default_factory=list)
    refused_count: int = 0
    homeless: int = 0
    homeless_dialects: set[str] = field(default_factory=set)

    @property
    def replayable(self) -> int:
        return self.selected - self.refused_count


class PlanWriter:
    """Writes a plan's lines as the selection is read. Use as a context manager; on an error
    the partial plan is removed."""

    def __init__(self, folder: Path, plan: Plan) -> None:
        self.folder = folder / plan.run
        self.plan = plan
        self.summary = Summary()
        self._files: dict[int, IO[str]] = {}
        self._quoted: dict[str, str] = {}
        self.folder.mkdir(parents=True, exist_ok=False)
        self._refused = (self.folder / "refused.jsonl").open("w", encoding="utf-8")

    def __enter__(self) -> PlanWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in (*self._files.values(), self._refused):
            handle.close()
        if kind is not None:
            for path in self.folder.iterdir():
                path.unlink()
            self.folder.rmdir()
            return
        save_header(self.folder, self.plan)

    def add(
        self, dl: Subject, value: bytes | None, target: str | None, *, hashed: bool = True
    ) -> None:
        """A dead letter to replay with `value` (to `target`, when the target is known);
        without `hashed`, the value was not read (see `Entry.same`)."""
        digest = value_hash(value) if hashed else ""
        self.add_line(dl.partition, dl.offset, digest, dl.fingerprint, dl.seen_ms, target)

    def add_line(
        self,
        partition: int,
        offset: int,
        digest: str,
        fingerprint: str,
        seen_ms: int,
        target: str | None,
    ) -> None:
        """`add` from the dead letter's fields: its line, with the value's `digest` ("": the
        value was not read)."""
        handle = self._files.get(partition)
        if handle is None:
            path = self.folder / f"p{partition}.jsonl"
            handle = self._files[partition] = path.open("w", encoding="utf-8")
        quoted = self._quoted.get(fingerprint) or self._quote(fingerprint)
        handle.write(f'{{"o":{offset},"h":"{digest}","f":{quoted},"t":{seen_ms}}}\n')
        summary = self.summary
        summary.selected += 1
        if target is not None:
            summary.planned[target] = summary.planned.get(target, 0) + 1

    def _quote(self, fingerprint: str) -> str:
        """The fingerprint as a JSON string (formatted into the line, not `json.dumps` of a
        dict: 4x faster), kept: a selection holds few distinct causes."""
        quoted = json.dumps(fingerprint)
        if len(self._quoted) < 10_000:  # bounded, whatever the selection holds
            self._quoted[fingerprint] = quoted
        return quoted

    def refuse(self, dl: Subject, reason: str, *, homeless: bool = False) -> None:
        """A selected dead letter that will not be replayed."""
        refused = Refused(dl.coordinates, reason)
        self._refused.write(json.dumps({"c": refused.coordinates, "r": reason}) + "\n")
        summary = self.summary
        summary.selected += 1
        summary.refused_count += 1
        if len(summary.refused) < SHOWN_REFUSALS:
            summary.refused.append(refused)
        if homeless:
            summary.homeless += 1
            summary.homeless_dialects.add(dl.dialect)

    @property
    def counts(self) -> tuple[int, int]:
        return self.summary.selected, self.summary.refused_count


def save_header(folder: Path, plan: Plan) -> None:
    """Write `plan.json` atomically (a crash leaves the previous one or none)."""
    partial = folder / "plan.json.partial"
    partial.write_text(plan.to_json(), encoding="utf-8")
    partial.replace(folder / "plan.json")


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """A plan on disk: its header and its folder."""

    plan: Plan
    folder: Path

    def partitions(self) -> list[int]:
        found = (_PARTITION_FILE.fullmatch(path.name) for path in self.folder.iterdir())
        return sorted(int(match.group(1)) for match in found if match)

    def entries(self, partition: int) -> Iterator[Entry]:
        """The planned dead letters of `partition`, in offset order, read line by line."""
        path = self.folder / f"p{partition}.jsonl"
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                offset, digest, fingerprint, failed_at = _line_fields(line, path, number)
                yield Entry(partition, int(offset), digest, fingerprint, int(failed_at))

    def blocks(self, partition: int, size: int = BLOCK) -> Iterator[EntryBlock]:
        """`entries(partition)` as columns, `size` lines at a time: one regex pass over a block
        of lines as `PlanWriter.add` writes them, `entries`' reading for any other block."""
        path = self.folder / f"p{partition}.jsonl"
        with path.open(encoding="utf-8") as lines:
            read = 0
            while block := list(itertools.islice(lines, size)):
                found = _PLAN_LINES.findall("".join(block))
                if len(found) != len(block):
                    found = [_line_fields(line, path, read + n) for n, line in enumerate(block, 1)]
                read += len(block)
                offsets, digests, fingerprints, times = zip(*found, strict=True)
                yield EntryBlock(
                    list(map(int, offsets)), digests, fingerprints, list(map(int, times))
                )

    def check(self) -> None:
        """Read every line of the plan once, before anything is replayed: ConfigError (exit 2)
        naming the first damaged line (its file and number) and what is wrong with it. A
        replay reads its plan as it goes, so a line edited by hand or cut short was otherwise
        found half-way through, after the lines before it had been replayed."""
        for partition in self.partitions():
            path = self.folder / f"p{partition}.jsonl"
            with path.open(encoding="utf-8") as lines:
                if all(_fine(block) for block in iter(lambda: lines.readlines(1 << 20), [])):
                    continue
            read = 0
            for block in self.blocks(partition):  # each line parsed: or ConfigError
                offsets, digests = block.offsets, block.digests
                if min(offsets) < 0 or max(offsets) > MAX_OFFSET:
                    n, bad = next((n, o) for n, o in enumerate(offsets) if not 0 <= o <= MAX_OFFSET)
                    raise damaged(path, read + n + 1, f"offset {bad} is no Kafka offset")
                if not all(map(_DIGEST.fullmatch, digests)):
                    n, odd = next((n, d) for n, d in enumerate(digests) if not _DIGEST.fullmatch(d))
                    raise damaged(path, read + n + 1, f"{odd!r} is no value sha256")
                read += len(offsets)
        for _ in self.refused():
            pass

    def offsets(self, partition: int) -> array[int]:
        """The planned offsets of `partition`, in order, 8 bytes each."""
        found = array("q")
        for block in self.blocks(partition):
            found.extend(block.offsets)
        return found

    def letters(self) -> Iterator[DeadLetter]:
        """Every planned dead letter (`Entry.letter`), partition by partition, in offset
        order, read line by line."""
        for partition in self.partitions():
            for entry in self.entries(partition):
                yield entry.letter(self.plan.dlq_topic)

    def refused(self) -> Iterator[Refused]:
        path = self.folder / "refused.jsonl"
        if not path.exists():
            return
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    data = json.loads(line)
                    yield Refused(str(data["c"]), str(data["r"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise damaged(path, number, f"{type(exc).__name__}: {exc}") from exc

    def save(self, plan: Plan) -> StoredPlan:
        """The same plan with a new header (a target chosen when a saved preview is replayed)."""
        save_header(self.folder, plan)
        return StoredPlan(plan, self.folder)


def _line_fields(line: str, path: Path, number: int) -> tuple[str | int, str, str, str | int]:
    """(offset, value sha256, fingerprint, failure time) of one plan line (line `number` of
    `path`); ConfigError (exit 2) naming it when it is not a plan line (a file edited by hand or
    cut short)."""
    found = _PLAN_LINE.fullmatch(line)
    if found is not None:
        offset, digest, fingerprint, failed_at = found.groups()
        return offset, digest, fingerprint, failed_at
    try:
        data = json.loads(line)
        offset, failed_at = data["o"], data["t"]
        if not isinstance(offset, int) or not isinstance(failed_at, int):
            raise ValueError("offset and failure time must be integers")
        return offset, str(data["h"]), str(data["f"]), failed_at
    except (ValueError, KeyError, TypeError) as exc:
        raise damaged(path, number, f"{type(exc).__name__}: {exc}") from exc


def _fine(lines: list[str]) -> bool:
    """Whether every line is a plan line `_FINE_LINES` passes (each ending in a line break)."""
    return _FINE_LINES.fullmatch("".join(lines)) is not None


def damaged(path: Path, number: int, what: str) -> ConfigError:
    """The one line (exit 2) of a plan file whose line `number` is not a plan line."""
    return ConfigError(
        f"the plan file {path} is damaged at line {number} ({what}): make a new plan"
    )


@dataclass(frozen=True, slots=True)
class EntryBlock:
    """Consecutive plan lines of one partition, column by column (line `i` is index `i` of
    every column): what `Entry` holds, without an object per line."""

    offsets: list[int]
    digests: Sequence[str]
    fingerprints: Sequence[str]
    failed_at: list[int]


def check_run_id(run: str) -> None:
    """ConfigError (exit 2) unless `run` is a plan id (a folder name: no path, never empty)."""
    if not _RUN_ID.fullmatch(run):
        raise ConfigError(f"{run!r} is not a plan id")


def load(folder: Path, run: str) -> StoredPlan:
    """The stored plan `run` of one cluster's runs folder; ConfigError (exit 2) when there is
    none, or it is unreadable."""
    check_run_id(run)
    path = folder / run / "plan.json"
    try:
        plan = Plan.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"no stored plan {run} in {folder} (plans are kept per cluster)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the plan {run} ({path}) is unreadable: {exc}") from exc
    return StoredPlan(plan, path.parent)
