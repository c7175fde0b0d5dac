"""The `dlq` options shared by several commands, and the context object every command gets:
global options (`Env`), the selection window, fix operations in command-line order, `--rate`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from pipeline.app.defaults import MAX_REPLAYS, USE_INDEX
from pipeline.errors import ConfigError
from reprocessor import fixes, masking, selection
from reprocessor.deadletters import use_correlation_header
from reprocessor.ledger import operator_name, state_dir
from reprocessor.payloads import Change, Payloads
from reprocessor.timeparse import parse_when

if TYPE_CHECKING:  # pydantic-settings costs 0.1-0.2 s: imported when a command reads a config
    from pipeline.app.settings import KafkaValue, Settings
    from reprocessor.stats import Window

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Defaults:
    """What a command given --bootstrap and --topic instead of a config uses: the defaults of
    the config's `[reprocessor]` table (`ReprocessorSpec`)."""

    index: bool
    max_replays: int


NO_CONFIG = Defaults(index=USE_INDEX, max_replays=MAX_REPLAYS)


INSPECT_DEFAULT_LIMIT = 100
"""Rows of the `inspect` table when no --limit is given (--json streams everything)."""
EXPORTER_PORT = 9465
"""`dlq exporter`'s default port, here so that every other `dlq` command starts without
importing the exporter (prometheus-client and http.server: 0.1-0.2 s of each command's start)."""
FIX_FLAGS = {f"--{kind}": kind for kind in fixes.KINDS}
PLAN_OPTIONS: tuple[str, ...] = (
    *("where", "since", "until", "limit", "tail", "to_topic", "to_source", "force", "fix_with"),
    "keep_foreign_headers",
    *(f"fix_{kind}" for kind in fixes.KINDS),
)
"""What a stored plan fixes once and for all: `--resume` refuses them."""
WHERE_HELP = (
    "Selection: terms like category=validation joined by and/or, with not and ( ); "
    "'dlq --help' has the grammar. Fields: " + ", ".join(selection.FIELDS)
)
WHERE_GRAMMAR = """\b
--where grammar (never evaluated as code; an error points at its column):
  EXPR  := EXPR or EXPR | EXPR and EXPR | not EXPR | ( EXPR ) | FIELD OP VALUE[|VALUE...]
  and binds tighter than or; and, or, not in any case
  OP    := =  !=  <  <=  >  >=  ~ (substring, any case)
  a|b   any of (with !=: none of)       null   the field is missing
  'x y' quote values holding blanks, | or quotes (a backslash escapes)
  ts, failed_at  epoch ms, an ISO-8601 time, or a duration ago: failed_at>2h
  age            a duration since the failure: age>1d (30s, 15m, 2h, 7d, 2w, 1h30m)
  rule           the hold rule that parked a held dead letter: rule=fraud-review
  value.PATH     a decoded payload field: value.customer.id, value.items.0.sku
e.g. --where "category=validation and not (type~Timeout or source.topic=payments)"
"""
"""The `--where` grammar as `dlq --help` shows it (and docs/CLI.md, generated from it)."""


class Env:
    """The global options, resolved lazily so that `--help` needs no configuration."""

    def __init__(
        self,
        config: Path | None,
        bootstrap: str | None,
        topics: tuple[str, ...],
        props: dict[str, str],
        as_json: bool,
        operator: str | None,
        quiet: bool = False,
        recreate_ledger: bool = False,
        masks: tuple[str, ...] = (),
    ) -> None:
        self.config, self.bootstrap, self.topic_overrides = config, bootstrap, topics
        self.props, self.as_json, self.operator_option = props, as_json, operator
        self.quiet, self.recreate_ledger = quiet, recreate_ledger
        masking.parse(masks)  # a bad --mask fails now (exit 2), before any I/O
        self.mask_options = masks
        self._ledgers_checked: set[str] = set()

    @cached_property
    def settings(self) -> Settings | None:
        """The pipeline's settings; None when --bootstrap and --topic stand in for them."""
        if self.config is not None:
            from pipeline.app.settings import load_settings

            settings = load_settings(self.config)
            masking.parse(settings.reprocessor.mask)  # a bad mask fails with the config
            use_correlation_header(settings.correlation_header)
            return settings
        if self.bootstrap is None or not self.topic_overrides:
            raise ConfigError("give --config FILE, or --bootstrap HOST:PORT and --topic DLQ")
        return None

    def conf(self, role: Literal["consumer", "producer"] = "consumer") -> dict[str, KafkaValue]:
        """librdkafka properties: the config's for `role`, then --bootstrap, then -X."""
        conf = dict(self.settings.client_properties(role)) if self.settings else {}
        if self.bootstrap is not None and not self.bootstrap.strip():
            raise ConfigError("--bootstrap is empty: give HOST:PORT")
        if self.bootstrap is not None:
            conf["bootstrap.servers"] = self.bootstrap
        conf.update(self.props)
        return conf

    def topics(self) -> list[str]:
        """The DLQ topics, each checked for a deleted ledger (`reprocessor.ledger_guard`)."""
        if self.topic_overrides or self.settings is None:
            names = list(self.topic_overrides)
        else:
            names = [self.settings.dlq.topic]
        for name in names:
            self.check_ledger(name)
        return names

    def check_ledger(self, topic: str) -> None:
        """Refuse a DLQ whose ledger topic was deleted (`LedgerMissing`, exit 2), once per
        topic and command, unless --recreate-ledger."""
        if topic in self._ledgers_checked:
            return
        from reprocessor.ledger_guard import check_ledger  # the Kafka client (see `window`)

        expected = self.settings is not None and topic == self.settings.dlq.topic
        folder = state_dir()
        check_ledger(self.conf(), topic, folder, expected=expected, recreate=self.recreate_ledger)
        self._ledgers_checked.add(topic)

    def remember_ledger(self, topic: str) -> None:
        """After a command wrote the ledger: remember its topic id (the first replay or discard
        of a DLQ creates it), so that deleting it later is noticed like any other."""
        self._ledgers_checked.discard(topic)
        self.check_ledger(topic)

    def topic(self) -> str:
        """The one DLQ topic a writing command works on."""
        topics = self.topics()
        if len(topics) != 1:
            raise click.UsageError("this command works on one DLQ topic: give one --topic")
        return topics[0]

    @cached_property
    def payloads(self) -> Payloads:
        return Payloads(self.settings)

    @cached_property
    def masks(self) -> masking.Masks:
        """What to mask in everything printed: the config's `reprocessor.mask`, then --mask.
        The tag key is read (or made) only when something is masked."""
        spec = self.settings.reprocessor if self.config is not None and self.settings else None
        configured = spec.mask if spec is not None else ()
        paths = masking.parse((*configured, *self.mask_options))
        return masking.Masks(paths, masking.load_key(state_dir()) if paths else b"")

    @property
    def operator(self) -> str:
        configured = self.settings.reprocessor.operator if self.settings else None
        return operator_name(self.operator_option, configured)

    @property
    def use_index(self) -> bool:
        """Whether stats, group and inspect may answer from the local index (`--scan` aside)."""
        return self.settings.reprocessor.index if self.settings else NO_CONFIG.index

    @property
    def max_replays(self) -> int:
        return self.settings.reprocessor.max_replays if self.settings else NO_CONFIG.max_replays

    def override(self, name: str, value: object) -> None:
        """A global option given after the command name (`dlq inspect --json`): it wins over
        the same option given before it, and -X properties add up."""
        if name == "config":
            self.config = value if isinstance(value, Path) else None
            self.__dict__.pop("settings", None)
            self.__dict__.pop("payloads", None)
            self.__dict__.pop("masks", None)
        elif name == "topics" and isinstance(value, tuple):
            self.topic_overrides = value
        elif name == "props" and isinstance(value, dict):
            self.props = {**self.props, **value}
        elif name == "masks" and isinstance(value, tuple):
            masking.parse(value)
            self.mask_options = (*self.mask_options, *value)
            self.__dict__.pop("masks", None)
        elif name in ("as_json", "quiet", "recreate_ledger"):
            setattr(self, name, bool(value))
        elif name in ("bootstrap", "operator") and isinstance(value, str):
            setattr(self, "bootstrap" if name == "bootstrap" else "operator_option", value)


def parse_props(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    props = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {text!r}")
        props[key.strip()] = value
    return props


GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--config", "-c"),
        {
            "type": click.Path(path_type=Path, dir_okay=False),
            "help": "Pipeline configuration (TOML), the worker's own file.",
        },
    ),
    (("--bootstrap", "-b"), {"help": "Kafka bootstrap servers (overrides the config's)."}),
    (("--topic", "-t", "topics"), {"multiple": True, "help": "DLQ topic (repeatable)."}),
    (
        ("-X", "props"),
        {
            "multiple": True,
            "callback": parse_props,
            "metavar": "KEY=VALUE",
            "help": "librdkafka property for every client, e.g. -X security.protocol=SSL.",
        },
    ),
    (("--json", "as_json"), {"is_flag": True, "help": "JSON lines: kcat -J fields plus error."}),
    (("--operator",), {"help": "Who decides, for the ledger (default: the OS user)."}),
    (
        ("--mask", "masks"),
        {
            "multiple": True,
            "metavar": "PATH",
            "help": "Mask a field in everything printed (repeatable): key, value, "
            "value.card.number (* for any key or index), header.NAME. Never changes what "
            "is replayed.",
        },
    ),
    (("--quiet", "-q"), {"is_flag": True, "help": "No progress bars."}),
    (
        ("--recreate-ledger",),
        {
            "is_flag": True,
            "help": "Create the ledger topic again after it was deleted (every decision is lost).",
        },
    ),
    (("--debug",), {"is_flag": True, "help": "Show tracebacks for unexpected errors."}),
)
"""`dlq`'s global options. Each is accepted before the command name (`dlq --json inspect`) and
after it (`dlq inspect --json`); given after, it wins."""


def global_options(f: F) -> F:
    """The global options on the `dlq` group itself."""
    for decls, attrs in reversed(GLOBAL_OPTIONS):
        f = click.option(*decls, **attrs)(f)
    return f


def _late_global(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A global option given after the command name: applied to the group's `Env`."""
    if param.name == "props":
        value = parse_props(ctx, param, value)
    if value in (None, False, (), {}) or not isinstance(ctx.obj, Env):
        return value
    if param.name == "debug":
        from pipeline.kafka.clients import KAFKA_LOG  # the Kafka client (see `window`)

        logging.getLogger(KAFKA_LOG.name).setLevel(logging.DEBUG)
    else:
        ctx.obj.override(param.name or "", value)
    return value


class GlobalsGroup(click.Group):
    """A group whose commands also accept every global option (see `GLOBAL_OPTIONS`)."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        taken = {opt for param in cmd.params for opt in param.opts}
        for decls, attrs in GLOBAL_OPTIONS:
            if taken.intersection(decls):
                continue  # the command's own option of that name (`exporter --config`) wins
            late = {**attrs, "callback": _late_global, "expose_value": False}
            cmd.params.append(click.Option(list(decls), **late))
        super().add_command(cmd, name)


def _options(*options: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def _at_most_maxsize(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    """A count past `sys.maxsize` (2**63 - 1) counts nothing more: it is taken as that, which
    `itertools.islice` and SQLite's LIMIT accept (a larger one failed as an unexpected
    ValueError or OverflowError)."""
    return None if value is None else min(value, sys.maxsize)


selection_options = _options(
    click.option("--where", "-w", help=WHERE_HELP),
    click.option("--since", help="Failed at or after: 2h (ago), an ISO time or epoch ms."),
    click.option("--until", help="Failed at or before: 2h (ago), an ISO time or epoch ms."),
    click.option(
        "--limit",
        "-n",
        type=click.IntRange(min=1),
        callback=_at_most_maxsize,
        help="At most N dead letters.",
    ),
    click.option(
        "--tail",
        type=click.IntRange(min=1),
        callback=_at_most_maxsize,
        help="Only the last N of each partition.",
    ),
    click.option("--from-beginning", is_flag=True, help="Read from the start (the default)."),
)
fix_options = _options(
    click.option("--set", "fix_set", multiple=True, metavar="PATH=VALUE", help="Set a field."),
    click.option("--delete", "fix_delete", multiple=True, metavar="PATH", help="Remove a field."),
    click.option("--rename", "fix_rename", multiple=True, metavar="OLD=NEW", help="Move a field."),
    click.option(
        "--default", "fix_default", multiple=True, metavar="PATH=VALUE", help="Set if missing."
    ),
    click.option(
        "--cast", "fix_cast", multiple=True, metavar="PATH:TYPE", help="int|float|str|bool"
    ),
    click.option("--with", "fix_with", metavar="MODULE:FUNCTION", help="A Python fix, run last."),
)


def window(opts: dict[str, Any], *, decode: bool = False) -> Window:
    """The Window of the selection options; click.UsageError (exit 2) pointing at a bad part."""
    # imported here: `reprocessor.stats` loads the Kafka client and `render` rich (some 50 ms),
    # which `dlq --help` and the building of the commands' options do without
    from reprocessor.render import now_ms
    from reprocessor.stats import Window

    if opts["tail"] is not None and opts["from_beginning"]:
        raise click.UsageError("--tail and --from-beginning contradict each other")
    expr = opts["where"]
    if expr is not None and not expr.strip():  # `--where "$SELECTION"`, the variable unset
        raise click.UsageError("--where is empty: leave it out to select every dead letter")
    try:
        chosen = selection.parse(expr)
    except selection.SelectionError as exc:
        at = (expr or "")[exc.column - 1 : exc.column + 19]
        raise click.UsageError(f"--where, column {exc.column}: {exc.message} (at {at!r})") from exc
    now = now_ms()
    since, until = _when(opts["since"], "--since", now), _when(opts["until"], "--until", now)
    if since is not None and until is not None and since > until:
        raise click.UsageError(
            f"--since ({opts['since']}) is later than --until ({opts['until']}): nothing between"
        )
    return Window(chosen, since, until, opts["tail"], decode=decode)


def _when(text: str | None, flag: str, now: int) -> int | None:
    try:
        return None if text is None else parse_when(text, now)
    except ValueError as exc:
        raise click.UsageError(f"{flag}: {exc}") from exc


class FixCommand(click.Command):
    """Keeps the command line's order of the fix options (`--set a=1 --rename a=b` differs from
    `--rename a=b --set a=1`), which click's per-option lists lose."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["fix_order"] = fix_order(args)
        return super().parse_args(ctx, args)


def fix_order(args: Sequence[str]) -> list[tuple[str, str]]:
    """(kind, text) of every fix option in `args`, in order (`--set x` and `--set=x` forms)."""
    pairs: list[tuple[str, str]] = []
    index = 0
    while index < len(args) and args[index] != "--":
        name, eq, inline = args[index].partition("=")
        if name in FIX_FLAGS and (eq or index + 1 < len(args)):
            pairs.append((FIX_FLAGS[name], inline if eq else args[index + 1]))
            index += 0 if eq else 1
        index += 1
    return pairs


def fix_pairs(opts: dict[str, Any]) -> list[tuple[str, str]]:
    """The fix operations given, in command-line order when it could be recovered."""
    given = [(kind, text) for kind in fixes.KINDS for text in opts[f"fix_{kind}"]]
    ordered: list[tuple[str, str]] = click.get_current_context().meta.get("fix_order", [])
    return ordered if sorted(ordered) == sorted(given) else given


def change_of(
    pairs: Sequence[tuple[str, str]], with_spec: str | None
) -> tuple[Change, tuple[str, ...]] | None:
    """The fix as one function, and how the ledger describes it; None when there is none.
    Raises click.UsageError for bad operations, ConfigError for a --with that does not load."""
    if not pairs and not with_spec:
        return None
    try:
        ops = fixes.parse_ordered(pairs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    function = fixes.load_fix_function(with_spec, search_paths=_fix_paths()) if with_spec else None
    described = tuple(op.describe() for op in ops) + ((f"with {with_spec}",) if with_spec else ())

    def change(event: object) -> dict[str, object]:
        fixed = fixes.apply(ops, event)
        return fixed if function is None else fixes.apply_function(function, fixed)

    return change, described


def _fix_paths() -> tuple[Path, ...]:
    """Where a `--with` module is looked up: the config's `python_path` (its own folder by
    default, as the worker imports processors), then the working directory."""
    ctx = click.get_current_context(silent=True)
    env = None if ctx is None else ctx.find_object(Env)
    configured = env.settings.python_path if env is not None and env.settings else ()
    return (*configured, Path.cwd())


def parse_rate(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        rate = float(value.strip().removesuffix("/s"))
    except ValueError:
        raise click.BadParameter(f"expected N/s, e.g. 50/s, got {value!r}") from None
    if not MIN_RATE <= rate < float("inf"):
        raise click.BadParameter(
            f"must be a number of records per second, at least {MIN_RATE} (one every "
            f"{1 / MIN_RATE:.0f} s)"
        )
    return rate


MIN_RATE = 0.001
"""The slowest --rate: slower ones are a mistake (a pause computed from 1e-300/s overflowed
time.sleep: 'unexpected OverflowError')."""
