"""The ledger's wire format: one compact JSON entry per decided dead letter, keyed by the dead
letter's `dlq-topic/partition/offset` (`../shared/DLQ-CONTRACT.md`, "Ledger"). Pure: the
reprocessor's `ledger.py` reads and writes the topic with these."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from pipeline.core.contract import DeadLetterMeta, format_coordinates, parse_coordinates


def ledger_key(dlq_topic: str, partition: int, offset: int) -> bytes:
    """The ledger record's key: the decided dead letter's `dlq-topic/partition/offset`."""
    return format_coordinates(dlq_topic, partition, offset).encode()


LedgerAction: TypeAlias = Literal["replayed", "discarded"]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One decision about one dead letter. `failed_at` and `fingerprint` are the dead letter's,
    so an entry left over from a deleted and recreated DLQ topic is recognised as stale.
    Raises ValueError when a discard has no reason or a replay no valid `target`."""

    action: LedgerAction
    at: int
    operator: str
    run: str
    failed_at: int
    fingerprint: str
    reason: str | None = None
    fix: tuple[str, ...] = ()
    target: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ("replayed", "discarded"):
            raise ValueError(f"unknown ledger action {self.action!r}")
        if self.action == "discarded" and not self.reason:
            raise ValueError("a discard needs a reason")
        if self.action == "replayed":
            parse_coordinates(self.target or "")


def encode_ledger_entry(entry: LedgerEntry) -> bytes:
    """Compact JSON; `reason` and `target` are left out when None."""
    obj: dict[str, object] = {
        "action": entry.action,
        "at": entry.at,
        "operator": entry.operator,
        "run": entry.run,
        "fix": list(entry.fix),
        "failed_at": entry.failed_at,
        "fingerprint": entry.fingerprint,
    }
    if entry.reason is not None:
        obj["reason"] = entry.reason
    if entry.target is not None:
        obj["target"] = entry.target
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def decode_ledger_entry(data: bytes) -> LedgerEntry:
    """Parse a ledger value; unknown keys are ignored. Raises ValueError when it is not a JSON
    object with well-typed fields."""
    try:
        obj: object = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"ledger entry is not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("ledger entry is not a JSON object")
    fix = obj.get("fix", [])
    if not isinstance(fix, list) or not all(isinstance(item, str) for item in fix):
        raise ValueError("ledger entry: 'fix' is not a list of strings")
    action = _json_text(obj, "action")
    if action not in ("replayed", "discarded"):
        raise ValueError(f"ledger entry: unknown action {action!r}")
    return LedgerEntry(
        action="replayed" if action == "replayed" else "discarded",
        at=_json_int(obj, "at"),
        operator=_json_text(obj, "operator"),
        run=_json_text(obj, "run"),
        failed_at=_json_int(obj, "failed_at"),
        fingerprint=_json_text(obj, "fingerprint"),
        reason=_json_optional_text(obj, "reason"),
        fix=tuple(fix),
        target=_json_optional_text(obj, "target"),
    )


def is_stale(entry: LedgerEntry, meta: DeadLetterMeta) -> bool:
    """True when the entry decided another dead letter at the same coordinates (its failed_at or
    fingerprint differ). A value missing from a malformed dead letter proves nothing, so it never
    makes an entry stale: calling a valid entry stale would replay a dead letter twice."""
    other_time = meta.failed_at_ms is not None and meta.failed_at_ms != entry.failed_at
    other_cause = meta.fingerprint is not None and meta.fingerprint != entry.fingerprint
    return other_time or other_cause


def _json_text(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"ledger entry: {key!r} is missing or not a string")
    return value


def _json_optional_text(obj: Mapping[str, object], key: str) -> str | None:
    return None if obj.get(key) is None else _json_text(obj, key)


def _json_int(obj: Mapping[str, object], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"ledger entry: {key!r} is missing or not an integer")
    return value
