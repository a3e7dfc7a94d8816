"""The service operator's workspace operations: create (with a first admin key), list, export, delete.

Deletion (``DELETE /v1/workspaces/{id}``), in short transactions, each retried after a deadlock with a writer:

1. the workspace is marked ``deleted_at`` and its ledger goes: the chain head first (an append holding it
   finishes, so the last ``seq`` deleted is the real last one), checked against the export unless ``force`` (one
   must have been taken, ``409 export_required``, and hold that ``seq``, ``409 export_outdated``; a refusal
   rolls everything back), then the events. The append-only ledger lets its rows go only here: its trigger allows
   a DELETE when the transaction names the workspace in ``consent.deleting_workspace`` and the workspace is marked
   deleted (migration 0026);
2. rounds over every table with a ``workspace_id`` column (found in the catalogue, so a table added later is
   covered without a change here), children before parents (foreign keys read from the catalogue), one
   transaction a table, until a round finds nothing left (message events too: they carry ``workspace_id`` since
   migration 0040);
3. without ``keep_suppressions`` the workspace row is locked ``FOR UPDATE`` (waiting for the writers holding its
   ``KEY SHARE``), the rows a late writer added to a table without a foreign key are deleted (``robinson_keys``,
   the reports' counters: migration 0048), and the row goes (with anything else a late writer added: the foreign
   keys cascade) and a :class:`WorkspaceDeletion` record (counts per table, when, which operator key, when the export
   was taken; no personal data) answers every later DELETE of that id. With ``keep_suppressions`` the row stays
   as a tombstone: name and ``deleted_at`` only (settings, operator mail domains and every key gone), holding the
   suppression keys and the purposes that purpose-scoped ones name (a purpose is the tenant's definition, no
   personal data; without it such a key would mean nothing). A later DELETE without ``keep_suppressions``
   finishes the deletion.

A deletion cut short (a crash, ``503 workspace_busy``) leaves the workspace marked deleted: the next DELETE goes
on where it stopped. Concurrency: until the last step the workspace row is locked ``FOR NO KEY UPDATE`` only, so
no writer's foreign key check waits for the deletion while it holds locks the deletion needs (no lock cycle
through the workspace row; the last step holds nothing before its ``FOR UPDATE``); a writer either committed
before a table's round (its rows go in that round or the next), or before the last step's ``FOR UPDATE`` (its
rows go in that step), or fails on the missing workspace, contact or address once the deletion commits. The
files on disk are the caller's (a higher layer): :class:`Deleted` carries what names them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import msgspec
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Scope, generate_key
from app.lib.db import Database
from app.lib.errors import Conflict, NotFound, Unavailable, sqlstate_in_chain
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.settings import MailSettings
from app.workspaces import repository, service
from app.workspaces.models import ApiKey, OperatorKey, Workspace, WorkspaceDeletion
from app.workspaces.schemas import WorkspaceSettingsIn

T = TypeVar("T")
log = structlog.get_logger(__name__)


#: What a tombstone keeps besides the purposes they name: the suppressions, and the Robinson keys (migration 0042).
SUPPRESSION_TABLES = ("suppressions", "robinson_keys")
_RETRYABLE = {"40P01", "40001"}  # deadlock detected, serialization failure
#: restrict_violation (a RESTRICT key: purposes, notices) or foreign_key_violation (a NO ACTION key, if one is ever
#: added): a late writer's row, committed after its own table's sweep, names a row this sweep deletes
_REFERENCED_BY_A_LATE_WRITER = {"23001", "23503"}


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed deletion transaction may simply be run again (a deadlock with a concurrent writer)."""
    return sqlstate_in_chain(exc, _RETRYABLE)


async def create_operator_key(session: AsyncSession, name: str) -> tuple[OperatorKey, str]:
    """A new operator key; the secret is returned once and not stored."""
    secret, secret_hash = generate_key()
    key = OperatorKey(name=name, display_prefix=secret[:10], secret_hash=secret_hash)
    return await repository.add_operator_key(session, key), secret


async def revoke_operator_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Revoke an operator key at once (a second revoke keeps the first time); 404 if unknown."""
    if not await repository.revoke_operator_key(session, key_id, utcnow()):
        raise NotFound("No operator key with this id.", code="api_key_not_found")


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
    return await repository.list_workspaces(session, after=after, limit=limit)


async def get_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace:
    """A workspace (or its tombstone); 404 for an unknown or deleted one."""
    workspace = await repository.get_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound("No workspace with this id.", code="workspace_not_found")
    return workspace


async def workspace_tables(session: AsyncSession) -> list[str]:
    """Every table with a ``workspace_id`` column, children before the tables they reference."""
    names, edges = await repository.workspace_table_graph(session)
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


_ATTEMPTS = 5
_MAX_ROUNDS = 10


class _LateWriter(Exception):  # not an error to report: the next round takes the row first
    """A sweep met a row a writer committed after its own table's sweep, naming a row this sweep deletes."""


async def _step(database: Database, work: Callable[[AsyncSession], Awaitable[T]], *, sweep: bool = False) -> T:
    """Run ``work`` in a transaction of its own, again after a deadlock with a concurrent writer (a few times).

    ``sweep``: a sweep refused by a late writer's row (:class:`_LateWriter`) is left to the next round.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with database.sessionmaker() as session, session.begin():
                return await work(session)
        except DBAPIError as exc:
            # A sweep's DELETE of a purpose or notice (RESTRICT keys) fails while a row a writer committed after its
            # own table's sweep still names it: the same step would fail again; the next round sweeps that row
            # first. Elsewhere (the last step, if rounds ran out): 503, and the deletion sent again goes on where
            # it stopped. It was a 500.
            late_writer = sqlstate_in_chain(exc, _REFERENCED_BY_A_LATE_WRITER)
            if late_writer and sweep:
                raise _LateWriter from None
            if late_writer or not is_retryable(exc) or attempt == _ATTEMPTS:
                if late_writer or is_retryable(exc):
                    raise Unavailable(
                        "The workspace is busy (concurrent writes); try the deletion again: it goes on where it "
                        "stopped.",
                        code="workspace_busy",
                        headers={"Retry-After": "1"},
                    ) from None
                raise
            log.info("workspace_deletion_step_retried", attempt=attempt)
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def delete_workspace(
    database: Database,
    workspace_id: uuid.UUID,
    *,
    keep_suppressions: bool,
    force: bool,
    operator_key_id: uuid.UUID | None,
) -> Deleted:
    """Delete every row of the workspace (see the module's docstring). Idempotent, and resumable after a failure.

    Short transactions, each retried after a deadlock: a first one marks the workspace deleted and takes its
    ledger (chain head first, so an append under way finishes and is counted: the export check sees the last
    event); then rounds over every table until a round finds nothing; a last one removes the workspace row
    (or makes it a tombstone) and keeps the record.
    """
    run = _Deletion(database, workspace_id, keep_suppressions=keep_suppressions, force=force)
    started = await _step(database, run.begin)
    if isinstance(started, Deleted):
        return started
    for _ in range(_MAX_ROUNDS):
        tables = await _step(database, workspace_tables)
        found = 0
        for table in tables:
            if keep_suppressions and table in SUPPRESSION_TABLES:
                continue
            try:
                found += run.add(table, await _step(database, partial(run.sweep, table), sweep=True))
            except _LateWriter:
                log.info("workspace_deletion_sweep_left_to_the_next_round", table=table)
                found += 1  # another round: its sweep of the late writer's table comes before this one's
        if not found:
            break
    else:  # writers kept adding rows: the last step's cascade takes what is left (not counted in the record)
        log.warning("workspace_deletion_rounds_ran_out", rounds=_MAX_ROUNDS)
    report = await _step(database, partial(run.finish, operator_key_id))
    report["deleted"] = run.deleted()
    return Deleted(report=report, delivery_ids=run.delivery_ids, emails=run.emails)


class _Deletion:
    """The steps of one workspace deletion and what they found."""

    def __init__(self, database: Database, workspace_id: uuid.UUID, *, keep_suppressions: bool, force: bool) -> None:
        self.database = database
        self.workspace_id = workspace_id
        self.keep_suppressions = keep_suppressions
        self.force = force
        self.workspace: Workspace | None = None
        self.deleted_at = utcnow()
        self.counts: dict[str, int] = {}
        self.delivery_ids: list[str] = []
        self.emails: list[str] = []

    def add(self, table: str, count: int) -> int:
        self.counts[table] = self.counts.get(table, 0) + count
        return count

    def deleted(self) -> dict[str, int]:
        return {name: count for name, count in sorted(self.counts.items()) if count}

    async def _open(self, session: AsyncSession) -> None:
        """Let this transaction delete the workspace's ledger rows (the trigger checks this and ``deleted_at``)."""
        await repository.allow_ledger_deletion(session, self.workspace_id)

    async def begin(self, session: AsyncSession) -> Deleted | Workspace:
        """Mark the workspace deleted and take its ledger; the earlier answer when it was already done."""
        ws = self.workspace_id
        record = await repository.find_deletion(session, ws)
        if record is not None:
            return Deleted(report=record.report, repeated=True)
        workspace = await repository.lock_workspace_for_deletion(session, ws)
        if workspace is None:
            raise NotFound("No workspace with this id.", code="workspace_not_found")
        tombstone = workspace.deleted_at is not None and workspace.settings == {}
        if self.keep_suppressions and tombstone and not await _has_rows_beyond_suppressions(session, ws):
            return Deleted(report=await _tombstone_report(session, workspace), repeated=True)
        # the chain head goes first: an append holding it finishes, and the last seq is the one deleted here
        head = await repository.delete_ledger_head(session, ws)
        if workspace.deleted_at is None and not self.force:
            # consent changes no longer take the chain head (their events are sealed after commit): wait for those
            # in flight, whose event inserts hold the workspace row's KEY SHARE, so that the check sees them
            await repository.wait_for_ledger_writers(session, ws)
            _check_export(workspace, head, unsealed=await repository.has_unsealed_events(session, ws))
        await repository.mark_deleted(session, ws, utcnow())
        await self._open(session)
        events = await repository.delete_rows(session, "consent_events", ws)
        self.counts = {"ledger_heads": int(head is not None), "consent_events": len(events)}
        self.workspace = workspace
        return workspace

    async def sweep(self, table: str, session: AsyncSession) -> int:
        """Delete the workspace's rows of ``table``; keep what names the files on disk."""
        await self._open(session)
        returning = {"deliveries": "id::text", "contact_points": "CASE WHEN channel = 'email' THEN value END"}
        values = await repository.delete_rows(
            session,
            table,
            self.workspace_id,
            returning=returning.get(table, "1"),
            keep_named_purposes=self.keep_suppressions and table == "purposes",
        )
        if table == "deliveries":
            self.delivery_ids.extend(str(v) for v in values)
        elif table == "contact_points":
            self.emails.extend(str(v) for v in values if v)
        return len(values)

    async def finish(self, operator_key_id: uuid.UUID | None, session: AsyncSession) -> dict[str, Any]:
        """Make the row a tombstone, or delete it (with whatever a late writer added) and keep the record."""
        ws = self.workspace_id
        await self._open(session)
        if self.keep_suppressions:
            await repository.make_tombstone(session, ws)
            tombstone = await repository.lock_workspace(session, ws)
            assert tombstone is not None
            return await _tombstone_report(session, tombstone, forced=self.force)
        assert self.workspace is not None
        # rows of a table without a foreign key a late writer added (a catch-up's counters): such writers hold the
        # row's KEY SHARE, so once it is ours FOR UPDATE none is under way or can start, and these deletes see all
        await repository.lock_workspace_for_removal(session, ws)
        for table in await repository.tables_without_foreign_key(session):
            self.add(table, len(await repository.delete_rows(session, table, ws)))
        await repository.delete_workspace_row(session, ws)
        exported_at = self.workspace.exported_at
        report = {
            "workspace_id": str(ws),
            "state": "deleted",
            "deleted_at": self.deleted_at.isoformat(),
            "exported_at": exported_at.isoformat() if exported_at else None,
            "forced": self.force,
            "deleted": self.deleted(),
            "kept": {},
        }
        record = WorkspaceDeletion(
            id=ws, deleted_at=self.deleted_at, operator_key_id=operator_key_id, exported_at=exported_at, report=report
        )
        await repository.add_deletion(session, record)
        return report


async def _has_rows_beyond_suppressions(session: AsyncSession, workspace_id: uuid.UUID) -> bool:
    """Whether a tombstone still holds more than its suppressions and their purposes (a deletion cut short)."""
    for table in await workspace_tables(session):
        if table in {*SUPPRESSION_TABLES, "purposes"}:
            continue
        if await repository.has_rows(session, table, workspace_id):
            return True
    return False


def _check_export(workspace: Workspace, head: int | None, *, unsealed: bool) -> None:
    """Refuse deletion without an export that holds every event (``unsealed``: some still wait for the sealer)."""
    if workspace.exported_at is None:
        raise Conflict(
            "Take the workspace's export first (POST /v1/workspaces/{id}/export), or delete with force=true.",
            code="export_required",
        )
    if unsealed or (head or 0) > (workspace.exported_seq or 0):
        raise Conflict(
            "The ledger has events the last export does not hold: take the export again, or delete with force=true.",
            code="export_outdated",
            extra={"exported_at": workspace.exported_at.isoformat()},
        )


async def _tombstone_report(session: AsyncSession, workspace: Workspace, *, forced: bool = False) -> dict[str, Any]:
    assert workspace.deleted_at is not None
    # the Robinson keys are suppressions (they were rows of ``suppressions`` before migration 0042)
    suppressions = sum([await repository.count_rows(session, table, workspace.id) for table in SUPPRESSION_TABLES])
    kept = {"suppressions": suppressions, "purposes": await repository.count_rows(session, "purposes", workspace.id)}
    return {
        "workspace_id": str(workspace.id),
        "state": "tombstone",
        "deleted_at": workspace.deleted_at.isoformat(),
        "exported_at": workspace.exported_at.isoformat() if workspace.exported_at else None,
        "forced": forced,
        "deleted": {},
        "kept": kept,
    }


_SEALED_SUFFIX = "_sealed"


def _without_sealed(value: Any) -> Any:
    """Settings without sealed credentials (ciphertexts of this service's key: of no use to anyone else)."""
    if isinstance(value, dict):
        return {k: _without_sealed(v) for k, v in value.items() if not k.endswith(_SEALED_SUFFIX)}
    return value


async def export_lines(database: Database, workspace_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The workspace's whole data as NDJSON lines, then a closing line; records the export when all was sent.

    First ``{"type": "workspace", ...}``, then ``{"type": "row", "table": ..., "row": {...}}`` for every row of
    every table with a ``workspace_id`` (the message events last), table by table, the ledger in chain order up to
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
        seq = await repository.ledger_seq(session, workspace_id)
        header = {
            "type": "workspace",
            "id": workspace.id,
            "name": workspace.name,
            "created_at": workspace.created_at,
            "settings": _without_sealed(workspace.settings),
            "mail_domains": workspace.mail_domains,
            "exported_at": started,
            "ledger_seq": seq,
        }
        yield encoder.encode(header) + b"\n"
        rows = 0
        tables = sorted(await workspace_tables(session))
        async for table, row in repository.export_rows(session, tables, workspace_id, seq):
            rows += 1
            yield b'{"type":"row","table":"' + table.encode() + b'","row":' + row.encode() + b"}\n"
    async with database.sessionmaker() as session, session.begin():
        await repository.record_export(session, workspace_id, started, seq)
    yield encoder.encode({"type": "end", "rows": rows, "ledger_seq": seq}) + b"\n"
