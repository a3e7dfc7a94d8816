"""A hot path for ``GET /v1/eligibility``: the call campaign tools make before every send.

It answers the plain case (well-formed query, valid key with the scope, known contact and purpose) without going
through Litestar's routing, guards and dependency injection, with the same authentication and the same service
function as the route. Anything else (a missing or malformed parameter, an unknown key, a missing scope, an
unknown contact or purpose, any error) is handed to the regular route unchanged, which answers it exactly as
before, problem+json included. A test checks that both paths give byte-identical answers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from app.domain.model import Channel
from app.eligibility import service
from app.lib.auth import Scope as ApiScope
from app.lib.auth import authenticate
from app.lib.errors import AppError, database_unreachable

PATH = "/v1/eligibility"
_CHANNELS = {channel.value: channel for channel in Channel}
_MAX_CONTACT = 200
_MAX_PURPOSE = 63
_HEADERS = [(b"content-type", b"application/json")]
_encoder = msgspec.json.Encoder()


def eligibility_fast_path(app: ASGIApp) -> ASGIApp:
    """Wrap the app's ASGI handler (inside the request-id/log/metrics middleware)."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") != "GET" or scope["path"] != PATH:
            await app(scope, receive, send)
            return
        answer = await _answer(scope)
        if answer is None:
            await app(scope, receive, send)
            return
        scope["path_template"] = PATH  # for the access log and the metrics, as the route would set it
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer, "more_body": False})

    return handle


async def _answer(scope: Scope) -> bytes | None:
    """The JSON answer of the plain case, or ``None`` to let the route answer."""
    query: bytes = scope.get("query_string", b"")
    if not query.isascii() or b"%00" in query:  # not a valid URL, or a NUL: the route decides what it means
        return None
    params = parse_qsl(query.decode("ascii"), keep_blank_values=True)
    names = [name for name, _ in params]
    if sorted(names) != ["channel", "contact", "purpose"]:
        return None
    values = dict(params)
    contact, purpose, channel = values["contact"], values["purpose"], _CHANNELS.get(values["channel"])
    if channel is None or not 0 < len(contact) <= _MAX_CONTACT or not 0 < len(purpose) <= _MAX_PURPOSE:
        return None
    connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
    try:
        principal = await authenticate(connection)
        if not principal.allows(ApiScope.ELIGIBILITY_READ):
            return None
        decision = await service.single(
            connection.app.state.database,
            principal.workspace_id,
            contact_ref=contact,
            channel=channel,
            purpose_key=purpose,
            push_services=connection.app.state.settings.web_push_services,
        )
    except Exception as exc:
        # an app error (401, 404 …) or an unreachable database (503 with Retry-After): the route answers it,
        # through the app's handlers
        if isinstance(exc, AppError) or database_unreachable(exc):
            return None
        raise
    return _encoder.encode(decision)
