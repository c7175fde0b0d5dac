"""Where schemas and models come from when they are files: a local catalog of `.avsc` files and
`module:Model` specs for pydantic models. (The schema registry is `pipeline.kafka.registry`.)

Everything is loaded and parsed once, at start-up, so that a broken schema file stops the
worker with a `ConfigError` naming the file instead of dead-lettering records one by one.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

from pipeline.codecs.avro import ParsedSchema, parse_avro
from pipeline.errors import ConfigError, SchemaError

FINGERPRINT_CHARS = 12
"""Hex digits of the file's sha256 in a `file:` ref: enough to tell two edits apart."""


@dataclass(frozen=True, slots=True)
class _SchemaFile:
    """One `<subject>/<id>.avsc`, read but not yet parsed."""

    path: Path
    subject: str
    schema_id: int
    text: str
    digest: str


class LocalCatalog:
    """Avro schemas in `<folder>/<subject>/<id>.avsc`: the folder name is the subject, the
    file stem the registry id; a subject's versions are its ids in ascending order (version 1
    is the lowest id). Implements `SchemaSource`.

    Construction reads and parses every file; a missing folder, a stem that is not an integer,
    a file that is not a valid Avro schema, or one id holding two different schemas raises
    `ConfigError` naming the file. Files other than `.avsc` are ignored.
    """

    __slots__ = ("_by_id", "_by_subject", "_folder")

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ConfigError(f"schema catalog folder {folder} does not exist")
        self._folder = folder
        self._by_subject: dict[str, tuple[ParsedSchema, ...]] = {}
        self._by_id: dict[int, ParsedSchema] = {}
        files = [_read(path) for path in _schema_files(folder)]
        for subject in sorted({file.subject for file in files}):
            mine = sorted((f for f in files if f.subject == subject), key=lambda f: f.schema_id)
            self._by_subject[subject] = tuple(
                _parse(f, version) for version, f in enumerate(mine, 1)
            )
        for parsed in (p for versions in self._by_subject.values() for p in versions):
            self._index(parsed)

    @property
    def folder(self) -> Path:
        """The catalog's folder, as given."""
        return self._folder

    def subjects(self) -> tuple[str, ...]:
        """The subjects, sorted."""
        return tuple(self._by_subject)

    def by_id(self, schema_id: int) -> ParsedSchema:
        """The schema stored as `<id>.avsc`; `SchemaError` if none is (a record's id is data,
        so an unknown one is the record's failure, not the configuration's)."""
        parsed = self._by_id.get(schema_id)
        if parsed is None:
            raise SchemaError(f"schema id {schema_id} is not in the local catalog")
        return parsed

    def latest(self, subject: str) -> ParsedSchema:
        """The subject's highest id; `ConfigError` for an unknown subject (asked by name, at
        start-up, e.g. to choose a reader schema)."""
        return self._versions(subject)[-1]

    def by_subject_version(self, subject: str, version: int) -> ParsedSchema:
        """Version `version` (1-based) of `subject`; `ConfigError` if there is none."""
        versions = self._versions(subject)
        if not 1 <= version <= len(versions):
            raise ConfigError(f"subject {subject!r} has versions 1..{len(versions)}, not {version}")
        return versions[version - 1]

    def _versions(self, subject: str) -> tuple[ParsedSchema, ...]:
        versions = self._by_subject.get(subject)
        if versions is None:
            known = ", ".join(self._by_subject) or "none"
            raise ConfigError(f"subject {subject!r} is not in the catalog (known: {known})")
        return versions

    def _index(self, parsed: ParsedSchema) -> None:
        """The same id may sit under two subjects (as in a registry) only with one schema."""
        assert parsed.schema_id is not None
        other = self._by_id.setdefault(parsed.schema_id, parsed)
        if other is not parsed and other.schema != parsed.schema:
            raise ConfigError(
                f"{self._path_of(parsed)}: schema id {parsed.schema_id} already holds "
                f"a different schema ({self._path_of(other)})"
            )

    def _path_of(self, parsed: ParsedSchema) -> Path:
        return self._folder / parsed.ref.removeprefix("file:").split("#")[0]


def _schema_files(folder: Path) -> list[Path]:
    stray = sorted(folder.glob("*.avsc"))
    if stray:
        raise ConfigError(f"{stray[0]}: schema files go in <folder>/<subject>/<id>.avsc")
    return sorted(folder.glob("*/*.avsc"))


def _read(path: Path) -> _SchemaFile:
    if not path.stem.isdigit():
        raise ConfigError(f"{path}: the file name must be the schema id, an integer")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the schema ({type(exc).__name__})") from exc
    digest = hashlib.sha256(raw).hexdigest()[:FINGERPRINT_CHARS]
    return _SchemaFile(path, path.parent.name, int(path.stem), text, digest)


def _parse(file: _SchemaFile, version: int) -> ParsedSchema:
    try:
        schema = parse_avro(file.text)
    except SchemaError as exc:
        raise ConfigError(f"{file.path}: {exc.message}") from exc
    # relative to the catalog: a fingerprint must not depend on where it is installed, and a
    # server's paths have no business in a dead letter
    ref = f"file:{file.subject}/{file.path.name}#{file.digest}"
    return ParsedSchema(schema, file.schema_id, file.subject, version, ref)


def load_model(spec: str, *, search_path: Path | None = None) -> type[BaseModel]:
    """The pydantic model named by `module:Model` (or `module:Outer.Inner`).

    `schemas/` is data loaded by path, not an installed package: pass the folder that holds
    it (the repository root, or the schema folder's parent) as `search_path`, which is put at
    the front of `sys.path` unless already there. Raises `ConfigError` with a one-line
    message when the spec is malformed, the module or attribute is missing, or the attribute
    is not a `BaseModel` subclass.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"model {spec!r} is not of the form module:Model")
    if search_path is not None:
        _ensure_on_path(search_path)
    module = _import(module_name, spec)
    try:
        found = reduce(getattr, attribute.split("."), module)
    except AttributeError as exc:
        raise ConfigError(
            f"model {spec!r}: {module_name!r} has no attribute {attribute!r}"
        ) from exc
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        kind = type(found).__name__
        raise ConfigError(f"model {spec!r} is a {kind}, not a pydantic BaseModel subclass")
    return found


def _ensure_on_path(search_path: Path) -> None:
    entry = str(search_path.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()


def _import(module_name: str, spec: str) -> ModuleType:
    """Import, telling a missing module apart from a module whose own imports fail."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise ConfigError(
                f"model {spec!r}: no module named {module_name!r} (is the folder holding it "
                "on the search path?)"
            ) from exc
        raise ConfigError(f"model {spec!r}: {module_name!r} imports missing {missing!r}") from exc
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"model {spec!r}: importing {module_name!r} failed: {type(exc).__name__} {reason}"
        ) from exc
