"""All SQL of the consent lifecycle: purposes whose consents end, the consents the sweep ends or re-asks, links.

The end of a consent comes from :func:`app.eligibility.repository.span_end_sql`, computed by the database, the
same expression the audience export filters with and eligibility reads: the sweep acts on the instants the
database gives (never on a second computation with the application's own time-zone data).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import State
from app.domain.validity import Policy
from app.eligibility.repository import (
    DEFAULT_TIMEZONE,
    end_sql,
    ends_sql,
    engaged_sql,
    lapsed_sql,
    span_start_sql,
)
from app.lifecycle.models import Repermission
from app.workspaces.settings import WorkspaceSettings

_PURPOSES = text(
    """
    SELECT p.id, p.workspace_id, p.key, p.name, p.validity, p.inactivity, p.repermission_before,
           coalesce(w.settings->>'timezone', :default_tz) AS tz
      FROM purposes p JOIN workspaces w ON w.id = p.workspace_id
     WHERE p.kind = 'marketing' AND (p.validity IS NOT NULL OR p.inactivity IS NOT NULL)
     ORDER BY p.workspace_id, p.id
    """
)


async def purposes_that_end(session: AsyncSession, purpose_id: uuid.UUID | None = None) -> Sequence[Any]:
    """Every workspace's marketing purposes with a validity or inactivity, with the workspace's time zone.

    With ``purpose_id``: that one only, if its consents end.
    """
    rows = (await session.execute(_PURPOSES, {"default_tz": DEFAULT_TIMEZONE})).all()
    return rows if purpose_id is None else [row for row in rows if row.id == purpose_id]


def _candidates_sql(policy: Policy, *, without_link: bool = False, asked: bool = False) -> str:
    engaged = engaged_sql("c.contact_point_id", "c.workspace_id") if policy.inactivity is not None else "NULL"
    lapsed = lapsed_sql(
        policy, since="c.since", point="c.contact_point_id", workspace="c.workspace_id", timezone=":tz", now=":by"
    )
    extra = ""
    if without_link:
        extra = "AND NOT EXISTS (SELECT 1 FROM repermissions r WHERE r.consent_id = c.id AND r.period_since = c.since)"
    if asked and policy.repermission_before is not None:
        # only those whose re-permission is due by :asks_by, before the LIMIT: rows that end within the horizon
        # but are not due yet must not fill the batch (hostile review 2026-12-05: with inactivity an older consent
        # may end later, and the due ones starved behind them)
        end = end_sql(
            "c.since", engaged=engaged, validity=policy.validity, inactivity=policy.inactivity, timezone=":tz"
        )
        extra = f" AND {span_start_sql(end, policy.repermission_before, ':tz')} <= :asks_by"
        if without_link:
            # a link of this period that was used, or asked about this end or a later one; an end moved later since
            # (new engagement under inactivity, looser spans) is asked about again (hostile review 2026-12-05)
            covered = f"r.renewed_at IS NOT NULL OR r.ends_at >= {end}"
            extra += (
                " AND NOT EXISTS (SELECT 1 FROM repermissions r"  # noqa: S608  # our own SQL expressions only
                f" WHERE r.consent_id = c.id AND r.period_since = c.since AND ({covered}))"
            )
    # the ends of the rows claimed, computed by the database as everywhere else (span_end_sql)
    by_validity, by_inactivity = ends_sql(
        "x.since", engaged="x.engaged_at", validity=policy.validity, inactivity=policy.inactivity, timezone=":tz"
    )
    asks_from = (
        span_start_sql(f"least({by_validity}, {by_inactivity})", policy.repermission_before, ":tz")
        if policy.repermission_before is not None
        else "NULL::timestamptz"
    )
    return f"""
        SELECT x.*, {by_validity} AS by_validity, {by_inactivity} AS by_inactivity, {asks_from} AS asks_from
          FROM (SELECT c.id, c.contact_id, c.contact_point_id, c.since, c.last_event_id, {engaged} AS engaged_at
                  FROM consents c
                 WHERE c.workspace_id = :workspace_id AND c.purpose_id = :purpose_id
                   AND c.state = '{State.OPTED_IN.value}' AND c.since IS NOT NULL AND {lapsed} {extra}
                 ORDER BY c.since, c.id
                 LIMIT :limit
                   FOR UPDATE OF c SKIP LOCKED) x
    """  # noqa: S608  # our own column names, enum values and integers; every input is a bind parameter


async def lock_ending(  # one purpose's coordinates, keyword-only
    session: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    purpose_id: uuid.UUID,
    policy: Policy,
    timezone: str,
    by: datetime,
    limit: int,
    without_link: bool = False,
    asks_by: datetime | None = None,
) -> Sequence[Any]:
    """Opted-in consents of the purpose that end by ``by``, locked, ``SKIP LOCKED``, with their ends.

    Each row carries ``by_validity`` and ``by_inactivity`` (NULL: the rule is unset) and ``asks_from`` (from when a
    re-permission may be asked; NULL without ``repermission_before``), computed by the database.
    ``without_link``: only those with no re-permission link for their current period yet; ``asks_by``: only those
    whose re-permission may be asked by then.
    """
    params = {
        "workspace_id": workspace_id,
        "purpose_id": purpose_id,
        "tz": timezone,
        "by": by,
        "limit": limit,
        "asks_by": asks_by,
    }
    sql = _candidates_sql(policy, without_link=without_link, asked=asks_by is not None)
    return (await session.execute(text(sql), params)).all()


async def add_link(  # the link's fields, keyword-only
    session: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    consent_id: uuid.UUID,
    contact_point_id: uuid.UUID,
    purpose_id: uuid.UUID,
    period_since: datetime,
    ends_at: datetime,
    token_hash: bytes,
) -> uuid.UUID | None:
    """A link for the consent's period; ``None`` when the period has one for this end already (one per period).

    A link of the period for an earlier end, unused, is replaced: the end moved later since it was asked.
    """
    return (
        await session.execute(
            insert(Repermission)
            .values(
                workspace_id=workspace_id,
                consent_id=consent_id,
                contact_point_id=contact_point_id,
                purpose_id=purpose_id,
                period_since=period_since,
                ends_at=ends_at,
                token_hash=token_hash,
            )
            # the period's link asked about an earlier end (the end moved later since) and unused: the new ask
            # replaces it (its old token stops working); otherwise never two per period
            .on_conflict_do_update(
                index_elements=["consent_id", "period_since", "workspace_id"],
                set_={"ends_at": ends_at, "token_hash": token_hash, "message_id": None},
                where=(Repermission.ends_at < ends_at) & Repermission.renewed_at.is_(None),
            )
            .returning(Repermission.id)
        )
    ).scalar_one_or_none()


async def set_message(session: AsyncSession, link_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """The message that carries the link."""
    await session.execute(update(Repermission).where(Repermission.id == link_id).values(message_id=message_id))


async def link_by_hash(session: AsyncSession, token_hash: bytes, *, lock: bool = False) -> Repermission | None:
    """The link of a token (any workspace: the token is the capability), locked for the renewal if asked."""
    query = select(Repermission).where(Repermission.token_hash == token_hash)
    if lock:
        query = query.with_for_update()
    return (await session.scalars(query)).one_or_none()


#: The workspace language when its settings name none (the settings' default, not stored in their JSON).
DEFAULT_LOCALE = WorkspaceSettings().locale

_CONSENT = text(
    """
    SELECT c.id, c.state, c.since, c.contact_id, p.key AS purpose_key, p.name AS purpose_name, cp.channel, cp.value,
           ct.locale, coalesce(w.settings->>'locale', :default_locale) AS workspace_locale,
           w.settings->>'brand' AS brand, w.name AS workspace,
           coalesce(w.settings->>'timezone', :default_tz) AS tz,
           -- the day an end falls on, on the workspace's wall clock: the database's reading, as the end's own
           CAST(CAST(:ends_at AS timestamptz) AT TIME ZONE coalesce(w.settings->>'timezone', :default_tz) AS date)
               AS ends_on
      FROM consents c
      JOIN purposes p ON p.id = c.purpose_id
      JOIN contact_points cp ON cp.id = c.contact_point_id
      JOIN contacts ct ON ct.id = c.contact_id
      JOIN workspaces w ON w.id = c.workspace_id
     WHERE c.id = :consent_id
    """
)


async def consent_of(session: AsyncSession, consent_id: uuid.UUID, ends_at: datetime | None = None) -> Any:
    """The consent a link belongs to, with what its page says (purpose, address, languages, brand).

    ``ends_on``: the local day of ``ends_at`` in the workspace's time zone (``None`` without one).
    """
    params = {
        "consent_id": consent_id,
        "default_tz": DEFAULT_TIMEZONE,
        "default_locale": DEFAULT_LOCALE,
        "ends_at": ends_at,
    }
    return (await session.execute(_CONSENT, params)).one_or_none()


def mark_renewed(link: Repermission, at: datetime, event_id: uuid.UUID | None) -> None:
    """The person kept the consent with this link (written with the transaction)."""
    link.renewed_at = at
    link.renewed_event_id = event_id


async def erase_links(session: AsyncSession, workspace_id: uuid.UUID, point_ids: Collection[uuid.UUID]) -> int:
    """Delete the links of these addresses (an erasure)."""
    result = await session.execute(
        delete(Repermission).where(
            Repermission.workspace_id == workspace_id, Repermission.contact_point_id.in_(list(point_ids))
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def latest_engagement(session: AsyncSession, point_id: uuid.UUID, workspace_id: uuid.UUID) -> datetime | None:
    """The latest delivered, opened or clicked message on the address (for a renewal's evidence)."""
    sql = text(f"SELECT {engaged_sql(':point_id', ':workspace_id')} AS at")  # our own SQL
    return (await session.execute(sql, {"point_id": point_id, "workspace_id": workspace_id})).scalar_one_or_none()
