"""``/v1/push``: app installations, web push subscriptions and the VAPID public key."""

from __future__ import annotations

import uuid

from litestar import Controller, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import ActorType
from app.ledger.service import Actor
from app.lib.auth import Principal, Scope
from app.lib.errors import again_if_raced
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.push import service
from app.push.schemas import AppInstallationIn, PushPointOut, VapidKeyOut, WebSubscriptionDelete, WebSubscriptionIn
from app.settings import Settings

# A signup form's backend may report permissions (scope `signup`); so may a key that writes consents.
_WRITERS = (Scope.SIGNUP, Scope.CONSENTS_WRITE)


def _actor(principal: Principal) -> Actor:
    return Actor(ActorType.API_KEY, str(principal.api_key_id))


class PushController(Controller):
    """App push and web push permissions."""

    path = "/push"
    tags = ["opt-in"]  # noqa: RUF012  # Litestar reads class attributes

    @put(
        "/app-installations/{installation_id:str}",
        operation_id="reportAppInstallation",
        responses=errors(401, 403, 404, 409, 422),
        opt={"scope": _WRITERS},
    )
    async def report_installation(
        self,
        installation_id: FromPath[str],
        data: JSONBody[AppInstallationIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> PushPointOut:
        """The installation, its device token and the OS permission for the listed purposes (the whole state).

        `granted`/`provisional` need the notice the app showed; `denied` ends every consent of the installation;
        a changed token updates the address. Reporting the same state again records nothing.
        """
        async with db.begin():
            return await service.report_installation(
                db,
                keys,
                principal.workspace_id,
                installation_id,
                data,
                actor=_actor(principal),
                trusted=principal.allows(Scope.CONSENTS_WRITE),
            )

    @delete(
        "/app-installations/{installation_id:str}",
        operation_id="deleteAppInstallation",
        responses=errors(401, 403, 404, 422),
        opt={"scope": _WRITERS},
    )
    async def uninstall(
        self, installation_id: FromPath[str], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> None:
        """The app was uninstalled: its consents end (`opted_out`) and the token is `expired`."""

        async def apply() -> None:
            async with db.begin():
                await service.uninstall(db, principal.workspace_id, installation_id, _actor(principal))

        # a merge of the contact committing meanwhile: taken again, under the survivor, as the web unsubscribe
        await again_if_raced(apply, what="push_uninstall")

    @get(
        "/web/vapid-public-key",
        operation_id="getVapidPublicKey",
        responses=errors(404),
        opt={"public": True},
        security=[{}],  # no API key: an empty requirement makes the bearer one optional
    )
    async def vapid_public_key(
        self, workspace: FromQuery[uuid.UUID], db: NamedDependency[AsyncSession], keys: NamedDependency[Keys]
    ) -> Response[VapidKeyOut]:
        """The workspace's VAPID public key for `pushManager.subscribe()` (no API key: websites fetch it)."""
        async with db.begin():
            key = await service.public_key(db, keys, workspace)
        return Response(
            VapidKeyOut(public_key=key),
            headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=300"},
        )

    @post(
        "/web-subscriptions",
        operation_id="createWebPushSubscription",
        status_code=201,
        responses=errors(401, 403, 404, 409, 422),
        opt={"scope": _WRITERS},
    )
    async def subscribe(
        self,
        data: JSONBody[WebSubscriptionIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> PushPointOut:
        """A browser's PushSubscription (https endpoint on a public host, P-256 `p256dh`, 16-byte `auth`).

        An endpoint that is not on a known push service (the operator's list, by default those of Chrome,
        Firefox, Edge and Safari), or whose host is or resolves to a private, loopback or other non-public address,
        is refused (`422 push_endpoint_not_allowed`).
        """
        async with db.begin():
            return await service.subscribe(
                db,
                keys,
                principal.workspace_id,
                data,
                _actor(principal),
                allow_private=settings.webhooks_allow_private,
                services=settings.web_push_services,
                trusted=principal.allows(Scope.CONSENTS_WRITE),
            )

    @delete(
        "/web-subscriptions",
        operation_id="deleteWebPushSubscription",
        responses=errors(401, 403, 404, 422),
        opt={"scope": _WRITERS},
    )
    async def unsubscribe(
        self,
        data: JSONBody[WebSubscriptionDelete],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
    ) -> None:
        """The browser's subscription ended: its consents end and the endpoint is `expired`."""

        async def apply() -> None:
            async with db.begin():
                await service.unsubscribe(db, principal.workspace_id, data.endpoint, _actor(principal))

        # a merge of the contact committing meanwhile: taken again, under the survivor (a page's script that is
        # closing does not send it again)
        await again_if_raced(apply, what="push_unsubscribe")
