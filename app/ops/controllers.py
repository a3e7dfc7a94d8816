"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from app.lib.db import Database, current_revision
from app.lib.errors import Unauthenticated, Unavailable
from app.lib.observability import Metrics
from app.lib.openapi import errors
from app.settings import Settings


class Health(msgspec.Struct):
    """The process is alive."""

    status: str


class Readiness(msgspec.Struct):
    """The service can serve: database reachable, schema at the newest migration."""

    status: str
    database: str
    migration: str | None


@get("/health", operation_id="health", tags=["operations"], cache=False)
async def health() -> Health:
    """Liveness: answers as long as the process serves HTTP (no I/O)."""
    return Health(status="ok")


@get("/ready", operation_id="ready", tags=["operations"], responses=errors(503))
async def ready(database: NamedDependency[Database], head_revision: NamedDependency[str | None]) -> Readiness:
    """Readiness: the database answers and its schema is at the head migration (503 otherwise)."""
    head = head_revision
    try:
        async with database.sessionmaker() as session:
            connection = await session.connection()
            current = await current_revision(connection)
    except (SQLAlchemyError, OSError) as exc:
        raise Unavailable("The database is not reachable.", code="database_unreachable") from exc
    if current != head:
        raise Unavailable(
            f"The database schema is at {current or 'nothing'}, the code needs {head}; run 'consent migrate'.",
            code="migrations_pending",
        )
    return Readiness(status="ready", database="ok", migration=current)


@get("/metrics", operation_id="metrics", tags=["operations"], media_type=MediaType.TEXT, responses=errors(401))
async def metrics(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    metrics_registry: NamedDependency[Metrics],
) -> Response[bytes]:
    """Prometheus text format: request counts and latency by route template and status."""
    token = settings.metrics_token
    if token is not None:
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            raise Unauthenticated(
                "GET /metrics needs 'Authorization: Bearer <METRICS_TOKEN>'.", code="invalid_metrics_token"
            )
    return Response(generate_latest(metrics_registry.registry), media_type=CONTENT_TYPE_LATEST)
