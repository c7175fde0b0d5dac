"""What the harness hands a contender process: one JSON argument, the same for every peer."""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import asdict, dataclass
from types import FrameType

COMMIT_EVERY_S = 1.0  # every contender commits (or checkpoints) once a second
BATCH = 500


@dataclass(frozen=True, slots=True)
class Job:
    bootstrap: str
    source: str
    output: str
    dlq: str
    group: str
    fmt: str  # "avro" or "json"

    def to_arg(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_argv(cls) -> Job:
        return cls(**json.loads(sys.argv[1]))


def headers_for(exc: BaseException) -> list[tuple[str, bytes]]:
    """The dead-letter headers every peer writes: the error's type and its first line."""
    message = str(exc).splitlines()[0][:200] if str(exc) else ""
    return [("error.type", type(exc).__name__.encode()), ("error.message", message.encode())]


class Stop:
    """Set by SIGTERM/SIGINT: the loops of `raw` and `ceiling` check it once per batch."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
