"""App push installations and web push subscriptions (CHANNEL_RULES.md §4, §5).

The permission the OS or browser reports becomes consent with the notice shown with it.
Reports are idempotent: an app reports its installation at every start, so a report that changes nothing records
nothing. A purpose already opted in stays as it is; one missing from the reported list is withdrawn.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.identifiers import normalise_installation_id, normalise_push_endpoint, valid_external_id
from app.domain.model import Channel, PurposeKind, Reachability, State, Trigger, VerifiedVia
from app.ledger import repository as ledger
from app.ledger.actions import withdraw_point
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Change, add_point, apply_changes, require_contact
from app.lib import outbound, vapid
from app.lib.errors import Conflict, InvalidInput, NotFound
from app.lib.ids import parse_uuid
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.purposes.models import Notice, Purpose
from app.purposes.service import require_notice, require_purpose
from app.push.schemas import AppInstallationIn, PurposeState, PushPointOut, WebSubscriptionIn
from app.workspaces import repository as workspaces
from app.workspaces.service import VAPID_KEY, sealing_context
from app.workspaces.settings import WorkspaceSettings


async def report_installation(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    installation_id: str,
    data: AppInstallationIn,
    *,
    actor: Actor,
    trusted: bool = False,
) -> PushPointOut:
    """Record the installation, its token and the OS permission for the purposes (``PUT`` semantics).

    The installation is verified (transactional pushes may go to it) once the OS reports a permission, or when
    a key that may write consents (``trusted``) reports it: a ``signup`` key alone does not verify it.
    """
    value = normalise_installation_id(installation_id)
    details = {"platform": data.platform, "token": data.token}
    point = await _point(
        session, keys, workspace_id, Channel.APP_PUSH, value, contact_ref=data.contact, details=details, trusted=trusted
    )
    if data.permission in ("granted", "provisional"):
        await ledger.mark_verified(session, point.id, VerifiedVia.PERMISSION, utcnow())
    elif trusted:
        await ledger.mark_verified(session, point.id, VerifiedVia.API, utcnow())
    evidence: dict[str, Any] = {
        **msgspec.to_builtins(data.evidence),
        "os_permission": data.permission,
        "platform": data.platform,
        "app_version": data.app_version,
        "os_version": data.os_version,
    }
    granted = data.permission in ("granted", "provisional")
    notices = [*([data.notice_id] if data.notice_id else []), *data.notice_ids]
    await _apply_permission(
        session,
        workspace_id,
        point,
        purposes=data.purposes,
        notices=notices,
        granted=granted,
        evidence=evidence,
        actor=actor,
    )
    return await _out(session, point)


async def uninstall(session: AsyncSession, workspace_id: uuid.UUID, installation_id: str, actor: Actor) -> None:
    """The app was removed: every consent of the installation ends, its token is no longer reachable."""
    point = await ledger.find_contact_point(
        session, workspace_id, Channel.APP_PUSH, normalise_installation_id(installation_id)
    )
    if point is None:
        raise NotFound("No installation with this id.", code="installation_not_found")
    await _end(session, workspace_id, point, trigger=Trigger.UNINSTALLED, reported="uninstalled", actor=actor)


async def subscribe(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    data: WebSubscriptionIn,
    actor: Actor,
    *,
    allow_private: bool = False,
    services: tuple[str, ...] | None = None,
    trusted: bool = False,
) -> PushPointOut:
    """A browser's PushSubscription after the person allowed notifications: validated, recorded, opted in.

    ``services``: the push services' host patterns an endpoint must match (``None``: any public host).
    """
    subscription = data.subscription
    endpoint = normalise_push_endpoint(subscription.endpoint)
    await _check_endpoint(endpoint, allow_private=allow_private, services=services)
    problem = vapid.check_subscription_keys(subscription.keys.p256dh, subscription.keys.auth)
    if problem == "invalid_p256dh":
        raise InvalidInput("keys.p256dh is not a base64url P-256 public key (65 bytes).", code=problem)
    if problem == "invalid_auth_secret":
        raise InvalidInput("keys.auth is not a base64url 16-byte secret.", code=problem)
    details = {
        "p256dh": subscription.keys.p256dh,
        "auth": subscription.keys.auth,
        "expiration_time": subscription.expiration_time,
    }
    point = await _point(
        session,
        keys,
        workspace_id,
        Channel.WEB_PUSH,
        endpoint,
        contact_ref=data.contact,
        details=details,
        trusted=trusted,
    )
    # the browser made the subscription after the person allowed notifications: the endpoint is theirs
    await ledger.mark_verified(session, point.id, VerifiedVia.PERMISSION, utcnow())
    evidence = {**msgspec.to_builtins(data.evidence), "browser_permission": "granted"}
    notices = [*([data.notice_id] if data.notice_id else []), *data.notice_ids]
    await _apply_permission(
        session,
        workspace_id,
        point,
        purposes=data.purposes,
        notices=notices,
        granted=True,
        evidence=evidence,
        actor=actor,
        withdraw_missing=False,
    )
    return await _out(session, point)


async def unsubscribe(session: AsyncSession, workspace_id: uuid.UUID, endpoint: str, actor: Actor) -> None:
    """The browser's subscription is gone (the person unsubscribed or blocked notifications)."""
    point = await ledger.find_contact_point(session, workspace_id, Channel.WEB_PUSH, normalise_push_endpoint(endpoint))
    if point is None:
        raise NotFound("No subscription with this endpoint.", code="subscription_not_found")
    await _end(session, workspace_id, point, trigger=Trigger.PERMISSION_REVOKED, reported="unsubscribed", actor=actor)


async def _end(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    point: ContactPoint,
    *,
    trigger: Trigger,
    reported: str,
    actor: Actor,
) -> None:
    """The installation or subscription is gone: its consents end and the address is no longer reachable."""
    await withdraw_point(
        session, workspace_id, point, trigger=trigger, evidence={"reported": reported}, actor=actor, repeat=False
    )
    await ledger.set_reachability(session, point.id, Reachability.EXPIRED.value, utcnow())


async def public_key(session: AsyncSession, keys: Keys, workspace_id: uuid.UUID) -> str:
    """The workspace's VAPID public key, generated (and its private key sealed) on first use.

    A public, anonymous endpoint: it reads without a lock; only a missing key locks the workspace row, and the
    key is looked for again under the lock (concurrent first uses generate one key, not several).
    """
    workspace = await workspaces.get_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound("Unknown workspace.", code="workspace_not_found")
    known = WorkspaceSettings.load(workspace.settings).web_push.vapid_public_key
    if known:
        return known
    workspace = await workspaces.lock_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound("Unknown workspace.", code="workspace_not_found")
    settings = WorkspaceSettings.load(workspace.settings)
    if settings.web_push.vapid_public_key:
        return settings.web_push.vapid_public_key
    public, private = vapid.generate()
    sealed = keys.seal(private, sealing_context(workspace_id, VAPID_KEY))
    web_push = msgspec.structs.replace(settings.web_push, vapid_public_key=public, vapid_private_key_sealed=sealed)
    await workspaces.save_settings(session, workspace_id, msgspec.structs.replace(settings, web_push=web_push).dump())
    return public


def private_key(keys: Keys, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> str | None:
    """The VAPID private key (base64url) for sending, unsealed; ``None`` before the first subscription."""
    sealed = settings.web_push.vapid_private_key_sealed
    return keys.unseal(sealed, sealing_context(workspace_id, VAPID_KEY)) if sealed else None


async def _point(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    channel: Channel,
    value: str,
    *,
    contact_ref: str | None,
    details: Mapping[str, Any],
    trusted: bool,
) -> ContactPoint:
    """The installation's or subscription's contact point, created or updated (a new token is reachable).

    A new one that a ``signup`` key (not ``trusted``) names for a contact is ``attached_by_form``: the OS or
    browser permission then proves the device, not that it is that contact's (see
    :func:`app.ledger.repository.mark_verified`). Such a key naming an external id nobody has creates that
    contact, as a sign-up does, so its answers do not tell which customer ids exist.
    """
    contact = None
    if contact_ref and not trusted and parse_uuid(contact_ref) is None:
        if not valid_external_id(contact_ref):
            raise InvalidInput(
                "contact: an external id has no '/' or control characters and is not '.' or '..'.",
                code="invalid_external_id",
            )
        contact = await ledger.add_contact(session, workspace_id, contact_ref, None, None)
    elif contact_ref:
        contact = await require_contact(session, workspace_id, contact_ref)
    point = await ledger.find_contact_point(session, workspace_id, channel, value)
    if point is None:
        attached_by_form = contact is not None and not trusted
        if contact is None:
            contact = await ledger.add_contact(session, workspace_id, None, None, None)
        return await add_point(
            session,
            keys,
            workspace_id,
            contact_id=contact.id,
            channel=channel,
            value=value,
            details=dict(details),
            attached_by_form=attached_by_form,
        )
    if contact is not None and point.contact_id != contact.id:
        raise Conflict(
            "This installation or subscription is recorded for another contact.", code="push_point_of_another_contact"
        )
    if any(point.details.get(name) != new for name, new in details.items()):
        await ledger.update_details(session, point.id, {**point.details, **details})
        if point.reachability != Reachability.REACHABLE:
            await ledger.set_reachability(session, point.id, Reachability.REACHABLE.value, utcnow())
    return point


async def _apply_permission(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    point: ContactPoint,
    *,
    purposes: Sequence[str],
    notices: Sequence[uuid.UUID],
    granted: bool,
    evidence: Mapping[str, Any],
    actor: Actor,
    withdraw_missing: bool = True,
) -> None:
    """Grant the listed purposes (each with its notice) or record the denial; withdraw what is no longer listed."""
    wanted: list[Purpose] = []
    for key in dict.fromkeys(purposes):
        purpose = await require_purpose(session, workspace_id, key)
        if purpose.kind != PurposeKind.MARKETING:
            raise InvalidInput(f"'{key}' is transactional and needs no consent.", code="purpose_not_consent_based")
        wanted.append(purpose)
    by_purpose = await _notices(session, workspace_id, notices, Channel(point.channel)) if granted else {}
    states = {row.purpose_id: State(row.state) for row in await ledger.consents_of_point(session, point.id)}
    changes: list[Change] = []
    for purpose in wanted:
        current = states.get(purpose.id, State.NONE)
        if granted and current is not State.OPTED_IN:
            notice = by_purpose.get(purpose.id)
            if notice is None:
                raise InvalidInput(
                    "The permission is consent only with the notice the person saw: send the id of "
                    f"'{purpose.key}''s notice for this channel as 'notice_id' (or one per purpose in 'notice_ids').",
                    code="notice_required",
                )
            changes.append(Change(point, purpose.id, Trigger.PERMISSION_GRANTED, evidence, notice=notice))
        elif not granted and current is State.OPTED_IN:
            changes.append(Change(point, purpose.id, Trigger.PERMISSION_REVOKED, evidence))
        elif not granted and current is State.NONE:
            changes.append(Change(point, purpose.id, Trigger.PERMISSION_DENIED, evidence))
    listed = {purpose.id for purpose in wanted}
    if withdraw_missing:  # the report is the whole state: what it no longer lists has ended
        trigger = Trigger.UNSUBSCRIBE if granted else Trigger.PERMISSION_REVOKED
        changes += [
            Change(point, purpose_id, trigger, evidence)
            for purpose_id, current in states.items()
            if purpose_id is not None and purpose_id not in listed and current is State.OPTED_IN
        ]
    await apply_changes(session, workspace_id, changes, actor)


async def _notices(
    session: AsyncSession, workspace_id: uuid.UUID, notice_ids: Sequence[uuid.UUID], channel: Channel
) -> dict[uuid.UUID, Notice]:
    found: dict[uuid.UUID, Notice] = {}
    for notice_id in dict.fromkeys(notice_ids):
        notice = await require_notice(session, workspace_id, notice_id)
        if channel.value not in notice.channels:
            raise InvalidInput(f"Notice {notice_id} was not written for {channel}.", code="notice_mismatch")
        found[notice.purpose_id] = notice
    return found


async def _out(session: AsyncSession, point: ContactPoint) -> PushPointOut:
    fresh = await ledger.reload_point(session, point.id)
    purposes: dict[uuid.UUID | None, str] = {p.id: p.key for p in await _purposes_of(session, fresh)}
    rows = sorted(await ledger.consents_of_point(session, point.id), key=lambda r: purposes.get(r.purpose_id, ""))
    return PushPointOut(
        contact_id=fresh.contact_id,
        contact_point_id=fresh.id,
        reachability=Reachability(fresh.reachability),
        consents=[PurposeState(purpose=purposes.get(r.purpose_id), state=State(r.state)) for r in rows],
    )


async def _purposes_of(session: AsyncSession, point: ContactPoint) -> Sequence[Purpose]:
    from app.purposes import repository as purposes  # noqa: PLC0415

    return await purposes.list_purposes(session, point.workspace_id)


_RESOLVE_SECONDS = 3.0


async def _check_endpoint(endpoint: str, *, allow_private: bool, services: tuple[str, ...] | None) -> None:
    """Refuse an endpoint off the known push services, or on an address that is not public (the browser chose it).

    The host must match the operator's list of push services (none: any host), and it must not be, or resolve
    to, a private, loopback or other special-use address. A name that does not resolve now is taken: push services
    are public, and the outbound guard checks the address again at every send (the connection goes to the address
    it checked).
    """
    try:
        outbound.check_host_listed(endpoint, services)
        if not outbound.plain_push_endpoint(endpoint):
            raise InvalidInput(
                "subscription.endpoint is not allowed: a push endpoint is https://host[:port]/path, as browsers give"
                " it (no user info, brackets or percent signs in the host; a path after it).",
                code="push_endpoint_not_allowed",
            )
        async with asyncio.timeout(_RESOLVE_SECONDS):
            await outbound.check_destination(endpoint, allow_private=allow_private)
    except outbound.HostUnresolved:
        return
    except outbound.OutboundRefused as exc:
        raise InvalidInput(f"subscription.endpoint is not allowed: {exc}", code="push_endpoint_not_allowed") from None
    except TimeoutError:
        return
