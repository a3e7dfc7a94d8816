"""``/v1/webhook-subscriptions``: where a workspace's change events are sent (scope `admin`)."""

from __future__ import annotations

import uuid

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import Principal, Scope
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.settings import Settings
from app.webhooks import service
from app.webhooks.schemas import SubscriptionIn, SubscriptionOut


class WebhookSubscriptionController(Controller):
    """Outbound change events, signed like the inbound email webhook (`X-Consent-Signature`) and retried."""

    path = "/webhook-subscriptions"
    tags = ["webhooks"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.ADMIN}  # noqa: RUF012

    # an Idempotency-Key repeat does not get the answer again: it holds the secret, which is kept only sealed
    @post(
        operation_id="createWebhookSubscription",
        status_code=201,
        responses=errors(401, 403, 409, 422),
        opt={"answer_holds_secret": True},
    )
    async def create(
        self,
        data: JSONBody[SubscriptionIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> SubscriptionOut:
        """Send `events` to `url` (https, public address). The answer holds the signing secret once; stored sealed.

        Each delivery is a POST of `{id, type, created_at, data}` with `X-Consent-Signature: t=<unix>,v1=<hex>`
        (HMAC-SHA256 of `"<t>." + body` with the secret), `X-Consent-Event-Id` and `X-Consent-Event-Type`. Any 2xx
        answer delivers; anything else is retried with exponential backoff (about a day and a half), so a
        receiver must accept the same event id twice. `consent.changed` carries the ledger event: `seq`,
        `contact_id`, `external_id`, `contact_point_id`, `channel`, `purpose`, `trigger`, `from_state`, `to_state`,
        `legal_basis`, `occurred_at` (no address). `message.status` carries each step of a message's history:
        `message_id`, `delivery_id`, `contact_id`, `external_id`, `purpose`, `channel`, `status` (`queued`, `sent`,
        `delivered`, `failed`, `blocked_at_send`, `retry_scheduled`, `unknown`, …), `provider_message_id`, `error`,
        `at`.
        """
        async with db.begin():
            return await service.create(
                db,
                keys,
                principal.workspace_id,
                data,
                allow_http=settings.webhooks_allow_http,
                allow_private=settings.webhooks_allow_private,
            )

    @get(operation_id="listWebhookSubscriptions", responses=errors(401, 403))
    async def list(
        self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> list[SubscriptionOut]:
        """The workspace's subscriptions, with how many deliveries wait (`pending`) and failed for good (`failed`)."""
        return await service.list_subscriptions(db, principal.workspace_id)

    @delete("/{subscription_id:uuid}", operation_id="deleteWebhookSubscription", responses=errors(401, 403, 404))
    async def remove(
        self,
        subscription_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
    ) -> None:
        """Stop sending: the subscription and what it still had to deliver are removed."""
        async with db.begin():
            await service.delete(db, principal.workspace_id, subscription_id)
