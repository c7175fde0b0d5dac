"""The HTTP endpoint of a long-running Lazarus process: `/metrics` (Prometheus text format from
an injected registry), `/livez` (the process works), `/readyz` (it is ready: an orchestrator
routes to it and does not restart it for merely catching up); any other path is 404.

Bound to loopback unless told otherwise: metrics can tell an attacker a lot about a pipeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("lazarus.http")

Probe = Callable[[], str | None]
"""None when healthy, else the reason it is not (the 503 body)."""


def _healthy() -> None:
    return None


class HealthServer:
    """Serves `/metrics`, `/livez` and `/readyz` from a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        live: Probe = _healthy,
        ready: Probe = _healthy,
    ) -> None:
        self.registry = registry
        self.live = live
        self.ready = ready
        self.server = make_server(host, port, self.app, _ThreadingServer, _QuietHandler)
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(self.registry)
            return reply(start_response, "200 OK", body, CONTENT_TYPE_LATEST)
        probe = {"/livez": self.live, "/readyz": self.ready}.get(path)
        if probe is None:
            return reply(start_response, "404 Not Found", b"not found\n")
        reason = probe()
        if reason is None:
            return reply(start_response, "200 OK", b"ok\n" if path == "/livez" else b"ready\n")
        return reply(start_response, "503 Service Unavailable", f"{reason}\n".encode())

    def start(self) -> HealthServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._thread.start()
        log.info("serving /metrics, /livez and /readyz on http://%s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(
    start_response: StartResponse, status: str, body: bytes, kind: str = "text/plain; charset=utf-8"
) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)
