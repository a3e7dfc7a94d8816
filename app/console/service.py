"""Console sign-in (single-use links, sessions, CSRF tokens) and the data behind its pages.

A login link is 256 random bits; only its SHA-256 is stored. Opening it (``GET``) changes nothing, so a mail
scanner that fetches it cannot burn it; the page's button ``POST``s it, which consumes it once and opens a session.
A session's cookie is another 256 random bits, stored as SHA-256, acting as the API key that made the link: its
workspace, its scopes. Every request re-checks that the key is unrevoked, so revoking the key ends the session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.channels import registry
from app.channels.base import Report
from app.console import repository
from app.console.models import ChainCheck, ConsoleSession
from app.domain.identifiers import InvalidIdentifier, normalise_email, normalise_phone
from app.domain.model import ActorType, Channel, Trigger
from app.ledger import repository as ledger
from app.ledger.audit import verify_chain
from app.ledger.models import Contact
from app.lib.auth import Principal, Scope
from app.lib.errors import InvalidInput
from app.lib.keys import derive
from app.lib.orm import utcnow
from app.purposes import repository as purposes_repository
from app.reports import service as reports

LINK_LIFETIME = timedelta(minutes=10)
SESSION_IDLE = timedelta(hours=8)
SESSION_LIFETIME = timedelta(hours=24)
COOKIE = "consent_console"
MAX_QUERY = 320  # the longest address there is
_MAX_TOKEN = 100  # longer than any token issued here: refused without a lookup
CHANNELS = tuple(Channel)
_FIRST_YEAR, _LAST_YEAR = 1970, 9998  # a period's end (the next midnight) stays a valid datetime


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class IssuedConsoleLink:
    """A new login link's secret (shown once) and its end."""

    token: str
    expires_at: datetime


async def issue_link(session: AsyncSession, principal: Principal) -> IssuedConsoleLink:
    """A single-use login link acting as ``principal``'s key, valid for :data:`LINK_LIFETIME`."""
    if not principal.allows(Scope.AUDIT_READ):
        raise InvalidInput("A console link needs a key with 'audit:read' or 'admin'.", code="insufficient_scope")
    now = utcnow()
    await repository.prune(session, now - timedelta(days=1), now - SESSION_IDLE, now)
    token = secrets.token_urlsafe(32)
    expires_at = now + LINK_LIFETIME
    await repository.add_link(session, principal.workspace_id, principal.api_key_id, _hash(token), expires_at)
    return IssuedConsoleLink(token, expires_at)


async def link_state(session: AsyncSession, token: str) -> str:
    """``valid``, ``used``, ``expired`` or ``unknown``, without consuming the link (``GET`` of the link)."""
    if not token or len(token) > _MAX_TOKEN:
        return "unknown"
    link = await repository.find_link(session, _hash(token))
    if link is None:
        return "unknown"
    if link.used_at is not None:
        return "used"
    return "expired" if link.expires_at <= utcnow() else "valid"


@dataclass(frozen=True, slots=True)
class Staff:
    """A signed-in console user: the key the session acts as, and the session's hash (for its CSRF token)."""

    principal: Principal
    id_hash: bytes

    @property
    def workspace_id(self) -> uuid.UUID:
        """The session's workspace."""
        return self.principal.workspace_id

    @property
    def is_admin(self) -> bool:
        """Whether the key has ``admin`` (erasure)."""
        return Scope.ADMIN in self.principal.scopes


async def redeem(session: AsyncSession, token: str) -> tuple[str, Staff] | None:
    """Consume a login link and open a session: the cookie's secret and who it is.

    ``None`` if the link is unknown, used, expired, or its key was revoked.
    """
    if not token or len(token) > _MAX_TOKEN:
        return None
    now = utcnow()
    link = await repository.consume_link(session, _hash(token), now)
    if link is None:
        return None
    scopes = await repository.active_key_scopes(session, link.workspace_id, link.api_key_id)
    if scopes is None or not ({Scope.ADMIN, Scope.AUDIT_READ} & set(scopes)):
        return None
    secret = secrets.token_urlsafe(32)
    row = ConsoleSession(
        workspace_id=link.workspace_id,
        api_key_id=link.api_key_id,
        id_hash=_hash(secret),
        scopes=sorted(scopes),
        last_seen_at=now,
        expires_at=now + SESSION_LIFETIME,
    )
    await repository.add_session(session, row)
    principal = Principal(workspace_id=link.workspace_id, api_key_id=link.api_key_id, scopes=frozenset(scopes))
    return secret, Staff(principal, row.id_hash)


async def current(session: AsyncSession, cookie: str | None) -> Staff | None:
    """The staff member of a session cookie, or ``None`` (no, unknown, idle, ended session, or revoked key)."""
    if not cookie or len(cookie) > _MAX_TOKEN:
        return None
    now = utcnow()
    row = await repository.touch_session(session, _hash(cookie), now, now - SESSION_IDLE)
    if row is None:
        return None
    principal = Principal(workspace_id=row.workspace_id, api_key_id=row.api_key_id, scopes=frozenset(row.scopes))
    return Staff(principal, row.id_hash)


async def sign_out(session: AsyncSession, staff: Staff) -> None:
    """End the session."""
    await repository.delete_session(session, staff.id_hash)


@cache
def _csrf_key(secret: bytes) -> bytes:
    return derive(secret, "console-csrf-v1")


def csrf_token(secret: bytes, staff: Staff) -> str:
    """The form token of this session: an HMAC of the session's hash (nothing more to store)."""
    digest = hmac.new(_csrf_key(secret), staff.id_hash, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_valid(secret: bytes, staff: Staff, token: str) -> bool:
    """Whether a form's token is this session's."""
    return hmac.compare_digest(csrf_token(secret, staff).encode(), token.encode()[:100])


# --- contact lookup ------------------------------------------------------------------------------------------


async def live_contact(session: AsyncSession, workspace_id: uuid.UUID, ref: str) -> Contact | None:
    """The contact by id or external id; one merged into another is shown as that survivor (staff see the person)."""
    found = await ledger.find_contact(session, workspace_id, ref)
    if found is not None and found.merged_into is not None:
        return await ledger.get_contact(session, found.merged_into)
    return found


async def find_contact(session: AsyncSession, workspace_id: uuid.UUID, query: str) -> Contact | None:
    """A contact of the workspace by id, external id, email address or phone number (SMS or WhatsApp).

    Addresses are stored normalised (``app.domain.identifiers``), so the query is normalised the same way first.
    """
    query = query.strip()
    if not query or len(query) > MAX_QUERY:
        return None
    found = await live_contact(session, workspace_id, query)
    if found is not None:
        return found
    candidates: list[tuple[Channel, str]] = []
    try:
        if "@" in query:
            candidates.append((Channel.EMAIL, normalise_email(query)))
        else:
            number = normalise_phone(query)
            candidates += [(Channel.SMS, number), (Channel.WHATSAPP, number)]
    except InvalidIdentifier:
        return None
    for channel, value in candidates:
        point = await ledger.find_contact_point(session, workspace_id, channel.value, value)
        if point is not None:
            return await ledger.get_contact(session, point.contact_id)
    if candidates and candidates[0][0] is Channel.EMAIL:
        contact_id = await repository.contact_id_by_email_any_case(session, workspace_id, candidates[0][1])
        if contact_id is not None:
            return await ledger.get_contact(session, contact_id)
    return None


# --- audit ---------------------------------------------------------------------------------------------------


async def check_chain(session: AsyncSession, workspace_id: uuid.UUID) -> ChainCheck:
    """Verify the workspace's chain now and record the outcome (shown with its time on the audit page)."""
    result = await verify_chain(session, workspace_id)
    check = ChainCheck(
        workspace_id=workspace_id,
        checked_at=utcnow(),
        valid=result.valid,
        events_checked=result.events_checked,
        first_broken_seq=result.first_broken_seq,
        reason=result.reason,
    )
    await repository.add_chain_check(session, check)
    return check


async def last_check(session: AsyncSession, workspace_id: uuid.UUID) -> ChainCheck | None:
    """The newest recorded verification."""
    return await repository.last_chain_check(session, workspace_id)


# --- the overview ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """Whole UTC days [first, last], i.e. [first 00:00, last + 1 day 00:00)."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        """The first instant."""
        return datetime.combine(self.first, time(), UTC)

    @property
    def end(self) -> datetime:
        """The end (exclusive)."""
        return datetime.combine(self.last + timedelta(days=1), time(), UTC)


def period_of(first: str | None, last: str | None, today: date) -> Period:
    """The period a form names (``YYYY-MM-DD``), by default the 30 days up to today; 422 for a wrong one."""
    try:
        end = date.fromisoformat(last) if last else today
        start = date.fromisoformat(first) if first else end - timedelta(days=29)
    except ValueError:
        raise InvalidInput("Dates are written YYYY-MM-DD.", code="invalid_date") from None
    if not (start.year >= _FIRST_YEAR and end.year <= _LAST_YEAR):
        raise InvalidInput(f"Dates lie between {_FIRST_YEAR} and {_LAST_YEAR}.", code="invalid_range")
    if end < start:
        raise InvalidInput("'to' must not be before 'from'.", code="invalid_range")
    if (end - start).days + 1 > reports.MAX_RANGE.days:
        raise InvalidInput(f"A period covers at most {reports.MAX_RANGE.days} days.", code="range_too_long")
    return Period(start, end)


@dataclass(frozen=True, slots=True)
class Filters:
    """The overview's narrowing: one purpose (its key) and/or one campaign label; ``None``: all."""

    purpose: str | None = None
    campaign: str | None = None

    @classmethod
    def of(cls, purpose: str | None, campaign: str | None) -> Filters:
        """From the form's fields (blank: all; capped at the API's lengths)."""
        return cls((purpose or "").strip()[:63] or None, (campaign or "").strip()[:100] or None)


def report_query(
    period: Period,
    group_by: str,
    allowed: Sequence[str] = reports.CONSENT_GROUPS,
    filters: Filters = Filters(),  # frozen: one shared "all" is safe
) -> reports.ReportQuery:
    """The report request behind a chart (by day), checked as the API checks it."""
    return reports.parse_query(
        start=period.start,
        end=period.end,
        granularity="day",
        group_by=group_by,
        channels=(),
        purposes=(filters.purpose,) if filters.purpose else (),
        allowed_groups=allowed,
        now=utcnow(),
        campaigns=(filters.campaign,) if filters.campaign else (),
    )


@dataclass
class ChannelFigures:
    """One channel's figures over the period."""

    audience: int | None = 0
    """The opted-in total at the period's end; ``None`` with a campaign filter (not kept per campaign)."""
    eligible: int | None = None
    """Addresses the send gate permits, at the period's last standing snapshot (``None``: none in the period)."""
    opt_ins: int = 0
    opt_outs: int = 0
    net_growth: int = 0
    signups: int = 0
    confirmations: int = 0
    cohort_started: float = 0.0
    cohort_confirmed: float = 0.0
    accepted: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    bounced: int = 0
    complaints: int = 0
    opened: int = 0
    clicked: int = 0
    opt_outs_by_trigger: dict[str, int] = field(default_factory=dict)
    reports_delivery: bool = True
    """Whether the channel's provider reports delivery: where it does not (email, push, print), the rate is
    unknown, not 0 % (newcomer review: the console showed email's delivery rate as 0.0 %)."""

    @property
    def confirmation_rate(self) -> float | None:
        """Confirmed share of the period's signup cohorts (docs/reporting.md ``confirmation_rate``)."""
        return self.cohort_confirmed / self.cohort_started if self.cohort_started else None

    @property
    def delivery_rate(self) -> float | None:
        """Delivered share of what was sent (where the provider reports delivery; else ``None``)."""
        return self.delivered / self.sent if self.sent and self.reports_delivery else None


@dataclass
class Overview:
    """The six channels over a period, with the daily audience per channel and the opt-out causes seen."""

    period: Period
    channels: dict[str, ChannelFigures]
    days: list[date]
    audience_by_day: dict[str, list[int | None]]
    """The standing opted-in total at each day's end; ``None`` where the report keeps none (a campaign filter)."""
    triggers: list[str]
    filters: Filters = Filters()  # frozen: one shared "all" is safe
    purposes: list[tuple[str, str]] = field(default_factory=list)
    """The workspace's purposes (key, name), for the filter."""


#: The causes an ``unsubscribe`` opt-out is shown under, by the metric that counts it (docs/reporting.md): the link
#: in a mail (its page or RFC 8058 one-click), the preference centre, an API key (``POST /v1/withdrawals``, a push
#: report); ``unsubscribe_other``: the way is not known (counted before the way was kept apart, until a rebuild; a
#: link's evidence cleared by an erasure before a rebuild).
UNSUBSCRIBE_CAUSES = (
    ("unsubscribe", ("opt_outs_unsubscribe_page", "opt_outs_one_click")),
    ("unsubscribe_preference_centre", ("opt_outs_preference_centre",)),
    ("unsubscribe_api", ("opt_outs_api",)),
)


def event_cause(trigger: str, actor_type: str, actor_id: str | None, evidence: Mapping[str, Any] | None) -> str:
    """What a timeline names one event by: its trigger, except an ``unsubscribe``, named by the way it came.

    The same rule as the reports' split (``_DETAIL`` in app/reports/repository.py): the mail's link (its page or
    RFC 8058 one-click, by the evidence's ``method``), else an API key, else the preference centre (by the actor);
    ``unsubscribe_other`` where none of them is recorded (an erasure clears the evidence, not the actor).
    """
    if trigger != Trigger.UNSUBSCRIBE:
        return trigger
    method = (evidence or {}).get("method")
    if method == "unsubscribe_page":
        return "unsubscribe"
    if method == "rfc8058_one_click":
        return "unsubscribe_one_click"
    if actor_type == ActorType.API_KEY:
        return "unsubscribe_api"
    if actor_type == ActorType.SUBJECT and actor_id == "preference_centre":
        return "unsubscribe_preference_centre"
    return "unsubscribe_other"


def opt_out_causes(trigger: str, metrics: Mapping[str, int | float | None]) -> dict[str, int]:
    """A report row's opt-outs by cause: its trigger, except an ``unsubscribe``, split by the way it came."""
    total = int(metrics.get("opt_outs") or 0)
    if trigger != Trigger.UNSUBSCRIBE:
        return {trigger: total}
    found = {cause: sum(int(metrics.get(name) or 0) for name in names) for cause, names in UNSUBSCRIBE_CAUSES}
    found["unsubscribe_other"] = total - sum(found.values())
    return found


async def overview(  # noqa: C901  # one pass per report, each a few branches
    session: AsyncSession,
    workspace_id: uuid.UUID,
    period: Period,
    filters: Filters = Filters(),
) -> Overview:
    """The figures of the overview, from the reports (rollups) after their catch-up.

    The caller holds the transaction.
    """
    figures = {
        channel.value: ChannelFigures(reports_delivery=Report.DELIVERED in registry.spec(channel).reports.values())
        for channel in CHANNELS
    }
    by_channel = await reports.consent_report(session, workspace_id, report_query(period, "channel", filters=filters))
    days = reports.buckets(period.start, period.end, "day")
    standing = not filters.campaign  # audiences are not kept per campaign: unknown there, not 0 (newcomer review)
    audience: dict[str, list[int | None]] = {
        channel.value: [0 if standing else None] * len(days) for channel in CHANNELS
    }
    index = {day: i for i, day in enumerate(days)}
    for row in by_channel:
        channel = row.group.get("channel")
        if channel not in figures:
            continue
        cell, m = figures[channel], row.metrics
        cell.opt_ins += int(m.get("opt_ins") or 0)
        cell.opt_outs += int(m.get("opt_outs") or 0)
        cell.net_growth += int(m.get("net_growth") or 0)
        cell.signups += int(m.get("signups") or 0)
        cell.confirmations += int(m.get("confirmations") or 0)
        rate = m.get("confirmation_rate")
        if rate is not None and m.get("signups"):
            cell.cohort_started += float(m["signups"] or 0)
            cell.cohort_confirmed += float(rate) * float(m["signups"] or 0)
        if row.bucket in index and standing:
            audience[channel][index[row.bucket]] = int(m.get("opted_in_total") or 0)
        if m.get("eligible_total") is not None:  # the rows come in time order: the last snapshot stays
            cell.eligible = int(m["eligible_total"] or 0)
    for channel, series in audience.items():
        figures[channel].audience = series[-1] if series else (0 if standing else None)
    causes: dict[str, Counter[str]] = defaultdict(Counter)
    causes_query = report_query(period, "channel,trigger", filters=filters)
    for row in await reports.consent_report(session, workspace_id, causes_query):
        channel, trigger = row.group.get("channel"), row.group.get("trigger")
        if channel in figures and trigger:
            causes[channel].update(opt_out_causes(trigger, row.metrics))
    for channel, counts in causes.items():
        figures[channel].opt_outs_by_trigger = {cause: n for cause, n in counts.items() if n}
    triggers = {cause for figure in figures.values() for cause in figure.opt_outs_by_trigger}
    for row in await reports.message_report(
        session, workspace_id, report_query(period, "channel", reports.MESSAGE_GROUPS, filters)
    ):
        channel = row.group.get("channel")
        if channel not in figures:
            continue
        cell, m = figures[channel], row.metrics
        for name in ("accepted", "sent", "delivered", "failed", "bounced", "complaints", "opened", "clicked"):
            setattr(cell, name, getattr(cell, name) + int(m.get(name) or 0))
    choices = [(p.key, p.name) for p in await purposes_repository.list_purposes(session, workspace_id)]
    return Overview(period, figures, [d.date() for d in days], audience, sorted(triggers), filters, choices)
