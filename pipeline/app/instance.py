"""The worker's instance name: part of its transactional id (`lazarus-<pipeline>-<instance>`)
and of `dlq.worker`.

Exactly-once workers fence each other when two live members share a transactional id. With
consumer-group-metadata fencing (KIP-447, which the worker uses) the id must be unique among the
*live* members, not stable across restarts; a stable one only lets a restarted member abort its
predecessor's open transaction at once instead of after `transaction.timeout.ms`.

So the default is `<hostname>-<index>`: the hostname tells hosts (pods) apart, and the index is
the lowest slot free on this host for this pipeline, held by an exclusive `flock` on a slot file
for the life of the process. Two processes on one host never get the same index; a process that
dies (even by kill -9) frees its slot, so a restart on the same host usually gets its old name
back. `--instance` or the `instance` setting (`LAZARUS_INSTANCE`, e.g. a pod name) overrides it.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import IO

MAX_SLOTS = 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_held: list[IO[bytes]] = []  # slot files locked by this process, kept open until it exits


def slot_dir() -> Path:
    return Path(os.environ.get("LAZARUS_INSTANCE_DIR") or tempfile.gettempdir()) / "lazarus-slots"


def host_name(raw: str | None = None) -> str:
    """The host part: the hostname with anything but letters, digits, '.', '_', '-' replaced."""
    name = _UNSAFE.sub("-", raw if raw is not None else socket.gethostname()).strip("-")
    return name or "host"


def claim_slot(pipeline: str, directory: Path) -> tuple[int, IO[bytes]]:
    """Lock the lowest free slot of `pipeline` in `directory`; the open file holds the lock
    (closing it, or the process ending, frees the slot)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = _UNSAFE.sub("-", pipeline)
    for index in range(MAX_SLOTS):
        handle = open(directory / f"{stem}.{index}.lock", "ab")  # noqa: SIM115 - held on purpose
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return index, handle
    raise OSError(f"all {MAX_SLOTS} instance slots of pipeline {pipeline} are taken")


def default_instance(pipeline: str, hostname: str | None = None) -> str:
    """`<hostname>-<index>`, unique among the live workers of `pipeline` on this host."""
    host = host_name(hostname)
    try:
        index, handle = claim_slot(pipeline, slot_dir())
    except OSError:
        return f"{host}-p{os.getpid()}"  # no writable slot folder: the pid is unique too
    _held.append(handle)
    return f"{host}-{index}"


def resolve_instance(explicit: str | None, configured: str | None, pipeline: str) -> str:
    """`--instance`, else the `instance` setting, else the derived default."""
    return explicit or configured or default_instance(pipeline)
