"""`lazarus`: the worker side. Parse, call, render, exit (codes in `pipeline.app.cli_support`)."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from pipeline.app import logs
from pipeline.app.cli_support import run
from pipeline.app.members import Supervisor
from pipeline.app.settings import Settings, load_settings
from pipeline.errors import EXIT_FAILED, EXIT_OK, ConfigError, RuntimeFailure

CONFIG_HELP = "Pipeline configuration (TOML); LAZARUS_* environment variables override it."


ENV_PREFIX = "LAZARUS_"


def settings_for(config: Path | None) -> Settings:
    """The configuration of `--config`, else of the LAZARUS_* environment variables; with
    neither, one line that says so (not a "Field required" line per missing setting)."""
    if config is None and not any(name.startswith(ENV_PREFIX) for name in os.environ):
        raise ConfigError("no configuration: give --config FILE (or LAZARUS_* variables)")
    return load_settings(config)


def quiet_kafka(obj: dict[str, object]) -> None:
    """librdkafka's own log lines off (unless --debug) for a command that is not the worker:
    a broker it cannot reach ends it with one error line, not a FAIL line per attempt first."""
    from pipeline.kafka.clients import KAFKA_LOG

    if not obj.get("debug"):
        KAFKA_LOG.setLevel(logging.CRITICAL + 1)


def config_path(obj: dict[str, object], config: Path | None) -> Path | None:
    """`--config` given after the command name, else before it (`lazarus --config X worker`)."""
    given = obj.get("config")
    return config if config is not None else given if isinstance(given, Path) else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", type=click.Path(path_type=Path, dir_okay=False), help=CONFIG_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text or JSON lines.",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None, debug: bool, log_format: str | None) -> None:
    """Lazarus: validate Kafka records, forward the good, dead-letter the bad, with precise
    error metadata. `--config` works before or after the command name."""
    ctx.obj = {"debug": debug, "log_format": log_format, "config": config}


@cli.command()
@click.option("--config", "-c", type=click.Path(path_type=Path, dir_okay=False), help=CONFIG_HELP)
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Group members to run on this host (one per core).",
)
@click.option(
    "--instance",
    default=None,
    help="Member name, part of the transactional id (default: the `instance` setting, else "
    "<hostname>-<lowest index free on this host>).",
)
@click.option("--no-topic-check", is_flag=True, help="Skip the start-up topic check.")
@click.pass_obj
def worker(
    obj: dict[str, object],
    config: Path | None,
    processes: int,
    instance: str | None,
    no_topic_check: bool,
) -> int:
    """Run the pipeline's worker until SIGTERM/SIGINT (SIGHUP reloads hold rules)."""
    config = config_path(obj, config)
    settings = settings_for(config)
    logs.setup(str(obj["log_format"] or settings.log_format))
    if processes > 1:
        base = instance or settings.instance
        return _run_processes(config, processes, base, no_topic_check, obj, settings.metrics_port)
    from pipeline.app.build import run_worker
    from pipeline.app.instance import resolve_instance

    run_worker(
        settings,
        resolve_instance(instance, settings.instance, settings.pipeline),
        check=not no_topic_check,
    )
    return EXIT_OK


def _run_processes(
    config: Path | None,
    count: int,
    base: str | None,
    no_check: bool,
    obj: dict[str, object],
    metrics_port: int | None,
) -> int:
    """N group members as supervised child processes (`pipeline.app.members`): member i serves
    metrics on `metrics_port + i`. With a base name the members are `<base>-<i>`; without,
    each derives its own."""
    args = [sys.executable, "-m", "pipeline.app.cli"]
    if obj["log_format"]:
        args += ["--log-format", str(obj["log_format"])]
    args.append("worker")
    if config is not None:
        args += ["--config", str(config)]
    if no_check:
        args.append("--no-topic-check")
    named = [["--instance", f"{base}-{i}"] if base else [] for i in range(count)]
    return Supervisor([[*args, *extra] for extra in named], metrics_port).run()


@cli.command()
@click.option("--config", "-c", type=click.Path(path_type=Path, dir_okay=False), help=CONFIG_HELP)
@click.option(
    "--check", "mode", flag_value="check", default=True, help="Report problems (default)."
)
@click.option(
    "--create",
    "mode",
    flag_value="create",
    help="Create the missing output, DLQ, redrive and ledger topics, then check.",
)
@click.pass_obj
def topics(obj: dict[str, object], config: Path | None, mode: str) -> int:
    """Check (or create) the topics a pipeline needs."""
    from pipeline.app.build import check_topics, create_topics

    quiet_kafka(obj)
    settings = settings_for(config_path(obj, config))
    if mode == "create":
        for name in create_topics(settings):
            click.echo(f"created {name}")
    report = check_topics(settings)
    problems = report.problems
    if not report.configs_known:
        click.echo("note: this cluster does not answer config look-ups; checked existence only")
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        raise RuntimeFailure(f"{len(problems)} topic problem(s) for pipeline {settings.pipeline}")
    click.echo(f"topics of pipeline {settings.pipeline}: ok")
    return EXIT_OK


@cli.command()
@click.option("--config", "-c", type=click.Path(path_type=Path, dir_okay=False), help=CONFIG_HELP)
@click.option(
    "--file",
    "rules_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A hold-rules file to check (default: the config's policy.holds).",
)
@click.option("--check", is_flag=True, default=True, help="Validate and list the rules (default).")
@click.pass_obj
def holds(obj: dict[str, object], config: Path | None, rules_file: Path | None, check: bool) -> int:
    """Validate a hold-rules file (every problem, one line each; exit 2) and list its rules:
    active ones with their expiry, expired ones marked. The first active rule that matches a
    record parks it."""
    from pipeline.core import holds as hold_rules

    path = rules_file or settings_for(config_path(obj, config)).policy.holds
    if path is None:
        raise ConfigError("the configuration names no hold-rules file (policy.holds): give --file")
    rules = hold_rules.load_rules(path)
    now_ms = int(time.time() * 1000)
    for rule in rules.rules:
        state = "active " if rule.active(now_ms) else "expired"
        when = hold_rules.expiry_text(rule)
        click.echo(f"{state}  {rule.name}  until {when}  {hold_rules.describe(rule)}")
    active = sum(1 for rule in rules.rules if rule.active(now_ms))
    click.echo(f"{path}: valid, version {rules.version}, {active} of {len(rules.rules)} active")
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    run(cli, "lazarus", argv)


if __name__ == "__main__":
    main()


__all__ = ["EXIT_FAILED", "ConfigError", "cli", "main"]
