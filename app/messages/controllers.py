"""``POST /v1/messages`` and ``GET /v1/messages/{id}`` (scope `messages:send`)."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Principal, Scope
from app.lib.openapi import errors
from app.messages import service
from app.messages.schemas import MessageDetail, MessageIn, MessageOut


class MessageController(Controller):
    """Messages routed to permitted channels only."""

    path = "/messages"
    tags = ["messages"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.MESSAGES_SEND}  # noqa: RUF012

    @post(operation_id="sendMessage", status_code=202, responses=errors(401, 403, 404, 409, 422))
    async def send(
        self, data: JSONBody[MessageIn], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> MessageOut:
        """Route a message to the first (or every) channel of `route` the send gate permits.

        The decision is stored with the message and the delivery queued in the same transaction; the gate is
        asked again at send time.

        `no_eligible_channel` queues nothing and says why each channel was skipped. Send with an
        `Idempotency-Key`: a retried request returns the first answer and queues nothing again.
        """
        async with db.begin():
            return await service.create_message(db, principal.workspace_id, data)

    @get("/{message_id:uuid}", operation_id="getMessage", responses=errors(401, 403, 404))
    async def detail(
        self, message_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> MessageDetail:
        """The message, its deliveries and the status history with provider ids and errors."""
        return await service.get_message(db, principal.workspace_id, message_id)
