"""``/v1/workspaces``: the service operator creates, lists, exports and deletes workspaces (scope ``operator``).

An operator key belongs to no workspace; the guard (:func:`app.lib.auth.api_key_guard`) lets it call these routes
only, and lets no workspace's key (admin included) call them. A package of its own above the channels: deleting
a workspace removes its files in the outbox folder too (:mod:`app.channels.outbox_files`).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels import outbox_files
from app.ledger import sealer
from app.lib.auth import KeyCache, OperatorPrincipal, Scope, provide_operator
from app.lib.db import Database
from app.lib.errors import Conflict, InvalidInput
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.settings import Settings
from app.workspaces import operator as workspaces
from app.workspaces.models import Workspace
from app.workspaces.schemas import (
    ApiKeyCreated,
    OperatorWorkspaceOut,
    WorkspaceCreate,
    WorkspaceCreated,
    WorkspaceDeletedOut,
    check_outbound_urls,
)

log = structlog.get_logger(__name__)


def _out(workspace: Workspace) -> OperatorWorkspaceOut:
    return OperatorWorkspaceOut(
        id=workspace.id,
        name=workspace.name,
        created_at=workspace.created_at,
        state="tombstone" if workspace.deleted_at else "active",
        mail_domains=workspace.mail_domains,
        exported_at=workspace.exported_at,
        deleted_at=workspace.deleted_at,
    )


def _remove_folder(folder: Path) -> int:
    """Delete the workspace's outbox folder (dev outbox files, print batches); the count of files removed."""
    if not folder.is_dir():
        return 0
    count = sum(1 for path in folder.rglob("*") if path.is_file() and path.name != ".lock")
    shutil.rmtree(folder, ignore_errors=True)
    return count


class OperatorWorkspaceController(Controller):
    """Workspaces by API (scope `operator`: an operator key, made with `consent apikey create --operator`).

    No workspace's key may call these routes, and an operator key may call nothing else.
    """

    path = "/workspaces"
    tags = ["operator"]  # noqa: RUF012
    # no Idempotency-Key: the convention keeps keys per workspace, and the answer of POST holds a secret
    opt = {"scope": Scope.OPERATOR, "idempotent": False}  # noqa: RUF012
    dependencies = {"operator": Provide(provide_operator)}  # noqa: RUF012

    @post(operation_id="createWorkspace", status_code=201, responses=errors(401, 403, 409, 422))
    async def create(  # noqa: PLR0917  # Litestar passes what a handler names
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[WorkspaceCreate],
        operator: NamedDependency[OperatorPrincipal],  # noqa: ARG002  # the guard checked it
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> WorkspaceCreated:
        """Create a workspace and its first `admin` key: the secret is in this answer only.

        Name, optional settings (as `PUT /v1/workspace/settings` takes them, with the same checks) and the
        operator's mail domains. An `Idempotency-Key` is refused (422): the answer holds a secret that is never
        stored, so a repeat could not be answered; list the workspaces to see whether a lost answer's one exists.
        """
        if "idempotency-key" in request.headers:
            raise InvalidInput(
                "POST /v1/workspaces takes no Idempotency-Key: its answer holds the first admin key, which is never "
                "stored to be answered again. After a lost answer, GET /v1/workspaces shows whether it was created.",
                code="idempotency_not_supported",
            )
        if data.settings is not None:
            await check_outbound_urls(data.settings, allow_private=settings.webhooks_allow_private)
        async with db.begin():
            workspace, key, secret = await workspaces.create_workspace(
                db,
                keys,
                name=data.name,
                settings=data.settings,
                mail_domains=data.mail_domains,
                mail=settings.mail,
                admin_key_name=data.admin_key_name,
            )
        out = _out(workspace)
        admin_key = ApiKeyCreated(
            id=key.id,
            name=key.name,
            scopes=[Scope(s) for s in key.scopes],
            display_prefix=key.display_prefix,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
            secret=secret,
        )
        return WorkspaceCreated(**msgspec.structs.asdict(out), admin_key=admin_key)

    @get(operation_id="listWorkspaces", responses=errors(401, 403))
    async def list_workspaces(
        self,
        operator: NamedDependency[OperatorPrincipal],  # noqa: ARG002
        db: NamedDependency[AsyncSession],
        after: Annotated[uuid.UUID | None, QueryParameter(description="The last id of the previous page.")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[OperatorWorkspaceOut]:
        """Every workspace (tombstones included), in id order; page on with `after` = the last `id` seen."""
        return [_out(w) for w in await workspaces.list_workspaces(db, after=after, limit=limit)]

    @get("/{workspace_id:uuid}", operation_id="getWorkspaceAsOperator", responses=errors(401, 403, 404))
    async def get_workspace(
        self,
        workspace_id: FromPath[uuid.UUID],
        operator: NamedDependency[OperatorPrincipal],  # noqa: ARG002
        db: NamedDependency[AsyncSession],
    ) -> OperatorWorkspaceOut:
        """One workspace, or its tombstone; a workspace deleted for good answers 404."""
        return _out(await workspaces.get_workspace(db, workspace_id))

    @post(
        "/{workspace_id:uuid}/export",
        operation_id="exportWorkspace",
        status_code=200,
        media_type="application/x-ndjson",
        responses=errors(401, 403, 404, 409),
    )
    async def export(
        self,
        workspace_id: FromPath[uuid.UUID],
        operator: NamedDependency[OperatorPrincipal],  # noqa: ARG002
        db: NamedDependency[AsyncSession],
        database: NamedDependency[Database],
    ) -> Stream:
        """The workspace's whole data as NDJSON (streamed).

        A `workspace` line, a `row` line for every row of every table of the workspace (`table`, `row`), an `end`
        line with the count. Key hashes and sealed credentials are left out. A completely sent export is recorded
        (`exported_at`): deletion asks for one that holds the ledger's last event. A POST: it changes that record.
        A tombstone has nothing to export (`409 workspace_deleted`).
        """
        workspace = await workspaces.get_workspace(db, workspace_id)  # 404 before anything is streamed
        if workspace.deleted_at is not None:
            raise Conflict(
                "The workspace was deleted; its tombstone holds only suppression keys, which nobody else can use.",
                code="workspace_deleted",
            )
        await db.close()
        await sealer.seal_on_database(database, workspace_id)  # the ledger up to its head: every committed event
        return Stream(
            workspaces.export_lines(database, workspace_id),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-store"},
        )

    @delete(
        "/{workspace_id:uuid}",
        operation_id="deleteWorkspace",
        status_code=200,
        responses=errors(401, 403, 404, 409, 503),
    )
    async def delete_workspace(
        self,
        *,
        workspace_id: FromPath[uuid.UUID],
        operator: NamedDependency[OperatorPrincipal],
        database: NamedDependency[Database],
        settings: NamedDependency[Settings],
        key_cache: NamedDependency[KeyCache],
        keep_suppressions: Annotated[
            bool, QueryParameter(description="Keep the suppression keys in a tombstone of the workspace.")
        ] = False,
        force: Annotated[bool, QueryParameter(description="Delete without a current export.")] = False,
    ) -> WorkspaceDeletedOut:
        """Delete everything of the workspace: every row in every table, its keys, its files in the outbox folder.

        An export must have been taken that holds the ledger's last event (`409 export_required`, `409
        export_outdated`), unless `force=true`. With `keep_suppressions=true` the workspace stays as a tombstone
        holding only its suppression keys (and the purposes they name); a later DELETE without it finishes the
        deletion. Idempotent: a repeated DELETE answers what was done (`deleted` then counts nothing new).
        """
        # sealed first, so that the export check compares the head with every event committed until now (one that
        # commits after this is still unsealed, and deletion counts that as outdated too)
        await sealer.seal_on_database(database, workspace_id)
        done = await workspaces.delete_workspace(
            database,
            workspace_id,
            keep_suppressions=keep_suppressions,
            force=force,
            operator_key_id=operator.operator_key_id,
        )
        key_cache.clear()
        out = msgspec.convert(done.report, WorkspaceDeletedOut)
        outbox = settings.data_dir / "outbox"
        removed = 0
        if not done.repeated:
            removed = await asyncio.to_thread(outbox_files.erase, outbox, workspace_id, done.delivery_ids, done.emails)
        # a repeat too: a send that was in flight during the deletion may have written its file since
        removed += await asyncio.to_thread(_remove_folder, outbox / str(workspace_id))
        return msgspec.structs.replace(out, deleted={} if done.repeated else out.deleted, outbox_files=removed)
