"""Generate docs/CLI.md from the click commands themselves (a test keeps the file in step).

python scripts/cli_reference.py > docs/CLI.md
"""

from __future__ import annotations

import sys

import click

from lazarus import cli as _lazarus_commands  # noqa: F401 - adds its commands to the group
from pipeline.app.cli import cli as lazarus
from reprocessor.cli import cli as dlq

HEADER = """# CLI reference

Generated from the click commands by `scripts/cli_reference.py`; `tests/unit/test_docs.py` fails
when this file and the commands disagree. Exit codes (both CLIs): 0 success, 1 the job failed at
run time, 2 usage or configuration error, 3 partial success, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM, stopped as cleanly as Ctrl-C).
"""


def sections(
    command: click.Command, path: list[str], parent: click.Context | None = None
) -> list[str]:
    """Help of `command` and its subcommands, rendered in contexts made the way click makes them
    at run time (so inherited settings such as `-h` apply, whatever ran before)."""
    # a subcommand's name only: click puts the parents' names before it in the usage line
    ctx = command.make_context(
        path[-1], [], parent=parent, resilient_parsing=True, max_content_width=100
    )
    ctx.terminal_width = 100
    out = [f"\n## `{' '.join(path)}`\n\n```text\n{command.get_help(ctx)}\n```\n"]
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += sections(sub, [*path, name], ctx)
    return out


def render() -> str:
    parts = [HEADER, *sections(lazarus, ["lazarus"]), *sections(dlq, ["dlq"])]
    return "".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
