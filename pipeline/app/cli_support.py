"""What both CLIs share: the exit-code table and turning failures into one readable line.

| code | meaning |
| --- | --- |
| 0 | success |
| 1 | the job failed at run time (broker unreachable past its deadline, fenced, accounting |
|   | mismatch) |
| 2 | usage or configuration error (click's `UsageError` convention) |
| 3 | partial success (e.g. some selected dead letters could not be replayed) |
| 130 | interrupted (Ctrl-C) |

A traceback is printed only with `--debug`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
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


def exit_code_for(exc: BaseException) -> int:
    """The exit code of the project's table for an exception that ended a command."""
    if isinstance(exc, ConfigError | click.UsageError):
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
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (run with --debug for a traceback)"
    return " ".join(text.split()) or type(exc).__name__


def run(command: click.Command, prog: str, argv: Sequence[str] | None = None) -> NoReturn:
    """Run a click command with the project's exit codes and one-line errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            click.echo(f"{prog}: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo(f"{prog}: aborted", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if debug:
            raise
        lines = str(exc).splitlines() if isinstance(exc, ConfigError) else [one_line(exc)]
        for line in lines or [type(exc).__name__]:
            click.secho(f"{prog}: error: {line}", err=True, fg="red")
        sys.exit(exit_code_for(exc))
    sys.exit(result if isinstance(result, int) else EXIT_OK)
