"""Messages: ``POST /v1/messages`` and ``GET /v1/messages/{id}`` (scope `messages:send`), and their signals.

``POST /v1/messages/{id}/events`` takes an API key or the push message's event token; ``/l`` and ``/o`` are the
tracked-link and open-pixel pages.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Principal, Scope, authenticate_caller, require_scope
from app.lib.errors import Forbidden
from app.lib.openapi import errors, pages
from app.messages import service, signals
from app.messages.schemas import MessageDetail, MessageEventIn, MessageEventOut, MessageIn, MessageOut
from app.settings import Settings


class MessageController(Controller):
    """Messages routed to permitted channels only."""

    path = "/messages"
    tags = ["messages"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.MESSAGES_SEND}  # noqa: RUF012

    @post(operation_id="sendMessage", status_code=202, responses=errors(401, 403, 404, 409, 422))
    async def send(
        self,
        data: JSONBody[MessageIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> MessageOut:
        """Route a message to the first (or every) channel of `route` the send gate permits.

        The decision is stored with the message and the delivery queued in the same transaction; the gate is
        asked again at send time.

        `no_eligible_channel` queues nothing and says why each channel was skipped. Send with an
        `Idempotency-Key`: a retried request returns the first answer and queues nothing again.
        """
        async with db.begin():
            return await service.create_message(
                db, principal.workspace_id, data, push_services=settings.web_push_services
            )

    @get("/{message_id:uuid}", operation_id="getMessage", responses=errors(401, 403, 404))
    async def detail(
        self, message_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> MessageDetail:
        """The message, its deliveries and the status history with provider ids and errors."""
        return await service.get_message(db, principal.workspace_id, message_id)

    @post(
        "/{message_id:uuid}/events",
        operation_id="reportMessageEvent",
        status_code=200,
        opt={"public": True},  # the device has no API key: authenticated below, by the key or the event token
        responses=errors(401, 403, 404, 422),
    )
    async def report_event(
        self,
        request: Request[Any, Any, Any],
        message_id: FromPath[uuid.UUID],
        data: JSONBody[MessageEventIn],
        db: NamedDependency[AsyncSession],
    ) -> MessageEventOut:
        """Record an engagement signal of the message, once (a repeat answers `recorded: false`).

        The app or service worker reports `opened` with the push message's `event_token` as `token` (no API key;
        only `opened`). The shop reports `converted` with an API key (scope `messages:send`); a key may also
        report `opened` of a message sent with tracking. Unknown or another message's token: 401.
        """
        if data.token is not None:
            async with db.begin():
                return await signals.report_with_token(db, message_id, data)
        caller = await authenticate_caller(request)
        if not isinstance(caller, Principal):
            raise Forbidden("The operator's key has no access to a workspace's messages.", code="operator_key")
        require_scope(caller, request.route_handler)
        async with db.begin():
            return await signals.report_with_key(db, caller.workspace_id, message_id, data)


#: A 1x1 transparent GIF.
_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}
_NOT_FOUND = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Link not found</title></head>'
    "<body><h1>Link not found</h1><p>This link is not known (or no longer).</p></body></html>"
)


class TrackingPages(Controller):
    """``/l/{token}``: a tracked link of a mail; ``/o/{token}``: its open pixel (tokens minted only with consent)."""

    tags = ["hosted pages"]  # noqa: RUF012  # Litestar reads class attributes

    @get("/l/{token:str}", operation_id="followTrackedLink", status_code=302, responses=pages(404))
    async def follow(
        self, request: Request[Any, Any, Any], token: FromPath[str], db: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        """302 to the URL of the mail this token was minted for (never one from the request).

        Records `clicked` once per message. An unknown token: a plain 404 page.
        """
        async with db.begin():
            url = await signals.follow_link(db, token, request.headers.get("user-agent"))
        if url is None:
            return Response(_NOT_FOUND, status_code=404, media_type=MediaType.HTML, headers=_NO_STORE)
        return Redirect(url, status_code=302, headers=_NO_STORE)

    @get("/o/{token:str}", operation_id="openPixel", media_type="image/gif", responses=pages(404))
    async def pixel(
        self, request: Request[Any, Any, Any], token: FromPath[str], db: NamedDependency[AsyncSession]
    ) -> Response[bytes]:
        """A 1x1 GIF; records `opened` once per message for a known token (any token gets the image)."""
        async with db.begin():
            await signals.pixel_loaded(db, token, request.headers.get("user-agent"))
        return Response(_PIXEL, media_type="image/gif", headers=_NO_STORE)
