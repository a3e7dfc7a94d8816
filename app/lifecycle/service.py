"""Consents that end (CHANNEL_RULES.md E11): the sweep that records their end, re-permission and renewal.

- **The read path needs no sweep.** Eligibility, audiences, routing and the dispatcher compute a consent's end
  from its purpose's ``validity``/``inactivity`` (:mod:`app.domain.validity`; the instant is the database's,
  :func:`app.eligibility.repository.span_end_sql`) and answer ``expired`` from that instant on. The sweep only
  writes down what already holds: it records ``validity_ended`` (state ``expired``) as a chained ledger event at
  the end instant, with the rule, when the consent was given, the last engagement and the end as evidence.
- **Re-permission**: ``repermission_before`` the end, while the consent is still in force, the sweep queues one
  message per consent period through the normal router (:func:`app.messages.service.create_message`) on the
  consent's own address, carrying a "keep me subscribed" link: 256 random bits, only the SHA-256 stored, usable
  once until the consent's end. A ``GET`` of the link shows a page and changes nothing; its button ``POST``
  records ``renewed`` (the person as actor; IP, user agent and link id as evidence), from which validity counts
  again.

The sweep runs in the background loop of every ``consent serve`` process, beside the lapse sweep: each claims its
rows with ``FOR UPDATE SKIP LOCKED``, in batches, so processes share the work and never end or ask for one consent
twice.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.gate import Reason, decide_point
from app.domain.identifiers import mask
from app.domain.model import ActorType, Channel, PurposeKind, State, Trigger
from app.domain.validity import Policy, SpanError, policy_of
from app.eligibility import repository as eligibility
from app.eligibility.repository import REPERMISSION_CAMPAIGN
from app.emails.service import RequestMeta
from app.emails.tokens import new_confirmation_token, token_hash
from app.ledger import repository as ledger
from app.ledger.service import Actor, Change, apply_changes
from app.lib.errors import AppError
from app.lib.orm import utcnow
from app.lifecycle import repository
from app.lifecycle.models import Repermission
from app.messages.schemas import (
    AppPushContent,
    Content,
    EmailContent,
    MessageIn,
    SmsContent,
    WebPushContent,
    WhatsAppContent,
)
from app.messages.service import create_message

log = structlog.get_logger()

SYSTEM = Actor(ActorType.SYSTEM, "lifecycle")
#: Consents ended (or asked) per purpose and round; the rest waits for the next round.
BATCH = 500
#: The campaign label of re-permission messages (reports: ``group_by=campaign``).
CAMPAIGN = REPERMISSION_CAMPAIGN
#: The path of the "keep me subscribed" page.
PATH = "/r/"


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one round did."""

    ended: int
    asked: int
    more: bool = False
    """A purpose had a full batch: more may be waiting (the caller runs another round at once)."""


async def sweep(
    session: AsyncSession,
    *,
    base_url: str,
    now: datetime | None = None,
    limit: int = BATCH,
    push_services: tuple[str, ...] | None,
) -> SweepResult:
    """End every consent past its end and queue the re-permission messages due, in the caller's transaction.

    ``push_services``: the operator's web push services (routing takes no endpoint off them; ``None``: any host).
    """
    now = now or utcnow()
    ended = asked = 0
    more = False
    for purpose in await repository.purposes_that_end(session):
        try:
            policy = policy_of(purpose.validity, purpose.inactivity, purpose.repermission_before)
        except SpanError:  # only a hand-edited row can hold one (the API and the check constraints refuse it)
            log.warning("purpose_lifecycle_invalid", purpose_id=str(purpose.id))
            continue
        try:
            # a savepoint per purpose: one workspace's failure (a stored time zone the database refuses) must not
            # stop the sweep of every other workspace (hostile review 2026-12-05)
            async with session.begin_nested():
                done, full = await _end(session, purpose, policy, now, limit)
                queued, full_too = 0, False
                if policy.repermission_before is not None:
                    queued, full_too = await _ask(
                        session,
                        purpose,
                        policy,
                        now=now,
                        limit=limit,
                        base_url=base_url,
                        push_services=push_services,
                    )
        except DBAPIError:
            log.exception("lifecycle_purpose_failed", purpose_id=str(purpose.id))
            continue
        ended, asked, more = ended + done, asked + queued, more or full or full_too
    return SweepResult(ended=ended, asked=asked, more=more)


async def end_due(session: AsyncSession, purpose_id: uuid.UUID, now: datetime | None = None) -> int:
    """Record ``validity_ended`` for every consent of the purpose past its end now, under its current spans.

    Before the spans change (``PUT /v1/purposes/{key}/lifecycle``): a consent that eligibility already answered
    ``expired`` stays ended, whether or not the sweep had got to it (a looser rule must not bring it back).
    """
    now = now or utcnow()
    ended = 0
    for purpose in await repository.purposes_that_end(session, purpose_id):
        policy = policy_of(purpose.validity, purpose.inactivity, purpose.repermission_before)
        while True:
            done, full = await _end(session, purpose, policy, now, BATCH)
            ended += done
            if not full or not done:  # a full batch of which nothing ended: the rest is not due either
                break
    return ended


async def _end(session: AsyncSession, purpose: Any, policy: Policy, now: datetime, limit: int) -> tuple[int, bool]:
    rows = await repository.lock_ending(
        session,
        workspace_id=purpose.workspace_id,
        purpose_id=purpose.id,
        policy=policy,
        timezone=purpose.tz,
        by=now,
        limit=limit,
    )
    changes: list[Change] = []
    for row in rows:
        end = eligibility.earlier_end(row.by_validity, row.by_inactivity)
        if end is None or end.at > now:  # never: the rows are those the same instants end by now
            continue
        point = await ledger.get_contact_point(session, purpose.workspace_id, row.contact_point_id)
        if point is None:
            continue
        evidence = {
            "rule": end.rule,
            "validity": purpose.validity,
            "inactivity": purpose.inactivity,
            "timezone": purpose.tz,
            "given_at": row.since.isoformat(),
            "given_event_id": str(row.last_event_id) if row.last_event_id else None,
            "last_engagement": row.engaged_at.isoformat() if row.engaged_at else None,
            "ended_at": end.at.isoformat(),
        }
        changes.append(Change(point, purpose.id, Trigger.VALIDITY_ENDED, evidence, occurred_at=end.at))
    applied = await apply_changes(session, purpose.workspace_id, changes, SYSTEM, skip_not_allowed=True)
    done = sum(1 for a in applied if a.event_id is not None)
    if done:
        log.info("consents_validity_ended", workspace_id=str(purpose.workspace_id), purpose=purpose.key, count=done)
    return done, len(rows) >= limit


async def _ask(  # one round's context, keyword-only
    session: AsyncSession,
    purpose: Any,
    policy: Policy,
    *,
    now: datetime,
    limit: int,
    base_url: str,
    push_services: tuple[str, ...] | None,
) -> tuple[int, bool]:
    assert policy.repermission_before is not None
    # consents that end within the longest reading of repermission_before (the database then says exactly when
    # each may be asked: asks_from)
    horizon = now + timedelta(days=eligibility.span_bounds(policy.repermission_before)[1])
    rows = await repository.lock_ending(
        session,
        workspace_id=purpose.workspace_id,
        purpose_id=purpose.id,
        policy=policy,
        timezone=purpose.tz,
        by=horizon,
        limit=limit,
        without_link=True,
        asks_by=now,
    )
    asked = 0
    for row in rows:
        end = eligibility.earlier_end(row.by_validity, row.by_inactivity)
        if end is None or end.at <= now:  # ended: not asked any more (the consent must still be in force)
            continue
        if row.asks_from is None or row.asks_from > now:
            continue
        token, digest = new_confirmation_token()
        link_id = await repository.add_link(
            session,
            workspace_id=purpose.workspace_id,
            consent_id=row.id,
            contact_point_id=row.contact_point_id,
            purpose_id=purpose.id,
            period_since=row.since,
            ends_at=end.at,
            token_hash=digest,
        )
        if link_id is None:  # another round asked for this period already
            continue
        about = await repository.consent_of(session, row.id, end.at)
        channel = Channel(about.channel)
        lang = _lang(about.locale, about.workspace_locale)
        content = repermission_content(
            channel,
            lang,
            brand=about.brand or about.workspace,
            purpose=about.purpose_name,
            link=f"{base_url}{PATH}{token}",
            ends_on=about.ends_on,
        )
        if content is None:
            continue
        message = MessageIn(
            contact=str(row.contact_id), purpose=purpose.key, route=[channel], content=content, campaign=CAMPAIGN
        )
        try:
            # a savepoint: a message the router refuses (a contact merged meanwhile) costs this consent its message
            # for the period (the link row stays, so it is not retried every minute), never the round
            async with session.begin_nested():
                out = await create_message(session, purpose.workspace_id, message, push_services=push_services)
        except (AppError, DBAPIError) as exc:
            code = exc.code if isinstance(exc, AppError) else type(exc).__name__
            log.warning("repermission_not_queued", consent_id=str(row.id), code=code)
            continue
        await repository.set_message(session, link_id, out.message_id)
        asked += 1
    if asked:
        log.info("repermissions_queued", workspace_id=str(purpose.workspace_id), purpose=purpose.key, count=asked)
    # consents that are due later within the look-ahead are selected again each round: only a batch of due ones
    # says more may be waiting
    return asked, asked >= limit


def _lang(*candidates: str | None) -> str:
    for candidate in candidates:
        if candidate and candidate[:2] in _TEXTS:
            return candidate[:2]
    return "en"


_TEXTS = {
    "de": {
        "subject": "Möchten Sie „{purpose}“ von {brand} weiter erhalten?",
        "short": "{brand}: Möchten Sie „{purpose}“ weiter erhalten? Ihre Einwilligung endet am {date}. "
        "Hier bestätigen: {link}",
        "body": "Guten Tag,\n\nSie erhalten „{purpose}“ von {brand}, weil Sie eingewilligt haben. Diese Einwilligung "
        "endet am {date}.\n\nWenn Sie weiter von uns hören möchten, bestätigen Sie das bitte hier:\n{link}\n\n"
        "Wenn Sie nichts tun, schreiben wir Ihnen danach nicht mehr dazu.\n",
        "title": "Weiter informiert bleiben?",
    },
    "en": {
        "subject": "Would you like to keep receiving “{purpose}” from {brand}?",
        "short": "{brand}: Keep receiving “{purpose}”? Your consent ends on {date}. Confirm here: {link}",
        "body": "Hello,\n\nYou receive “{purpose}” from {brand} because you agreed to. That consent ends on {date}.\n\n"
        "If you would like to keep hearing from us, please confirm here:\n{link}\n\n"
        "If you do nothing, we will not write to you about it after that.\n",
        "title": "Stay subscribed?",
    },
}


def repermission_content(  # the message's words, keyword-only
    channel: Channel, lang: str, *, brand: str, purpose: str, link: str, ends_on: date
) -> Content | None:
    """The built-in German or English re-permission message for ``channel`` (``None``: print, which needs none).

    ``ends_on``: the day the consent ends on the workspace's wall clock, as the database reads it.
    """
    shown = ends_on.strftime("%d.%m.%Y") if lang == "de" else ends_on.isoformat()
    words = {
        key: value.format(brand=brand, purpose=purpose, link=link, date=shown) for key, value in _TEXTS[lang].items()
    }
    if channel is Channel.EMAIL:
        return Content(email=EmailContent(subject=words["subject"], text=words["body"]))
    if channel is Channel.SMS:
        return Content(sms=SmsContent(text=words["short"]))
    if channel is Channel.WHATSAPP:
        return Content(whatsapp=WhatsAppContent(text=words["short"]))
    if channel is Channel.APP_PUSH:
        return Content(app_push=AppPushContent(title=words["title"], body=words["short"], data={"url": link}))
    if channel is Channel.WEB_PUSH:
        url = link if link.startswith("https://") else None
        return Content(web_push=WebPushContent(title=words["title"], body=words["short"], url=url))
    return None


# --- the "keep me subscribed" link ---------------------------------------------------------------------------


class RepermissionStatus(enum.StrEnum):
    """Where a re-permission link stands (the page says it; the status code follows)."""

    OPEN = "open"
    RENEWED = "renewed"
    EXPIRED = "expired"
    ENDED = "ended"
    UNKNOWN = "unknown"


STATUS_CODES = {
    RepermissionStatus.OPEN: 200,
    RepermissionStatus.RENEWED: 200,
    RepermissionStatus.EXPIRED: 410,
    RepermissionStatus.ENDED: 410,
    RepermissionStatus.UNKNOWN: 404,
}


@dataclass(frozen=True, slots=True)
class RepermissionView:
    """What the page shows."""

    status: RepermissionStatus
    lang: str = "en"
    brand: str = ""
    purpose: str = ""
    address: str = ""
    ends_on: date | None = None
    """The day the consent ends, on the workspace's wall clock (the database's reading)."""


async def _view(session: AsyncSession, link: Repermission | None, now: datetime) -> tuple[RepermissionView, Any]:
    if link is None:
        return RepermissionView(RepermissionStatus.UNKNOWN), None
    about = await repository.consent_of(session, link.consent_id, link.ends_at)
    if about is None:
        return RepermissionView(RepermissionStatus.UNKNOWN), None
    if link.renewed_at is not None:
        status = RepermissionStatus.RENEWED
    elif now >= link.ends_at:
        status = RepermissionStatus.EXPIRED
    elif State(about.state) is not State.OPTED_IN or not await _in_force(session, link, about, now):
        status = RepermissionStatus.ENDED  # withdrawn (or ended) since the message was sent: nothing to keep
    else:
        status = RepermissionStatus.OPEN
    view = RepermissionView(
        status=status,
        lang=_lang(about.locale, about.workspace_locale),
        brand=about.brand or about.workspace,
        purpose=about.purpose_name,
        address=mask(Channel(about.channel), about.value),
        ends_on=about.ends_on,
    )
    return view, about


#: What the send gate may answer for a consent the link may still renew (a pause is the person's, for a while).
_RENEWABLE = frozenset({Reason.OPTED_IN, Reason.PAUSED})


async def _in_force(session: AsyncSession, link: Repermission, about: Any, now: datetime) -> bool:
    """Whether the consent the link asks about is still the one of its period and still in force, as the gate says.

    Not when a new period began (another signup and confirmation since: that consent was not asked about), nor
    when the purpose's spans now end it, nor when a withdrawal or objection of the whole channel or a suppression
    stops it (hostile review: an objection recorded after the mail left the purpose's own row opted in, and the
    button renewed it).
    """
    if about.since != link.period_since:
        return False
    facts = await eligibility.point_facts(
        session, link.workspace_id, [about.contact_id], [about.channel], link.purpose_id
    )
    fact = next((f for _, f in facts if f.id == link.contact_point_id), None)
    if fact is None:
        return False
    decision = decide_point(fact, PurposeKind.MARKETING, now=now, window=None, default_timezone=about.tz)
    return decision.reason in _RENEWABLE


async def look_up(session: AsyncSession, token: str) -> RepermissionView:
    """The page of a link; changes nothing (a mail scanner's ``GET`` is harmless)."""
    link = await repository.link_by_hash(session, token_hash(token))
    view, _ = await _view(session, link, utcnow())
    return view


async def renew(session: AsyncSession, token: str, meta: RequestMeta) -> RepermissionView:
    """Keep the consent: ``renewed`` with the request's evidence; a repeat shows "kept" and records nothing."""
    link = await repository.link_by_hash(session, token_hash(token), lock=True)
    now = utcnow()
    view, _ = await _view(session, link, now)
    if view.status is not RepermissionStatus.OPEN or link is None:
        return view
    point = await ledger.get_contact_point(session, link.workspace_id, link.contact_point_id)
    if point is None:
        return RepermissionView(RepermissionStatus.UNKNOWN)
    evidence = {
        "ip": meta.ip,
        "user_agent": meta.user_agent,
        "link_id": str(link.id),
        "method": "button",
        "previous_since": link.period_since.isoformat(),
        "previous_end": link.ends_at.isoformat(),
    }
    applied = await apply_changes(
        session,
        link.workspace_id,
        [Change(point, link.purpose_id, Trigger.RENEWED, evidence, occurred_at=now)],
        Actor(ActorType.SUBJECT),
        skip_not_allowed=True,
    )
    if not applied or applied[0].event_id is None:
        return dataclasses.replace(view, status=RepermissionStatus.ENDED)
    repository.mark_renewed(link, now, applied[0].event_id)
    return dataclasses.replace(view, status=RepermissionStatus.RENEWED)
