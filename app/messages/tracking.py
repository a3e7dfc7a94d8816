"""Engagement tracking set up at send time, only where the contact consented to the workspace's tracking purpose.

TTDSG §25 / ePrivacy: a tracked link or an open pixel reads from the person's device, so it needs consent. The
workspace names the purpose standing for it (``tracking_purpose``); a delivery whose address is ``opted_in`` to
it gets, when the dispatcher prepares it (only once ``PUBLIC_BASE_URL`` is set):

- **email**: every ``http(s)`` URL of the content's text and HTML (links of our own hosted pages excepted) is
  rewritten to ``PUBLIC_BASE_URL/l/{token}``, one token per distinct URL; with ``tracking_pixel`` the HTML part
  also carries a 1x1 image ``/o/{token}``. The unsubscribe and preference links the email channel adds come after
  this (``List-Unsubscribe`` and the footer) and are never rewritten.
- **push**: an event token in the payload (``message_id`` and ``event_token``: app push in ``data``, web push at
  the payload's top level), which the app or service worker reports ``opened`` with.

A token is 256 bits, keyed on the delivery and the URL (the same delivery prepared again mints the same tokens,
so a mail sent again after a crash keeps working links); only its SHA-256 is stored (``message_tokens``), with
the URL it stands for: ``/l/{token}`` redirects only there, never to a URL from the request. Without consent
nothing is rewritten or added, no token exists, and the message's opens and clicks stay unknown.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel, State
from app.eligibility import repository as facts_repository
from app.lib.keys import Keys
from app.messages import repository
from app.messages.models import TokenKind
from app.messages.repository import ToSend
from app.purposes import repository as purposes_repository
from app.settings import Settings
from app.workspaces.settings import WorkspaceSettings

log = structlog.get_logger(__name__)

#: The channels whose messages can carry tracking.
TRACKED_CHANNELS = frozenset({Channel.EMAIL.value, Channel.APP_PUSH.value, Channel.WEB_PUSH.value})
#: A token's text: 32 bytes, URL-safe base64 without padding.
TOKEN_LENGTH = 43
#: At most this many distinct URLs of one mail are tracked (the rest stay as they are), each at most this long.
MAX_LINKS = 100
MAX_URL_LENGTH = 2000

_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"""https?://[^\s<>"'\]\[)(}{]+""", re.IGNORECASE)
_TRAILING = ".,;:!?"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def token_hash(token: str) -> bytes:
    """What is stored of a token (and looked up by)."""
    return hashlib.sha256(token.encode()).digest()


def mint(keys: Keys, delivery_id: uuid.UUID, kind: TokenKind, url: str = "") -> str:
    """The delivery's token for ``kind`` (and ``url``): 256 bits, the same each time the delivery is prepared."""
    raw = keys.request_fingerprint(b"message-token-v1", delivery_id.bytes, kind.value.encode(), url.encode())
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _own(url: str, base: str) -> bool:
    """A link of our own hosted pages (unsubscribe, preferences, confirmation): never tracked."""
    return url == base or url.startswith(base + "/")


def rewrite_email(
    content: Mapping[str, Any], base: str, link: Callable[[str], str | None], pixel: str | None
) -> dict[str, Any]:
    """The mail with its links replaced by ``link(url)`` (``None``: left as it is) and the pixel added.

    ``base`` is ``PUBLIC_BASE_URL``: its links are left alone. HTML attribute values are unescaped before and
    escaped after, so the stored URL is the one the browser would have opened.
    """

    def in_text(match: re.Match[str]) -> str:
        found = match.group(0)
        url = found.rstrip(_TRAILING)
        tracked = None if _own(url, base) else link(url)
        return found if tracked is None else tracked + found[len(url) :]

    def in_html(match: re.Match[str]) -> str:
        url = html.unescape(match.group(3)).strip()
        if not url.lower().startswith(("http://", "https://")) or _own(url, base):
            return match.group(0)
        tracked = link(url)
        if tracked is None:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{html.escape(tracked)}{match.group(2)}"

    rewritten = dict(content)
    rewritten["text"] = _TEXT_URL.sub(in_text, content["text"])
    if content.get("html"):
        body = _HREF.sub(in_html, content["html"])
        if pixel is not None:
            image = f'<img src="{html.escape(pixel)}" width="1" height="1" alt="" style="display:block;border:0">'
            ends = list(_BODY_END.finditer(body))
            body = body[: ends[-1].start()] + image + body[ends[-1].start() :] if ends else body + image
        rewritten["html"] = body
    return rewritten


async def prepare(
    session: AsyncSession,
    keys: Keys,
    service: Settings,
    deliveries: Sequence[ToSend],
    settings: Mapping[uuid.UUID, WorkspaceSettings],
) -> dict[uuid.UUID, dict[str, Any]]:
    """The tracked content of each delivery whose contact consented to tracking (the others are not named).

    ``deliveries``: what the dispatcher read of its batch (:func:`repository.batch_to_send`). One query per
    workspace that tracks (its purpose and its contacts' consents), one for the tokens.

    A batch holds many workspaces' deliveries, and one's data must not stop the others' (hostile review 2026-12-06):
    a workspace whose consents the database refuses to read (a stored time zone it does not know) tracks none of its
    deliveries, and a delivery whose content cannot be tracked (none for its channel, JSON ``null``) is left out;
    both go on to the dispatcher's own preparation, which sends them untracked or settles them alone.
    """
    # links to a default address would not open anywhere: no tracking until PUBLIC_BASE_URL is set
    base = service.public_base_url.rstrip("/") if service.public_base_url_configured else None
    wanted = [
        d
        for d in deliveries
        if d.channel in TRACKED_CHANNELS
        and base
        and (s := settings.get(d.workspace_id)) is not None
        and s.tracking_purpose
        and d.has_message
        and d.has_point
    ]
    if not wanted or base is None:
        return {}
    consented = await _consented(session, wanted, settings)
    contents: dict[uuid.UUID, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for delivery in wanted:
        if delivery.contact_point_id not in consented:
            continue
        try:
            content = delivery.channel_content()
            made = _tracked(keys, base, delivery, content, pixel=settings[delivery.workspace_id].tracking_pixel)
        except Exception:  # its own: without tracking (no token exists), the batch goes on
            log.exception("delivery_tracking_failed", delivery_id=str(delivery.id), channel=delivery.channel)
            continue
        contents[delivery.id] = made[0]
        rows += made[1]
    return await _store(session, contents, rows)


async def _store(
    session: AsyncSession, contents: dict[uuid.UUID, dict[str, Any]], rows: Sequence[dict[str, Any]]
) -> dict[uuid.UUID, dict[str, Any]]:
    """Store the tokens; answers the tracked contents whose tokens are stored.

    One insert in a savepoint; if the database refuses it (a message erased since the batch was read: its foreign
    key), one per delivery, and a delivery whose tokens cannot be stored is sent untracked (links that would lead
    nowhere are never sent) instead of failing the batch.
    """
    try:
        async with session.begin_nested():
            await repository.add_tokens(session, rows)
    except DBAPIError:
        log.warning("delivery_tokens_refused", deliveries=len(contents))
    else:
        return contents
    stored: dict[uuid.UUID, dict[str, Any]] = {}
    for delivery_id, content in contents.items():
        try:
            async with session.begin_nested():
                await repository.add_tokens(session, [r for r in rows if r["delivery_id"] == delivery_id])
        except DBAPIError:
            log.exception("delivery_tokens_failed", delivery_id=str(delivery_id))
            continue
        stored[delivery_id] = content
    return stored


def _tracked(
    keys: Keys, base: str, delivery: ToSend, content: Mapping[str, Any], *, pixel: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []

    def row(kind: TokenKind, url: str | None = None) -> str:
        token = mint(keys, delivery.id, kind, url or "")
        rows.append(
            {
                "token_hash": token_hash(token),
                "workspace_id": delivery.workspace_id,
                "message_id": delivery.message_id,
                "delivery_id": delivery.id,
                "kind": kind.value,
                "url": url,
            }
        )
        return token

    if delivery.channel != Channel.EMAIL.value:
        token = row(TokenKind.EVENT)
        if delivery.channel == Channel.APP_PUSH.value:
            data = {**(content.get("data") or {}), "message_id": str(delivery.message_id), "event_token": token}
            return {**content, "data": data}, rows
        return {**content, "message_id": str(delivery.message_id), "event_token": token}, rows
    links: dict[str, str] = {}

    def link(url: str) -> str | None:
        if url not in links:
            if len(links) >= MAX_LINKS or len(url) > MAX_URL_LENGTH:
                return None
            links[url] = f"{base}/l/{row(TokenKind.LINK, url)}"
        return links[url]

    image = f"{base}/o/{row(TokenKind.OPEN)}" if pixel and content.get("html") else None
    return rewrite_email(content, base, link, image), rows


async def _consented(
    session: AsyncSession,
    deliveries: Sequence[ToSend],
    settings: Mapping[uuid.UUID, WorkspaceSettings],
) -> set[uuid.UUID]:
    """The addresses of ``deliveries`` that are ``opted_in`` to their workspace's tracking purpose.

    One read per workspace, each in a savepoint: one the database refuses (a stored time zone it does not know)
    counts none of that workspace's addresses, and the others' are read (as the dispatcher's gate facts are).
    """
    found: set[uuid.UUID] = set()
    for workspace_id in sorted({d.workspace_id for d in deliveries}):
        key = settings[workspace_id].tracking_purpose
        mine = [d for d in deliveries if d.workspace_id == workspace_id]
        try:
            async with session.begin_nested():
                purpose = await purposes_repository.get_by_key(session, workspace_id, key) if key else None
                if purpose is None:
                    continue
                facts = await facts_repository.point_facts(
                    session,
                    workspace_id,
                    sorted({d.contact_id for d in mine if d.contact_id is not None}),
                    sorted({d.channel for d in mine}),
                    purpose.id,
                )
        except DBAPIError:
            log.exception("delivery_tracking_read_failed", workspace_id=str(workspace_id))
            continue
        found |= {f.id for _, f in facts if f.purpose_consent is not None and f.purpose_consent.state is State.OPTED_IN}
    return found
