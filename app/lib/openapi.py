"""OpenAPI helpers: the problem+json schema, the responses each handler declares, and those every route shares."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.routes import HTTPRoute

from app.lib.errors import PROBLEM_JSON, is_a_page_handler


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
    410: "Gone",
    429: "Rate limited (see Retry-After)",
    503: "Unavailable for now (see Retry-After): the database cannot be reached, a concurrent write aborted the "
    "request's transaction (send it again), or the service is not ready",
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


def answer(status: int, data: type[Any], description: str) -> dict[int, ResponseSpec]:
    """A second success answer of a route besides its ``status_code`` (e.g. 200 for a repeat of a 201)."""
    spec: Any = ResponseSpec(data_container=data, description=description, generate_examples=False)
    return {status: spec}


def pages(*statuses: int) -> dict[int, ResponseSpec]:
    """HTML answers of a hosted page for ``statuses`` (the pages show a person what happened, not a problem+json)."""
    out: dict[int, ResponseSpec] = {}
    for status in statuses:
        spec: Any = ResponseSpec(
            data_container=str, media_type="text/html", description=_DESCRIPTIONS[status], generate_examples=False
        )
        out[status] = spec
    return out


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: dependencies that reach the database or the secret key, either of which can be missing (503)
_NEEDS_THE_DATABASE = frozenset({"db", "database", "keys", "key_cache"})


def declare_common_responses(app: Litestar) -> None:
    """Declare, on every documented route, the problem responses that app-wide machinery can answer.

    A handler's own ``responses=errors(...)`` lists what its logic answers; what answers before or around it is
    declared here once, so that the document names every status a route can answer (the fuzz test checks it):

    * 422 ``nul_character`` on every route: the ``before_request`` hook refuses a NUL in the path, query or body;
    * 503 where the route reaches the database or the secret key (``database_unavailable``, ``database_busy``,
      ``secret_key_missing``), which every authenticated ``/v1`` route does;
    * 401 on every ``/v1`` route that is not public (the router's key guard), 403 where it declares a scope;
    * 413 on every POST, PUT, PATCH and DELETE whose body is read up to ``request_max_body_size`` (the streamed
      imports have none);
    * 409 on ``/v1`` POSTs that take ``Idempotency-Key`` (key reused, request still in progress, answer not kept),
      and on every POST, PUT, PATCH and DELETE that reaches the database (``deleted_meanwhile``: a row it refers
      to was deleted by a transaction committed while it ran).

    Statuses a handler already declares keep the handler's description (and media type: a page's HTML).
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.include_in_schema:
                statuses = _common_statuses(route.path, handler)
                # a hosted page answers a race or an outage as a page (app.emails.pages.PAGE_ERRORS)
                page = is_a_page_handler(handler.resolve_exception_handlers().get(Exception))
                as_pages = pages(*(statuses & {409, 503})) if page else {}
                handler.responses = {**errors(*statuses), **as_pages, **(handler.responses or {})}


def _common_statuses(path: str, handler: HTTPRouteHandler) -> set[int]:
    """The statuses :func:`declare_common_responses` declares for ``handler`` of the route at ``path``."""
    statuses = {422}
    v1 = path.startswith("/v1/")
    public = bool(handler.opt.get("public"))
    if v1 and not public:
        statuses.add(401)
    if v1 and handler.opt.get("scope") is not None:
        statuses.add(403)
    database = (v1 and not public) or bool(_NEEDS_THE_DATABASE & handler.parsed_fn_signature.parameters.keys())
    if database:
        statuses.add(503)
    if database and _BODY_METHODS & handler.http_methods:
        statuses.add(409)
    bounded = handler.resolve_request_max_body_size() is not None
    if bounded and _BODY_METHODS & handler.http_methods:
        statuses.add(413)
    if v1 and "POST" in handler.http_methods and bounded and handler.opt.get("idempotent") is not False:
        statuses.add(409)
    return statuses
