"""``/v1/purposes``."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Principal, Scope
from app.lib.openapi import errors
from app.purposes import repository, service
from app.purposes.models import Purpose
from app.purposes.schemas import PurposeCreate, PurposeOut


def _out(purpose: Purpose) -> PurposeOut:
    return PurposeOut(
        id=purpose.id,
        key=purpose.key,
        name=purpose.name,
        kind=purpose.kind,  # type: ignore[arg-type]  # the CHECK constraint keeps it to the Literal
        created_at=purpose.created_at,
    )


class PurposeController(Controller):
    """What messages are for (scope ``admin``)."""

    path = "/purposes"
    tags = ["setup"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.ADMIN}  # noqa: RUF012

    @post(operation_id="createPurpose", status_code=201, responses=errors(401, 403, 409, 422))
    async def create(
        self, data: JSONBody[PurposeCreate], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> PurposeOut:
        """Create a purpose; its key is what callers name it by."""
        async with db.begin():
            purpose = await service.create_purpose(db, principal.workspace_id, data.key, data.name, data.kind)
        return _out(purpose)

    @get(operation_id="listPurposes", responses=errors(401, 403))
    async def list_purposes(
        self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> list[PurposeOut]:
        """All purposes of the workspace."""
        return [_out(p) for p in await repository.list_purposes(db, principal.workspace_id)]
