"""``/v1/erasure-requests`` (scope ``admin``): the erasure requests made on the preference centre.

Only where the workspace reviews erasures (``erasure_review``) do requests wait here; each is due one month after
it was made. Executed at once otherwise, they are listed as ``done`` all the same, as the record of the request.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.params import Parameter as QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Principal, Scope
from app.lib.ids import parse_uuid
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.privacy import requests
from app.privacy.schemas import ErasureRequestOut, ErasureRequestStatus
from app.settings import Settings


class ErasureRequestController(Controller):
    """Erasure requests from the preference centre: list, execute, reject (scope `admin`)."""

    path = "/erasure-requests"
    tags = ["consents"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.ADMIN}  # noqa: RUF012

    @get(operation_id="listErasureRequests", responses=errors(400, 401, 403))
    async def list_requests(
        self,
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        status: FromQuery[ErasureRequestStatus | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[ErasureRequestOut]:
        """The workspace's erasure requests, earliest due first (`status=pending`: the ones waiting for you)."""
        async with db.begin():
            return await requests.list_requests(db, principal.workspace_id, status, limit)

    @post(
        "/{request_id:str}/execute",
        operation_id="executeErasureRequest",
        status_code=200,
        responses=errors(401, 403, 404, 409),
    )
    async def execute(
        self,
        request_id: FromPath[str],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> ErasureRequestOut:
        """Execute a pending request: the contact is erased as by `DELETE /v1/contacts/{contact}`.

        The ledger's `erasure` events carry the person as actor and the request's evidence (source, link, IP
        address, user agent) with your key as `approved_by`; the request links the erasure's record
        (`erasure_id`). `409 erasure_request_decided` when it was executed or rejected already.
        """
        async with db.begin():
            return await requests.execute(
                db,
                keys,
                principal.workspace_id,
                parse_uuid(request_id),
                key_id=principal.api_key_id,
                outbox=settings.data_dir / "outbox",
            )

    @post(
        "/{request_id:str}/reject",
        operation_id="rejectErasureRequest",
        status_code=200,
        responses=errors(401, 403, 404, 409),
    )
    async def reject(
        self, request_id: FromPath[str], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> ErasureRequestOut:
        """Reject a pending request (an exception of Art. 17(3) applies; tell the person why, Art. 12(4)).

        The request's evidence (IP address, user agent) is deleted; the record of the request stays.
        """
        async with db.begin():
            return await requests.reject(
                db, principal.workspace_id, parse_uuid(request_id), key_id=principal.api_key_id
            )
