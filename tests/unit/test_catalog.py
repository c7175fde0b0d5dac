"""LocalCatalog (`<folder>/<subject>/<id>.avsc`) and load_model (`module:Model` by path)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipeline.codecs.catalog import LocalCatalog, load_model
from pipeline.errors import ConfigError, SchemaError

REPO = Path(__file__).resolve().parents[2]


def avsc(name: str, *fields: str) -> str:
    listed = ", ".join(f'{{"name": "{field}", "type": "string"}}' for field in fields)
    return f'{{"type": "record", "name": "{name}", "fields": [{listed}]}}'


def write(folder: Path, relative: str, text: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write(tmp_path, "users-value/12.avsc", avsc("User", "id", "name"))
    write(tmp_path, "users-value/3.avsc", avsc("User", "id"))
    write(tmp_path, "users-value/README.md", "not a schema")
    write(tmp_path, "audit-value/40.avsc", avsc("Audit", "what"))
    return tmp_path


def test_versions_are_ids_in_ascending_order(folder: Path) -> None:
    catalog = LocalCatalog(folder)
    assert catalog.subjects() == ("audit-value", "users-value")
    first, latest = catalog.by_subject_version("users-value", 1), catalog.latest("users-value")
    assert (first.schema_id, first.version, first.subject) == (3, 1, "users-value")
    assert (latest.schema_id, latest.version) == (12, 2)
    assert catalog.by_id(12) is latest
    assert catalog.by_id(40).subject == "audit-value"


def test_ref_names_the_file_relative_to_the_catalog_and_its_digest(
    folder: Path, tmp_path: Path
) -> None:
    """The ref ends up in dead letters and their fingerprints: it must be the same on every host
    (no absolute path, which would also leak the server's layout)."""
    path = folder / "users-value" / "3.avsc"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert LocalCatalog(folder).by_id(3).ref == f"file:users-value/3.avsc#{digest}"
    elsewhere = tmp_path / "installed" / "elsewhere"
    (elsewhere / "users-value").mkdir(parents=True)
    (elsewhere / "users-value" / "3.avsc").write_bytes(path.read_bytes())
    assert LocalCatalog(elsewhere).by_id(3).ref == LocalCatalog(folder).by_id(3).ref


def test_the_repository_schemas_load() -> None:
    catalog = LocalCatalog(REPO / "schemas" / "avro")
    assert catalog.latest("orders-value").schema_id == 2
    assert catalog.by_id(1).version == 1


def test_unknown_id_is_a_schema_error(folder: Path) -> None:
    with pytest.raises(SchemaError, match="schema id 7 is not in the local catalog"):
        LocalCatalog(folder).by_id(7)


def test_unknown_subject_or_version_is_a_config_error(folder: Path) -> None:
    catalog = LocalCatalog(folder)
    with pytest.raises(
        ConfigError,
        match=r"'orders-value' is not in the catalog \(known: audit-value, users-value\)",
    ):
        catalog.latest("orders-value")
    with pytest.raises(ConfigError, match=r"has versions 1..2, not 3"):
        catalog.by_subject_version("users-value", 3)
    with pytest.raises(ConfigError):
        catalog.by_subject_version("users-value", 0)


@pytest.mark.parametrize(
    ("relative", "text", "problem"),
    [
        ("users-value/4.avsc", "{not json", "schema is not JSON"),
        (
            "users-value/4.avsc",
            '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nope"}]}',
            "UnknownType",
        ),
        (
            "users-value/4.avsc",
            '{"type": "record", "name": "X", '
            '"fields": [{"name": "a", "type": "int", "default": "x"}]}',
            "not a valid Avro schema",
        ),
        ("users-value/v4.avsc", avsc("User", "id"), "must be the schema id, an integer"),
        ("users-value/-4.avsc", avsc("User", "id"), "must be the schema id, an integer"),
        ("5.avsc", avsc("User", "id"), "schema files go in <folder>/<subject>/<id>.avsc"),
        (
            "audit-value/3.avsc",
            avsc("Audit", "what"),
            "schema id 3 already holds a different schema",
        ),
    ],
)
def test_a_bad_file_is_a_config_error_naming_it(
    folder: Path, relative: str, text: str, problem: str
) -> None:
    path = write(folder, relative, text)
    with pytest.raises(ConfigError) as caught:
        LocalCatalog(folder)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_one_id_under_two_subjects_with_one_schema_is_fine(folder: Path) -> None:
    write(folder, "users-copy/3.avsc", avsc("User", "id"))
    assert LocalCatalog(folder).by_id(3).schema_id == 3


def test_invalid_utf8_file(folder: Path) -> None:
    (folder / "users-value" / "5.avsc").write_bytes(b'{"type": "\xff"}')
    with pytest.raises(ConfigError, match=r"5\.avsc: cannot read the schema"):
        LocalCatalog(folder)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        LocalCatalog(tmp_path / "nope")


@pytest.fixture
def clean_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Restore sys.path and forget the throw-away `lz_*` modules the tests import."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [name for name in sys.modules if name.startswith("lz_")]:
        del sys.modules[name]


@pytest.mark.usefixtures("clean_path")
def test_load_model_from_the_repository() -> None:
    model = load_model("schemas.orders:Order", search_path=REPO)
    assert issubclass(model, BaseModel)
    assert model.__name__ == "Order"


@pytest.mark.usefixtures("clean_path")
def test_load_model_puts_the_search_path_first_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        "lz_models_a.py",
        "from pydantic import BaseModel\n"
        "class Thing(BaseModel):\n"
        "    class Inner(BaseModel):\n"
        "        x: int\n",
    )
    assert load_model("lz_models_a:Thing", search_path=tmp_path).__name__ == "Thing"
    assert load_model("lz_models_a:Thing.Inner", search_path=tmp_path).__name__ == "Inner"
    assert sys.path[0] == str(tmp_path.resolve())
    assert sys.path.count(str(tmp_path.resolve())) == 1


@pytest.mark.usefixtures("clean_path")
@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("lz_models_b", "is not of the form module:Model"),
        ("lz_models_b:", "is not of the form module:Model"),
        ("lz_no_such_module:Thing", "no module named 'lz_no_such_module'"),
        ("lz_models_b:Missing", "'lz_models_b' has no attribute 'Missing'"),
        ("lz_models_b:helper", "is a function, not a pydantic BaseModel subclass"),
        ("lz_models_b:NotAModel", "is a type, not a pydantic BaseModel subclass"),
        ("lz_models_c:Thing", "'lz_models_c' imports missing 'lz_absent_dependency'"),
        ("lz_models_d:Thing", "importing 'lz_models_d' failed: ZeroDivisionError"),
    ],
)
def test_load_model_errors_are_one_line(tmp_path: Path, spec: str, problem: str) -> None:
    write(tmp_path, "lz_models_b.py", "def helper(): pass\nclass NotAModel: pass\n")
    write(tmp_path, "lz_models_c.py", "import lz_absent_dependency\n")
    write(tmp_path, "lz_models_d.py", "1 / 0\n")
    with pytest.raises(ConfigError) as caught:
        load_model(spec, search_path=tmp_path)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)
