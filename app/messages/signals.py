"""Engagement signals recorded as message events, each at most once per message (issue 20, item 3).

- ``clicked``: a tracked link (``GET /l/{token}``) was followed; the redirect goes to the URL stored with the
  token, never to one from the request. A scanner's signs (user agent, a click within seconds of sending, as for
  confirmation links: :mod:`app.domain.scanners`) are kept as evidence with the event.
- ``opened``: the open pixel loaded (``/o/{token}``), WhatsApp reported ``read``, or the app or service worker
  reported it with the push message's event token (or the shop with an API key, for a message sent with tracking).
- ``converted``: the shop reported a conversion with an API key.

Opens and clicks are recorded only while the address still consents to the tracking purpose: after a withdrawal
a tracked link still redirects, but nothing is recorded. A repeated signal changes nothing (the first one
stands). Nothing here says a signal did *not* happen: that is what
:attr:`app.chains.conditions.Outcomes.tracked` decides from the tokens a message was sent with.
"""

from __future__ import annotations

import hmac
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel
from app.domain.scanners import scanner_signals
from app.lib.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from app.lib.inputs import in_utc
from app.lib.orm import utcnow
from app.messages import repository
from app.messages.models import MessageToken, TokenKind
from app.messages.schemas import MessageEventIn, MessageEventOut
from app.messages.status import Step
from app.messages.tracking import TOKEN_LENGTH, token_hash
from app.workspaces.service import settings_of

#: How far in the future a reported ``occurred_at`` may lie (clock skew of the reporting device).
_SKEW = timedelta(minutes=5)


async def follow_link(session: AsyncSession, token: str, user_agent: str | None) -> str | None:
    """The URL a tracked link stands for (``None``: no such link), recording ``clicked`` once per message."""
    found = await _token(session, token, TokenKind.LINK)
    if found is None or found.url is None:
        return None
    now = utcnow()
    settings = await settings_of(session, found.workspace_id)
    if not await _consenting(session, found, settings.tracking_purpose):
        return found.url  # the link still works; the click is not recorded (tracking consent withdrawn since)
    seconds = (now - found.created_at).total_seconds()
    detail: dict[str, Any] = {"via": "link"}
    if evidence := scanner_signals(user_agent, seconds, settings.email.scanner_seconds):
        detail["scanner_signals"] = evidence
    await repository.add_signal(
        session,
        found.workspace_id,
        found.message_id,
        found.delivery_id,
        Channel.EMAIL.value,
        Step.CLICKED,
        detail=detail,
        at=now,
    )
    return found.url


async def pixel_loaded(session: AsyncSession, token: str, user_agent: str | None) -> None:
    """The open pixel was fetched: ``opened`` once per message (an unknown token records nothing)."""
    found = await _token(session, token, TokenKind.OPEN)
    if found is None:
        return
    if not await _consenting(session, found, (await settings_of(session, found.workspace_id)).tracking_purpose):
        return
    detail: dict[str, Any] = {"via": "pixel"}
    if evidence := scanner_signals(user_agent, None, 0):
        detail["scanner_signals"] = evidence
    await repository.add_signal(
        session,
        found.workspace_id,
        found.message_id,
        found.delivery_id,
        Channel.EMAIL.value,
        Step.OPENED,
        detail=detail,
        at=utcnow(),
    )


async def provider_read(session: AsyncSession, workspace_id: uuid.UUID, provider_message_id: str) -> None:
    """WhatsApp reported ``read``: the message was opened (once per message; other channels' ``read`` is ignored)."""
    delivery = await repository.find_by_provider_id(session, workspace_id, provider_message_id)
    if delivery is None or delivery.channel != Channel.WHATSAPP.value:
        return
    await repository.add_signal(
        session,
        delivery.workspace_id,
        delivery.message_id,
        delivery.id,
        delivery.channel,
        Step.OPENED,
        detail={"via": "provider", "provider_status": "read"},
        at=utcnow(),
    )


async def report_with_token(session: AsyncSession, message_id: uuid.UUID, data: MessageEventIn) -> MessageEventOut:
    """The device reports ``opened`` with the push message's event token (401 for a token not of this message)."""
    assert data.token is not None
    found = await _token(session, data.token, TokenKind.EVENT)
    if found is None or not hmac.compare_digest(found.message_id.bytes, message_id.bytes):
        raise Unauthenticated("The event token is not valid for this message.", code="invalid_event_token")
    if data.type != Step.OPENED.value:
        raise Forbidden(
            "An event token reports 'opened' only; a conversion needs an API key.", code="event_type_not_allowed"
        )
    if not await _consenting(session, found, (await settings_of(session, found.workspace_id)).tracking_purpose):
        return MessageEventOut(message_id=found.message_id, type=data.type, recorded=False)
    return await _record(session, found.workspace_id, found.message_id, found.delivery_id, data, via="device")


async def report_with_key(
    session: AsyncSession, workspace_id: uuid.UUID, message_id: uuid.UUID, data: MessageEventIn
) -> MessageEventOut:
    """The shop reports ``converted`` (or ``opened`` of a message sent with tracking) with an API key."""
    message = await repository.get_message(session, workspace_id, message_id)
    if message is None:
        raise NotFound("No message with this id.", code="message_not_found")
    if data.type == Step.OPENED.value and not await repository.is_tracked(session, workspace_id, message_id):
        raise InvalidInput(
            "This message was sent without tracking (no consent to the workspace's tracking purpose): its opens "
            "are not recorded.",
            code="not_tracked",
            extra={"errors": [{"field": "type", "message": "this message was sent without tracking"}]},
        )
    return await _record(
        session, workspace_id, message.id, None, data, via="api", channel=message.decision.get("channel")
    )


async def _record(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    delivery_id: uuid.UUID | None,
    data: MessageEventIn,
    *,
    via: str,
    channel: str | None = None,
) -> MessageEventOut:
    now = utcnow()
    if data.occurred_at is not None and in_utc(data.occurred_at, "occurred_at") > now + _SKEW:
        raise InvalidInput(
            "occurred_at lies in the future.",
            code="occurred_in_future",
            extra={"errors": [{"field": "occurred_at", "message": "in the future"}]},
        )
    at = min(data.occurred_at or now, now)
    detail: dict[str, Any] = {"via": via, **({"reference": data.reference} if data.reference else {})}
    if delivery_id is not None and channel is None:
        channel = await repository.delivery_channel(session, delivery_id)
    recorded = await repository.add_signal(
        session, workspace_id, message_id, delivery_id, channel, Step(data.type), detail=detail, at=at
    )
    return MessageEventOut(message_id=message_id, type=data.type, recorded=recorded)


async def _token(session: AsyncSession, token: str, kind: TokenKind) -> MessageToken | None:
    if len(token) != TOKEN_LENGTH:
        return None
    found = await repository.find_token(session, token_hash(token))
    return found if found is not None and found.kind == kind.value else None


async def _consenting(session: AsyncSession, token: MessageToken, purpose_key: str | None) -> bool:
    """Whether the token's address still consents to tracking: a withdrawal after the send stops the recording."""
    return purpose_key is not None and await repository.still_tracked(
        session, token.workspace_id, token.delivery_id, purpose_key
    )
