"""load_settings: the TOML file, LAZARUS_* environment overrides (nested with `__`), one ConfigError
line per problem, secrets kept out of repr/str/errors, paths relative to the config file, and the
librdkafka property merge for each client role."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pipeline.app.settings import Settings, is_secret_property, load_settings
from pipeline.errors import ConfigError

MINIMAL = """
pipeline = "orders"

[sources."shop.orders"]
format = "avro"

[output]
topic = "orders.valid"

[dlq]
topic = "orders.dlq"
"""

SECRETS = {
    "kafka": ("sasl.password", "kafka-hunter2"),
    "consumer": ("ssl.key.password", "consumer-hunter2"),
    "producer": ("sasl.oauthbearer.client.secret", "producer-hunter2"),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No LAZARUS_* variable from the developer's shell may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("LAZARUS_"):
            monkeypatch.delenv(name)
    yield


def write(folder: Path, text: str, name: str = "lazarus.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(exc.value).splitlines()


# --- the file ----------------------------------------------------------------------------------


def test_a_minimal_file_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.pipeline == "orders"
    assert list(settings.sources) == ["shop.orders"]
    assert settings.sources["shop.orders"].format == "avro"
    assert settings.output.topic == "orders.valid"
    assert settings.output.schema_ is None
    assert settings.dlq.topic == "orders.dlq"
    assert settings.dlq.min_retention_ms == 7 * 24 * 3600 * 1000
    assert settings.dlq.header_room_bytes == 32 * 1024
    assert settings.bootstrap == "127.0.0.1:9092"
    assert settings.delivery == "at-least-once"
    assert settings.policy.retryable == ("TimeoutError", "ConnectionError")
    assert settings.policy.tombstones == "forward"
    assert settings.redrive_topic == "orders.redrive"
    assert settings.ledger_topic == "orders.dlq.ledger"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    with pytest.raises(ValidationError):
        settings.pipeline = "other"
    with pytest.raises(ValidationError):
        settings.dlq.topic = "other"


def test_the_output_schema_table_is_read_under_its_alias(tmp_path: Path) -> None:
    text = MINIMAL + '\n[output.schema]\nformat = "json"\nmodel = "schemas.orders:Order"\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.output.schema_ is not None
    assert settings.output.schema_.format == "json"
    assert settings.output.schema_.model == "schemas.orders:Order"


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert problems(info) == [f"{path}: no such configuration file"]


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'pipeline = "orders\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: not valid TOML: ")


def test_a_file_that_is_not_utf8_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'pipeline = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert problems(info) == [f"{path}: cannot read it (UnicodeDecodeError)"]


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert problems(info) == [f"{tmp_path}: cannot read it (IsADirectoryError)"]


# --- one line per problem ----------------------------------------------------------------------


def test_every_problem_is_one_line_with_its_field_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
pipeline = "orders"
batch_size = 0
delivery = "sometimes"

[sources."shop.orders"]
format = "xml"

[output]
topic = "bad topic"

[dlq]
topic = "orders.dlq"

[policy]
max_attempts = 0
surprise = 1
""",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    lines = problems(info)
    assert len(lines) == 6, lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    where = sorted(line.removeprefix(f"{path}: ").split(": ", 1)[0] for line in lines)
    assert where == [
        "batch_size",
        "delivery",
        "output.topic",
        "policy.max_attempts",
        "policy.surprise",
        "sources.shop.orders.format",
    ]


def test_missing_required_fields_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, 'pipeline = "orders"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert problems(info) == [
        f"{path}: sources: Field required",
        f"{path}: output: Field required",
        f"{path}: dlq: Field required",
    ]


def test_a_bad_kafka_property_value_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[kafka]\n"linger.ms" = [1, 2]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert len(problems(info)) == 1, problems(info)
    assert problems(info)[0].startswith(f"{path}: kafka.linger.ms: ")


def config(pipeline: str = "orders", output: str = "orders.valid", dlq: str = "orders.dlq") -> str:
    return (
        f'pipeline = "{pipeline}"\n[sources."shop.orders"]\nformat = "json"\n'
        f'[output]\ntopic = "{output}"\n[dlq]\ntopic = "{dlq}"\n'
    )


@pytest.mark.parametrize("where", ["pipeline", "output", "dlq"])
@pytest.mark.parametrize("bad", ["has space", "slash/ed", "..", "ümlaut", "a:b"])
def test_illegal_topic_names_are_refused(tmp_path: Path, where: str, bad: str) -> None:
    path = write(tmp_path, config(**{where: bad}))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    field = where if where == "pipeline" else f"{where}.topic"
    assert problems(info) == [
        f"{path}: {field}: Value error, must be a legal Kafka topic name "
        "(letters, digits, '.', '_', '-')"
    ]


def test_source_topics_must_be_legal_and_present(tmp_path: Path) -> None:
    text = MINIMAL.replace('"shop.orders"', '"shop orders"')
    with pytest.raises(ConfigError, match=r"sources: Value error, must be a legal Kafka topic"):
        load_settings(write(tmp_path, text))
    empty = 'pipeline = "p"\nsources = {}\n[output]\ntopic = "o"\n[dlq]\ntopic = "d"\n'
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, empty))
    assert problems(info) == [
        f"{tmp_path / 'lazarus.toml'}: sources: Value error, at least one source topic is required"
    ]


def test_names_leave_room_for_the_redrive_and_ledger_suffixes(tmp_path: Path) -> None:
    longest_pipeline = "p" * (249 - len(".redrive"))
    longest_dlq = "d" * (249 - len(".ledger"))
    ok = MINIMAL.replace('"orders"', f'"{longest_pipeline}"', 1).replace(
        '"orders.dlq"', f'"{longest_dlq}"'
    )
    settings = load_settings(write(tmp_path, ok))
    assert len(settings.redrive_topic) == 249
    assert len(settings.ledger_topic) == 249
    too_long = MINIMAL.replace('"orders"', f'"{longest_pipeline}p"', 1).replace(
        '"orders.dlq"', f'"{longest_dlq}d"'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, too_long))
    path = tmp_path / "lazarus.toml"
    assert problems(info) == [
        f"{path}: pipeline: Value error, must be at most 241 characters",
        f"{path}: dlq.topic: Value error, must be at most 242 characters",
    ]


# --- environment overrides ---------------------------------------------------------------------


def test_a_top_level_variable_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAZARUS_BOOTSTRAP", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("LAZARUS_BATCH_SIZE", "42")
    settings = load_settings(write(tmp_path, 'bootstrap = "file:9092"\n' + MINIMAL))
    assert settings.bootstrap == "kafka-1:9093,kafka-2:9093"
    assert settings.batch_size == 42


def test_double_underscore_nests_and_keeps_the_files_siblings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAZARUS_OUTPUT__TOPIC", "orders.env")
    monkeypatch.setenv("LAZARUS_DLQ__MIN_RETENTION_MS", "5")
    monkeypatch.setenv("LAZARUS_POLICY__MAX_ATTEMPTS", "7")
    monkeypatch.setenv("LAZARUS_POLICY__TOMBSTONES", "dead-letter")
    text = MINIMAL + '\n[output.schema]\nformat = "json"\nmodel = "m:M"\n'
    text = text.replace('topic = "orders.dlq"', 'topic = "orders.dlq"\nstacktraces = false')
    settings = load_settings(write(tmp_path, text))
    assert settings.output.topic == "orders.env"
    assert settings.output.schema_ is not None and settings.output.schema_.model == "m:M"
    assert settings.dlq.min_retention_ms == 5
    assert settings.dlq.topic == "orders.dlq"
    assert settings.dlq.stacktraces is False
    assert settings.policy.max_attempts == 7
    assert settings.policy.tombstones == "dead-letter"
    assert settings.policy.max_backoff_ms == 2000  # untouched default


def test_a_json_variable_sets_a_whole_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAZARUS_PRODUCER", '{"linger.ms": 20, "compression.type": "zstd"}')
    settings = load_settings(write(tmp_path, MINIMAL))
    props = settings.client_properties("producer")
    assert props["linger.ms"] == 20
    assert props["compression.type"] == "zstd"


def test_the_environment_alone_can_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZARUS_PIPELINE", "envonly")
    monkeypatch.setenv("LAZARUS_SOURCES", '{"shop.orders": {"format": "json"}}')
    monkeypatch.setenv("LAZARUS_OUTPUT__TOPIC", "envonly.valid")
    monkeypatch.setenv("LAZARUS_DLQ__TOPIC", "envonly.dlq")
    settings = load_settings(None)
    assert settings.pipeline == "envonly"
    assert settings.sources["shop.orders"].format == "json"
    assert settings.python_path == ()  # no file, no folder to default to


def test_a_bad_variable_is_a_problem_line_with_its_field_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAZARUS_POLICY__MAX_ATTEMPTS", "0")
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert problems(info) == [
        f"{path}: policy.max_attempts: Input should be greater than or equal to 1"
    ]


def test_without_a_file_problems_are_attributed_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LAZARUS_PIPELINE", "bad name")
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    lines = problems(info)
    assert all(line.startswith("environment: ") for line in lines)
    assert [line.split(": ")[1] for line in lines] == ["pipeline", "sources", "output", "dlq"]


def test_keyword_overrides_replace_file_values_and_none_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, 'bootstrap = "file:9092"\n' + MINIMAL)
    assert load_settings(path, bootstrap="kw:9092").bootstrap == "kw:9092"
    assert load_settings(path, bootstrap=None).bootstrap == "file:9092"


# --- secrets -----------------------------------------------------------------------------------


def secret_config() -> str:
    tables = "".join(
        f'\n[{table}]\n"{name}" = "{value}"\n' for table, (name, value) in SECRETS.items()
    )
    registry = (
        '\n[registry]\nurl = "https://registry:8081"\n'
        'conf = { "basic.auth.user.info" = "reg-user:reg-hunter2" }\n'
    )
    return MINIMAL + tables + registry


def test_secrets_never_appear_in_repr_str_or_a_dump(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, secret_config()))
    views = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.kafka)]
    for table, (name, value) in SECRETS.items():
        assert isinstance(getattr(settings, table)[name], SecretStr)
        for view in views:
            assert value not in view
    assert all("reg-hunter2" not in view for view in views)


def test_a_secret_that_toml_reads_as_a_number_is_hidden_too(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL + '\n[kafka]\n"sasl.password" = 918273645\n'))
    assert isinstance(settings.kafka["sasl.password"], SecretStr)
    assert "918273645" not in repr(settings)
    assert settings.client_properties("consumer")["sasl.password"] == "918273645"


def test_client_properties_reveal_secrets_to_the_client_only(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, secret_config()))
    consumer = settings.client_properties("consumer")
    producer = settings.client_properties("producer")
    assert consumer["sasl.password"] == producer["sasl.password"] == "kafka-hunter2"
    assert consumer["ssl.key.password"] == "consumer-hunter2"
    assert producer["sasl.oauthbearer.client.secret"] == "producer-hunter2"
    assert all(not isinstance(v, SecretStr) for v in [*consumer.values(), *producer.values()])


def test_a_secret_from_the_environment_is_hidden_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAZARUS_KAFKA", '{"sasl.password": "env-hunter2"}')
    settings = load_settings(write(tmp_path, MINIMAL))
    assert "env-hunter2" not in repr(settings)
    assert settings.client_properties("consumer")["sasl.password"] == "env-hunter2"


def test_secrets_never_appear_in_config_errors(tmp_path: Path) -> None:
    text = secret_config().replace('topic = "orders.dlq"', 'topic = "orders.dlq"\npassword = "x"')
    text += '\n[reprocessor]\noperator = "kafka-hunter2-as-value"\nmax_replays = -1\n'
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    message = str(info.value)
    assert "dlq.password: Extra inputs are not permitted" in message
    assert "reprocessor.max_replays" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("sasl.oauthbearer.client.secret", True),
        ("ssl.key.pem", True),
        ("ssl.keystore.key", True),
        ("SASL.PASSWORD", True),
        ("bootstrap.servers", False),
        ("sasl.username", False),
        ("ssl.key.location", False),
        ("client.id", False),
    ],
)
def test_is_secret_property(name: str, secret: bool) -> None:
    assert is_secret_property(name) is secret


def test_non_secret_properties_stay_plain_and_readable(tmp_path: Path) -> None:
    text = MINIMAL + '\n[consumer]\n"client.id" = "lazarus-orders"\n"linger.ms" = 5\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.consumer["linger.ms"] == 5
    assert settings.consumer["client.id"] == "lazarus-orders"
    assert "lazarus-orders" in repr(settings)  # only secret-looking names are hidden


# --- client properties -------------------------------------------------------------------------


def test_client_properties_merge_kafka_then_the_role(tmp_path: Path) -> None:
    text = (
        'bootstrap = "b:9092"\n'
        + MINIMAL
        + '\n[kafka]\n"client.id" = "all"\n"socket.timeout.ms" = 1000\n'
        + '"enable.idempotence" = true\n'
        + '\n[consumer]\n"client.id" = "reader"\n"fetch.min.bytes" = 10\n'
        + '\n[producer]\n"socket.timeout.ms" = 2000\n"linger.ms" = 5\n'
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.client_properties("consumer") == {
        "bootstrap.servers": "b:9092",
        "client.id": "reader",
        "socket.timeout.ms": 1000,
        "enable.idempotence": True,
        "fetch.min.bytes": 10,
    }
    assert settings.client_properties("producer") == {
        "bootstrap.servers": "b:9092",
        "client.id": "all",
        "socket.timeout.ms": 2000,
        "enable.idempotence": True,
        "linger.ms": 5,
    }


def test_client_properties_start_from_the_bootstrap_setting(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.client_properties("consumer") == {"bootstrap.servers": "127.0.0.1:9092"}


# --- paths -------------------------------------------------------------------------------------


def test_relative_paths_are_resolved_against_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    text = MINIMAL.replace(
        'format = "avro"',
        'format = "avro-schemaless"\nwriter_schema = "w/1.avsc"\nreader_schema = "../r.avsc"',
    )
    text = 'schema_dir = "avro"\npython_path = ["lib", "/abs/lib"]\n' + text
    text += '\n[policy]\nholds = "holds.toml"\n'
    settings = load_settings(write(folder, text))
    spec = settings.sources["shop.orders"]
    assert settings.schema_dir == folder / "avro"
    assert settings.python_path == (folder / "lib", Path("/abs/lib"))
    assert settings.policy.holds == folder / "holds.toml"
    assert spec.writer_schema == folder / "w" / "1.avsc"
    assert spec.reader_schema == folder / ".." / "r.avsc"


def test_paths_resolve_against_the_file_even_when_its_path_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "conf", 'schema_dir = "avro"\n' + MINIMAL)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(Path("conf/lazarus.toml"))
    assert settings.schema_dir == tmp_path / "conf" / "avro"
    assert settings.schema_dir.is_absolute()


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "avro"
    settings = load_settings(write(tmp_path / "conf", f'schema_dir = "{absolute}"\n' + MINIMAL))
    assert settings.schema_dir == absolute


def test_python_path_defaults_to_the_config_folder(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path / "conf", MINIMAL))
    assert settings.python_path == (tmp_path / "conf",)


def test_output_schema_paths_are_resolved_against_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    text = MINIMAL + '\n[output.schema]\nformat = "avro-schemaless"\nwriter_schema = "out.avsc"\n'
    settings = load_settings(write(folder, text))
    assert settings.output.schema_ is not None
    assert settings.output.schema_.writer_schema == folder / "out.avsc"


def test_settings_can_be_built_directly() -> None:
    # plain dicts, which pydantic validates into the specs: not the specs' types, the point here
    settings = Settings(
        pipeline="p",
        sources={"t": {"format": "bytes"}},  # type: ignore[dict-item]
        output={"topic": "o"},  # type: ignore[arg-type]
        dlq={"topic": "d"},  # type: ignore[arg-type]
    )
    assert settings.ledger_topic == "d.ledger"
    assert settings.redrive_topic == "p.redrive"
