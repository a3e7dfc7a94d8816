"""``/v1/purposes``."""

from __future__ import annotations

import uuid

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel
from app.lib.auth import Principal, Scope
from app.lib.openapi import answer, errors
from app.purposes import repository, service
from app.purposes.models import Notice, Purpose
from app.purposes.schemas import NoticeCreate, NoticeOut, PurposeCreate, PurposeOut
from app.settings import Settings


def purpose_out(purpose: Purpose) -> PurposeOut:
    """A purpose as the API shows it."""
    return PurposeOut(
        id=purpose.id,
        key=purpose.key,
        name=purpose.name,
        kind=purpose.kind,  # type: ignore[arg-type]  # the CHECK constraint keeps it to the Literal
        created_at=purpose.created_at,
        similar_products_of=list(purpose.similar_products_of),
        validity=purpose.validity,
        inactivity=purpose.inactivity,
        repermission_before=purpose.repermission_before,
    )


class PurposeController(Controller):
    """What messages are for (scope ``admin``)."""

    path = "/purposes"
    tags = ["setup"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.ADMIN}  # noqa: RUF012

    @post(operation_id="createPurpose", status_code=201, responses=errors(401, 403, 409, 422))
    async def create(
        self,
        data: JSONBody[PurposeCreate],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> PurposeOut:
        """Create a purpose; its key is what callers name it by.

        A workspace has at most 100 purposes (the server's `CONSENT_PURPOSES_MAX`): one more answers 409
        `too_many_purposes` with the `limit`.
        """
        async with db.begin():
            purpose = await service.create_purpose(
                db,
                principal.workspace_id,
                data.key,
                data.name,
                data.kind,
                similar_products_of=data.similar_products_of,
                validity=data.validity,
                inactivity=data.inactivity,
                repermission_before=data.repermission_before,
                limit=settings.purposes_max,
            )
        return purpose_out(purpose)

    @get(operation_id="listPurposes", responses=errors(401, 403))
    async def list_purposes(
        self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> list[PurposeOut]:
        """All purposes of the workspace."""
        return [purpose_out(p) for p in await repository.list_purposes(db, principal.workspace_id)]


def _notice_out(notice: Notice, purpose_key: str) -> NoticeOut:
    return NoticeOut(
        notice_id=notice.id,
        purpose=purpose_key,
        channels=[Channel(c) for c in notice.channels],
        locale=notice.locale,
        version=notice.version,
        sha256=notice.sha256,
        text=notice.text,
        created_at=notice.created_at,
    )


class NoticeController(Controller):
    """Immutable, versioned consent texts (create: `admin`; read: any key)."""

    path = "/notices"
    tags = ["setup"]  # noqa: RUF012

    @post(
        operation_id="createNotice",
        status_code=201,
        responses={
            **errors(401, 403, 404, 422),
            **answer(200, NoticeOut, "The newest version already has this text and these channels: that version"),
        },
        opt={"scope": Scope.ADMIN},
    )
    async def create(
        self, data: JSONBody[NoticeCreate], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> Response[NoticeOut]:
        """A new version (201); the newest version's exact text and channels again return it (200)."""
        async with db.begin():
            notice, created = await service.create_notice(
                db,
                principal.workspace_id,
                purpose_key=data.purpose,
                channels=[c.value for c in data.channels],
                locale=data.locale,
                text=data.text,
            )
        return Response(_notice_out(notice, data.purpose), status_code=201 if created else 200)

    @get(operation_id="listNotices", responses=errors(401, 404))
    async def list_notices(
        self,
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        purpose: FromQuery[str | None] = None,
    ) -> list[NoticeOut]:
        """Notices of the workspace (of one purpose), by purpose, locale and version."""
        by_id = await repository.purposes_by_id(db, principal.workspace_id)
        purpose_id = (await service.require_purpose(db, principal.workspace_id, purpose)).id if purpose else None
        return [
            _notice_out(n, by_id[n.purpose_id].key)
            for n in await repository.list_notices(db, principal.workspace_id, purpose_id)
        ]

    @get("/{notice_id:uuid}", operation_id="getNotice", responses=errors(401, 404))
    async def get_notice(
        self, notice_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> NoticeOut:
        """One notice with its exact text."""
        notice = await service.require_notice(db, principal.workspace_id, notice_id)
        by_id = await repository.purposes_by_id(db, principal.workspace_id)
        return _notice_out(notice, by_id[notice.purpose_id].key)
