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

A hot route may keep its answer in its own transaction instead (``opt={"idempotency": IN_TRANSACTION}``): the
middleware only looks the key up (one statement on the raw asyncpg pool, no transaction) and answers a held key
as above; a free key is claimed by the handler's call of :func:`keep_on_driver`, which writes the key with its
answer in the handler's transaction. One transaction per request instead of three; the key exists exactly when the
request's work was committed, so a failed or crashed request leaves no claim behind, and a concurrent request with
the same key waits on the key's row (the unique index) until the first commits, then answers the first answer (or,
after a rollback, runs).
"""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple

import msgspec
import structlog
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.serialization import encode_json
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib import repository
from app.lib.auth import authenticate, require_scope
from app.lib.db import Database
from app.lib.errors import AppError, Conflict, InvalidInput, Unavailable
from app.lib.inputs import json_too_deep
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
_JSON_HEADERS = "content-type: application/json"  # what a JSON answer keeps of its headers
IN_TRANSACTION = "in_transaction"
"""The value of a route's ``opt["idempotency"]`` whose handler keeps its answer itself (:func:`keep_on_driver`)."""
_PENDING = "consent.idempotency"  # where the middleware leaves a free key for keep, in the request's scope state


class KeptAnswer(NamedTuple):
    """A key to claim with the answer it keeps, as one statement claiming both takes it.

    The fast path of ``POST /v1/chains/{id}/runs`` (:mod:`app.chains.fastpath`).
    """

    key: str
    fingerprint: bytes
    status: int
    headers: str
    body: bytes
    retention: timedelta
    abandoned_after: timedelta


def valid_key(key: str) -> bool:
    """True when ``key`` has the form an ``Idempotency-Key`` must have (else the middleware answers 422)."""
    return _KEY.match(key) is not None


class Fingerprint(NamedTuple):
    """What a request is recognised by under its key (keyed hashes of its path, query and body)."""

    kept: bytes
    """The one stored with the key: a JSON body by its content (:func:`canonical_json`), not its spelling."""
    raw: bytes
    """The body's bytes as sent: what keys stored before 2026-12-06 were kept with, still recognised."""

    def matches(self, stored: bytes) -> bool:
        """True when ``stored`` (a held key's fingerprint) was kept for this request."""
        return hmac.compare_digest(stored, self.kept) or hmac.compare_digest(stored, self.raw)


def request_fingerprint(keys: Keys, scope: Scope, body: bytes) -> Fingerprint:
    """What a request is recognised by under its key: its path, query and body, a JSON body by its content."""
    path, query = scope["path"].encode(), scope.get("query_string", b"")
    raw = keys.request_fingerprint(path, query, body)
    canonical = canonical_json(body)
    return Fingerprint(raw if canonical is body else keys.request_fingerprint(path, query, canonical), raw)


def canonical_json(body: bytes) -> bytes:
    """A JSON body with its object keys sorted and no insignificant whitespace; any other body as it is.

    "The same body" (API.md) is the same JSON value: a client that retries with its fields in another order, or
    pretty-printed, gets the first answer, not a 409. A body that is not JSON, or nests too deep to decode
    safely, is compared byte for byte (the route refuses it anyway).
    """
    if body[:1] not in _JSON_STARTS and body.lstrip()[:1] not in _JSON_STARTS:
        return body
    if json_too_deep(body):
        return body
    try:
        value = _json_value.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return body
    canonical = msgspec.json.encode(value, order="sorted")
    return body if canonical == body else canonical


_JSON_STARTS = (b"{", b"[")
_json_value = msgspec.json.Decoder()


def kept_json_answer(key: str, fingerprint: bytes, status: int, body: bytes) -> KeptAnswer:
    """``key`` keeping a JSON answer (no ``Location``, no secret), as :func:`keep_on_driver` would keep it."""
    return KeptAnswer(key, fingerprint, status, _JSON_HEADERS, body, RETENTION, ABANDONED_AFTER)


class Pending:
    """A free key of a request whose handler keeps the answer (:func:`keep_on_driver`), and whether it did."""

    __slots__ = ("fingerprint", "key", "secret", "settled", "workspace_id")

    def __init__(self, workspace_id: uuid.UUID, key: str, fingerprint: Fingerprint, *, secret: bool) -> None:
        self.workspace_id = workspace_id
        self.key = key
        self.fingerprint = fingerprint
        self.secret = secret
        self.settled = False


class Replayed(Exception):  # not an error: the answer of the request that was first
    """Raised by :func:`keep_on_driver` when a concurrent request with the key committed first (its answer counts)."""

    def __init__(self, status: int, headers: str, body: bytes) -> None:
        super().__init__("replayed")
        self.status = status
        self.headers = headers
        self.body = body


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
        fingerprint = request_fingerprint(keys, scope, body)
        database: Database = scope["app"].state.database
        secret = bool(handler.opt.get("answer_holds_secret"))
        if handler.opt.get("idempotency") == IN_TRANSACTION:
            held = await _held(database, principal.workspace_id, key)
            if held is not None:
                await _send_replay(send, *_stored_answer(*held, fingerprint=fingerprint))
                return
            pending = Pending(principal.workspace_id, key, fingerprint, secret=secret)
            await _run_in_transaction(app, scope, body, send, database=database, pending=pending)
            return
        replay = await _claim(database, principal.workspace_id, key, fingerprint)
        if replay is not None:
            await _send_replay(send, *replay)
            return
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
    database: Database, workspace_id: uuid.UUID, key: str, fingerprint: Fingerprint
) -> tuple[int, str, bytes] | None:
    """Claim ``key``; ``None`` when this request runs, else the stored answer to replay (or a 409 raised)."""
    now = utcnow()
    async with database.sessionmaker() as session, session.begin():
        claimed = await repository.claim_idempotency_key(
            session, workspace_id, key, fingerprint.kept, now=now, retention=RETENTION, abandoned_after=ABANDONED_AFTER
        )
        if claimed:
            return None
        row = await repository.get_idempotency_key(session, workspace_id, key)
    if row is None:  # deleted in between (its first request failed): the client may simply retry
        raise _just_failed()
    return _stored_answer(row.fingerprint, row.status, row.headers, row.body, fingerprint=fingerprint)


def _just_failed() -> Conflict:
    return Conflict("The first request with this key just failed; retry.", code="idempotency_request_in_progress")


def _stored_answer(
    stored: bytes, status: int | None, headers: str | None, body: bytes | None, *, fingerprint: Fingerprint
) -> tuple[int, str, bytes]:
    """The answer to replay for a held key (``stored``: the fingerprint of its first request), or a 409 raised."""
    if headers == repository.ERASED_ANSWER and body is None:
        raise Conflict(
            "The request with this Idempotency-Key was carried out, and the person its answer named has been erased "
            "since at their request (Art. 17 GDPR): it is not done again. If the person asks anew, send the request "
            "with a new key.",
            code="idempotency_answer_erased",
        )
    if not fingerprint.matches(stored):
        raise Conflict("This Idempotency-Key was already used with a different request.", code="idempotency_key_reused")
    if status is None:
        raise Conflict(
            "A request with this Idempotency-Key is still being processed.",
            code="idempotency_request_in_progress",
            headers={"Retry-After": "1"},
        )
    if body is None:
        raise Conflict(
            "The request with this Idempotency-Key succeeded; its answer held a secret that is shown only once "
            "and was not kept. List the resource to see it (without the secret).",
            code="idempotency_answer_not_kept",
        )
    return status, headers or "", body


async def _held(
    database: Database, workspace_id: uuid.UUID, key: str
) -> tuple[bytes, int | None, str | None, bytes | None] | None:
    """The held key's fingerprint and answer, read on the raw pool (no session, no transaction)."""
    async with database.driver() as connection:
        return await repository.held_idempotency_key(
            connection, workspace_id, key, now=utcnow(), retention=RETENTION, abandoned_after=ABANDONED_AFTER
        )


async def keep_on_driver(
    connection: Any,
    request: Request[Any, Any, Any],
    answer: object,
    *,
    status: int,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Claim the request's ``Idempotency-Key`` with its answer, in the handler's open transaction on ``connection``.

    For routes with ``opt={"idempotency": IN_TRANSACTION}`` (a handler on the driver pool); does nothing for a
    request without the header. ``answer`` is what the handler returns, with ``status`` and the ``headers`` it sets
    (only ``Location`` is kept, as for other routes). Call it last in the transaction: the key's row is held from
    here to the commit. When a concurrent request with the key committed first, raises :class:`Replayed` (its
    answer is the answer; the caller's transaction rolls back) or the 409 that request's answer calls for.
    """
    pending = _pending(request)
    if pending is None:
        return
    now = utcnow()
    claimed = await repository.keep_idempotency_answer_on_driver(
        connection,
        pending.workspace_id,
        pending.key,
        pending.fingerprint.kept,
        now=now,
        retention=RETENTION,
        abandoned_after=ABANDONED_AFTER,
        **_kept(pending, answer, status, headers),
    )
    pending.settled = True
    if claimed:
        return
    held = await repository.held_idempotency_key(
        connection, pending.workspace_id, pending.key, now=now, retention=RETENTION, abandoned_after=ABANDONED_AFTER
    )
    if held is None:  # pruned in between
        raise _just_failed()
    raise Replayed(*_stored_answer(*held, fingerprint=pending.fingerprint))


def _pending(request: Request[Any, Any, Any]) -> Pending | None:
    pending = request.scope.get("state", {}).get(_PENDING)
    return pending if isinstance(pending, Pending) else None


def _kept(pending: Pending, answer: object, status: int, headers: Mapping[str, str] | None) -> dict[str, Any]:
    """What a key keeps of an answer: status, the headers that matter, body (not the body of a secret)."""
    if pending.secret:
        return {"status": _SECRET_KEPT_BACK, "headers": "", "body": None}
    kept_headers = [
        _JSON_HEADERS,
        *(f"{name.lower()}: {value}" for name, value in (headers or {}).items() if name.lower() == "location"),
    ]
    return {"status": status, "headers": "\n".join(kept_headers), "body": encode_json(answer)}


def replayed_response(_request: Request[Any, Any, Any], replayed: Replayed) -> Response[bytes]:
    """The app's answer to :class:`Replayed`: the first request's answer, as :func:`_send_replay` sends it."""
    raw = dict(line.split(": ", 1) for line in replayed.headers.splitlines() if ": " in line)
    media_type = raw.pop("content-type", "application/json")
    return Response(
        replayed.body,
        status_code=replayed.status,
        media_type=media_type,
        headers={**raw, "idempotent-replayed": "true"},
    )


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


async def _run_in_transaction(
    app: ASGIApp, scope: Scope, body: bytes, send: Send, *, database: Database, pending: Pending
) -> None:
    """Run a handler that keeps its answer in its own transaction (:func:`keep_on_driver`).

    A successful answer the handler did not keep (a route that forgot to call :func:`keep_on_driver`) is kept
    afterwards in a transaction of its own, so the key is never silently lost; that is logged as the bug it is.
    """
    scope.setdefault("state", {})[_PENDING] = pending
    status = 500
    headers: list[str] = []
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal status
        if not pending.settled:
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.decode().lower() in _KEPT_HEADERS:
                        headers.append(f"{name.decode()}: {value.decode()}")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
        await send(message)

    await app(scope, _replay_receive(body), capture)
    if pending.settled or status not in _SUCCESS:
        return
    log.error("idempotency_answer_not_kept_by_handler", path=scope["path"])
    async with database.sessionmaker() as session, session.begin():
        await repository.keep_idempotency_answer(
            session,
            pending.workspace_id,
            pending.key,
            pending.fingerprint.kept,
            now=utcnow(),
            retention=RETENTION,
            abandoned_after=ABANDONED_AFTER,
            status=_SECRET_KEPT_BACK if pending.secret else status,
            headers="" if pending.secret else "\n".join(headers),
            body=None if pending.secret else b"".join(chunks),
        )


def _replay_receive(body: bytes) -> Any:
    """An ASGI ``receive`` giving the buffered ``body``, then a disconnect."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


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

    succeeded = False
    try:
        await app(scope, _replay_receive(body), capture)
        succeeded = status in _SUCCESS
    finally:
        async with database.sessionmaker() as session, session.begin():
            if succeeded and secret:  # done, but the answer is not kept: it holds a secret shown once
                await repository.complete_idempotency_key(
                    session, workspace_id, key, status=_SECRET_KEPT_BACK, headers="", body=None
                )
            elif succeeded:
                await repository.complete_idempotency_key(
                    session, workspace_id, key, status=status, headers="\n".join(headers), body=b"".join(chunks)
                )
            else:
                await repository.release_idempotency_key(session, workspace_id, key)


async def prune(session: AsyncSession) -> None:
    """Forget keys older than :data:`RETENTION`."""
    await repository.prune_idempotency_keys(session, utcnow() - RETENTION)
