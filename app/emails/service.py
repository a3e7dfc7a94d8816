"""Email double opt-in: confirmation mails and tokens, confirming, lapsing, unsubscribing, bounces and complaints.

Every consent change goes through :func:`app.ledger.service.apply_changes`; this module decides which change a
link, a page or a provider event asks for, and keeps the mail's proof (Message-ID, send time, the relay's
answer) with the token.

Sending happens after the transaction that recorded the signup has committed (a relay round trip must not
hold the ledger's locks): :func:`request_confirmation` returns an :class:`Outgoing` mail, :func:`deliver`
sends it and records the relay's answer.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.identifiers import InvalidIdentifier, email_suppression_form, mask, normalise_email
from app.domain.model import (
    ActorType,
    Channel,
    PurposeKind,
    Reachability,
    State,
    SuppressionReason,
    SuppressionScope,
    Trigger,
)
from app.domain.scanners import scanner_signals
from app.emails import render, repository
from app.emails.models import ConfirmationToken
from app.emails.tokens import UnsubscribeTarget, new_confirmation_token, sign_unsubscribe, token_hash
from app.ledger import repository as ledger
from app.ledger.actions import identifier_suppression_rows, suppression_rows, withdraw_point
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Applied, Change, apply_changes
from app.lib import ratelimit
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.lib.repository import claim_callback
from app.purposes import repository as purposes
from app.purposes.models import Notice, Purpose
from app.settings import Settings
from app.workspaces import repository as workspaces
from app.workspaces.settings import EmailSettings, RateLimit, WorkspaceSettings
from channel_providers.email import MailResult, MailSender, Unsubscribe, compose

log = structlog.get_logger(__name__)

SYSTEM = Actor(ActorType.SYSTEM, "email")
SUBJECT = Actor(ActorType.SUBJECT)
PROVIDER = "email"


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """Who followed a link: the request's client address and user agent (personal data, kept as proof)."""

    ip: str | None
    user_agent: str | None

    def evidence(self) -> dict[str, Any]:
        """The evidence fields of this request."""
        return {"ip": self.ip, "user_agent": self.user_agent}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A mail to send once the transaction that asked for it has committed."""

    workspace_id: uuid.UUID
    token_id: uuid.UUID | None
    message: EmailMessage


# --- starting the double opt-in ----------------------------------------------------------------------------


async def request_confirmation(
    session: AsyncSession,
    keys: Keys,
    app_settings: Settings,
    workspace_id: uuid.UUID,
    *,
    point: ContactPoint,
    purpose: Purpose,
    notice: Notice | None,
    evidence: Mapping[str, Any],
    actor: Actor,
    client_ip: str | None,
) -> Outgoing:
    """Record ``signup`` (or ``resend`` while pending) and prepare the confirmation mail with a new token.

    The limits per address and per client IP are checked first (429, nothing written). An address that is
    already opted in gets an "already subscribed" mail instead, so the caller's answer is the same either way.
    Older open tokens of the same signup are superseded: only the newest mail's link confirms.
    """
    settings, brand = await _workspace(session, workspace_id)
    now = utcnow()
    await _take_rate_limits(session, keys, workspace_id, settings.email, address=point.value, ip=client_ip, now=now)
    contact = await ledger.get_contact(session, point.contact_id)
    lang = render.locale_of(contact.locale, settings.locale)
    current = await ledger.consent_state(session, workspace_id, point.id, purpose.id)
    if current is not State.OPTED_IN:
        trigger = Trigger.RESEND if current is State.PENDING else Trigger.SIGNUP
        [applied] = await apply_changes(
            session,
            workspace_id,
            [Change(point, purpose.id, trigger, evidence, notice=notice if trigger is Trigger.SIGNUP else None)],
            actor,
            skip_not_allowed=True,
        )
        current = applied.to_state
    if current is not State.PENDING:  # already in (or it became so meanwhile): nothing to confirm
        mail = render.already_subscribed_mail(lang, brand=brand, purpose=purpose.name)
        return Outgoing(workspace_id, None, _compose(app_settings, settings, point.value, mail))
    await repository.supersede_open(session, workspace_id, point.id, purpose.id, now)
    token, digest = new_confirmation_token()
    expires = now + timedelta(hours=settings.email.confirmation_ttl_hours)
    row = await repository.add_token(
        session,
        workspace_id,
        point_id=point.id,
        purpose_id=purpose.id,
        notice_id=notice.id if notice else await ledger.consent_notice_id(session, workspace_id, point.id, purpose.id),
        digest=digest,
        locale=lang,
        expires_at=expires,
    )
    link = f"{app_settings.public_base_url}/c/{token}"
    mail = render.confirmation_mail(
        lang, brand=brand, purpose=purpose.name, link=link, expires=expires, timezone=settings.timezone
    )
    return Outgoing(workspace_id, row.id, _compose(app_settings, settings, point.value, mail))


async def preference_link_mail(
    session: AsyncSession, app_settings: Settings, point: ContactPoint, *, url: str, expires: datetime
) -> Outgoing:
    """The mail with a preference link a person asked for at ``/p``, to ``point``.

    In the contact's language (else the workspace's), from the workspace's sender; :func:`deliver` sends it like a
    confirmation mail.
    """
    settings, brand = await _workspace(session, point.workspace_id)
    contact = await ledger.get_contact(session, point.contact_id)
    lang = render.locale_of(contact.locale, settings.locale)
    mail = render.preference_link_mail(lang, brand=brand, link=url, expires=expires, timezone=settings.timezone)
    return Outgoing(point.workspace_id, None, _compose(app_settings, settings, point.value, mail))


async def deliver(
    session: AsyncSession, sender: MailSender, outgoing: Outgoing, *, kind: str = "confirmation_mail"
) -> MailResult:
    """Send ``outgoing`` and keep the relay's answer with its token (the caller commits); logged as ``kind``."""
    result = await sender.send(outgoing.message)
    if outgoing.token_id is not None:
        await repository.record_mail(
            session,
            outgoing.workspace_id,
            outgoing.token_id,
            message_id=result.message_id,
            sent_at=utcnow() if result.accepted else None,
            response=result.response[:1000],
        )
    log.info(
        kind,
        workspace_id=str(outgoing.workspace_id),
        outcome=result.outcome.value,
        token_id=str(outgoing.token_id) if outgoing.token_id else None,
    )
    return result


def _compose(app_settings: Settings, settings: WorkspaceSettings, to: str, mail: render.Mail) -> EmailMessage:
    headers = {"Auto-Submitted": "auto-generated"}
    if settings.email.reply_to:
        headers["Reply-To"] = settings.email.reply_to
    return compose(
        sender=settings.email.from_address or app_settings.mail.mail_from,
        to=to,
        subject=mail.subject,
        text=mail.text,
        html=mail.html,
        headers=headers,
    )


async def _workspace(session: AsyncSession, workspace_id: uuid.UUID) -> tuple[WorkspaceSettings, str]:
    workspace = await workspaces.get_workspace(session, workspace_id)
    assert workspace is not None  # callers hold a key of it, or a token that cascades with it
    settings = WorkspaceSettings.load(workspace.settings)
    return settings, settings.brand or workspace.name


async def _take_rate_limits(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    limits: EmailSettings,
    *,
    address: str,
    ip: str | None,
    now: datetime,
) -> None:
    """Count one confirmation mail against the address and the client IP, or raise 429 if either is spent."""
    counters = [(keys.rate_limit_key("email", address.lower()), _limit(limits.address_limit))]
    if ip:
        counters.append((keys.rate_limit_key("ip", ip), _limit(limits.ip_limit)))
    await ratelimit.take(
        session,
        workspace_id,
        counters,
        now=now,
        message="Too many confirmation mails were requested for this address or client; try again later.",
        code="too_many_confirmation_mails",
    )


def _limit(limit: RateLimit) -> ratelimit.Limit:
    return ratelimit.Limit(limit.count, timedelta(minutes=limit.window_minutes))


# --- the confirmation link ---------------------------------------------------------------------------------


class LinkStatus(enum.StrEnum):
    """What a confirmation link can do, as its page shows it (the HTTP status in :data:`STATUS_CODES`)."""

    CONFIRMABLE = "confirm"
    CONFIRMED = "confirmed"
    #: Confirmed, but a permanent suppression of the address (an unsubscribe, objection, complaint or erasure
    #: before) still stops the purpose's mail: the page says so instead of promising mail that never comes.
    CONFIRMED_BLOCKED = "confirmed_blocked"
    ALREADY = "already"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    INVALID = "invalid"
    UNKNOWN = "unknown"


STATUS_CODES = {
    LinkStatus.CONFIRMABLE: 200,
    LinkStatus.CONFIRMED: 200,
    LinkStatus.CONFIRMED_BLOCKED: 200,
    LinkStatus.ALREADY: 200,
    LinkStatus.SUPERSEDED: 410,
    LinkStatus.EXPIRED: 410,
    LinkStatus.INVALID: 410,
    LinkStatus.UNKNOWN: 404,
}


@dataclass(frozen=True, slots=True)
class ConfirmationLink:
    """A confirmation link as found: its status and what its page names."""

    status: LinkStatus
    token: ConfirmationToken | None = None
    point: ContactPoint | None = None
    lang: str = "en"
    brand: str = ""
    purpose: str = ""
    signup_url: str | None = None

    @property
    def address(self) -> str:
        """The masked address the page shows."""
        return mask(Channel.EMAIL, self.point.value) if self.point else ""


async def look_up(session: AsyncSession, token: str, *, lock: bool = False) -> ConfirmationLink:
    """What ``token`` can do now; changes nothing (``GET`` and ``HEAD`` use this)."""
    row = await repository.find_by_hash(session, token_hash(token), lock=lock)
    if row is None:
        return ConfirmationLink(LinkStatus.UNKNOWN)
    settings, brand = await _workspace(session, row.workspace_id)
    purpose = await purposes.get_purpose(session, row.workspace_id, row.purpose_id)
    point = await ledger.get_contact_point(session, row.workspace_id, row.contact_point_id)
    assert purpose is not None
    assert point is not None
    found = ConfirmationLink(
        LinkStatus.CONFIRMABLE,
        row,
        point,
        row.locale,
        brand,
        purpose.name,
        settings.email.signup_url,
    )
    state = await ledger.consent_state(session, row.workspace_id, row.contact_point_id, row.purpose_id)
    if row.used_at is not None or state is State.OPTED_IN:
        return _with(found, LinkStatus.ALREADY)
    if row.superseded_at is not None:
        return _with(found, LinkStatus.SUPERSEDED)
    if row.lapsed_at is not None or row.expires_at <= utcnow():
        return _with(found, LinkStatus.EXPIRED)
    if state is not State.PENDING:
        return _with(found, LinkStatus.INVALID)
    return found


def _with(link: ConfirmationLink, status: LinkStatus) -> ConfirmationLink:
    return ConfirmationLink(status, link.token, link.point, link.lang, link.brand, link.purpose, link.signup_url)


async def confirm(session: AsyncSession, token: str, meta: RequestMeta) -> ConfirmationLink:
    """``POST /c/{token}``: confirm, recording the request and any scanner signals; idempotent.

    A confirmation that comes seconds after sending, or with a scanner's user agent, is still a real POST and
    is honoured; the evidence carries the signal. An expired token lapses its signup here (if the sweep has not
    yet).
    """
    link = await look_up(session, token, lock=True)
    row, point = link.token, link.point
    if link.status is LinkStatus.EXPIRED and row is not None and row.lapsed_at is None and row.superseded_at is None:
        await _lapse(session, row, utcnow())
    if link.status is not LinkStatus.CONFIRMABLE:
        return link
    assert row is not None
    assert point is not None
    now = utcnow()
    settings, _ = await _workspace(session, row.workspace_id)
    sent = row.mail_sent_at
    seconds = (now - sent).total_seconds() if sent else None
    evidence = {
        **meta.evidence(),
        "method": "button_post",
        "token_id": str(row.id),
        "mail_message_id": row.mail_message_id,
        "mail_sent_at": sent.isoformat() if sent else None,
        "seconds_after_sending": round(seconds, 3) if seconds is not None else None,
        "signals": scanner_signals(meta.user_agent, seconds, settings.email.scanner_seconds),
    }
    [applied] = await apply_changes(
        session,
        row.workspace_id,
        [Change(point, row.purpose_id, Trigger.CONFIRM, evidence)],
        SUBJECT,
        skip_not_allowed=True,
    )
    if applied.event_id is None:
        return _with(link, LinkStatus.INVALID)
    repository.mark_used(row, now)
    if point.reachability == Reachability.UNDELIVERABLE:  # the mail arrived: the address works again
        await ledger.set_reachability(session, point.id, Reachability.REACHABLE.value, now)
    if await _blocked(session, point, row.purpose_id):
        return _with(link, LinkStatus.CONFIRMED_BLOCKED)
    return _with(link, LinkStatus.CONFIRMED)


async def _blocked(session: AsyncSession, point: ContactPoint, purpose_id: uuid.UUID) -> bool:
    """Whether a permanent suppression of the address stops mail of the purpose (as the send gate reads it)."""
    found = await ledger.suppressions_with_keys(session, point.workspace_id, [bytes(k) for k in point.suppression_keys])
    if not found:
        return False
    purpose = await purposes.get_purpose(session, point.workspace_id, purpose_id)
    marketing = purpose is None or purpose.kind != PurposeKind.TRANSACTIONAL
    return any(
        scope is SuppressionScope.ALL
        or (scope is SuppressionScope.ALL_MARKETING and marketing)
        or (scope is SuppressionScope.PURPOSE and suppressed == purpose_id)
        for _, scope, suppressed in found
    )


async def renew(
    session: AsyncSession, keys: Keys, app_settings: Settings, token: str, meta: RequestMeta
) -> tuple[ConfirmationLink, Outgoing | None]:
    """``POST /c/{token}/renew``: a new confirmation mail for an expired or replaced link (rate limits apply)."""
    link = await look_up(session, token, lock=True)
    if link.status not in (LinkStatus.EXPIRED, LinkStatus.SUPERSEDED):
        return link, None
    row, point = link.token, link.point
    assert row is not None
    assert point is not None
    purpose = await purposes.get_purpose(session, row.workspace_id, row.purpose_id)
    notice = await purposes.get_notice(session, row.workspace_id, row.notice_id) if row.notice_id else None
    assert purpose is not None
    evidence = {**meta.evidence(), "method": "renewal_page", "previous_token_id": str(row.id)}
    outgoing = await request_confirmation(
        session,
        keys,
        app_settings,
        row.workspace_id,
        point=point,
        purpose=purpose,
        notice=notice,
        evidence=evidence,
        actor=SUBJECT,
        client_ip=meta.ip,
    )
    return link, outgoing


async def lapse_expired(session: AsyncSession, *, limit: int = 500) -> int:
    """Move signups whose newest link expired to ``expired``; returns how many tokens were handled.

    Safe to run from several processes at once (``SKIP LOCKED``). Old rate-limit counters are pruned too.
    """
    now = utcnow()
    rows = await repository.lock_expired(session, now, limit)
    for row in rows:
        await _lapse(session, row, now)
    await ratelimit.prune(session, now)
    return len(rows)


async def _lapse(session: AsyncSession, row: ConfirmationToken, now: datetime) -> None:
    point = await ledger.get_contact_point(session, row.workspace_id, row.contact_point_id)
    if point is not None:
        evidence = {"token_id": str(row.id), "expired_at": row.expires_at.isoformat()}
        await apply_changes(
            session,
            row.workspace_id,
            [Change(point, row.purpose_id, Trigger.LAPSE, evidence)],
            SYSTEM,
            skip_not_allowed=True,
        )
    repository.mark_lapsed(row, now)


# --- unsubscribing -----------------------------------------------------------------------------------------


PREFERENCES_VIA = "/p/via/"
"""The path that turns an unsubscribe token into a fresh preference link (served by :mod:`app.preferences`)."""


def unsubscribe_urls(app_settings: Settings, keys: Keys, target: UnsubscribeTarget, lang: str = "en") -> Unsubscribe:
    """The one-click target, the page and the preference centre of one recipient (for ``compose``).

    The preference link carries the same stateless token as the unsubscribe link: no row per marketing mail; a
    preference link is minted only when the person asks for it on that page (a ``POST``).
    """
    token = sign_unsubscribe(keys.unsubscribe, target)
    base = f"{app_settings.public_base_url}/u/{token}"
    return Unsubscribe(
        url=f"{base}/one-click",
        page_url=base,
        locale=lang,
        preferences_url=f"{app_settings.public_base_url}{PREFERENCES_VIA}{token}",
    )


def preferences_path(keys: Keys, point_id: uuid.UUID) -> str:
    """``/p/via/{token}`` for one address: how the hosted pages link to the person's preference centre."""
    return PREFERENCES_VIA + sign_unsubscribe(keys.unsubscribe, UnsubscribeTarget(point_id, None))


@dataclass(frozen=True, slots=True)
class Recipient:
    """Whom an unsubscribe token names, as its page shows it."""

    workspace_id: uuid.UUID
    point: ContactPoint
    purpose: Purpose | None
    lang: str
    brand: str
    message_id: uuid.UUID | None = None
    """The message the link came in (tokens of version 2): an opt-out by it is attributed to its campaign."""

    @property
    def address(self) -> str:
        """The masked address."""
        return mask(Channel.EMAIL, self.point.value)


async def recipient_of(session: AsyncSession, target: UnsubscribeTarget) -> Recipient | None:
    """The address and purpose a verified token names; ``None`` if the address is gone (erased)."""
    point = await ledger.get_contact_point_unscoped(session, target.contact_point_id)  # the token names no workspace
    if point is None or point.channel != Channel.EMAIL:
        return None
    purpose = await purposes.get_purpose(session, point.workspace_id, target.purpose_id) if target.purpose_id else None
    if target.purpose_id is not None and purpose is None:  # another workspace's (purposes are never deleted)
        return None
    settings, brand = await _workspace(session, point.workspace_id)
    contact = await ledger.get_contact(session, point.contact_id)
    lang = render.locale_of(contact.locale, settings.locale)
    return Recipient(point.workspace_id, point, purpose, lang, brand, target.message_id)


async def unsubscribe(
    session: AsyncSession, recipient: Recipient, *, everything: bool, evidence: Mapping[str, Any]
) -> list[Applied]:
    """Withdraw the token's purpose, or every marketing purpose; a repeat records nothing new (idempotent).

    The evidence names the message the link came in, and its campaign label (reports count the opt-outs a
    campaign caused by it).
    """
    purpose_id = None if everything or recipient.purpose is None else recipient.purpose.id
    if recipient.message_id is not None:
        evidence = {
            **evidence,
            **await repository.attribution_of(session, recipient.workspace_id, recipient.message_id),
        }
    return await withdraw_point(
        session,
        recipient.workspace_id,
        recipient.point,
        trigger=Trigger.UNSUBSCRIBE,
        evidence=evidence,
        actor=SUBJECT,
        purpose_id=purpose_id,
        repeat=False,
    )


# --- bounces and complaints --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One bounce or complaint reported by the mail provider."""

    id: str
    type: str
    recipient: str
    bounce_type: str | None = None
    occurred_at: datetime | None = None
    message_id: str | None = None
    diagnostic: str | None = None


@dataclass(slots=True)
class EventsReport:
    """What a webhook delivery did."""

    processed: int = 0
    duplicates: int = 0
    unknown_recipients: int = 0


async def handle_events(
    session: AsyncSession, keys: Keys, workspace_id: uuid.UUID, events: Sequence[ProviderEvent]
) -> EventsReport:
    """Hard bounce → address ``undeliverable``; complaint → ``opted_out`` + suppression; soft bounce counted.

    Each event is processed once (by its id); a retried delivery reports duplicates and changes nothing.
    """
    report = EventsReport()
    for event in events:
        status = event.type if event.type != "bounce" else f"bounce_{event.bounce_type or 'hard'}"
        if not await claim_callback(
            session,
            workspace_id,
            provider=PROVIDER,
            message_id=event.id,
            status=status,
            error=smtp_code(event.diagnostic),
        ):
            report.duplicates += 1
            continue
        report.processed += 1
        try:
            address = normalise_email(event.recipient)
        except InvalidIdentifier:
            report.unknown_recipients += 1
            continue
        point = await ledger.find_contact_point(session, workspace_id, Channel.EMAIL, address)
        if event.type == "complaint":
            await _complaint(session, keys, workspace_id, point=point, address=address, event=event)
        elif point is not None and status == "bounce_hard":
            await ledger.set_reachability(session, point.id, Reachability.UNDELIVERABLE.value, utcnow())
        elif point is not None:
            await ledger.count_soft_bounce(session, point.id)
        if point is None:
            report.unknown_recipients += 1
    log.info(
        "email_events",
        workspace_id=str(workspace_id),
        processed=report.processed,
        duplicates=report.duplicates,
        unknown=report.unknown_recipients,
    )
    return report


async def _complaint(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    *,
    point: ContactPoint | None,
    address: str,
    event: ProviderEvent,
) -> None:
    """A spam complaint opts the address out of all marketing and suppresses it (even if it is unknown)."""
    if point is not None:
        evidence = {"event_id": event.id, "message_id": event.message_id, "feedback": event.diagnostic}
        await withdraw_point(
            session,
            workspace_id,
            point,
            trigger=Trigger.COMPLAINT,
            evidence=evidence,
            actor=Actor(ActorType.PROVIDER, PROVIDER),
        )
        rows = suppression_rows(keys, workspace_id, [point], SuppressionReason.COMPLAINT)
    else:
        rows = identifier_suppression_rows(
            keys, workspace_id, Channel.EMAIL, email_suppression_form(address), SuppressionReason.COMPLAINT
        )
    await ledger.add_suppressions(session, rows)


_ENHANCED_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


def smtp_code(diagnostic: str | None) -> str | None:
    """The SMTP enhanced status code of a bounce's diagnostic (``5.1.1``), and nothing else of it.

    Diagnostics usually name the recipient ("<jane@example.com>: mailbox full"); the code is what the
    deduplication record may keep (the text goes into the ledger event's evidence, which an erasure clears).
    """
    found = _ENHANCED_STATUS.search(diagnostic or "")
    return found.group(0) if found else None
