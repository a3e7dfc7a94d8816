"""Inbound SMS/WhatsApp messages and status callbacks from Twilio, after their signature was checked.

- Idempotent on ``MessageSid``: the first delivery claims the id in the same transaction as its consent
  changes; a retry (or a concurrent duplicate, which waits on the claim) gets the stored reply and records
  nothing new.
- STOP withdraws every marketing consent of that number on that channel (the channel-level row included,
  so purposes created later are covered); a STOP from an unknown number is recorded too.
- A start word opts in the purposes with a pending signup, or the purpose of a workspace start word; with no
  pending signup only where the workspace allows keyword-only opt-in.
- Reachability mirrors Twilio both ways: 21610 marks the number ``provider_blocked`` and Twilio's own opt-in words
  (START, YES, UNSTOP, or ``OptOutType=START`` for an Advanced Opt-Out keyword) lift it, as they lift Twilio's block
  (CHANNEL_RULES.md §0.3, §2.2); the error codes of a number that cannot receive mark it ``undeliverable``
  (:data:`~app.channels._twilio.UNREACHABLE_CODES`), and any message texted from it lifts that (a recycled
  number's new owner opts in so).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.twiml.messaging_response import MessagingResponse

from app.channels._twilio import UNREACHABLE_CODES
from app.domain.chain import canonical_json
from app.domain.identifiers import InvalidIdentifier, normalise_phone
from app.domain.keywords import Classification, Intent, classify
from app.domain.model import ActorType, Channel, Reachability, State, SuppressionReason, Trigger
from app.ledger import repository as ledger
from app.ledger.actions import identifier_suppression_rows, withdraw_point
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Applied, Change, add_point, apply_changes, single_change_on_driver
from app.lib.ids import parse_uuid
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.lib.repository import claim_callback
from app.messages import repository as messages_repository
from app.messages import service as messages
from app.messages import signals
from app.purposes import repository as purposes
from app.twilio import repository
from app.workspaces.settings import WorkspaceSettings, reply_text

log = structlog.get_logger(__name__)
PROVIDER = "twilio"
SUBJECT = Actor(ActorType.SUBJECT)
TWILIO = Actor(ActorType.PROVIDER, PROVIDER)
#: A STOP is attributed to the last SMS or WhatsApp message sent to the number within this time (reports).
STOP_ATTRIBUTION = timedelta(days=7)
ERROR_STOPPED = "21610"  # "Attempt to send to unsubscribed recipient": the person texted STOP to Twilio
#: The words with which Twilio lifts its STOP block by default (exact single word, any case; CHANNEL_RULES.md §2.2).
TWILIO_OPT_IN_WORDS = frozenset({"start", "yes", "unstop"})


def twiml(text: str | None) -> str:
    """A TwiML answer: one message, or an empty ``<Response/>`` when there is nothing to say."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)


def channel_and_number(address: str, region: str) -> tuple[Channel, str]:
    """``whatsapp:+49…`` is the WhatsApp channel, a plain number SMS; the number comes back as E.164."""
    channel, _ = channel_and_raw_number(address)
    return channel, normalise_phone(address, region)


def channel_and_raw_number(address: str) -> tuple[Channel, str]:
    """The channel of a Twilio ``From``/``To`` and its number as written (without ``whatsapp:``), not checked."""
    raw = address.strip()
    if raw.lower().startswith("whatsapp:"):
        return Channel.WHATSAPP, raw.split(":", 1)[1].strip()
    return Channel.SMS, raw


@dataclass(frozen=True, slots=True)
class Inbound:
    """The parameters of an inbound message that matter here (all of them are in ``raw``)."""

    message_sid: str
    sender: str
    recipient: str
    body: str
    raw: Mapping[str, Sequence[str]]

    @property
    def digest(self) -> str:
        """SHA-256 of every received parameter: what was signed, without storing all of it."""
        return hashlib.sha256(canonical_json({k: sorted(v) for k, v in self.raw.items()})).hexdigest()

    def first(self, name: str) -> str | None:
        """One parameter, if present."""
        values = self.raw.get(name)
        return values[0] if values else None


async def handle_inbound(
    session: AsyncSession, keys: Keys, workspace_id: uuid.UUID, settings: WorkspaceSettings, message: Inbound
) -> str:
    """Process one inbound message in the caller's transaction; returns the TwiML reply."""
    reading = _read(message, settings)
    try:
        channel, number = channel_and_number(message.sender, settings.default_region)
    except InvalidIdentifier:
        return await _unreadable(session, keys, workspace_id, settings, message, reading)
    if reading.intent is Intent.OPT_OUT and single_change_on_driver():
        return await _stop_on_driver(session, keys, workspace_id, settings, message, channel, number, reading)
    claimed = await repository.claim_inbound(session, workspace_id, PROVIDER, message.message_sid, utcnow())
    if claimed is None:
        return await _duplicate(session, workspace_id, message)
    point = await ledger.find_contact_point(session, workspace_id, channel, number)
    if point is not None:
        await _reachable_again(session, workspace_id, point, message)
    language = reading.language or await _contact_language(session, point) or settings.locale
    evidence = _evidence(message, reading)
    if reading.intent is Intent.OPT_OUT:
        if point is not None:
            evidence |= await _attribution(session, workspace_id, point)
        point = point or await _new_point(session, keys, workspace_id, channel, number)
        applied = await withdraw_point(
            session, workspace_id, point, trigger=Trigger.STOP_WORD, evidence=evidence, actor=SUBJECT
        )
        text_out = _stop_text(workspace_id, settings, applied, language)
    elif reading.intent is Intent.HELP:
        text_out = _reply(workspace_id, settings, "help", language, brand=_brand(settings))
    elif reading.intent is Intent.OPT_IN:
        point, names = await _opt_in(
            session,
            keys,
            workspace_id,
            settings,
            channel=channel,
            number=number,
            point=point,
            reading=reading,
            evidence=evidence,
        )
        kind = "opt_in" if names else "not_subscribed"
        text_out = _reply(workspace_id, settings, kind, language, brand=_brand(settings), purposes=", ".join(names))
    else:
        text_out = None
    reply = _twiml_or_none(workspace_id, reading, text_out)
    await repository.finish_inbound(
        session,
        workspace_id,
        claimed,
        channel=channel.value,
        point_id=point.id if point else None,
        intent=reading.intent.value,
        reply=reply,
    )
    log.info("twilio_inbound", workspace_id=str(workspace_id), channel=channel.value, intent=reading.intent.value)
    return reply


async def _stop_on_driver(  # noqa: PLR0917  # handle_inbound's, with what it read of the message
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    settings: WorkspaceSettings,
    message: Inbound,
    channel: Channel,
    number: str,
    reading: Classification,
) -> str:
    """A STOP where a sealer runs: :func:`handle_inbound`'s way for it, in four statements on the driver connection.

    The claim with the number, its contact's locale and the message it answers (one statement), the withdrawal's
    two (``withdraw_point``), the reply stored (one): the same rows as the statements through the session.
    """
    driver = await ledger.transaction_driver(session)
    now = utcnow()
    found = await repository.claim_stop(
        session,
        driver,
        workspace_id,
        PROVIDER,
        message.message_sid,
        now,
        channel.value,
        number,
        since=now - STOP_ATTRIBUTION,
    )
    if found is None:
        return await _duplicate(session, workspace_id, message)
    point = found.point
    if point is not None:
        await _reachable_again(session, workspace_id, point, message)
    language = reading.language or _language_of(found.locale) or settings.locale
    evidence = _evidence(message, reading)
    if point is not None and found.attributed is not None:
        evidence |= _attributed(*found.attributed)
    point = point or await _new_point(session, keys, workspace_id, channel, number)
    applied = await withdraw_point(
        session, workspace_id, point, trigger=Trigger.STOP_WORD, evidence=evidence, actor=SUBJECT
    )
    reply = _twiml_or_none(workspace_id, reading, _stop_text(workspace_id, settings, applied, language))
    await repository.finish_inbound_on_driver(
        driver or await ledger.transaction_driver(session),
        workspace_id,
        found.claim_id,
        channel=channel.value,
        point_id=point.id,
        intent=reading.intent.value,
        reply=reply,
    )
    log.info("twilio_inbound", workspace_id=str(workspace_id), channel=channel.value, intent=reading.intent.value)
    return reply


#: A number in E.164 form that the phone-number library may not know (yet): a STOP from it is still honoured.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


async def _unreadable(  # noqa: PLR0917  # handle_inbound's, with what it read of the message
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    settings: WorkspaceSettings,
    message: Inbound,
    reading: Classification,
) -> str:
    """A message from a sender the phone-number library refuses: claimed, nothing recorded in the ledger.

    A STOP from a number in E.164 form (one of a range the library's data does not list yet) suppresses every
    marketing purpose for that number on its channel, as for a number no contact has: should the numbering data
    come to accept it, nothing is sent to it. The stored message (intent ``opt_out``) is the proof; the first STOP
    gets the confirmation, as for a known number. Any other message is answered with nothing.
    """
    claimed = await repository.claim_inbound(session, workspace_id, PROVIDER, message.message_sid, utcnow())
    if claimed is None:
        return await _duplicate(session, workspace_id, message)
    channel, number = channel_and_raw_number(message.sender)
    intent, text_out = Intent.NONE, None
    if reading.intent is Intent.OPT_OUT and _E164.fullmatch(number):
        rows = identifier_suppression_rows(keys, workspace_id, channel.value, number, SuppressionReason.UNSUBSCRIBE)
        before = await ledger.suppressions_with_keys(session, workspace_id, [bytes(row["key"]) for row in rows])
        await ledger.add_suppressions(session, rows)
        intent = Intent.OPT_OUT
        if settings.phone.stop_reply and not before:  # one confirmation, as for a known number
            language = reading.language or settings.locale
            text_out = _reply(workspace_id, settings, "stop", language, brand=_brand(settings))
    reply = _twiml_or_none(workspace_id, reading, text_out)
    await repository.finish_inbound(
        session, workspace_id, claimed, channel=channel.value, point_id=None, intent=intent.value, reply=reply
    )
    log.info("twilio_inbound_unreadable_sender", workspace_id=str(workspace_id), intent=intent.value)
    return reply


def _read(message: Inbound, settings: WorkspaceSettings) -> Classification:
    text = message.body or message.first("ButtonText") or message.first("ButtonPayload") or ""
    return classify(
        text,
        settings.keyword_sets(),
        settings.phone.start_words,
        natural_language=settings.phone.natural_language_opt_out,
    )


async def _duplicate(session: AsyncSession, workspace_id: uuid.UUID, message: Inbound) -> str:
    """The answer to a message claimed before: the reply its first delivery got (nothing is recorded)."""
    stored = await repository.stored_reply(session, workspace_id, PROVIDER, message.message_sid)
    log.info("twilio_inbound_duplicate", workspace_id=str(workspace_id))
    return stored or twiml(None)


def _stop_text(
    workspace_id: uuid.UUID, settings: WorkspaceSettings, applied: Sequence[Applied], language: str
) -> str | None:
    """The STOP confirmation: only when the STOP changed something, and the workspace sends one."""
    changed = any(a.event_id and a.from_state is not State.OPTED_OUT for a in applied)
    if changed and settings.phone.stop_reply:
        return _reply(workspace_id, settings, "stop", language, brand=_brand(settings))
    return None


def _twiml_or_none(workspace_id: uuid.UUID, reading: Classification, text_out: str | None) -> str:
    try:
        return twiml(text_out)
    except Exception:  # the consent change must commit whatever happens to its reply
        log.exception("twilio_reply_failed", workspace_id=str(workspace_id), intent=reading.intent.value)
        return twiml(None)


async def handle_status(
    session: AsyncSession, workspace_id: uuid.UUID, settings: WorkspaceSettings, params: Mapping[str, str]
) -> bool:
    """Process a status callback once per (MessageSid, status); False for a repeat.

    21610 blocks the number; the codes of a number that cannot receive mark it ``undeliverable``.
    """
    error_code = params.get("ErrorCode") or None
    if not await claim_callback(
        session,
        workspace_id,
        provider=PROVIDER,
        message_id=params["MessageSid"],
        status=params["MessageStatus"],
        error=error_code,
    ):
        return False
    await messages.record_provider_status(
        session,
        workspace_id,
        params["MessageSid"],
        params["MessageStatus"],
        error_code,
        delivery_id=parse_uuid(params.get("delivery")),
        provider=PROVIDER,
    )
    if error_code in UNREACHABLE_CODES and params["MessageStatus"] in {"failed", "undelivered"} and params.get("To"):
        point = await _reported_point(session, workspace_id, settings, params)
        if point is not None:
            await ledger.set_reachability(session, point.id, Reachability.UNDELIVERABLE.value, utcnow())
            log.info("twilio_undeliverable", workspace_id=str(workspace_id), contact_point_id=str(point.id))
    if params["MessageStatus"] == "read":  # WhatsApp's read receipt: the message was opened (engagement signal)
        await signals.provider_read(session, workspace_id, params["MessageSid"])
    if error_code == ERROR_STOPPED and params.get("To"):
        point = await _reported_point(session, workspace_id, settings, params)
        if point is not None:
            await ledger.set_reachability(session, point.id, Reachability.PROVIDER_BLOCKED.value, utcnow())
            evidence = {
                "message_sid": params["MessageSid"],
                "error_code": error_code,
                "status": params["MessageStatus"],
            }
            await withdraw_point(
                session, workspace_id, point, trigger=Trigger.PROVIDER_BLOCK, evidence=evidence, actor=TWILIO
            )
            log.info("twilio_provider_block", workspace_id=str(workspace_id), contact_point_id=str(point.id))
    return True


async def _reported_point(
    session: AsyncSession, workspace_id: uuid.UUID, settings: WorkspaceSettings, params: Mapping[str, str]
) -> ContactPoint | None:
    """The address a failure report is about, unless the report is stale (``None``: leave the address alone).

    Stale: the number was found reachable again (a START, a text from it) after the reported message went out, so
    a late 21610 or 30005 of an earlier message says nothing about it any more (hostile review 2026-12-05: a late
    21610 after START blocked the number again and recorded a withdrawal nobody made).
    """
    try:
        channel, number = channel_and_number(params["To"], settings.default_region)
    except InvalidIdentifier:
        return None
    point = await ledger.find_contact_point(session, workspace_id, channel, number)
    if point is None or point.reachability != Reachability.REACHABLE or point.reachability_changed_at is None:
        return point
    went_out = await repository.sent_at(session, workspace_id, params["MessageSid"])
    if went_out is not None and went_out < point.reachability_changed_at:
        log.info("twilio_stale_status_ignored", workspace_id=str(workspace_id), contact_point_id=str(point.id))
        return None
    return point


async def _reachable_again(
    session: AsyncSession, workspace_id: uuid.UUID, point: ContactPoint, message: Inbound
) -> None:
    """What a message from the number says about it: it can receive again (see the module's rules)."""
    twilio_opt_in = (
        message.first("OptOutType") or ""
    ).upper() == "START" or message.body.strip().casefold() in TWILIO_OPT_IN_WORDS
    blocked = point.reachability == Reachability.PROVIDER_BLOCKED
    if point.reachability == Reachability.UNDELIVERABLE or (blocked and twilio_opt_in):
        # only from what was read: a provider block reported since (a 21610 of a message under way) stays
        await ledger.set_reachability(
            session, point.id, Reachability.REACHABLE.value, utcnow(), only_from=str(point.reachability)
        )
        log.info("twilio_reachable_again", workspace_id=str(workspace_id), contact_point_id=str(point.id))


async def _opt_in(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    settings: WorkspaceSettings,
    *,
    channel: Channel,
    number: str,
    point: ContactPoint | None,
    reading: Classification,
    evidence: Mapping[str, Any],
) -> tuple[ContactPoint | None, list[str]]:
    """Opt in what the start word covers; returns the point and the purpose names opted in (none: not allowed)."""
    by_key = {p.key: p for p in await purposes.list_purposes(session, workspace_id)}
    states = {r.purpose_id: State(r.state) for r in await ledger.consents_of_point(session, point.id)} if point else {}
    wanted: list[uuid.UUID]
    if reading.purpose is not None and reading.purpose in by_key:
        wanted = [by_key[reading.purpose].id]
    else:
        wanted = [pid for pid, state in states.items() if pid is not None and state is State.PENDING]
        if not wanted and settings.phone.default_purpose in by_key:
            wanted = [by_key[settings.phone.default_purpose].id]
    allowed = [
        pid
        for pid in wanted
        if states.get(pid) in (State.PENDING, State.OPTED_IN) or settings.phone.keyword_only_opt_in
    ]
    if not allowed:
        return point, []
    point = point or await _new_point(session, keys, workspace_id, channel, number)
    changes = [Change(point, pid, Trigger.START_WORD, evidence) for pid in allowed]
    applied = await apply_changes(session, workspace_id, changes, SUBJECT, skip_not_allowed=True)
    names = {p.id: p.name for p in by_key.values()}
    return point, [names[a.purpose_id] for a in applied if a.purpose_id and a.to_state is State.OPTED_IN]


async def _new_point(
    session: AsyncSession, keys: Keys, workspace_id: uuid.UUID, channel: Channel, number: str
) -> ContactPoint:
    contact = await ledger.add_contact(session, workspace_id, None, None, None)
    return await add_point(session, keys, workspace_id, contact_id=contact.id, channel=channel, value=number)


async def _contact_language(session: AsyncSession, point: ContactPoint | None) -> str | None:
    if point is None:
        return None
    contact = await ledger.get_contact(session, point.contact_id)
    return _language_of(contact.locale)


def _language_of(locale: str | None) -> str | None:
    return locale.split("-")[0] if locale else None


def _reply(workspace_id: uuid.UUID, settings: WorkspaceSettings, kind: str, language: str, **values: str) -> str:
    """The workspace's reply text; the built-in one if building it fails (a STOP is recorded all the same)."""
    try:
        return reply_text(settings, kind, language, **values)
    except Exception:
        log.exception("twilio_reply_text_failed", workspace_id=str(workspace_id), kind=kind, language=language)
        builtin = msgspec.structs.replace(settings, phone=msgspec.structs.replace(settings.phone, texts={}))
        return reply_text(builtin, kind, language, **values)


def _brand(settings: WorkspaceSettings) -> str:
    return settings.brand or ""  # the controller fills in the workspace name when no brand is set


async def _attribution(session: AsyncSession, workspace_id: uuid.UUID, point: ContactPoint) -> dict[str, Any]:
    """The message a STOP answers: the last one sent to the number on its channel within 7 days, and its campaign."""
    now = utcnow()
    last = await messages_repository.last_sent_to(
        session, workspace_id, point.id, point.channel, since=now - STOP_ATTRIBUTION, until=now
    )
    if last is None:
        return {}
    return _attributed(last.message_id, last.purpose_id, last.campaign)


def _attributed(message_id: uuid.UUID, purpose_id: uuid.UUID | None, campaign: str | None) -> dict[str, Any]:
    """The evidence naming the message a STOP answers."""
    return {"attributed_message_id": str(message_id), "attributed_purpose_id": str(purpose_id), "campaign": campaign}


def _evidence(message: Inbound, reading: Classification) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "provider": PROVIDER,
        "message_sid": message.message_sid,
        "from": message.sender,
        "to": message.recipient,
        "body": message.body,
        "keyword": reading.keyword,
        "raw_params_digest": message.digest,
        "collection_method": "inbound_whatsapp"
        if message.sender.lower().startswith("whatsapp:")
        else f"inbound_sms:{reading.keyword}",
    }
    if reading.natural_language:
        evidence["natural_language"] = True
    for name in ("WaId", "ProfileName", "OptOutType", "ButtonPayload"):
        if (value := message.first(name)) is not None:
            evidence[name] = value
    return evidence
