"""Starting an opt-in: the contact and address are found or created, ``signup`` is recorded with the notice."""

from __future__ import annotations

import uuid

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.identifiers import normalise_email, normalise_phone
from app.domain.model import Channel, PurposeKind, State, Trigger
from app.emails import service as emails
from app.emails.service import Outgoing
from app.ledger import repository as ledger
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.errors import InvalidInput
from app.lib.keys import Keys
from app.purposes.service import require_notice, require_purpose
from app.settings import Settings
from app.signups.schemas import Instructions, SignupIn, SignupOut
from app.workspaces.service import settings_of
from app.workspaces.settings import WorkspaceSettings


async def sign_up(
    session: AsyncSession,
    keys: Keys,
    app_settings: Settings,
    workspace_id: uuid.UUID,
    data: SignupIn,
    *,
    actor: Actor,
    tenant_records: bool = False,
) -> tuple[SignupOut, Outgoing | None]:
    """Record ``signup`` (state ``pending``); an address already opted in stays as it is.

    Email answers the confirmation mail to send once the caller's transaction has committed. ``tenant_records``:
    the caller's key may write consents (``consents:write`` or ``admin``), so an ``external_id`` it names is the
    tenant's own record, not a form's claim.
    """
    settings = await settings_of(session, workspace_id)
    channel = Channel(data.channel)
    if channel is Channel.EMAIL:
        value = normalise_email(data.address)
        instructions = None
    else:
        value = normalise_phone(data.address, settings.default_region)
        instructions = _instructions(settings, channel, data.purpose)
    purpose = await require_purpose(session, workspace_id, data.purpose)
    if purpose.kind != PurposeKind.MARKETING:
        raise InvalidInput(f"'{purpose.key}' is transactional and needs no opt-in.", code="purpose_not_consent_based")
    notice = await require_notice(session, workspace_id, data.notice_id)
    if channel.value not in notice.channels:
        raise InvalidInput(f"The notice was not written for the {channel} channel.", code="notice_mismatch")
    point = await _contact_point(
        session, keys, workspace_id, data, channel=channel, value=value, tenant_records=tenant_records
    )
    evidence = {
        **msgspec.to_builtins(data.evidence),
        "collection_method": f"web_form:{data.evidence.form_id or 'unknown'}",
    }
    if channel is Channel.EMAIL:
        outgoing = await emails.request_confirmation(
            session,
            keys,
            app_settings,
            workspace_id,
            point=point,
            purpose=purpose,
            notice=notice,
            evidence=evidence,
            actor=actor,
            client_ip=data.evidence.ip,
        )
        out = SignupOut(contact_id=point.contact_id, contact_point_id=point.id, state=State.PENDING)
        return out, outgoing
    await apply_changes(
        session,
        workspace_id,
        [Change(point, purpose.id, Trigger.SIGNUP, evidence, notice=notice)],
        actor,
        skip_not_allowed=True,  # already opted in: nothing to start, the same answer
    )
    # "pending" whatever the number's state: the person is told to text the start word either way, and a form key
    # must not learn whether a number is subscribed (API.md: no enumeration)
    out = SignupOut(
        contact_id=point.contact_id, contact_point_id=point.id, state=State.PENDING, instructions=instructions
    )
    return out, None


async def _contact_point(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    data: SignupIn,
    *,
    channel: Channel,
    value: str,
    tenant_records: bool,
) -> ContactPoint:
    """The address's contact point; the address identifies the person, so a known one keeps its contact.

    A new address stays unverified, whichever contact it joins: a form may name any ``external_id``, so the
    address is usable for transactional messages only once it proves itself (confirmation link, start word).
    Named for an ``external_id``, even that proof does not verify it (``attached_by_form``): anyone may type a
    customer's id beside an address of their own and confirm it, for a contact the tenant already has or, before
    the tenant's records name it, one the form creates (the records would then join it). The tenant's records
    (an import, a ``consents:write`` key) verify such an address; a signup made with such a key is one of them
    (``tenant_records``), so its confirmation verifies the address as any other.
    """
    point = await ledger.find_contact_point(session, workspace_id, channel, value)
    if point is not None:
        return point
    given = data.contact
    contact = await ledger.add_contact(session, workspace_id, given.external_id, given.locale, given.timezone)
    return await add_point(
        session,
        keys,
        workspace_id,
        contact_id=contact.id,
        channel=channel,
        value=value,
        attached_by_form=given.external_id is not None and not tenant_records,
    )


def _instructions(settings: WorkspaceSettings, channel: Channel, purpose_key: str) -> Instructions:
    sender = settings.phone.sms_from if channel is Channel.SMS else settings.phone.whatsapp_from
    if not sender:
        raise InvalidInput(
            f"This workspace has no {channel} sender configured (workspace settings phone.{channel}_from).",
            code="channel_not_configured",
        )
    keyword = next((word.upper() for word, key in settings.phone.start_words.items() if key == purpose_key), "START")
    number = sender.removeprefix("whatsapp:")
    return Instructions(send_keyword=keyword, to_number=number if number.startswith("+") else None)
