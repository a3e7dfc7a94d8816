"""All SQL about workspaces and API keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Caller, OperatorPrincipal, Principal
from app.workspaces.models import ApiKey, OperatorKey, SenderIdentity, Workspace, WorkspaceDeletion


async def add_workspace(session: AsyncSession, name: str) -> Workspace:
    """Insert a workspace."""
    workspace = Workspace(name=name)
    session.add(workspace)
    await session.flush()
    await session.refresh(workspace)
    return workspace


async def get_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace | None:
    """A workspace by id."""
    return await session.get(Workspace, workspace_id)


async def lock_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace | None:
    """The workspace row, locked until commit (settings written once by concurrent first uses)."""
    return await session.scalar(
        select(Workspace)
        .where(Workspace.id == workspace_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def add_api_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    """Insert an API key."""
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key


async def list_api_keys(session: AsyncSession, workspace_id: uuid.UUID) -> Sequence[ApiKey]:
    """The workspace's keys, oldest first."""
    result = await session.scalars(
        select(ApiKey).where(ApiKey.workspace_id == workspace_id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return result.all()


#: A key of a workspace being deleted stops at once (``deleted_at`` is set first), not when its row is swept
_ACTIVE_KEY = (
    "SELECT k.id, k.workspace_id, k.scopes FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id "
    "WHERE k.secret_hash = $1 AND k.revoked_at IS NULL AND w.deleted_at IS NULL "
    "UNION ALL SELECT id, NULL, NULL FROM operator_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
)


async def find_active_key(driver: asyncpg.Connection, secret_hash: bytes) -> Caller | None:
    """The principal of an unrevoked key by its hash, a workspace's or the operator's.

    Every authenticated request (not cached) asks: plain asyncpg, one index probe in each key table.
    """
    row = await driver.fetchrow(_ACTIVE_KEY, secret_hash)
    if row is None:
        return None
    if row["workspace_id"] is None:
        return OperatorPrincipal(operator_key_id=row["id"])
    return Principal(workspace_id=row["workspace_id"], api_key_id=row["id"], scopes=frozenset(row["scopes"]))


async def revoke_api_key(session: AsyncSession, workspace_id: uuid.UUID, key_id: uuid.UUID, at: datetime) -> bool:
    """Revoke a key of the workspace; False if there is no such key (or it is another workspace's)."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.workspace_id == workspace_id)
        .values(revoked_at=func.coalesce(ApiKey.revoked_at, at))  # a second revoke keeps the first time
        .returning(ApiKey.id)
    )
    return result.scalar_one_or_none() is not None


async def save_settings(session: AsyncSession, workspace_id: uuid.UUID, settings: dict[str, Any]) -> None:
    """Replace the workspace's settings JSON."""
    await session.execute(update(Workspace).where(Workspace.id == workspace_id).values(settings=settings))


async def workspaces_by_id(session: AsyncSession, workspace_ids: Sequence[uuid.UUID]) -> Sequence[Workspace]:
    """Workspaces by id."""
    if not workspace_ids:
        return []
    return (await session.scalars(select(Workspace).where(Workspace.id.in_(workspace_ids)))).all()


async def claim_senders(session: AsyncSession, workspace_id: uuid.UUID, identities: set[str]) -> set[str]:
    """Make ``identities`` the workspace's senders; returns those another workspace holds (nothing claimed then).

    Senders the workspace no longer names are released first. A claim another transaction is writing waits for
    it (the primary key), so two workspaces racing for one number cannot both get it.
    """
    await session.execute(
        delete(SenderIdentity).where(
            SenderIdentity.workspace_id == workspace_id, SenderIdentity.identity.not_in(sorted(identities))
        )
    )
    if not identities:
        return set()
    await session.execute(
        insert(SenderIdentity)
        .values([{"identity": identity, "workspace_id": workspace_id} for identity in sorted(identities)])
        .on_conflict_do_nothing(index_elements=[SenderIdentity.identity])
    )
    taken = await session.scalars(
        select(SenderIdentity.identity).where(
            SenderIdentity.identity.in_(sorted(identities)), SenderIdentity.workspace_id != workspace_id
        )
    )
    return set(taken.all())


async def owns_sender(session: AsyncSession, workspace_id: uuid.UUID, identities: set[str]) -> bool:
    """Whether the workspace holds one of ``identities``."""
    if not identities:
        return False
    found = await session.scalar(
        select(SenderIdentity.identity)
        .where(SenderIdentity.workspace_id == workspace_id, SenderIdentity.identity.in_(sorted(identities)))
        .limit(1)
    )
    return found is not None


async def name_settings_and_sender(
    session: AsyncSession, workspace_id: uuid.UUID, identities: set[str]
) -> tuple[str, dict[str, Any], bool] | None:
    """The workspace's name and stored settings, and whether it holds one of ``identities``, in one statement.

    The first statement of every Twilio webhook's transaction (it begins it): sent as the driver's own SQL through
    the session's connection, past the ORM's statement building and result processing (a sixth of the server's
    CPU per STOP in a flood, as an ORM ``select``; issue 21).
    """
    connection = await session.connection()
    row: Any = (await connection.exec_driver_sql(_NAME_SETTINGS_AND_SENDER, (workspace_id, sorted(identities)))).first()
    return (row[0], row[1], bool(row[2])) if row is not None else None


#: :func:`name_settings_and_sender`'s statement ($1 the workspace, $2 the identities).
_NAME_SETTINGS_AND_SENDER = """
    SELECT w.name, w.settings,
           EXISTS (SELECT FROM sender_identities s WHERE s.workspace_id = w.id AND s.identity = ANY($2::text[]))
      FROM workspaces w
     WHERE w.id = $1
"""


async def set_mail_domains(session: AsyncSession, workspace_id: uuid.UUID, domains: list[str] | None) -> None:
    """Replace the operator's list of mail domains (``None``: back to the default)."""
    await session.execute(update(Workspace).where(Workspace.id == workspace_id).values(mail_domains=domains))


# --- the operator's workspace operations (app.workspaces.operator) -----------------------------------------------


async def add_operator_key(session: AsyncSession, key: OperatorKey) -> OperatorKey:
    """Insert an operator key."""
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key


async def revoke_operator_key(session: AsyncSession, key_id: uuid.UUID, at: datetime) -> bool:
    """Revoke an operator key (a second revoke keeps the first time); False if there is no such key."""
    result = await session.execute(
        update(OperatorKey)
        .where(OperatorKey.id == key_id)
        .values(revoked_at=func.coalesce(OperatorKey.revoked_at, at))
        .returning(OperatorKey.id)
    )
    return result.scalar_one_or_none() is not None


async def list_workspaces(session: AsyncSession, *, after: uuid.UUID | None, limit: int) -> Sequence[Workspace]:
    """Workspaces (tombstones included) in id order, the page after ``after``."""
    query = select(Workspace).order_by(Workspace.id).limit(limit)
    if after is not None:
        query = query.where(Workspace.id > after)
    return (await session.scalars(query)).all()


async def workspace_table_graph(session: AsyncSession) -> tuple[set[str], list[tuple[str, str]]]:
    """The tables with a ``workspace_id`` column, and every foreign key as (child table, parent table)."""
    names = set(
        (
            await session.scalars(
                text(  # partitions are read and deleted through their table (the ledger's months, migration 0041)
                    "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
                    "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') "
                    "AND NOT c.relispartition AND a.attname = 'workspace_id' AND NOT a.attisdropped"
                )
            )
        ).all()
    )
    edges = await session.execute(
        text(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"
        )
    )
    return names, [(child, parent) for child, parent in edges.all()]


async def find_deletion(session: AsyncSession, workspace_id: uuid.UUID) -> WorkspaceDeletion | None:
    """The record of the workspace's deletion, if it was deleted for good."""
    return await session.get(WorkspaceDeletion, workspace_id)


async def add_deletion(session: AsyncSession, record: WorkspaceDeletion) -> None:
    """Keep the record of a deletion."""
    session.add(record)
    await session.flush()


async def lock_workspace_for_deletion(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace | None:
    """The workspace row, locked ``FOR NO KEY UPDATE``: writers' foreign key checks (``KEY SHARE``) go on."""
    return await session.scalar(
        select(Workspace)
        .where(Workspace.id == workspace_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )


async def allow_ledger_deletion(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Name the workspace in ``consent.deleting_workspace`` for this transaction (the ledger trigger reads it)."""
    await session.execute(text("SELECT set_config('consent.deleting_workspace', :ws, true)"), {"ws": str(workspace_id)})


async def delete_ledger_head(session: AsyncSession, workspace_id: uuid.UUID) -> int | None:
    """Delete the chain head (waiting for an append that holds it); its last seq, ``None`` if there was none."""
    seq = await session.scalar(
        text("DELETE FROM ledger_heads WHERE workspace_id = :ws RETURNING last_seq"), {"ws": workspace_id}
    )
    return None if seq is None else int(seq)


async def wait_for_ledger_writers(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Lock the workspace row ``FOR UPDATE``: wait for the writers in flight.

    Their rows' foreign key checks hold it (``KEY SHARE``) until they end; later ones wait for this transaction.
    """
    await session.execute(text("SELECT 1 FROM workspaces WHERE id = :ws FOR UPDATE"), {"ws": workspace_id})


async def has_unsealed_events(session: AsyncSession, workspace_id: uuid.UUID) -> bool:
    """Whether committed ledger events of the workspace wait for the sealer (no export can hold them yet)."""
    return bool(
        await session.scalar(
            text("SELECT EXISTS (SELECT 1 FROM consent_events WHERE workspace_id = :ws AND seq IS NULL)"),
            {"ws": workspace_id},
        )
    )


async def ledger_seq(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """The chain head's last seq (0 before the first event)."""
    seq = await session.scalar(text("SELECT last_seq FROM ledger_heads WHERE workspace_id = :ws"), {"ws": workspace_id})
    return int(seq or 0)


async def mark_deleted(session: AsyncSession, workspace_id: uuid.UUID, at: datetime) -> None:
    """Set ``deleted_at`` (kept if set)."""
    await session.execute(
        update(Workspace).where(Workspace.id == workspace_id).values(deleted_at=func.coalesce(Workspace.deleted_at, at))
    )


async def delete_rows(
    session: AsyncSession,
    table: str,
    workspace_id: uuid.UUID,
    *,
    returning: str = "1",
    keep_named_purposes: bool = False,
) -> Sequence[Any]:
    """Delete the workspace's rows of ``table`` (a name from the catalogue); the ``returning`` expression of each.

    ``keep_named_purposes``: of ``purposes``, keep those a suppression of the workspace names.
    """
    where = "workspace_id = :ws"
    if keep_named_purposes:
        where += (
            " AND id NOT IN (SELECT purpose_id FROM suppressions WHERE workspace_id = :ws AND purpose_id IS NOT NULL)"
        )
    sql = f'DELETE FROM "{table}" WHERE {where} RETURNING {returning}'  # noqa: S608  # names from the catalogue
    return (await session.scalars(text(sql), {"ws": workspace_id})).all()


async def has_rows(session: AsyncSession, table: str, workspace_id: uuid.UUID) -> bool:
    """Whether ``table`` (a name from the catalogue) holds a row of the workspace."""
    sql = f'SELECT 1 FROM "{table}" WHERE workspace_id = :ws LIMIT 1'  # noqa: S608  # names from the catalogue
    return await session.scalar(text(sql), {"ws": workspace_id}) is not None


async def count_rows(session: AsyncSession, table: str, workspace_id: uuid.UUID) -> int:
    """The workspace's rows of ``table`` (a name from the catalogue)."""
    sql = f'SELECT count(*) FROM "{table}" WHERE workspace_id = :ws'  # noqa: S608  # names from the catalogue
    return int(await session.scalar(text(sql), {"ws": workspace_id}) or 0)


async def make_tombstone(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Clear everything of the workspace row but its id, name, creation, deletion and last export times.

    The export's time stays: the deletion's record names it (newcomer review 2026-12-05: it read null).
    """
    await session.execute(update(Workspace).where(Workspace.id == workspace_id).values(settings={}, mail_domains=None))


async def lock_workspace_for_removal(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """The workspace row, locked ``FOR UPDATE``: waits for the writers holding its ``KEY SHARE``, stops new ones."""
    await session.execute(select(Workspace.id).where(Workspace.id == workspace_id).with_for_update())


async def tables_without_foreign_key(session: AsyncSession) -> Sequence[str]:
    """The tables with a ``workspace_id`` column and no foreign key at all: the workspace row's deletion leaves them.

    Their writers lock the workspace row once instead of a check per row (``robinson_keys``, the reports' counters).
    """
    return (
        await session.scalars(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
                "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') "
                "AND NOT c.relispartition AND a.attname = 'workspace_id' AND NOT a.attisdropped "
                "AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f') "
                "ORDER BY 1"
            )
        )
    ).all()


async def delete_workspace_row(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Delete the workspace row (its remaining rows cascade)."""
    await session.execute(delete(Workspace).where(Workspace.id == workspace_id))


async def record_export(session: AsyncSession, workspace_id: uuid.UUID, at: datetime, seq: int) -> None:
    """Remember a complete export (not on a tombstone)."""
    await session.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id, Workspace.deleted_at.is_(None))
        .values(exported_at=at, exported_seq=seq)
    )


#: Credentials and capabilities an export leaves out: hashes of keys, links and sessions, sealed secrets
#: (hostile review: the export is a file that travels; none of these is the workspace's data)
_HIDDEN_COLUMNS = {
    "api_keys": ("secret_hash",),
    "webhook_subscriptions": ("secret_sealed",),
    "preference_links": ("token_hash",),
    "confirmation_tokens": ("token_hash",),
    "console_links": ("token_hash",),
    "console_sessions": ("id_hash",),
}
#: Tables an export leaves out whole: stored answers of idempotent requests (a replay cache, which may hold
#: what a POST answered) and the console's sessions and login links (staff access, not the workspace's data)
SKIPPED_TABLES = frozenset({"idempotency_keys", "console_links", "console_sessions"})


def _export_query(table: str) -> str:
    hidden = "".join(f" - '{column}'" for column in _HIDDEN_COLUMNS.get(table, ()))
    row = f"(to_jsonb(t){hidden})::text" if hidden else "row_to_json(t)::text"
    where = "t.workspace_id = :ws"
    if table == "consent_events":
        where += " AND t.seq <= :seq ORDER BY t.seq"
    return f'SELECT {row} FROM "{table}" t WHERE {where}'  # noqa: S608  # names from the catalogue


async def export_rows(
    session: AsyncSession, tables: Sequence[str], workspace_id: uuid.UUID, seq: int
) -> AsyncIterator[tuple[str, str]]:
    """(table, row as JSON) of every row of the workspace in ``tables``, its message events last.

    Streamed with a server-side cursor; the ledger up to ``seq``, in chain order; key hashes left out.
    """
    queries = [
        (table, _export_query(table)) for table in tables if table not in SKIPPED_TABLES and table != "message_events"
    ]
    queries.append(("message_events", f"{_export_query('message_events')} ORDER BY t.id"))
    for table, sql in queries:
        result = await session.stream(text(sql), {"ws": workspace_id, "seq": seq})
        async for (row,) in result:
            yield table, row


@dataclass(frozen=True, slots=True)
class DatabaseTimeZone:
    """How the database reads a time-zone name: whether it knows the zone, and the fixed offset it reads first."""

    known: bool
    fixed_offset: timedelta | None
    """The offset of the abbreviation of that name (PostgreSQL reads an abbreviation before a zone)."""


_TIME_ZONE = text(
    """
    SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = :name) AS known,
           (SELECT utc_offset FROM pg_timezone_abbrevs WHERE upper(abbrev) = upper(:name) LIMIT 1) AS fixed_offset
    """
)


async def database_time_zone(session: AsyncSession, name: str) -> DatabaseTimeZone:
    """What the database makes of the time-zone name (a settings check; it reads the zone files: not hot)."""
    row = (await session.execute(_TIME_ZONE, {"name": name})).one()
    return DatabaseTimeZone(known=bool(row.known), fixed_offset=row.fixed_offset)


_OFFSETS = text(
    """
    SELECT z.name, t.at, extract(epoch FROM (t.at AT TIME ZONE z.name) - (t.at AT TIME ZONE 'UTC'))::int AS seconds
      FROM unnest(CAST(:zones AS text[])) AS z(name)
     CROSS JOIN unnest(CAST(:instants AS timestamptz[])) AS t(at)
    """
)


async def database_offsets(
    session: AsyncSession, zones: Sequence[str], instants: Sequence[datetime]
) -> list[tuple[str, datetime, int]]:
    """(zone, instant, UTC offset in seconds) as the database reads each zone at each instant."""
    rows = await session.execute(_OFFSETS, {"zones": list(zones), "instants": list(instants)})
    return [(row.name, row.at, int(row.seconds)) for row in rows]


async def time_zones_in_use(session: AsyncSession, default: str) -> list[str]:
    """The workspaces' time zones (``default`` for those that name none)."""
    rows = await session.execute(
        text("SELECT DISTINCT coalesce(settings->>'timezone', :default) AS zone FROM workspaces"), {"default": default}
    )
    return sorted(row.zone for row in rows)
