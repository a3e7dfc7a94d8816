"""OpenAPI helpers: the problem+json schema and the error responses each handler declares."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec

from app.lib.errors import PROBLEM_JSON


class FieldError(msgspec.Struct, kw_only=True):
    """One invalid field."""

    field: str | None
    message: str


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details, with a stable machine-readable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str
    request_id: str | None = None
    errors: list[FieldError] | None = None


_DESCRIPTIONS = {
    400: "Malformed request (bad JSON, bad parameter)",
    401: "Missing or invalid API key",
    403: "The API key lacks the required scope",
    404: "Unknown id (or one of another workspace)",
    409: "Conflicts with the current state",
    413: "Request too large",
    415: "Unsupported content type",
    422: "Invalid input",
    429: "Rate limited (see Retry-After)",
    503: "Not ready",
}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """Problem responses for ``statuses`` (400 is always included: malformed requests)."""
    out: dict[int, ResponseSpec] = {}
    for status in sorted({400, *statuses}):
        spec: Any = ResponseSpec(
            data_container=Problem, media_type=PROBLEM_JSON, description=_DESCRIPTIONS[status], generate_examples=False
        )
        out[status] = spec
    return out
