"""Request ids, JSON logs, Prometheus metrics, and the health endpoints."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy import text

from security.migrate import head_revisions, is_at_head
from security.runtime import runtime
from security.web.api import operation

bp = Blueprint("operations", __name__)
log = logging.getLogger("security.web")
REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

REQUESTS = Counter(
    "foxguard_http_requests_total", "HTTP requests by endpoint and status", ["method", "endpoint", "status"]
)
LATENCY = Histogram(
    "foxguard_http_request_duration_seconds",
    "HTTP request latency by endpoint",
    ["endpoint"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.request_id = g.get("request_id")
        except RuntimeError:  # outside a request
            record.request_id = None
        return True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (so redirection and capture work)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: str) -> None:
    """One JSON object per line on stderr; never request bodies, so no secrets."""
    handler = StderrHandler()
    handler.setFormatter(
        JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s", timestamp=False)
    )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger("security")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _start() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    endpoint = request.endpoint or "unmatched"
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    LATENCY.labels(endpoint).observe(elapsed)
    # The path only: query strings could carry tokens.
    log.info(
        "request",
        extra={"method": request.method, "path": request.path, "status": response.status_code,
               "duration_ms": round(elapsed * 1000, 2)},
    )
    return response


@operation(bp, "/healthz", summary="Liveness: the process answers", tags=["operations"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@operation(bp, "/readyz", summary="Readiness: database reachable and migrated to head", tags=["operations"],
           errors={503: "Database unreachable or not migrated"})
def readyz() -> Response | dict[str, object]:
    engine = runtime().engine
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            migrated = is_at_head(connection)
    except Exception as exc:  # any failure to reach the database means "not ready"
        log.warning("readiness check failed", extra={"error": exc.__class__.__name__})
        from security.web.problems import problem

        return problem(503, "not_ready", "Not ready", "The database is unreachable.")
    if not migrated:
        from security.web.problems import problem

        return problem(503, "not_ready", "Not ready", "The database is not migrated to the current schema.")
    return {"status": "ready", "schema": sorted(head_revisions())}


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus exposition (aggregated across gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    configure_logging(runtime(app).settings.app.log_level)
    app.before_request(_start)
    app.after_request(_finish)
    app.register_blueprint(bp)
