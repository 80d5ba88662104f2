"""The observability endpoint, on a loopback address: `/healthz`, `/readyz`, `/metrics`.

- `/healthz`: 200 while the process runs (liveness).
- `/readyz`: 200 when the model is loaded, the spool is writable and every destination answers
  (C-ECHO, or a TCP connection for DICOMweb; results cached `delivery.reachability_cache_s`);
  503 otherwise, with a JSON body saying which check failed.
- `/metrics`: Prometheus text format, from prometheus-client.

Bodies name checks, destinations (their configured names) and counts; never patient data.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from app.node.metrics import NodeMetrics

logger = logging.getLogger("biomedclip_map.node.http")

ReadinessCheck = Callable[[], dict[str, str]]
"""Returns {check name: problem} for every check that fails (empty when ready)."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        logger.debug("http: " + format, *args)


class ObservabilityEndpoint:
    """A small WSGI application served from a background thread."""

    def __init__(self, bind: str, port: int, metrics: NodeMetrics, readiness: ReadinessCheck):
        self.bind = bind
        self.requested_port = port
        self.metrics_app = make_wsgi_app(metrics.registry)
        self.readiness = readiness
        self.server: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self.metrics_app(environ, start_response)
        if path == "/healthz":
            return self._json(start_response, "200 OK", {"status": "alive"})
        if path == "/readyz":
            problems = self.readiness()
            if problems:
                return self._json(start_response, "503 Service Unavailable", {"status": "not ready", "problems": problems})
            return self._json(start_response, "200 OK", {"status": "ready"})
        return self._json(start_response, "404 Not Found", {"error": "unknown path; use /healthz, /readyz or /metrics"})

    @staticmethod
    def _json(start_response, status: str, body: dict):
        data = json.dumps(body, sort_keys=True).encode("utf-8")
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def start(self) -> None:
        """Listen; OSError naming `http.bind`/`http.port` if the address is taken."""
        try:
            self.server = make_server(self.bind, self.requested_port, self.app, _ThreadingWSGIServer, _QuietHandler)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {self.bind}:{self.requested_port} (http.bind / http.port): {exc.strerror or exc}"
            ) from exc
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)
        self._thread.start()
        logger.info("observability endpoint on http://%s:%d (/healthz, /readyz, /metrics)", self.bind, self.port)

    @property
    def port(self) -> int:
        return int(self.server.server_port) if self.server else self.requested_port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
