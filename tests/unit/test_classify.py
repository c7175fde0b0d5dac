"""Exception -> category, reported error type, payload-free message, details and stack trace; which
errors are retryable; resolving the configured retryable exception names.

The hooks passed to `classify` here are a pipeline that keeps messages
(`policy.error_messages = "keep"`, through `policy.redact`); the default, which withholds them,
is proven in test_redaction.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.core.classify import (
    Classified,
    classify,
    exhausted,
    is_retryable,
    load_exception_types,
    qualified_type,
    reported_type,
)
from pipeline.errors import (
    Category,
    ConfigError,
    DeserializationError,
    RecordError,
    Retryable,
    SchemaError,
    SchemaUnavailable,
    ValidationFailed,
)

SECRET = "4111-1111-1111-1111"


def keep(text: str) -> str:
    return text


def redact_cards(text: str) -> str:
    return text.replace(SECRET, "<card>")


def raised(exc: BaseException) -> BaseException:
    """`exc` with a real traceback (raised from a function of this module)."""

    def process_payment() -> None:
        raise exc

    try:
        process_payment()
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


class PaymentDeclined(Exception):
    pass


class Outer:
    class Inner(Exception):
        pass


# --- qualified_type / reported_type ------------------------------------------------------------


def test_builtins_are_named_bare() -> None:
    assert qualified_type(TimeoutError("x")) == "TimeoutError"
    assert qualified_type(KeyError("x")) == "KeyError"


def test_user_types_are_module_qualified_with_their_qualname() -> None:
    assert qualified_type(PaymentDeclined()) == f"{__name__}.PaymentDeclined"
    assert qualified_type(Outer.Inner()) == f"{__name__}.Outer.Inner"


def test_private_module_segments_are_dropped() -> None:
    class Model(BaseModel):
        qty: int

    with pytest.raises(ValidationError) as info:
        Model.model_validate({"qty": "many"})
    assert type(info.value).__module__ == "pydantic_core._pydantic_core"
    assert qualified_type(info.value) == "pydantic_core.ValidationError"


def test_a_type_in_an_all_private_module_is_named_bare() -> None:
    hidden = type("Hidden", (Exception,), {"__module__": "_private._impl"})
    assert qualified_type(hidden()) == "Hidden"


def test_lazarus_record_errors_report_the_library_exception_they_wrap() -> None:
    try:
        try:
            b"\xff".decode("utf-8")
        except UnicodeDecodeError as cause:
            raise DeserializationError("invalid UTF-8 in field 'name'") from cause
    except DeserializationError as exc:
        assert reported_type(exc) == "UnicodeDecodeError"
        assert classify(exc, keep).error_type == "UnicodeDecodeError"


def test_record_errors_without_a_cause_report_their_own_type() -> None:
    assert reported_type(ValidationFailed("x")) == "pipeline.errors.ValidationFailed"


def test_other_exceptions_report_their_own_type_even_with_a_cause() -> None:
    try:
        try:
            raise KeyError("k")
        except KeyError as cause:
            raise PaymentDeclined("declined") from cause
    except PaymentDeclined as exc:
        assert reported_type(exc) == f"{__name__}.PaymentDeclined"


# --- classify ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (DeserializationError("bad magic byte"), Category.DESERIALIZATION),
        (SchemaError("unknown schema id 9"), Category.SCHEMA),
        (SchemaUnavailable("registry down"), Category.SCHEMA),
        (ValidationFailed("1 validation error for Order: qty (greater_than)"), Category.VALIDATION),
        (RecordError("handler refused"), Category.PROCESSING),
    ],
)
def test_record_errors_keep_their_category_and_message(
    error: RecordError, category: Category
) -> None:
    got = classify(raised(error), keep, with_stack=False)
    assert got.category is category
    assert got.message == error.message
    assert got.stacktrace is None


def test_record_error_details_are_carried_as_a_tuple() -> None:
    details = [{"loc": "items.0.qty", "msg": "Input should be greater than 0", "type": "gt"}]
    got = classify(ValidationFailed("1 validation error", details=details), keep)
    assert got.details == tuple(details)


def test_record_error_messages_are_not_passed_through_the_redaction_hook() -> None:
    calls: list[str] = []

    def spy(text: str) -> str:
        calls.append(text)
        return "REDACTED"

    got = classify(ValidationFailed("qty (greater_than)"), spy)
    assert got.message == "qty (greater_than)"
    assert calls == []


def test_user_exceptions_are_processing_failures_with_the_redacted_message() -> None:
    got = classify(raised(PaymentDeclined(f"card {SECRET} declined")), redact_cards)
    assert got == Classified(
        Category.PROCESSING,
        f"{__name__}.PaymentDeclined",
        "card <card> declined",
        (),
        got.stacktrace,
    )


def test_an_empty_message_falls_back_to_the_type_name() -> None:
    assert classify(PaymentDeclined(), keep).message == f"{__name__}.PaymentDeclined"


def test_a_redactor_that_erases_everything_falls_back_to_the_type_name() -> None:
    got = classify(PaymentDeclined(f"card {SECRET}"), lambda text: "")
    assert got.message == f"{__name__}.PaymentDeclined"


def test_the_stacktrace_has_the_frames_and_the_sanitised_message_never_the_raw_text() -> None:
    got = classify(raised(PaymentDeclined(f"card {SECRET} declined")), redact_cards)
    assert got.stacktrace is not None
    assert got.stacktrace.startswith("Traceback (most recent call last):\n")
    assert "process_payment" in got.stacktrace  # the frame that raised
    assert got.stacktrace.endswith(f"{__name__}.PaymentDeclined: card <card> declined")
    assert SECRET not in got.stacktrace


def test_the_stacktrace_can_be_switched_off() -> None:
    assert classify(raised(PaymentDeclined("x")), keep, with_stack=False).stacktrace is None


def test_an_exception_never_raised_has_an_empty_frame_list() -> None:
    got = classify(PaymentDeclined("boom"), keep)
    assert got.stacktrace == (
        f"Traceback (most recent call last):\n{__name__}.PaymentDeclined: boom"
    )


# --- exhausted ---------------------------------------------------------------------------------


def test_exhausted_says_how_often_and_how_long_and_keeps_the_cause() -> None:
    got = exhausted(
        raised(TimeoutError(f"backend slow for {SECRET}")),
        attempts=3,
        elapsed_s=2.25,
        redact=redact_cards,
        with_stack=True,
    )
    assert got.category is Category.RETRIES_EXHAUSTED
    assert got.error_type == "TimeoutError"
    assert got.message == "gave up after 3 attempts in 2.2s: backend slow for <card>"
    assert got.stacktrace is not None and SECRET not in got.stacktrace


def test_exhausted_keeps_the_details_of_a_record_error() -> None:
    details = [{"loc": "amount", "msg": "m", "type": "t"}]
    got = exhausted(ValidationFailed("amount (t)", details=details), 2, 0.0, keep, with_stack=False)
    assert got.category is Category.RETRIES_EXHAUSTED
    assert got.details == tuple(details)
    assert got.message == "gave up after 2 attempts in 0.0s: amount (t)"
    assert got.stacktrace is None


# --- is_retryable ------------------------------------------------------------------------------


class FlakyBackend(Retryable):
    pass


@pytest.mark.parametrize(
    ("exc", "configured", "expected"),
    [
        (Retryable("again"), (), True),
        (FlakyBackend(), (), True),  # subclasses of Retryable always retry
        (TimeoutError(), (TimeoutError,), True),
        (ConnectionRefusedError(), (ConnectionError,), True),  # subclass of a configured type
        (TimeoutError(), (), False),
        (ValueError(), (TimeoutError, ConnectionError), False),
        (ConnectionError(), (ConnectionRefusedError,), False),  # a base is not its subclass
        (ValidationFailed("x"), (TimeoutError,), False),
    ],
)
def test_is_retryable(
    exc: BaseException, configured: tuple[type[BaseException], ...], expected: bool
) -> None:
    assert is_retryable(exc, configured) is expected


# --- load_exception_types ----------------------------------------------------------------------


def test_builtins_resolve_by_bare_name() -> None:
    assert load_exception_types(("TimeoutError", "ConnectionError")) == (
        TimeoutError,
        ConnectionError,
    )


def test_module_types_resolve_with_a_dot_or_a_colon() -> None:
    assert load_exception_types(("pipeline.errors.Retryable", "pipeline.errors:SchemaError")) == (
        Retryable,
        SchemaError,
    )
    assert load_exception_types(("json:JSONDecodeError",))[0].__name__ == "JSONDecodeError"


def test_no_names_no_types() -> None:
    assert load_exception_types(()) == ()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("NoSuchError", "cannot find exception type 'NoSuchError'"),
        ("no_such_module_xyz:Boom", "cannot find exception type 'no_such_module_xyz:Boom'"),
        ("pipeline.errors:NoSuchError", "cannot find exception type 'pipeline.errors:NoSuchError'"),
        ("", "cannot find exception type ''"),
        ("int", "'int' is not an exception type"),
        ("pipeline.errors:EXIT_USAGE", "'pipeline.errors:EXIT_USAGE' is not an exception type"),
        ("os.path", "'os.path' is not an exception type"),
    ],
)
def test_bad_names_are_one_line_config_errors(name: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_exception_types(("TimeoutError", name))
    assert str(info.value) == f"policy.retryable: {reason}"


def test_a_relative_module_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^policy\.retryable: "):
        load_exception_types(("..errors.Boom",))


def test_a_module_that_fails_to_import_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lazarus_broken_errors.py").write_text(
        "raise RuntimeError('cannot start')\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazarus_broken_errors", raising=False)
    with pytest.raises(ConfigError, match=r"^policy\.retryable: "):
        load_exception_types(("lazarus_broken_errors:Boom",))
