"""All SQL about purposes."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.purposes.models import Notice, Purpose


async def insert_purpose(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    key: str,
    name: str,
    kind: str,
    *,
    similar_products_of: Sequence[str] = (),
    spans: Mapping[str, str | None] | None = None,
) -> Purpose | None:
    """Insert; ``None`` when the workspace already has a purpose with this key (``spans``: the lifecycle columns)."""
    return (
        await session.execute(
            insert(Purpose)
            .values(
                workspace_id=workspace_id,
                key=key,
                name=name,
                kind=kind,
                similar_products_of=list(similar_products_of),
                **(spans or {}),
            )
            .on_conflict_do_nothing(index_elements=["workspace_id", "key"])
            .returning(Purpose)
        )
    ).scalar_one_or_none()


async def count_purposes_locked(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """How many purposes the workspace has, its purpose creations serialised until the transaction ends.

    The transaction-level advisory lock makes a count and the insert after it one step: two creations at once
    cannot both pass a cap on the count.
    """
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"purposes:{workspace_id}", 0))))
    return (
        await session.scalar(select(func.count()).select_from(Purpose).where(Purpose.workspace_id == workspace_id)) or 0
    )


async def list_purposes(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[Purpose]:
    """The workspace's purposes by key."""
    return (
        await session.scalars(select(Purpose).where(Purpose.workspace_id == workspace_id).order_by(Purpose.key))
    ).all()


async def get_by_key(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> Purpose | None:
    """A purpose of the workspace by key."""
    return await session.scalar(select(Purpose).where(Purpose.workspace_id == workspace_id, Purpose.key == key))


async def lock_purpose(session: AsyncSession, purpose_id: uuid.UUID) -> None:
    """Lock a purpose row: serialises the numbering of its notice versions."""
    await session.execute(select(Purpose.id).where(Purpose.id == purpose_id).with_for_update())


async def latest_notice(session: AsyncSession, purpose_id: uuid.UUID, locale: str) -> Notice | None:
    """The newest notice version of a purpose in a locale."""
    return await session.scalar(
        select(Notice)
        .where(Notice.purpose_id == purpose_id, Notice.locale == locale)
        .order_by(Notice.version.desc())
        .limit(1)
    )


async def add_notice(session: AsyncSession, notice: Notice) -> Notice:
    """Insert a notice."""
    session.add(notice)
    await session.flush()
    await session.refresh(notice)
    return notice


async def get_notice(session: AsyncSession, workspace_id: uuid.UUID, notice_id: uuid.UUID) -> Notice | None:
    """A notice of the workspace."""
    return await session.scalar(select(Notice).where(Notice.id == notice_id, Notice.workspace_id == workspace_id))


async def list_notices(
    session: AsyncSession, workspace_id: uuid.UUID, purpose_id: uuid.UUID | None
) -> Sequence[Notice]:
    """Notices of the workspace (of one purpose), newest versions last."""
    query = select(Notice).where(Notice.workspace_id == workspace_id)
    if purpose_id is not None:
        query = query.where(Notice.purpose_id == purpose_id)
    return (await session.scalars(query.order_by(Notice.purpose_id, Notice.locale, Notice.version))).all()


async def purposes_by_id(session: AsyncSession, workspace_id: uuid.UUID) -> dict[uuid.UUID, Purpose]:
    """All purposes of the workspace, by id."""
    return {p.id: p for p in await list_purposes(session, workspace_id)}


async def notices_by_id(
    session: AsyncSession, workspace_id: uuid.UUID, ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Notice]:
    """The workspace's notices of these ids, by id."""
    if not ids:
        return {}
    found = await session.scalars(select(Notice).where(Notice.workspace_id == workspace_id, Notice.id.in_(list(ids))))
    return {n.id: n for n in found.all()}


async def get_purpose(session: AsyncSession, workspace_id: uuid.UUID, purpose_id: uuid.UUID) -> Purpose | None:
    """A purpose of the workspace by id."""
    return await session.scalar(select(Purpose).where(Purpose.id == purpose_id, Purpose.workspace_id == workspace_id))


async def notices_with_text(
    session: AsyncSession, workspace_id: uuid.UUID, purpose_id: uuid.UUID, locale: str, sha256: str
) -> Sequence[Notice]:
    """The purpose's notice versions in ``locale`` whose text has this SHA-256 (hex), newest first."""
    return (
        await session.scalars(
            select(Notice)
            .where(
                Notice.workspace_id == workspace_id,
                Notice.purpose_id == purpose_id,
                Notice.locale == locale,
                Notice.sha256 == sha256,
            )
            .order_by(Notice.version.desc())
        )
    ).all()


async def purposes_by_ids(
    session: AsyncSession, workspace_ids: Sequence[uuid.UUID], purpose_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Purpose]:
    """Purposes by id, of the given workspaces only (the dispatcher's batches span workspaces)."""
    if not purpose_ids:
        return {}
    rows = await session.scalars(
        select(Purpose).where(Purpose.id.in_(purpose_ids), Purpose.workspace_id.in_(workspace_ids))
    )
    return {purpose.id: purpose for purpose in rows}


async def set_lifecycle(session: AsyncSession, purpose: Purpose, spans: Mapping[str, str | None]) -> None:
    """Replace the purpose's validity, inactivity and re-permission spans (written with the transaction)."""
    purpose.validity = spans["validity"]
    purpose.inactivity = spans["inactivity"]
    purpose.repermission_before = spans["repermission_before"]
    await session.flush()
