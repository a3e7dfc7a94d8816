"""The service operator's workspace operations: create (with a first admin key), list, export, delete.

Deletion (``DELETE /v1/workspaces/{id}``) in one transaction:

1. the workspace row is locked and marked ``deleted_at``; the ledger's chain head is locked too, so no consent
   event is appended meanwhile, and the export is checked: one must have been taken (``409 export_required``)
   that holds the ledger's last event (``409 export_outdated``), unless ``force``;
2. every table with a ``workspace_id`` column (found in the catalogue, so a table added later is covered without
   a change here) loses the workspace's rows, children before parents (foreign keys read from the catalogue);
   the message events go with their messages. The append-only ledger lets its rows go only here: the trigger
   allows a DELETE when the transaction names the workspace in ``consent.deleting_workspace`` and the workspace
   is marked deleted (migration 0026);
3. without ``keep_suppressions`` the workspace row goes too, and a :class:`WorkspaceDeletion` record (counts per
   table, when, which operator key, when the export was taken; no personal data) answers every later DELETE of
   that id. With ``keep_suppressions`` the row stays as a tombstone: name and ``deleted_at`` only (settings,
   operator mail domains and every key gone), holding the suppression keys and the purposes that purpose-scoped
   ones name (a purpose is the tenant's definition, no personal data; without it the key would mean nothing).
   A later DELETE without ``keep_suppressions`` finishes the deletion.

Concurrency: a writer of the workspace (the dispatcher recording an outcome, an inbound webhook, a request that
passed authentication before the keys went) either committed before the locks were taken (its rows are deleted
with the rest) or waits for them and then fails on the missing workspace (foreign keys) or finds its rows gone.
A deadlock with such a writer aborts one side; the caller retries the deletion (:func:`is_retryable`). The files
on disk are the caller's (a higher layer): :class:`Deleted` carries what names them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Scope, generate_key
from app.lib.db import Database
from app.lib.errors import Conflict, NotFound
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.settings import MailSettings
from app.workspaces import repository, service
from app.workspaces.models import ApiKey, OperatorKey, Workspace, WorkspaceDeletion
from app.workspaces.schemas import WorkspaceSettingsIn

DELETING_SETTING = "consent.deleting_workspace"
"""The transaction-local setting the ledger's append-only trigger reads (migration 0026)."""

_RETRYABLE = {"40P01", "40001"}  # deadlock detected, serialization failure


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed deletion transaction may simply be run again (a deadlock with a concurrent writer)."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in _RETRYABLE


async def create_operator_key(session: AsyncSession, name: str) -> tuple[OperatorKey, str]:
    """A new operator key; the secret is returned once and not stored."""
    secret, secret_hash = generate_key()
    key = OperatorKey(name=name, display_prefix=secret[:10], secret_hash=secret_hash)
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key, secret


async def revoke_operator_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Revoke an operator key at once (a second revoke keeps the first time); 404 if unknown."""
    key = await session.get(OperatorKey, key_id)
    if key is None:
        raise NotFound("No operator key with this id.", code="api_key_not_found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()


async def create_workspace(
    session: AsyncSession,
    keys: Keys,
    *,
    name: str,
    settings: WorkspaceSettingsIn | None,
    mail_domains: Sequence[str] | None,
    mail: MailSettings,
    admin_key_name: str,
) -> tuple[Workspace, ApiKey, str]:
    """A workspace with its settings, the operator's mail domains and a first ``admin`` key (secret returned once).

    The same rules as the CLI and ``PUT /v1/workspace/settings``: the caller commits, so a refused setting leaves
    no workspace behind.
    """
    workspace = await repository.add_workspace(session, name)
    if mail_domains:
        await service.change_mail_domains(session, workspace.id, add=mail_domains)
    if settings is not None:
        await service.replace_settings(session, keys, workspace.id, settings, mail=mail)
    key, secret = await service.create_api_key(session, workspace.id, admin_key_name, [Scope.ADMIN])
    refreshed = await repository.lock_workspace(session, workspace.id)
    assert refreshed is not None
    return refreshed, key, secret


async def list_workspaces(session: AsyncSession, *, after: uuid.UUID | None, limit: int) -> Sequence[Workspace]:
    """Workspaces (tombstones included) in id order, the page after ``after``."""
    query = select(Workspace).order_by(Workspace.id).limit(limit)
    if after is not None:
        query = query.where(Workspace.id > after)
    return (await session.scalars(query)).all()


async def get_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace:
    """A workspace (or its tombstone); 404 for an unknown or deleted one."""
    workspace = await repository.get_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound("No workspace with this id.", code="workspace_not_found")
    return workspace


async def workspace_tables(session: AsyncSession) -> list[str]:
    """Every table with a ``workspace_id`` column, children before the tables they reference."""
    names = set(
        (
            await session.scalars(
                text(
                    "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND column_name = 'workspace_id'"
                )
            )
        ).all()
    )
    edges = (
        await session.execute(
            text(
                "SELECT c.conrelid::regclass::text AS child, c.confrelid::regclass::text AS parent "
                "FROM pg_constraint c WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"
            )
        )
    ).all()
    parents: dict[str, set[str]] = {name: set() for name in names}
    for child, parent in edges:
        if child in names and parent in names and child != parent:
            parents[child].add(parent)
    # children first: a table is deleted once no remaining table references it
    ordered: list[str] = []
    remaining = set(names)
    while remaining:
        referenced = {p for child in remaining for p in parents[child] if p in remaining}
        ready = sorted(remaining - referenced)
        if not ready:  # a cycle: delete the rest in name order (the foreign keys cascade within the workspace)
            ready = sorted(remaining)
        ordered.extend(ready)
        remaining -= set(ready)
    return ordered


@dataclass
class Deleted:
    """What a deletion did, and what the caller needs for the files on disk."""

    report: dict[str, Any]
    delivery_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    repeated: bool = False


async def delete_workspace(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    keep_suppressions: bool,
    force: bool,
    operator_key_id: uuid.UUID | None,
) -> Deleted:
    """Delete every row of the workspace (see the module's docstring); the caller commits. Idempotent."""
    record = await session.get(WorkspaceDeletion, workspace_id)
    if record is not None:
        return Deleted(report=record.report, repeated=True)
    head = await session.scalar(
        text("SELECT last_seq FROM ledger_heads WHERE workspace_id = :ws FOR UPDATE"), {"ws": workspace_id}
    )
    workspace = await repository.lock_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound("No workspace with this id.", code="workspace_not_found")
    if workspace.deleted_at is not None and keep_suppressions:
        return Deleted(report=await _tombstone_report(session, workspace), repeated=True)
    if workspace.deleted_at is None and not force:
        _check_export(workspace, head)
    now = utcnow()
    first_deleted_at = workspace.deleted_at or now
    await session.execute(update(Workspace).where(Workspace.id == workspace_id).values(deleted_at=first_deleted_at))
    await session.execute(
        text("SELECT set_config(:name, :ws, true)"), {"name": DELETING_SETTING, "ws": str(workspace_id)}
    )
    delivery_ids = [
        str(i)
        for i in (
            await session.scalars(text("SELECT id FROM deliveries WHERE workspace_id = :ws"), {"ws": workspace_id})
        ).all()
    ]
    emails = list(
        (
            await session.scalars(
                text("SELECT value FROM contact_points WHERE workspace_id = :ws AND channel = 'email'"),
                {"ws": workspace_id},
            )
        ).all()
    )
    counts: dict[str, int] = {}
    counts["message_events"] = await _count(
        session,
        "SELECT count(*) FROM message_events e JOIN messages m ON m.id = e.message_id WHERE m.workspace_id = :ws",
        workspace_id,
    )
    for table in await workspace_tables(session):
        if keep_suppressions and table == "suppressions":
            continue
        where = "workspace_id = :ws"
        if keep_suppressions and table == "purposes":
            where += (
                " AND id NOT IN (SELECT purpose_id FROM suppressions WHERE workspace_id = :ws "
                "AND purpose_id IS NOT NULL)"
            )
        result = await session.execute(text(f'DELETE FROM "{table}" WHERE {where}'), {"ws": workspace_id})  # noqa: S608  # names from the catalogue
        counts[table] = int(result.rowcount)  # type: ignore[attr-defined]  # a DML result has a rowcount
    await session.execute(text("SELECT set_config(:name, '', true)"), {"name": DELETING_SETTING})
    deleted = {name: count for name, count in sorted(counts.items()) if count}
    if keep_suppressions:
        await session.execute(
            update(Workspace)
            .where(Workspace.id == workspace_id)
            .values(settings={}, mail_domains=None, exported_at=None, exported_seq=None)
        )
        refreshed = await repository.lock_workspace(session, workspace_id)
        assert refreshed is not None
        report = await _tombstone_report(session, refreshed)
        report["deleted"] = deleted
        return Deleted(report=report, delivery_ids=delivery_ids, emails=emails)
    await session.execute(text("DELETE FROM workspaces WHERE id = :ws"), {"ws": workspace_id})
    report = {
        "workspace_id": str(workspace_id),
        "state": "deleted",
        "deleted_at": now.isoformat(),
        "exported_at": workspace.exported_at.isoformat() if workspace.exported_at else None,
        "forced": workspace.exported_at is None or force,
        "deleted": deleted,
        "kept": {},
    }
    session.add(
        WorkspaceDeletion(
            id=workspace_id,
            deleted_at=now,
            operator_key_id=operator_key_id,
            exported_at=workspace.exported_at,
            report=report,
        )
    )
    await session.flush()
    return Deleted(report=report, delivery_ids=delivery_ids, emails=emails)


def _check_export(workspace: Workspace, head: int | None) -> None:
    if workspace.exported_at is None:
        raise Conflict(
            "Take the workspace's export first (POST /v1/workspaces/{id}/export), or delete with force=true.",
            code="export_required",
        )
    if (head or 0) > (workspace.exported_seq or 0):
        raise Conflict(
            "The ledger has events the last export does not hold: take the export again, or delete with force=true.",
            code="export_outdated",
            extra={"exported_at": workspace.exported_at.isoformat()},
        )


async def _tombstone_report(session: AsyncSession, workspace: Workspace) -> dict[str, Any]:
    assert workspace.deleted_at is not None
    kept = {
        "suppressions": await _count(
            session, "SELECT count(*) FROM suppressions WHERE workspace_id = :ws", workspace.id
        ),
        "purposes": await _count(session, "SELECT count(*) FROM purposes WHERE workspace_id = :ws", workspace.id),
    }
    return {
        "workspace_id": str(workspace.id),
        "state": "tombstone",
        "deleted_at": workspace.deleted_at.isoformat(),
        "exported_at": None,
        "forced": False,
        "deleted": {},
        "kept": kept,
    }


async def _count(session: AsyncSession, sql: str, workspace_id: uuid.UUID) -> int:
    return int(await session.scalar(text(sql), {"ws": workspace_id}) or 0)


_SEALED_SUFFIX = "_sealed"
_HIDDEN_COLUMNS = {"api_keys": ("secret_hash",)}


def _without_sealed(value: Any) -> Any:
    """Settings without sealed credentials (ciphertexts of this service's key: of no use to anyone else)."""
    if isinstance(value, dict):
        return {k: _without_sealed(v) for k, v in value.items() if not k.endswith(_SEALED_SUFFIX)}
    return value


async def export_lines(database: Database, workspace_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The workspace's whole data as NDJSON lines, then a closing line; records the export when all was sent.

    First ``{"type": "workspace", ...}``, then ``{"type": "row", "table": ..., "row": {...}}`` for every row of
    every table with a ``workspace_id`` (and the message events), table by table, the ledger in chain order up to
    the head read first, last ``{"type": "end", "rows": N, "ledger_seq": S}``. Key hashes and sealed credentials
    are left out. Each table is read as of its own query; the ledger up to ``ledger_seq``, which the export
    records: deletion refuses an export the ledger has grown past.
    """
    encoder = msgspec.json.Encoder()
    started = utcnow()
    async with database.sessionmaker() as session, session.begin():
        workspace = await repository.get_workspace(session, workspace_id)
        if workspace is None:
            raise NotFound("No workspace with this id.", code="workspace_not_found")
        seq = int(
            await session.scalar(
                text("SELECT last_seq FROM ledger_heads WHERE workspace_id = :ws"), {"ws": workspace_id}
            )
            or 0
        )
        yield (
            encoder.encode(
                {
                    "type": "workspace",
                    "id": workspace.id,
                    "name": workspace.name,
                    "created_at": workspace.created_at,
                    "settings": _without_sealed(workspace.settings),
                    "mail_domains": workspace.mail_domains,
                    "exported_at": started,
                    "ledger_seq": seq,
                }
            )
            + b"\n"
        )
        rows = 0
        queries = [(table, _select(table)) for table in sorted(await workspace_tables(session))]
        queries.append(
            (
                "message_events",
                (
                    "SELECT row_to_json(t)::text FROM message_events t JOIN messages m ON m.id = t.message_id "
                    "WHERE m.workspace_id = :ws ORDER BY t.id"
                ),
            )
        )
        for table, sql in queries:
            result = await session.stream(text(sql), {"ws": workspace_id, "seq": seq})
            async for (row,) in result:
                rows += 1
                yield b'{"type":"row","table":"' + table.encode() + b'","row":' + row.encode() + b"}\n"
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Workspace)
            .where(Workspace.id == workspace_id, Workspace.deleted_at.is_(None))
            .values(exported_at=started, exported_seq=seq)
        )
    yield encoder.encode({"type": "end", "rows": rows, "ledger_seq": seq}) + b"\n"


def _select(table: str) -> str:
    hidden = "".join(f" - '{column}'" for column in _HIDDEN_COLUMNS.get(table, ()))
    row = f"(to_jsonb(t){hidden})::text" if hidden else "row_to_json(t)::text"
    where = "t.workspace_id = :ws"
    if table == "consent_events":
        where += " AND t.seq <= :seq ORDER BY t.seq"
    return f'SELECT {row} FROM "{table}" t WHERE {where}'  # noqa: S608  # names from the catalogue
