"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
import structlog
from litestar import MediaType, Request, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

from app.lib.db import Database, current_revision
from app.lib.errors import NotFound, Unauthenticated, Unavailable
from app.lib.observability import Metrics
from app.lib.openapi import errors
from app.settings import Settings

log = structlog.get_logger(__name__)


class Health(msgspec.Struct):
    """The process is alive."""

    status: str


class Readiness(msgspec.Struct):
    """The service can serve: database reachable, schema at the newest migration.

    Anonymous callers learn ready or not, nothing about the schema; the details go to the log.
    """

    status: str


@get("/health", operation_id="health", tags=["operations"], cache=False)
async def health() -> Health:
    """Liveness: answers as long as the process serves HTTP (no I/O)."""
    return Health(status="ok")


@get("/ready", operation_id="ready", tags=["operations"], responses=errors(503))
async def ready(database: NamedDependency[Database], head_revision: NamedDependency[str | None]) -> Readiness:
    """Readiness: the database answers and its schema is at the head migration (503 otherwise).

    The answer names no migration (what an anonymous caller could learn about the deployment); the log says why.
    """
    head = head_revision
    try:
        async with database.sessionmaker() as session:
            connection = await session.connection()
            current = await current_revision(connection)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("not_ready", reason="database_unreachable", error=type(exc).__name__)
        raise Unavailable("The service is not ready.", code="not_ready") from exc
    if current != head:
        log.warning("not_ready", reason="migrations_pending", current=current, head=head)
        raise Unavailable("The service is not ready.", code="not_ready")
    return Readiness(status="ready")


@get("/metrics", operation_id="metrics", tags=["operations"], media_type=MediaType.TEXT, responses=errors(401, 404))
async def metrics(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    metrics_registry: NamedDependency[Metrics],
) -> Response[bytes]:
    """Prometheus text format: request counts and latency by route template and status.

    Served only when ``METRICS_TOKEN`` is set, to callers presenting it; otherwise the route answers 404.
    """
    token = settings.metrics_token
    if token is None:
        raise NotFound("Metrics are served only when METRICS_TOKEN is set.", code="metrics_disabled")
    supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(supplied.encode(), token.encode()):
        raise Unauthenticated(
            "GET /metrics needs 'Authorization: Bearer <METRICS_TOKEN>'.", code="invalid_metrics_token"
        )
    registry = metrics_registry.registry
    if settings.metrics_multiprocess_dir is not None:  # consent serve --workers N: every process's counts, added up
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(settings.metrics_multiprocess_dir))  # type: ignore[no-untyped-call]
    # The exposition format's content type already names its charset: given as the header itself, because a
    # ``media_type`` starting with ``text/`` gets Litestar's "; charset=utf-8" appended a second time.
    return Response(generate_latest(registry), headers={"content-type": CONTENT_TYPE_LATEST})
