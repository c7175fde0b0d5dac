"""Field masking for everything `dlq` prints: `--mask PATH` (repeatable) and `[reprocessor]
mask = [...]` in the config.

A path is `key` (the record key), `value` (the whole value), `value.<field>.<field>` (a field of
the decoded payload; `*` matches any key or list index: `value.items.*.sku`) or
`header.<name>` (every header of that name). A masked value prints as `***#` and 8 hex
characters: an HMAC-SHA256 of its text under a key kept in the state folder (`mask.key`, made
on first use, readable by its owner only), so equal values show equal tags — across commands
and days on one host — and a tag cannot be turned back into its value by trying candidates
without that file. A null stays null (absence is not a value).

Masking is applied to copies made for display (`Masks.item`, `Masks.fixed`, `Masks.rows`):
selection (`--where value.x=...`), fixes and replays always see the real record, so masking
never changes what is replayed. When any `value` path is masked, raw value bytes that could not
be decoded into fields (hex, text, kcat's `payload`) are masked whole: where a field sits in
them is unknown.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.contract import Header
from pipeline.errors import ConfigError
from reprocessor.deadletters import DeadLetter, jsonable, text_of
from reprocessor.fixes import diff
from reprocessor.grouping import MISSING_KEY, NONE_KEY, GroupRow
from reprocessor.payloads import Fixed, Payload

if TYPE_CHECKING:  # reprocessor.stats loads the Kafka client: `dlq --help` starts without it
    from reprocessor.stats import Item

MARK = "***#"
"""What a masked value starts with."""
ANY = "*"
"""A path part matching any key or list index."""
KEY_FILE = "mask.key"
KEY_BYTES = 32
TAG_CHARS = 8


def parse(paths: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """The mask paths as parts (`value.card.number` -> `("value", "card", "number")`);
    ConfigError (exit 2) naming a path that is not `key`, `value[.…]` or `header.<name>`."""
    parsed: list[tuple[str, ...]] = []
    for path in paths:
        text = path.strip()
        root, _, rest = text.partition(".")
        if root == "header" and rest:
            parsed.append(("header", rest))  # a header name may hold dots
        elif text in ("key", "value"):
            parsed.append((text,))
        elif root == "value" and all(rest.split(".")):
            parsed.append((root, *rest.split(".")))
        else:
            raise ConfigError(
                f"mask {path!r}: expected key, value, value.<field>[.<field>...] "
                "(* for any key or index) or header.<name>"
            )
    return tuple(parsed)


def load_key(folder: Path) -> bytes:
    """The HMAC key in `folder/mask.key`, made (0600) on first use. The file appears whole or
    not at all (written aside, then linked into place, so two processes agree on one key). A
    folder that cannot be written, or a damaged file, gives a key for this process only: tags
    then compare within one command."""
    path = folder / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return secrets.token_bytes(KEY_BYTES)
    key = secrets.token_bytes(KEY_BYTES)
    aside = folder / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(key.hex())
        os.link(aside, path)  # fails if another process linked its key first
    except FileExistsError:
        return load_key(folder)
    except OSError:
        return key
    finally:
        aside.unlink(missing_ok=True)
    return key


def _read_key(path: Path) -> bytes:
    key = bytes.fromhex(path.read_text().strip())
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} does not hold a {KEY_BYTES}-byte key")
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class Masks:
    """The configured mask paths and the key their tags are made with."""

    paths: tuple[tuple[str, ...], ...]
    key: bytes = b""

    @property
    def active(self) -> bool:
        return bool(self.paths)

    def tag(self, value: object) -> str:
        """`***#` and 8 hex characters of the HMAC of the value's text (`text_of`)."""
        digest = hmac.new(self.key, text_of(value).encode(), hashlib.sha256).hexdigest()
        return MARK + digest[:TAG_CHARS]

    def value(self, event: object) -> object:
        """A JSON-safe copy of a decoded payload with every masked field replaced."""
        plain = jsonable(event)
        for path in self._value_paths():
            plain = self._mask(plain, path)
        return plain

    def item(self, item: Item) -> Item:
        """A copy of `item` for display: key, headers, raw value and payload masked."""
        if not self.active:
            return item
        dl = self.dead_letter(item.dl)
        payload = item.payload
        if payload is not None:
            payload = self.payload(payload)
        return dataclasses.replace(item, dl=dl, payload=payload)

    def dead_letter(self, dl: DeadLetter) -> DeadLetter:
        key = self._bytes(dl.key) if ("key",) in self.paths else dl.key
        value = self._bytes(dl.value) if self._value_paths() else dl.value
        headers = tuple(self._header(header) for header in dl.headers)
        return dataclasses.replace(dl, key=key, value=value, headers=headers)

    def payload(self, payload: Payload) -> Payload:
        """Fields masked in a decoded payload; an undecoded one (text, hex) masked whole."""
        if not self._value_paths():
            return payload
        if payload.event is None:
            shown = None if payload.shown is None else self.tag(payload.shown)
            return dataclasses.replace(payload, shown=shown)
        masked = self.value(payload.event)
        return dataclasses.replace(payload, event=masked, shown=masked)

    def fixed(self, fixed: Fixed) -> Fixed:
        """A fix preview for display: its diff taken again between the masked events (a
        changed masked field shows two different tags); its value bytes are left out."""
        if not self._value_paths() or fixed.before is None or fixed.after is None:
            return fixed
        lines = diff(self.value(fixed.before), self.value(fixed.after))
        return dataclasses.replace(fixed, before=None, after=None, value=None, diff=lines)

    def rows(self, by: str, rows: Sequence[GroupRow]) -> list[GroupRow]:
        """Group rows by a masked `value.<path>` show tags as their keys (the `(missing)` and
        `(none)` rows stay: they hold no value)."""
        parts = tuple(by.split("."))
        if parts[0] != "value" or not any(_covers(p, parts) for p in self._value_paths()):
            return list(rows)
        return [
            row
            if row.key in (MISSING_KEY, NONE_KEY)
            else dataclasses.replace(row, key=self.tag(row.key))
            for row in rows
        ]

    def _value_paths(self) -> list[tuple[str, ...]]:
        return [path[1:] for path in self.paths if path[0] == "value"]

    def _mask(self, plain: object, path: tuple[str, ...]) -> object:
        if not path:
            return None if plain is None else self.tag(plain)
        head, rest = path[0], path[1:]
        if isinstance(plain, dict):
            return {
                k: self._mask(v, rest) if head in (ANY, str(k)) else v for k, v in plain.items()
            }
        if isinstance(plain, list):
            return [
                self._mask(v, rest) if head in (ANY, str(i)) else v for i, v in enumerate(plain)
            ]
        return plain

    def _bytes(self, data: bytes | None) -> bytes | None:
        return None if data is None else self.tag(data).encode()

    def _header(self, header: Header) -> Header:
        name, value = header
        if ("header", name) in self.paths:
            return name, self._bytes(value)
        return header


def _covers(mask: tuple[str, ...], field: tuple[str, ...]) -> bool:
    """Whether masking `value.<mask>` hides the grouped `value.<field>` (`field` with its
    `value` root): the mask is the field or one of its parents."""
    wanted = field[1:]
    if len(mask) > len(wanted):
        return False
    return all(m in (ANY, f) for m, f in zip(mask, wanted[: len(mask)], strict=True))
