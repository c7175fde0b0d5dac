"""What the scripts that run Java services for tests share (scripts/kafka_broker.py,
scripts/registry.py): tool look-ups, Maven's error line, ports, and processes that die with
their parent. Every failure is a `ToolError` whose message is one readable line."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket


class ToolError(Exception):
    """A service could not be fetched, started or stopped. The message is one readable line."""


def require_tool(name: str, why: str, error: type[ToolError] = ToolError) -> str:
    path = shutil.which(name)
    if path is None:
        raise error(f"`{name}` not found on PATH ({why})")
    return path


def mvn_reason(output: str) -> str:
    """The first meaningful `[ERROR]` line of quiet Maven output."""
    errors = [line.removeprefix("[ERROR]").strip() for line in output.splitlines()]
    errors = [e for e in errors if e and not e.startswith(("->", "To see", "Re-run", "For more"))]
    return errors[0][:300] if errors else "no error text (run mvn without -q to see more)"


def mvn_command(mvn: str, pom: str) -> list[str]:
    command = [mvn, "-B", "-q", "-f", pom]
    if "LAZARUS_M2_REPO" in os.environ:
        command.append(f"-Dmaven.repo.local={os.environ['LAZARUS_M2_REPO']}")
    return command


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int, error: type[ToolError] = ToolError) -> None:
    """Fail when something listens on `port`. SO_REUSEADDR, as Java's server sockets use, so that
    connections of a stopped service lingering in TIME_WAIT do not count as "in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise error(f"port {port} on 127.0.0.1 is in use ({exc.strerror})") from exc


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the process that started it dies (even by kill -9),
    so a crashed test run leaves no service behind. Runs in the child, before exec."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie child of ours counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
