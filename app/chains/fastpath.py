"""A hot path for ``POST /v1/chains/{id}/runs`` with an ``Idempotency-Key`` (issue 20 asks for 2,000 runs/s).

It starts the run of the plain case (a valid key with the scope, a well-formed JSON body, a known chain and contact,
a free ``Idempotency-Key``) without Litestar's routing, guards, dependency injection and the idempotency middleware:
the same authentication and scope check, the same body type, then the chain's plan (cached per process and chain
version), then one statement that finds the contact, claims the key with its answer and writes the run and its
steps (:func:`app.chains.service.start_keyed_run`). One round trip on one driver connection given back without the
reset query (two on the first run of a chain version in the process), against eight round trips on two checkouts on
the route.

Anything else is handed to the regular route with the body it was sent, which answers it exactly as before: a
missing key (the route then runs without one), a malformed key, header or body, an unknown, revoked or operator
key, a missing scope, an unknown chain or contact, a merged contact, missing variables, a held key (a replay or a
409, read by the route), a chain or contact gone meanwhile, a database error. Nothing is written before the one
statement, and a statement that failed wrote nothing (it is atomic); one whose outcome is unknown (the connection
broke) left the key with the run or neither, so the route, which reads the key first, replays or runs it once.

One driver connection at a time, as everywhere (hostile review, a pool-deadlock High): the key's authentication
gives its connection back before the run's is taken, and the run's is given back before a fallback runs the route.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.serialization import encode_json
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from app.chains import service
from app.chains.controllers import ChainController
from app.chains.schemas import RunIn, RunStarted
from app.lib import idempotency
from app.lib.auth import Scope as ApiScope
from app.lib.auth import authenticate
from app.lib.db import Database
from app.lib.errors import AppError, database_unreachable
from app.lib.ids import uuid7
from app.lib.inputs import json_has_nul

#: ``/v1/chains/{chain_id}/runs`` with a canonical UUID; any other spelling of the id goes to the route.
_PATH = re.compile(r"^/v1/chains/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/runs$")
#: The route's template, as Litestar names it in the access log and the metrics.
PATH_TEMPLATE = "/v1/chains/{chain_id}/runs"
#: A run's body is small (a contact, at most 50 short variables); a larger one is left to the route and its limit.
_MAX_BODY = 64 * 1024
_JSON = re.compile(rb"^application/json\s*(?:;\s*charset=utf-8\s*)?$", re.IGNORECASE)
_ACCEPTED = 202
_decoder = msgspec.json.Decoder(RunIn)
#: The scope the route declares (its controller's): the fast path checks the same one.
_SCOPE: ApiScope = ChainController.opt["scope"]


class _Fallback(Exception):  # not an error: the route answers this request
    """The plain case does not apply: the regular route answers."""


def chain_runs_fast_path(app: ASGIApp) -> ASGIApp:
    """Wrap the app's ASGI handler (inside the request-id/log/metrics middleware)."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") != "POST" or not scope["path"].endswith("/runs"):
            await app(scope, receive, send)
            return
        match = _PATH.match(scope["path"])
        if match is None or scope.get("query_string"):
            await app(scope, receive, send)
            return
        read: list[ReceiveMessage] = []
        try:
            answer = await _start(scope, receive, read, uuid.UUID(match.group(1)))
        except _Fallback:
            await app(scope, _replaying(read, receive), send)
            return
        scope["path_template"] = PATH_TEMPLATE  # for the access log and the metrics, as the route would set it
        await send(
            {
                "type": "http.response.start",
                "status": _ACCEPTED,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer, "more_body": False})

    return handle


async def _start(scope: Scope, receive: Receive, read: list[ReceiveMessage], chain_id: uuid.UUID) -> bytes:
    """Start the run of the plain case and answer its JSON; :class:`_Fallback` for anything else.

    ``read`` collects the request's messages as they are received (for the route, on a fallback).
    """
    idempotency_key, size = _plain_headers(scope)
    try:
        return await _run(scope, receive, read, chain_id, idempotency_key=idempotency_key, size=size)
    except AppError:  # 401, 404, 409, 422 …: the route answers, through the app's handlers
        raise _Fallback from None
    except Exception as exc:
        # an unreachable database (503 with Retry-After) or an error it answered: the route answers it. The statement
        # wrote all or nothing, and the route reads the key before it runs anything.
        if database_unreachable(exc) or isinstance(exc, asyncpg.PostgresError):
            raise _Fallback from None
        raise


def _plain_headers(scope: Scope) -> tuple[str, int]:
    """The ``Idempotency-Key`` and the body's length of a keyed JSON request, else :class:`_Fallback`."""
    headers = _headers(scope)
    key = headers.get(b"idempotency-key")
    length = headers.get(b"content-length")
    content_type = headers.get(b"content-type")
    if key is None or length is None or content_type is None or not _JSON.match(content_type):
        raise _Fallback
    try:
        idempotency_key = key.decode("ascii")
        size = int(length)
    except ValueError:
        raise _Fallback from None
    if not idempotency.valid_key(idempotency_key) or not 0 < size <= _MAX_BODY:
        raise _Fallback
    return idempotency_key, size


async def _run(
    scope: Scope, receive: Receive, read: list[ReceiveMessage], chain_id: uuid.UUID, *, idempotency_key: str, size: int
) -> bytes:
    state = scope["app"].state
    keys = state.derived_keys
    if keys is None:  # only tooling builds an app without a secret key
        raise _Fallback
    # the key and its scope before the body is read, as the guard and the idempotency middleware do
    principal = await authenticate(ASGIConnection(scope))
    if not principal.allows(_SCOPE):
        raise _Fallback
    body = await _body(receive, read, size)
    if json_has_nul(body):
        raise _Fallback
    try:
        data = _decoder.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError):  # malformed, or not what the route takes: it says why
        # (msgspec reports invalid UTF-8 inside a string as a UnicodeDecodeError, not as one of its own errors)
        raise _Fallback from None
    run_id = uuid7()
    answer = encode_json(RunStarted(run_id=run_id))
    kept = idempotency.kept_json_answer(
        idempotency_key, idempotency.request_fingerprint(keys, scope, body).kept, _ACCEPTED, answer
    )
    database: Database = state.database
    # stateless: the plan's read and the run's statement, each on its own, change nothing of the session
    async with database.driver(stateless=True) as connection:
        started = await service.start_keyed_run(
            connection, state.chain_run_plans, principal.workspace_id, chain_id, data, run_id=run_id, key=kept
        )
    if not started:
        raise _Fallback
    return answer


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name (ASGI servers give them lower-case); the first of repeated ones."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name.lower(), value)
    return found


async def _body(receive: Receive, read: list[ReceiveMessage], size: int) -> bytes:
    """The body of ``size`` bytes (its ``Content-Length``); :class:`_Fallback` if it is not exactly that."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            raise _Fallback
        chunk = message.get("body", b"")
        chunks.append(chunk)
        received += len(chunk)
        if received > size:
            raise _Fallback
        if not message.get("more_body", False):
            break
    if received != size:
        raise _Fallback
    return b"".join(chunks)


def _replaying(read: list[ReceiveMessage], receive: Receive) -> Callable[[], Any]:
    """An ASGI ``receive`` giving the messages already read, then the rest from ``receive``."""
    pending = list(read)

    async def replay() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
