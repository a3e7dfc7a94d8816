"""Logging (structlog), request ids, access log and Prometheus metrics.

Logs carry ids, never personal data: the access log names the *route template* (``/v1/contacts/{contact}``),
not the path, because paths and query strings may hold addresses or external ids.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram

from app.settings import Settings

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def console_renderer() -> Any:
    """The human-readable renderer, its tracebacks without local variables (they held API keys and bodies)."""
    return structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)


def configure_logging(settings: Settings) -> None:
    """Structlog for our events, stdlib logging (uvicorn, alembic) routed through the same renderer."""
    pretty = settings.log_format == "console" or (settings.log_format == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = console_renderer() if pretty else structlog.processors.JSONRenderer()
    structlog.configure(
        # filter_by_level first: a message below the level costs nothing more (the access log is on the hot path)
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if not pretty else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # uvicorn's access log would print raw paths (personal data); ours prints route templates.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # alembic tells every plugin it loads and every step at INFO (dozens of lines on a new database): warnings
    # only; app.lib.db.migrate says in one line from which revision to which it migrated
    for name in ("alembic.runtime.plugins", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # client libraries log requests at INFO (URLs with account ids, numbers in responses): warnings only
    for name in ("httpx", "twilio", "aiohttp.access", "aiosmtplib"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _identity(_logger: Any, _name: str, event_dict: Any) -> Any:
    return event_dict


class Metrics:
    """Per-app Prometheus registry (no global state, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "consent_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "consent_http_request_duration_seconds",
            "HTTP request latency by method, route template and status.",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.seal_lag = Histogram(
            "consent_ledger_seal_lag_seconds",
            "From a consent event's commit until the sealer gave it its place in the chain (the oldest of a batch).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
            registry=self.registry,
        )


def request_middleware_factory(metrics: Metrics) -> Any:
    """ASGI middleware: request id (header ``X-Request-ID``), access log line and metrics for every request."""
    access_log = structlog.get_logger("app.access")

    def middleware(app: ASGIApp) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            incoming = MutableScopeHeaders(scope).get("x-request-id")
            request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
            scope.setdefault("state", {})["request_id"] = request_id
            structlog.contextvars.bind_contextvars(request_id=request_id)
            status = 500
            started = time.perf_counter()

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                elapsed = time.perf_counter() - started
                route = scope.get("path_template") or "(unmatched)"
                method = str(scope.get("method", ""))
                metrics.requests.labels(method, route, str(status)).inc()
                metrics.latency.labels(method, route, str(status)).observe(elapsed)
                access_log.info(
                    "http_request", method=method, route=route, status=status, duration_ms=round(elapsed * 1000, 2)
                )
                structlog.contextvars.unbind_contextvars("request_id")

        return handle

    return middleware
