"""``POST /v1/imports/robinson``: the Robinson list, streamed as CSV."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import ActorType
from app.imports.robinson import import_robinson
from app.imports.schemas import RobinsonReportOut
from app.ledger.service import Actor
from app.lib.auth import Principal, Scope
from app.lib.keys import Keys
from app.lib.openapi import errors


class ImportController(Controller):
    """Lists streamed in (scope `consents:write`)."""

    path = "/imports"
    tags = ["imports"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.CONSENTS_WRITE, "idempotent": False}  # noqa: RUF012  # the import is idempotent itself

    @post(
        "/robinson",
        operation_id="importRobinson",
        status_code=200,
        responses=errors(401, 403, 422),
        request_max_body_size=None,  # streamed in constant memory, whatever the size of the list
    )
    async def robinson(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> RobinsonReportOut:
        """Import a Robinson list (`text/csv`, UTF-8, `;` or `,`), streamed.

        Columns: street, postcode, city, name (or first_name and last_name), optional house_number and country;
        German headers (Straße, Hausnummer, PLZ, Ort, Vorname, Nachname) work too.

        Entries are kept as keyed hashes only. Known print addresses on the list become `objected`; addresses
        added later are suppressed. All or nothing; importing the same list again changes nothing.
        """
        actor = Actor(ActorType.API_KEY, str(principal.api_key_id))
        async with db.begin():
            report = await import_robinson(
                db, keys, principal.workspace_id, request.stream(), actor=actor, source="api"
            )
        return msgspec.convert(report, RobinsonReportOut, from_attributes=True)
