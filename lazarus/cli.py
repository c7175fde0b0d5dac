"""`lazarus`: the worker's commands (`pipeline.app.cli`) plus the ones that use both sides of
the product, the demo and its sample stream. This package sits at the top of the import graph:
it may use `pipeline` and `reprocessor`; neither imports it."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline.app import logs
from pipeline.app.cli import CONFIG_HELP, cli, config_path, quiet_kafka, settings_for
from pipeline.app.cli_support import run
from pipeline.errors import EXIT_OK, RuntimeFailure


@cli.command()
@click.option("--config", "-c", type=click.Path(path_type=Path, dir_okay=False), help=CONFIG_HELP)
@click.pass_obj
def sample(obj: dict[str, object], config: Path | None) -> int:
    """Produce the demo's order stream (Avro orders, JSON payments, some broken) into the
    pipeline's first Avro and first JSON source topics, creating them when missing."""
    from lazarus.demo import produce_sample  # the demo's modules: only for its two commands

    quiet_kafka(obj)
    for line in produce_sample(settings_for(config_path(obj, config))):
        click.echo(line)
    return EXIT_OK


@cli.command()
@click.option(
    "--bootstrap",
    metavar="HOST:PORT",
    help="Run the story on a real broker (exactly-once) instead of the in-process mock cluster.",
)
@click.option("--keep-topics", is_flag=True, help="With --bootstrap: leave the demo's topics.")
def demo(bootstrap: str | None, keep_topics: bool) -> int:
    """The whole story in under a minute: bad records in, dead letters out, fixed, replayed.
    On a real broker, the topics it created are removed at the end (unless --keep-topics)."""
    from lazarus.demo import run_demo  # the demo's modules cost `lazarus worker` 0.15 s

    logs.setup("text", logging.ERROR)
    if run_demo(bootstrap, keep_topics=keep_topics) != 0:
        raise RuntimeFailure("the demo's accounting did not hold")
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    run(cli, "lazarus", argv)


if __name__ == "__main__":
    main()
