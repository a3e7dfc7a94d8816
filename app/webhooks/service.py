"""Webhook subscriptions: create (the secret sealed, shown once), list, delete."""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.errors import InvalidInput, NotFound
from app.lib.keys import Keys
from app.webhooks import repository
from app.webhooks.destinations import DestinationRefused, check_destination
from app.webhooks.models import WebhookSubscription
from app.webhooks.schemas import SubscriptionIn, SubscriptionOut
from app.webhooks.status import PENDING, WebhookStatus

_LOOPBACK_NAMES = frozenset({"localhost"})


def sealing_context(subscription_id: uuid.UUID) -> str:
    """What a subscription's secret is sealed to (it cannot be moved to another row)."""
    return f"webhook-secret:{subscription_id}"


def check_url(url: str, *, allow_http: bool) -> str:
    """An https URL with a host; plain http only to the loopback and only where the settings allow it."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
        raise InvalidInput(
            "The webhook URL must be an https URL with a host (no user info).", code="invalid_webhook_url"
        )
    if parts.scheme == "http" and not (allow_http and _is_loopback(parts.hostname)):
        raise InvalidInput(
            "Webhook deliveries carry personal data: the URL must use https.", code="webhook_url_not_https"
        )
    return url


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def create(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    data: SubscriptionIn,
    *,
    allow_http: bool,
    allow_private: bool,
) -> SubscriptionOut:
    """A new subscription; the answer holds the secret (generated when not given), never shown again."""
    url = check_url(data.url, allow_http=allow_http)
    try:
        await check_destination(url, allow_private=allow_private)
    except DestinationRefused as exc:
        raise InvalidInput(str(exc), code="webhook_destination_not_public") from None
    secret = data.secret or f"whsec_{secrets.token_urlsafe(32)}"
    subscription_id = uuid.uuid4()
    row = await repository.add_subscription(
        session,
        WebhookSubscription(
            id=subscription_id,
            workspace_id=workspace_id,
            url=url,
            events=sorted(set(data.events)),
            secret_sealed=keys.seal(secret, sealing_context(subscription_id)),
        ),
    )
    return SubscriptionOut(id=row.id, url=row.url, events=row.events, created_at=row.created_at, secret=secret)


async def list_subscriptions(session: AsyncSession, workspace_id: uuid.UUID) -> list[SubscriptionOut]:
    """The workspace's subscriptions with how many deliveries wait and how many failed for good."""
    rows = await repository.subscriptions_of(session, workspace_id)
    counts = await repository.open_counts(session, workspace_id)
    return [
        SubscriptionOut(
            id=row.id,
            url=row.url,
            events=row.events,
            created_at=row.created_at,
            pending=sum(counts.get((row.id, status), 0) for status in PENDING),
            failed=counts.get((row.id, WebhookStatus.FAILED), 0),
        )
        for row in rows
    ]


async def delete(session: AsyncSession, workspace_id: uuid.UUID, subscription_id: uuid.UUID) -> None:
    """Remove a subscription and what it still had to deliver."""
    if not await repository.delete_subscription(session, workspace_id, subscription_id):
        raise NotFound("No webhook subscription with this id.", code="webhook_subscription_not_found")
