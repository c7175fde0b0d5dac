"""What the DLQ index keeps of each ledger record: the decision it carries for one dead letter.

`ledger_row` is the reference, record by record, through the ledger codec. `ledger_rows` reads a
consumed batch: a batch whose every record is exactly as the codec writes it is read with one
regular-expression pass over the whole batch (`_written_batch`); otherwise record by record, a
well-formed one without `LedgerEntry` (`_fast_ledger`), anything unusual by `ledger_row` itself.
Whatever the path, the result is what `ledger_row` says (the unit tests hold them to that).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from itertools import repeat
from json import loads
from operator import lshift, or_
from typing import TypeAlias

from pipeline.core.contract import parse_coordinates
from pipeline.core.ledger_codec import decode_ledger_entry
from reprocessor.index_rows import OFFSET_BITS, row_id

ACTION_CODES = {"replayed": 1, "discarded": 2}
LedgerRow: TypeAlias = tuple[int, int, int, int, int, str, bytes]
"""(row id, partition, offset, action code, failed_at, fingerprint, the entry's JSON)."""
Decided: TypeAlias = tuple[int, LedgerRow | None]
"""(row id, row): the row None for a tombstone (the decision is withdrawn)."""


def ledger_row(
    dlq_topic: str, key: bytes | None, value: bytes | None
) -> tuple[int, int, LedgerRow | None] | None:
    """The decision a ledger record carries for a dead letter of `dlq_topic`: (partition,
    offset, row) with row None for a tombstone (the decision is withdrawn). None when the
    record is not about this topic or cannot be read (malformed entries never block)."""
    try:
        topic, partition, offset = parse_coordinates((key or b"").decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if topic != dlq_topic:
        return None
    if value is None:
        return partition, offset, None
    try:
        entry = decode_ledger_entry(value)
    except ValueError:
        return None
    code = ACTION_CODES[entry.action]
    found = (row_id(partition, offset), partition, offset, code, entry.failed_at, entry.fingerprint)
    return partition, offset, (*found, value)


def ledger_rows(
    dlq_topic: str, keys: Sequence[bytes | None], values: Sequence[bytes | None]
) -> list[Decided]:
    """`ledger_row` of a batch of ledger records, in their order, as (row id, row) pairs, the
    row None for a tombstone; the records `ledger_row` drops are left out. A batch written by
    the codec alone is read in one pass (`_written_batch`); otherwise a key
    `<dlq_topic>/<partition>/<offset>` and a well-formed entry are read with one `json.loads`
    and the codec's checks inline (no `LedgerEntry`; each distinct `target` is checked once
    per batch); any other record goes to `ledger_row` itself, so the result is always what
    `ledger_row` says (the unit tests hold the paths to that)."""
    try:
        parse_coordinates(f"{dlq_topic}/0/0")
    except ValueError:
        return []  # no key can name a topic that is not a topic name
    prefix = f"{dlq_topic}/".encode()
    written = _written_batch(prefix, keys, values)
    if written is not None:
        return written
    cut, targets, out = len(prefix), set[str](), []
    for key, value in zip(keys, values, strict=True):
        found = _fast_ledger(prefix, cut, key, value, targets)
        if found is None:  # not the common case: the reference decides
            slow = ledger_row(dlq_topic, key, value)
            found = None if slow is None else (row_id(slow[0], slow[1]), slow[2])
        if found is not None:
            out.append(found)
    return out


_TEXT = rb'"[^"\\\x00-\x1f]*"'  # a JSON string without escapes
_NUMBER = rb"-?(?:0|[1-9][0-9]*)"
_COORDINATES = rb'"([A-Za-z0-9._-]{1,249}/[0-9]{1,20}/[0-9]{1,20})"'
"""A target `parse_coordinates` accepts, exactly: a topic name without `/`, then a partition
and an offset of 1 to 20 digits."""


def _entry_pattern(target: bytes) -> bytes:
    return (
        rb'\{"action":"(replayed|discarded)","at":' + _NUMBER + rb',"operator":' + _TEXT
        + rb',"run":' + _TEXT + rb',"fix":\[(?:' + _TEXT + rb"(?:," + _TEXT + rb")*)?\]"
        + rb',"failed_at":(' + _NUMBER + rb'),"fingerprint":"([^"\\\x00-\x1f]*)"'
        + rb'(?:,"reason":"([^"\\\x00-\x1f]*)")?(?:,"target":' + target + rb")?\}"
    )  # fmt: skip


_WRITTEN = re.compile(_entry_pattern(rb'"([^"\\\x00-\x1f]*)"'))
"""An entry exactly as `encode_ledger_entry` writes it, with no escaped character: read
without `json.loads` (twice as fast); any other JSON takes `_fast_entry`."""
_WRITTEN_LINES = re.compile(rb"^" + _entry_pattern(_COORDINATES) + rb"$", re.MULTILINE)
"""`_WRITTEN` with its target checked as coordinates, a line at a time (`_written_batch`)."""
_ACTION_CODES = {b"replayed": 1, b"discarded": 2}


@lru_cache(maxsize=16)
def _key_lines(prefix: bytes) -> re.Pattern[bytes]:
    """A line `<prefix><partition>/<offset>` as `_fast_ledger` reads a key: 1 to 20 ASCII
    digits each."""
    return re.compile(rb"^" + re.escape(prefix) + rb"([0-9]{1,20})/([0-9]{1,20})$", re.MULTILINE)


def _lines(column: Sequence[bytes | None]) -> bytes | None:
    """The column joined a line per record; None when a record is None or holds a newline
    (then its lines could not be told apart)."""
    if None in column:
        return None
    joined = b"\n".join(column)  # type: ignore[arg-type]  # no None, checked above
    return joined if joined.count(b"\n") == len(column) - 1 else None


def _written_batch(
    prefix: bytes, keys: Sequence[bytes | None], values: Sequence[bytes | None]
) -> list[Decided] | None:
    """The decisions of a batch whose every key names a dead letter of this DLQ and whose
    every value is an entry exactly as the codec writes it (UTF-8, no escaped character, a
    replay with its target's coordinates, a discard with its reason): one pass of a regular
    expression over the batch's keys and one over its values, each a line, instead of one
    per record; None when any record is not like that (then they are read one by one). The
    checks are `_fast_ledger`'s and `_written_entry`'s, over the batch."""
    key_lines, value_lines = _lines(keys), _lines(values)
    if not keys or key_lines is None or value_lines is None:
        return None
    try:
        value_lines.decode()
    except UnicodeDecodeError:
        return None
    where = _key_lines(prefix).findall(key_lines)
    found = _WRITTEN_LINES.findall(value_lines)
    if len(where) != len(keys) or len(found) != len(keys):
        return None  # a line that does not match: some record is not like that
    actions, failed, digests, reasons, targets = zip(*found, strict=True)
    if (b"discarded", False) in set(zip(actions, map(bool, reasons), strict=True)):
        return None  # a discard without its reason
    if (b"replayed", False) in set(zip(actions, map(bool, targets), strict=True)):
        return None  # a replay without its target
    parts, offsets = zip(*where, strict=True)
    partitions, at = list(map(int, parts)), list(map(int, offsets))
    ids = list(map(or_, map(lshift, partitions, repeat(OFFSET_BITS)), at))
    rows = zip(
        ids, partitions, at, map(_ACTION_CODES.__getitem__, actions), map(int, failed),
        map(bytes.decode, digests), values, strict=True,
    )  # fmt: skip
    return list(zip(ids, rows, strict=True))


def _fast_ledger(
    prefix: bytes, cut: int, key: bytes | None, value: bytes | None, targets: set[str]
) -> tuple[int, LedgerRow | None] | None:
    """A ledger record in the form the ledger codec writes, or None (then `ledger_row`
    decides): every check below is one of `ledger_row`'s, so what passes here passes there."""
    if key is None or not key.startswith(prefix):
        return None
    where = key[cut:].split(b"/")
    if len(where) != 2:
        return None
    part, off = where
    if not (part.isdigit() and off.isdigit() and len(part) <= 20 and len(off) <= 20):
        return None
    partition, offset = int(part), int(off)
    rid = (partition << OFFSET_BITS) | offset
    if value is None:
        return rid, None
    try:
        text = value.decode()
        written = _WRITTEN.fullmatch(value)
        decided = (
            _written_entry(written, targets)
            if written is not None
            else _fast_entry(obj, targets)
            if type(obj := loads(text)) is dict
            else None
        )
    except (ValueError, RecursionError):
        return None
    if decided is None:
        return None
    return rid, (rid, partition, offset, decided[0], decided[1], decided[2], value)


def _written_entry(found: re.Match[bytes], targets: set[str]) -> tuple[int, int, str] | None:
    action, failed_at, fingerprint, reason, target = found.groups()
    if action == b"discarded":
        return (2, int(failed_at), fingerprint.decode()) if reason else None
    if target is None:
        return None
    text = target.decode()
    if text not in targets:
        parse_coordinates(text)  # ValueError when it is no coordinates
        targets.add(text)
    return 1, int(failed_at), fingerprint.decode()


def _fast_entry(obj: dict[str, object], targets: set[str]) -> tuple[int, int, str] | None:
    """(action code, failed_at, fingerprint) of a decoded entry that `decode_ledger_entry`
    accepts, or None (whether or not it would)."""
    get = obj.get
    action, failed_at, fingerprint = get("action"), get("failed_at"), get("fingerprint")
    at, reason, target, fix = get("at"), get("reason"), get("target"), get("fix", [])
    if (
        type(failed_at) is not int
        or type(at) is not int
        or type(fingerprint) is not str
        or type(get("operator")) is not str
        or type(get("run")) is not str
        or not (reason is None or type(reason) is str)
        or not (target is None or type(target) is str)
        or type(fix) is not list
        or not all(type(item) is str for item in fix)
    ):
        return None
    if action == "discarded" and reason:
        return 2, failed_at, fingerprint
    if action != "replayed" or type(target) is not str:
        return None
    if target not in targets:
        try:
            parse_coordinates(target)
        except ValueError:
            return None
        targets.add(target)
    return 1, failed_at, fingerprint
