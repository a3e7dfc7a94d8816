"""``Idempotency-Key`` on POSTs that create or send (API.md conventions).

A repeat with the same key and the same request answers the first answer again (with ``Idempotent-Replayed:
true``); the same key with a different request answers 409 ``idempotency_key_reused``; a repeat while the first
is still running answers 409 ``idempotency_request_in_progress`` with ``Retry-After``.

Keys belong to a workspace (any of its API keys may retry, if its scopes allow the route: the scope is checked
before anything is claimed or replayed), are claimed in their own short transaction before the handler runs, and
keep a successful answer (2xx, 3xx) for :data:`RETENTION`. Any other answer frees the key: a refused or failed
request changed nothing, so the corrected or repeated request simply runs. A claim left behind by a crashed
process is taken over after :data:`ABANDONED_AFTER`. Handlers that only read (a batch eligibility check) opt out
with ``opt={"idempotent": False}``; handlers whose answer holds a secret shown once declare
``opt={"answer_holds_secret": True}``: their answer is not kept, and a repeat answers 409
``idempotency_answer_not_kept``. The body is read up to the route's size limit (413 beyond it); routes that
stream their body without a limit (the imports) are left alone.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib import repository
from app.lib.auth import authenticate, require_scope
from app.lib.db import Database
from app.lib.errors import AppError, Conflict, InvalidInput, Unavailable
from app.lib.keys import Keys
from app.lib.orm import utcnow

log = structlog.get_logger(__name__)

HEADER = "idempotency-key"
RETENTION = timedelta(hours=24)
ABANDONED_AFTER = timedelta(seconds=60)
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_KEPT_HEADERS = ("content-type", "location")
_SUCCESS = range(200, 400)
_SECRET_KEPT_BACK = 204  # the status a completed claim records when its answer was not kept (it held a secret)


class BodyTooLarge(AppError):
    """The request body is larger than the route takes (413)."""

    status = 413
    code = "request_too_large"
    title = "Request too large"


def idempotency_middleware(app: ASGIApp) -> ASGIApp:
    """Router middleware for ``/v1``: applies the convention to every POST that carries the header."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        key = MutableScopeHeaders(scope).get(HEADER) if scope["type"] == ScopeType.HTTP else None
        handler = scope.get("route_handler")
        limit = handler.resolve_request_max_body_size() if isinstance(handler, HTTPRouteHandler) else None
        if (
            key is None
            or handler is None
            or scope.get("method") != "POST"
            or handler.opt.get("idempotent") is False
            or limit is None  # a streamed body (an import): never buffered here
        ):
            await app(scope, receive, send)
            return
        if not _KEY.match(key):
            raise InvalidInput(
                "Idempotency-Key must be 1 to 255 visible ASCII characters.", code="invalid_idempotency_key"
            )
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
        try:
            principal = await authenticate(connection)
        except AppError:  # the guard answers 401 as usual
            await app(scope, receive, send)
            return
        # the route's scope before any stored answer: a key of the workspace without it must not read one back
        require_scope(principal, handler)
        body = await _read_body(receive, limit)
        keys: Keys | None = scope["app"].state.derived_keys
        if keys is None:  # only tooling (OpenAPI export) builds an app without a secret key
            raise Unavailable("CONSENT_SECRET_KEY is not configured.", code="secret_key_missing")
        fingerprint = keys.request_fingerprint(scope["path"].encode(), scope.get("query_string", b""), body)
        database: Database = scope["app"].state.database
        replay = await _claim(database, principal.workspace_id, key, fingerprint)
        if replay is not None:
            await _send_replay(send, *replay)
            return
        secret = bool(handler.opt.get("answer_holds_secret"))
        await _run_and_keep(
            app, scope, body, send, database=database, workspace_id=principal.workspace_id, key=key, secret=secret
        )

    return handle


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk if isinstance(chunk, bytes) else b"")
        size += len(chunks[-1])
        if size > limit:
            raise BodyTooLarge(f"The request body is larger than this route takes ({limit:,} bytes).")
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _claim(
    database: Database, workspace_id: uuid.UUID, key: str, fingerprint: bytes
) -> tuple[int, str, bytes] | None:
    """Claim ``key``; ``None`` when this request runs, else the stored answer to replay (or a 409 raised)."""
    now = utcnow()
    async with database.sessionmaker() as session, session.begin():
        claimed = await repository.claim_idempotency_key(
            session, workspace_id, key, fingerprint, now=now, retention=RETENTION, abandoned_after=ABANDONED_AFTER
        )
        if claimed:
            return None
        row = await repository.get_idempotency_key(session, workspace_id, key)
    if row is None:  # deleted in between (its first request failed): the client may simply retry
        raise Conflict("The first request with this key just failed; retry.", code="idempotency_request_in_progress")
    if row.fingerprint != fingerprint:
        raise Conflict("This Idempotency-Key was already used with a different request.", code="idempotency_key_reused")
    if row.status is None:
        raise Conflict(
            "A request with this Idempotency-Key is still being processed.",
            code="idempotency_request_in_progress",
            headers={"Retry-After": "1"},
        )
    if row.body is None:
        raise Conflict(
            "The request with this Idempotency-Key succeeded; its answer held a secret that is shown only once "
            "and was not kept. List the resource to see it (without the secret).",
            code="idempotency_answer_not_kept",
        )
    return row.status, row.headers or "", row.body


async def _send_replay(send: Send, status: int, headers: str, body: bytes) -> None:
    raw = [tuple(line.split(": ", 1)) for line in headers.splitlines() if ": " in line]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *((name.encode(), value.encode()) for name, value in raw),
                (b"idempotent-replayed", b"true"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _run_and_keep(
    app: ASGIApp,
    scope: Scope,
    body: bytes,
    send: Send,
    *,
    database: Database,
    workspace_id: uuid.UUID,
    key: str,
    secret: bool,
) -> None:
    """Run the handler with the buffered body, pass its answer on, and keep it (or free the key)."""
    delivered = False

    async def replay_receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    status = 500
    headers: list[str] = []
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                if name.decode().lower() in _KEPT_HEADERS:
                    headers.append(f"{name.decode()}: {value.decode()}")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
        await send(message)

    keep = False
    try:
        await app(scope, replay_receive, capture)  # type: ignore[arg-type]  # our receive speaks the protocol
        keep = status in _SUCCESS
    finally:
        async with database.sessionmaker() as session, session.begin():
            if keep and secret:  # done, but the answer is not kept: it holds a secret shown once
                await repository.complete_idempotency_key(
                    session, workspace_id, key, status=_SECRET_KEPT_BACK, headers="", body=None
                )
            elif keep:
                await repository.complete_idempotency_key(
                    session, workspace_id, key, status=status, headers="\n".join(headers), body=b"".join(chunks)
                )
            else:
                await repository.release_idempotency_key(session, workspace_id, key)


async def prune(session: AsyncSession) -> None:
    """Forget keys older than :data:`RETENTION`."""
    await repository.prune_idempotency_keys(session, utcnow() - RETENTION)
