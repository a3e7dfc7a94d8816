"""Purpose operations."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import PurposeKind
from app.domain.validity import SpanError, parse_span
from app.lib.errors import Conflict, InvalidInput, NotFound
from app.purposes import repository
from app.purposes.models import Notice, Purpose
from app.settings import DEFAULT_PURPOSES_MAX


async def create_purpose(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    key: str,
    name: str,
    kind: str,
    *,
    similar_products_of: Sequence[str] = (),
    validity: str | None = None,
    inactivity: str | None = None,
    repermission_before: str | None = None,
    limit: int = DEFAULT_PURPOSES_MAX,
) -> Purpose:
    """Create a purpose; 409 ``purpose_exists`` when the key is taken in this workspace.

    409 ``too_many_purposes`` when the workspace has ``limit`` purposes already (``CONSENT_PURPOSES_MAX``): each
    purpose costs an audience count in every report snapshot of the workspace (every 15 minutes), so their number
    is the tenant's to choose within a bound, not without one.

    ``similar_products_of`` (UWG §7(3) existing customers) is for marketing purposes only (422 otherwise). The
    lifecycle spans (:mod:`app.domain.validity`) are checked: 422 ``invalid_validity`` for a span of zero or
    longer than 100 years, a re-permission without an end, or an end on a transactional purpose.
    """
    similar = list(dict.fromkeys(similar_products_of))
    if similar and kind != PurposeKind.MARKETING:
        raise InvalidInput(
            "'similar_products_of' is for marketing purposes: a transactional purpose needs no basis for advertising.",
            code="similar_products_of_marketing_only",
        )
    spans = check_lifecycle(kind, validity, inactivity, repermission_before)
    if await repository.count_purposes_locked(session, workspace_id) >= limit:
        existing = await repository.get_by_key(session, workspace_id, key)
        if existing is not None:  # the same answer as below, whatever the count
            raise Conflict(f"A purpose with key '{key}' already exists.", code="purpose_exists")
        raise Conflict(
            f"This workspace has {limit} purposes, the most it may have (each is counted in every report snapshot). "
            "Use one purpose for related messages, or ask the operator to raise CONSENT_PURPOSES_MAX.",
            code="too_many_purposes",
            extra={"limit": limit},
        )
    purpose = await repository.insert_purpose(
        session, workspace_id, key, name, kind, similar_products_of=similar, spans=spans
    )
    if purpose is None:
        raise Conflict(f"A purpose with key '{key}' already exists.", code="purpose_exists")
    return purpose


def check_lifecycle(
    kind: str, validity: str | None, inactivity: str | None, repermission_before: str | None
) -> dict[str, str | None]:
    """The purpose's lifecycle spans, checked (422 ``invalid_validity`` naming the field)."""
    spans = {"validity": validity, "inactivity": inactivity, "repermission_before": repermission_before}
    for field, value in spans.items():
        if value is None:
            continue
        try:
            parse_span(value)
        except SpanError as exc:
            raise InvalidInput(f"{field} {exc}.", code="invalid_validity") from exc
    if repermission_before is not None and validity is None and inactivity is None:
        raise InvalidInput(
            "repermission_before needs validity or inactivity: a consent without an end is never re-asked.",
            code="invalid_validity",
        )
    if repermission_before is not None:
        ask = parse_span(repermission_before)
        shortest = min(span.months * 28 + span.days for span in map(parse_span, filter(None, (validity, inactivity))))
        if ask.months * 31 + ask.days >= shortest:  # the longest reading of the one against the shortest of the other
            raise InvalidInput(
                "repermission_before must be shorter than validity and inactivity: the message is queued that long "
                "before the end, so a consent would be re-asked as soon as it was given.",
                code="invalid_validity",
            )
    if kind == PurposeKind.TRANSACTIONAL and (validity or inactivity):
        raise InvalidInput(
            "A transactional purpose rests on no consent, so validity and inactivity do not apply.",
            code="invalid_validity",
        )
    return spans


async def lock_purpose(session: AsyncSession, purpose: Purpose) -> None:
    """Hold the purpose's row until the transaction ends (one lifecycle change at a time)."""
    await repository.lock_purpose(session, purpose.id)


async def set_lifecycle(session: AsyncSession, purpose: Purpose, spans: Mapping[str, str | None]) -> None:
    """Replace a purpose's lifecycle spans (checked by :func:`check_lifecycle`, the purpose locked).

    Ends are computed from the spans, never stored: the change applies at once to every consent of the purpose on
    the read path (the caller ends first what the old spans ended: :func:`app.lifecycle.service.end_due`).
    """
    await repository.set_lifecycle(session, purpose, spans)


async def require_purpose(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> Purpose:
    """A purpose by key, or 404 ``purpose_not_found``."""
    purpose = await repository.get_by_key(session, workspace_id, key)
    if purpose is None:
        raise NotFound(f"No purpose with key '{key}'.", code="purpose_not_found")
    return purpose


async def create_notice(
    session: AsyncSession, workspace_id: uuid.UUID, *, purpose_key: str, channels: list[str], locale: str, text: str
) -> tuple[Notice, bool]:
    """A new notice version; posting the newest version's exact text and channels again returns it unchanged.

    Returns the notice and whether it was created.
    """
    purpose = await require_purpose(session, workspace_id, purpose_key)
    return await newest_or_new(session, purpose, channels=channels, locale=locale, text=text)


async def newest_or_new(
    session: AsyncSession, purpose: Purpose, *, channels: list[str], locale: str, text: str
) -> tuple[Notice, bool]:
    """The newest notice of ``locale`` if it holds exactly this text and these channels, else a new version.

    The purpose is locked, so concurrent versions never collide. Returns the notice and whether it was created.
    """
    digest = hashlib.sha256(text.encode()).hexdigest()
    wanted = sorted(set(channels))
    await repository.lock_purpose(session, purpose.id)
    latest = await repository.latest_notice(session, purpose.id, locale)
    if latest is not None and latest.sha256 == digest and sorted(latest.channels) == wanted:
        return latest, False
    notice = Notice(
        workspace_id=purpose.workspace_id,
        purpose_id=purpose.id,
        channels=wanted,
        locale=locale,
        version=(latest.version if latest else 0) + 1,
        text=text,
        sha256=digest,
    )
    return await repository.add_notice(session, notice), True


async def require_notice(session: AsyncSession, workspace_id: uuid.UUID, notice_id: uuid.UUID) -> Notice:
    """A notice of the workspace, or 404 ``notice_not_found``."""
    notice = await repository.get_notice(session, workspace_id, notice_id)
    if notice is None:
        raise NotFound("No notice with this id.", code="notice_not_found")
    return notice


async def purposes_by_id(session: AsyncSession, workspace_id: uuid.UUID) -> dict[uuid.UUID, Purpose]:
    """All purposes of the workspace, by id."""
    return await repository.purposes_by_id(session, workspace_id)


async def notices_by_id(
    session: AsyncSession, workspace_id: uuid.UUID, ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Notice]:
    """The workspace's notices of these ids, by id (ids of other workspaces are not found)."""
    return await repository.notices_by_id(session, workspace_id, ids)


async def find_purpose(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> Purpose | None:
    """A purpose of the workspace by key, if there is one."""
    return await repository.get_by_key(session, workspace_id, key)
