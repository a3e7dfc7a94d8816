"""``/v1/chains`` and ``/v1/chain-runs`` (scope `messages:send`)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.chains import service
from app.chains.schemas import ChainIn, ChainOut, ChainReport, RunIn, RunOut, RunsBatchIn, RunsBatchOut, RunStarted
from app.lib import idempotency
from app.lib.auth import Principal, Scope
from app.lib.db import Database
from app.lib.openapi import answer, errors


class ChainController(Controller):
    """Action chains: follow-up steps, each decided with the send gate when it is due."""

    path = "/chains"
    tags = ["chains"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.MESSAGES_SEND}  # noqa: RUF012

    @post(
        operation_id="createChain",
        status_code=201,
        responses={
            **errors(401, 403, 409, 422),
            **answer(200, ChainOut, "The newest version already has exactly this definition: that version"),
        },
    )
    async def create(
        self, data: JSONBody[ChainIn], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> Response[ChainOut]:
        """A new version of the chain `key` (201); the newest version's exact definition again returns it (200).

        Steps are checked like `POST /v1/messages` (route and content per channel); a `when` may only name
        earlier steps; `after` is an ISO 8601 duration of at most 365 days. Runs keep the version they started
        with.
        """
        async with db.begin():
            chain, created = await service.define_chain(db, principal.workspace_id, data)
            shown = await service.show_chain(db, principal.workspace_id, chain)
        return Response(shown, status_code=201 if created else 200)

    @get(operation_id="listChains", responses=errors(401, 403))
    async def list_chains(
        self,
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        key: FromQuery[str | None] = None,
    ) -> list[ChainOut]:
        """The workspace's chain versions (of one `key`), by key and version."""
        return await service.list_chains(db, principal.workspace_id, key)

    @get("/{chain_id:uuid}", operation_id="getChain", responses=errors(401, 403, 404))
    async def detail(
        self, chain_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> ChainOut:
        """One chain version."""
        chain = await service.require_chain(db, principal.workspace_id, chain_id)
        return await service.show_chain(db, principal.workspace_id, chain)

    @post(
        "/{chain_id:uuid}/runs",
        operation_id="startChainRun",
        status_code=202,
        responses=errors(401, 403, 404, 409, 422),
        # the hot path of issue 20 (runs/s): the key and its answer are written in the run's own transaction
        opt={"idempotency": idempotency.IN_TRANSACTION},
    )
    async def start(
        self,
        request: Request[Any, Any, Any],
        chain_id: FromPath[uuid.UUID],
        data: JSONBody[RunIn],
        principal: NamedDependency[Principal],
        database: NamedDependency[Database],
    ) -> RunStarted:
        """Start a run of this chain version for a contact.

        Each step is decided when it is due: an opt-out or objection on the chain's purpose since the start ends
        the run, the `when` is evaluated, and the message goes through the send gate (and again at send time).
        Send with an `Idempotency-Key`: a retried request returns the first run and starts none again.
        """
        # on the driver pool, not the ORM session: the hot path of issue 20 (runs/s), measured in bench/chains.py
        async with database.driver() as connection, connection.transaction():
            started = RunStarted(
                run_id=await service.start_run_on_driver(connection, principal.workspace_id, chain_id, data)
            )
            await idempotency.keep_on_driver(connection, request, started, status=202)
        return started

    @post(
        "/{chain_id:uuid}/runs/batch",
        operation_id="startChainRuns",
        status_code=202,
        responses=errors(401, 403, 404, 409, 422),
        # as the single call: the request's key and answer are written in the runs' own transaction
        opt={"idempotency": idempotency.IN_TRANSACTION},
    )
    async def start_batch(
        self,
        request: Request[Any, Any, Any],
        chain_id: FromPath[uuid.UUID],
        data: JSONBody[RunsBatchIn],
        principal: NamedDependency[Principal],
        database: NamedDependency[Database],
    ) -> RunsBatchOut:
        """Start runs of this chain version for up to 1,000 contacts at once (a campaign's audience).

        Each item is what `POST /v1/chains/{id}/runs` takes (`contact`, `variables?`, `campaign?`) and an optional
        `key`, and starts exactly the run that call would start. The answer lists every item in request order,
        with its `index`: the `run_id`, or the `error` (`code`, `detail`) that call would have answered for it
        (`contact_not_found` for an unknown contact or one of another workspace, `contact_merged`,
        `variable_missing`, `validation_failed`); the other items start. An item's `key` names one run of this
        chain version: a batch sent again (another `Idempotency-Key`, the same item keys) answers the runs already
        started and starts nothing twice; the same key with another contact, variables or campaign answers
        `idempotency_key_reused` in its entry. A body that is not a list of 1 to 1,000 objects starts nothing
        (422). Send with an `Idempotency-Key`, as every creating POST.
        """
        # one transaction on one driver connection: the chain, the contacts, the keyed runs, all runs and steps
        async with database.driver() as connection, connection.transaction():
            answer = RunsBatchOut(
                runs=await service.start_runs_on_driver(connection, principal.workspace_id, chain_id, data.runs)
            )
            await idempotency.keep_on_driver(connection, request, answer, status=202)
        return answer

    @get("/{chain_id:uuid}/report", operation_id="getChainReport", responses=errors(401, 403, 404))
    async def report(
        self, chain_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> ChainReport:
        """How this chain version's runs went, step by step.

        Per step: how many runs reached it, were sent, skipped (by reason), ended by an opt-out, cancelled, are
        still waiting, and how many sent steps' messages converted.
        """
        return await service.chain_report(db, principal.workspace_id, chain_id)


class ChainRunController(Controller):
    """A chain run: each step's decision; cancel what is not yet decided."""

    path = "/chain-runs"
    tags = ["chains"]  # noqa: RUF012
    opt = {"scope": Scope.MESSAGES_SEND}  # noqa: RUF012

    @get("/{run_id:uuid}", operation_id="getChainRun", responses=errors(401, 403, 404))
    async def detail(
        self, run_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> RunOut:
        """The run and each step's decision.

        Pending (due when), sent (its message), skipped (why), cancelled, ended (by which ledger event).
        """
        run = await service.require_run(db, principal.workspace_id, run_id)
        return await service.show_run(db, principal.workspace_id, run)

    @delete("/{run_id:uuid}", operation_id="cancelChainRun", status_code=200, responses=errors(401, 403, 404))
    async def cancel(
        self, run_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> RunOut:
        """Cancel the steps not yet decided; a run already over is answered as it is."""
        async with db.begin():
            run = await service.cancel_run(db, principal.workspace_id, run_id)
            return await service.show_run(db, principal.workspace_id, run)
