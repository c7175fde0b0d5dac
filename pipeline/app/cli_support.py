"""What both CLIs share: the exit-code table and turning failures into one readable line.

| code | meaning |
| --- | --- |
| 0 | success |
| 1 | the job failed at run time (broker unreachable past its deadline, fenced, accounting |
|   | mismatch) |
| 2 | usage or configuration error (click's `UsageError` convention; a file or folder that |
|   | cannot be used) |
| 3 | partial success (e.g. some selected dead letters could not be replayed) |
| 130 | interrupted (Ctrl-C) |
| 143 | terminated (SIGTERM), stopped as cleanly as Ctrl-C stops it |

A traceback is printed only with `--debug`.
"""

from __future__ import annotations

import errno
import select
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import click

from pipeline.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    ConfigError,
    LazarusError,
    PartialSuccess,
)

EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT), as shells report a process that SIGINT ended (128 + 2)."""
EXIT_TERMINATED = 143
"""SIGTERM, after the same clean stop as Ctrl-C, as shells report a process SIGTERM ended
(128 + 15)."""


def _kafka_error(exc: BaseException) -> str | None:
    """The librdkafka error text of a `confluent_kafka.KafkaException` that reached the top (a
    client call no module turned into a `LazarusError`); None for any other exception. The
    client is looked up, not imported: `--help` runs without it, and then nothing raised one."""
    kafka = sys.modules.get("confluent_kafka")
    if kafka is None or not isinstance(exc, kafka.KafkaException):
        return None
    error = exc.args[0] if exc.args else None
    text = error.str() if isinstance(error, kafka.KafkaError) else str(error or "")
    return text or type(exc).__name__


_LISTEN_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


def _path_error(exc: BaseException) -> str | None:
    """A file or folder the command could not use (a state directory that is a file or read
    only, a full disk): `cannot use PATH: reason`; an address it could not listen on (the
    worker's metrics_port taken): `cannot listen: reason`; None for any other exception."""
    if not isinstance(exc, OSError):
        return None
    if exc.filename:
        return f"cannot use {exc.filename}: {exc.strerror or type(exc).__name__}"
    if exc.errno in _LISTEN_ERRORS:
        return f"cannot listen: {exc.strerror} (a port or address of the configuration)"
    return None


_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
"""Control characters in an error line (a fix function's message, a record's field quoted in a
ConfigError) are shown as `\\x1b`, never sent to the terminal."""


def exit_code_for(exc: BaseException) -> int:
    """The exit code of the project's table for an exception that ended a command."""
    if isinstance(exc, ConfigError | click.UsageError) or _path_error(exc) is not None:
        return EXIT_USAGE
    if isinstance(exc, PartialSuccess):
        return EXIT_PARTIAL
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    return EXIT_FAILED


def one_line(exc: BaseException) -> str:
    """A single line naming the failure; never the payload, never a traceback."""
    if isinstance(exc, click.ClickException):
        text = exc.format_message()
    elif isinstance(exc, LazarusError):
        text = str(exc)
    elif (kafka := _kafka_error(exc)) is not None:
        text = f"Kafka: {kafka}"
    elif (path := _path_error(exc)) is not None:
        text = path
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (run with --debug for a traceback)"
    return " ".join(text.split()) or type(exc).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, like Ctrl-C's KeyboardInterrupt: the same clean
    stop (a plan being written removed, open transactions aborted, clients closed)."""


def _terminate(_signum: int, _frame: object) -> NoReturn:
    raise Terminated


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises `Terminated` while the command runs (a command that handles it itself,
    the worker or the exporter, installs its own handler); the previous handler afterwards.
    Only the main thread may set one: elsewhere SIGTERM keeps its handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(prog: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, Terminated):
        click.echo(f"{prog}: terminated", err=True)
        sys.exit(EXIT_TERMINATED)
    click.echo(f"{prog}: interrupted", err=True)
    sys.exit(EXIT_INTERRUPTED)


def confirm(question: str) -> None:
    """Ask `question [y/N]:` on stderr; `click.Abort` unless the answer is yes.

    `click.confirm`, except that the answer is awaited in short `select`s: a blocking read
    wakes only for a signal that interrupts it, so a SIGTERM delivered as the prompt appeared,
    before the read began, went unhandled and the command waited for an answer for good (seen
    in CI). Input that is not a file (click's test runner) is read by `click.confirm`."""
    try:
        stdin = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        click.confirm(question, abort=True, err=True)
        return
    while True:
        click.echo(f"{question} [y/N]: ", nl=False, err=True)
        while not select.select([stdin], [], [], 0.2)[0]:
            pass  # between two waits, a signal's handler runs (Ctrl-C, SIGTERM)
        line = sys.stdin.readline()
        if not line:  # end of input
            raise click.Abort
        answer = line.strip().lower()
        if answer in ("y", "yes"):
            return
        if answer in ("", "n", "no"):
            raise click.Abort
        click.echo("Error: invalid input", err=True)


def run(command: click.Command, prog: str, argv: Sequence[str] | None = None) -> NoReturn:
    """Run a click command with the project's exit codes and one-line errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        with _sigterm_interrupts():
            result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            _interrupted(prog, exc.__context__)
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt as exc:
        _interrupted(prog, exc)
    except Exception as exc:
        if debug:  # the traceback, then the same line and exit code as without --debug
            traceback.print_exc()
        lines = str(exc).splitlines() if isinstance(exc, ConfigError) else [one_line(exc)]
        for line in lines or [type(exc).__name__]:
            click.secho(f"{prog}: error: {line.translate(_CONTROLS)}", err=True, fg="red")
        sys.exit(exit_code_for(exc))
    sys.exit(result if isinstance(result, int) else EXIT_OK)
