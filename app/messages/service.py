"""Accepting a message: content checked per channel, the route decided with the send gate, the outbox written.

The decision (which channel and contact point, why each other channel was skipped) is stored with the message
and the deliveries are written in the same transaction, so an accepted message is never lost and nothing is
queued for a message that has no permitted channel. A channel whose only obstacle is the send window is
chosen and waits for the window to open.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels import registry
from app.channels.base import Report
from app.domain import content as content_rules
from app.domain.gate import PointFacts, Reason, decide_point, strongest
from app.domain.model import Channel, PurposeKind
from app.eligibility import repository as facts_repository
from app.eligibility.service import routable
from app.ledger import repository as ledger_repository
from app.ledger.models import Contact
from app.ledger.service import refuse_merged, require_contact
from app.lib.errors import AppError, InvalidInput, NotFound
from app.lib.ids import uuid7
from app.lib.orm import utcnow
from app.messages import repository
from app.messages.models import Delivery, MessageEvent
from app.messages.repository import add_event
from app.messages.schemas import (
    Chosen,
    Decision,
    DeliveryOut,
    MessageDetail,
    MessageIn,
    MessageOut,
    Skipped,
    StatusEntry,
)
from app.messages.status import DeliveryStatus, MessageStatus, Step, step_of
from app.purposes import repository as purposes
from app.purposes.models import Purpose
from app.purposes.service import require_purpose
from app.workspaces.service import settings_of
from app.workspaces.settings import WorkspaceSettings, window_of


async def create_message(
    session: AsyncSession, workspace_id: uuid.UUID, data: MessageIn, *, push_services: tuple[str, ...] | None = None
) -> MessageOut:
    """Decide the route now, store the message with its decision and queue its deliveries.

    ``push_services``: the operator's web push services (``CONSENT_WEB_PUSH_SERVICES``; ``None``: any host). A
    browser's endpoint stored before the operator narrowed the list is undeliverable (the outbound guard would
    refuse its send): another endpoint of the contact, or the next channel, is chosen.
    """
    contact = await require_contact(session, workspace_id, data.contact)
    purpose = await require_purpose(session, workspace_id, data.purpose)
    route = list(dict.fromkeys(data.route))
    contents = _contents(route, data)
    accepted = [_Accepted(contact.id, purpose, route, contents, data)]
    [answer] = await _accept(session, workspace_id, accepted, push_services)
    return answer


async def create_messages(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    batch: Sequence[MessageIn],
    *,
    push_services: tuple[str, ...] | None = None,
) -> list[MessageOut | AppError]:
    """Accept a batch of one workspace's messages, each as :func:`create_message` accepts it alone.

    For each message in order: its answer, or the error :func:`create_message` would raise for it (nothing is
    written for that one). Each is decided on its own with the send gate (the same checks, decision and outbox
    rows as alone), but the contacts, purposes, settings and the gate's facts are read once for the batch (one
    facts query per purpose) and the messages, deliveries and history steps are written with one multi-row
    ``INSERT`` per table: a batch costs a handful of round trips instead of about seven per message.
    """
    refs = {d.contact: _as_uuid(d.contact) for d in batch}
    by_id = await ledger_repository.contacts_by_id(session, [workspace_id], [i for i in refs.values() if i])
    # an id match wins (as create_message's lookup); only the other references are looked up as external ids
    rest = {ref for ref, i in refs.items() if i not in by_id or str(i) != ref}
    found = await ledger_repository.contacts_by_refs(session, workspace_id, rest) if rest else []
    by_external = {c.external_id: c for c in found if c.external_id is not None}
    purposes_by_key: dict[str, Purpose | AppError] = {}
    for key in dict.fromkeys(d.purpose for d in batch):
        try:
            purposes_by_key[key] = await require_purpose(session, workspace_id, key)
        except AppError as exc:
            purposes_by_key[key] = exc
    answers: list[MessageOut | AppError | None] = []
    accepted: list[_Accepted] = []
    for data in batch:
        try:  # in create_message's order: the contact, the purpose, the content
            contact = _contact_of(data.contact, refs[data.contact], by_id, by_external)
            purpose = purposes_by_key[data.purpose]
            if isinstance(purpose, AppError):
                raise purpose
            route = list(dict.fromkeys(data.route))
            accepted.append(_Accepted(contact.id, purpose, route, _contents(route, data), data))
            answers.append(None)
        except AppError as exc:
            answers.append(exc)
    written = iter(await _accept(session, workspace_id, accepted, push_services) if accepted else [])
    return [answer if answer is not None else next(written) for answer in answers]


def _as_uuid(ref: str) -> uuid.UUID | None:
    with contextlib.suppress(ValueError):
        return uuid.UUID(ref)
    return None


def _contact_of(
    ref: str, parsed: uuid.UUID | None, by_id: Mapping[uuid.UUID, Contact], by_external: Mapping[str, Contact]
) -> Contact:
    """The contact ``ref`` names, as :func:`require_contact` finds it (an id match wins), or its error."""
    found = by_id.get(parsed) if parsed is not None else None
    if found is None or str(found.id) != ref:
        found = by_external.get(ref) or found
    if found is None:
        raise NotFound("No contact with this id or external id.", code="contact_not_found")
    refuse_merged(found)
    return found


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A message whose contact, purpose and content passed the checks: what :func:`_accept` decides and writes."""

    contact_id: uuid.UUID
    purpose: Purpose
    route: list[Channel]
    contents: dict[str, Any]
    data: MessageIn


async def _accept(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    batch: Sequence[_Accepted],
    push_services: tuple[str, ...] | None,
) -> list[MessageOut]:
    """Decide each message's route with the send gate and write the messages with their deliveries and history."""
    settings = await settings_of(session, workspace_id)
    now = utcnow()
    facts: dict[tuple[uuid.UUID, uuid.UUID], list[PointFacts]] = {}
    for purpose_id in dict.fromkeys(a.purpose.id for a in batch):
        of_purpose = [a for a in batch if a.purpose.id == purpose_id]
        contacts = list(dict.fromkeys(a.contact_id for a in of_purpose))
        channels = list(dict.fromkeys(c.value for a in of_purpose for c in a.route))
        for contact_id, fact in await facts_repository.point_facts(
            session, workspace_id, contacts, channels, purpose_id
        ):
            facts.setdefault((purpose_id, contact_id), []).append(routable(fact, push_services))
    messages: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    answers: list[MessageOut] = []
    for accepted in batch:
        data = accepted.data
        not_before = max(data.send_at, now) if data.send_at else now
        chosen, skipped = decide_route(
            accepted.route,
            facts.get((accepted.purpose.id, accepted.contact_id), []),
            accepted.purpose,
            settings,
            at=not_before,
            all_eligible=data.strategy == "all_eligible",
        )
        if not_before > now:  # held back to its send_at: each chosen channel waits until then, or for its window
            chosen = [c if c.not_before else msgspec.structs.replace(c, not_before=not_before) for c in chosen]
        decision = Decision(
            channel=chosen[0].channel if chosen else None,
            contact_point_id=chosen[0].contact_point_id if chosen else None,
            chosen=chosen,
            skipped=skipped,
        )
        status = MessageStatus.QUEUED if chosen else MessageStatus.NO_ELIGIBLE_CHANNEL
        message_id = uuid7()
        messages.append(
            repository.message_row(
                workspace_id,
                message_id,
                contact_id=accepted.contact_id,
                purpose_id=accepted.purpose.id,
                strategy=data.strategy,
                route=[c.value for c in accepted.route],
                content=accepted.contents,
                decision=msgspec.to_builtins(decision),
                status=status,
                send_at=data.send_at,
                campaign=data.campaign,
            )
        )
        for pick in chosen:
            delivery_id = uuid7()
            due = pick.not_before or not_before
            deliveries.append(
                repository.delivery_row(
                    workspace_id,
                    message_id,
                    delivery_id,
                    channel=pick.channel.value,
                    contact_point_id=pick.contact_point_id,
                    status=DeliveryStatus.QUEUED,
                    next_attempt_at=due,
                    at=now,
                )
            )
            events.append(
                repository.event_row(
                    workspace_id,
                    message_id,
                    delivery_id,
                    pick.channel.value,
                    Step.QUEUED,
                    detail={"not_before": due.isoformat()},
                    at=now,
                )
            )
        if not chosen:
            events.append(
                repository.event_row(
                    workspace_id,
                    message_id,
                    None,
                    None,
                    Step.NO_ELIGIBLE_CHANNEL,
                    detail={"skipped": msgspec.to_builtins(skipped)},
                    at=now,
                )
            )
        answers.append(MessageOut(message_id=message_id, status=status, decision=decision))  # type: ignore[arg-type]
    await repository.add_messages(session, messages, deliveries, events)
    return answers


def decide_route(
    route: Sequence[Channel],
    facts: Sequence[PointFacts],
    purpose: Purpose,
    settings: WorkspaceSettings,
    *,
    at: datetime,
    all_eligible: bool,
) -> tuple[list[Chosen], list[Skipped]]:
    """Walk the route in order; a channel is chosen when one of its addresses passes the gate at ``at``."""
    kind = PurposeKind(purpose.kind)
    chosen: list[Chosen] = []
    skipped: list[Skipped] = []
    for channel in route:
        if chosen and not all_eligible:
            skipped.append(Skipped(channel=channel, reason="not_needed"))
            continue
        points = [f for f in facts if f.channel is channel]
        window = window_of(settings, channel)
        decided = [
            (f, decide_point(f, kind, now=at, window=window, default_timezone=settings.timezone)) for f in points
        ]
        ready = next(((f, d) for f, d in decided if d.eligible), None)
        waiting = next(((f, d) for f, d in decided if d.reason is Reason.OUTSIDE_SEND_WINDOW), None)
        if ready is not None:
            chosen.append(Chosen(channel=channel, contact_point_id=ready[0].id))
        elif waiting is not None:
            chosen.append(
                Chosen(channel=channel, contact_point_id=waiting[0].id, not_before=waiting[1].next_window_opens_at)
            )
        else:
            best = strongest([d for _, d in decided])
            skipped.append(Skipped(channel=channel, reason=(best.reason if best else Reason.NO_CONTACT_POINT).value))
    return chosen, skipped


def _contents(route: Sequence[Channel], data: MessageIn) -> dict[str, Any]:
    given = msgspec.to_builtins(data.content)
    contents: dict[str, Any] = {}
    for channel in route:
        content = given.get(channel.value)
        if content is None:
            raise InvalidInput(f"The route names {channel} but content.{channel} is missing.", code="content_missing")
        try:
            content_rules.check(channel, content)
        except content_rules.ContentError as exc:
            raise InvalidInput(str(exc), code=exc.code) from None
        contents[channel.value] = content
    return contents


async def get_message(session: AsyncSession, workspace_id: uuid.UUID, message_id: uuid.UUID) -> MessageDetail:
    """The message with its deliveries and status history (404 for another workspace's message)."""
    message = await repository.get_message(session, workspace_id, message_id)
    if message is None:
        raise NotFound("No message with this id.", code="message_not_found")
    purpose = (await purposes.purposes_by_ids(session, [workspace_id], [message.purpose_id])).get(message.purpose_id)
    deliveries = await repository.deliveries_of(session, workspace_id, message.id)
    events = await repository.events_of(session, workspace_id, message.id)
    return MessageDetail(
        message_id=message.id,
        contact_id=message.contact_id,
        purpose=purpose.key if purpose else "",
        status=overall_status(MessageStatus(message.status), [DeliveryStatus(d.status) for d in deliveries]),
        created_at=message.created_at,
        decision=msgspec.convert(message.decision, Decision),
        deliveries=[delivery_out(d) for d in deliveries],
        history=[status_entry(e) for e in events],
        campaign=message.campaign,
    )


#: A message is in progress while one of its deliveries is; then it has the best outcome of any, in this order.
_OVERALL = (
    DeliveryStatus.SENDING,
    DeliveryStatus.QUEUED,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.SENT,
    DeliveryStatus.UNKNOWN,
    DeliveryStatus.BLOCKED_AT_SEND,
)


def overall_status(initial: MessageStatus, deliveries: Sequence[DeliveryStatus]) -> MessageStatus | DeliveryStatus:
    """One status for the message: in progress until every delivery is final; then the best outcome."""
    if not deliveries:
        return initial
    return next((status for status in _OVERALL if status in deliveries), DeliveryStatus.FAILED)


#: What a provider's delivery report makes of a sent delivery.
_AFTER_REPORT = {Report.DELIVERED: DeliveryStatus.DELIVERED, Report.FAILED: DeliveryStatus.FAILED}


async def record_provider_status(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    provider_message_id: str,
    status: str,
    error: str | None,
    *,
    delivery_id: uuid.UUID | None = None,
    provider: str | None = None,
) -> None:
    """A delivery report from the provider: a sent delivery becomes ``delivered`` or ``failed``.

    ``provider`` (``twilio``) is recorded with the step, for reports per provider.

    The delivery's channel says which of the provider's statuses count (:attr:`ChannelSpec.reports`).
    ``delivery_id`` is the delivery the report's callback URL names: a report of any status for an ``unknown``
    delivery (its worker died during the call, :mod:`app.messages.policy`), or for one whose call is still in
    flight (the worker may be dead, its lease not yet run out), proves the provider accepted it, so it becomes
    ``sent`` with the provider's id, then the report applies as to any sent delivery. A live worker's own
    answer for it then finds the attempt over and writes nothing.
    """
    if status not in registry.REPORT_STATUSES and delivery_id is None:
        return
    delivery = await repository.lock_by_provider_id(session, workspace_id, provider_message_id)
    if delivery is None and delivery_id is not None:
        delivery = await repository.lock_unresolved(session, workspace_id, delivery_id)
        if delivery is not None:
            was = delivery.status
            now = utcnow()
            repository.reconcile(delivery, provider_message_id, at=now)
            add_event(
                session,
                delivery.workspace_id,
                delivery.message_id,
                delivery.id,
                delivery.channel,
                Step.SENT,
                provider_id=provider_message_id,
                detail={"provider_status": status, "reconciled": was, **({"provider": provider} if provider else {})},
                at=now,
            )
    if delivery is None or status not in registry.REPORT_STATUSES:
        return
    report = registry.spec(delivery.channel).reports.get(status)
    if report is None:
        return
    target = _AFTER_REPORT[report]
    if delivery.status not in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED) or delivery.status == target:
        return
    now = utcnow()
    repository.report(delivery, target, error=error, at=now)
    add_event(
        session,
        delivery.workspace_id,
        delivery.message_id,
        delivery.id,
        delivery.channel,
        step_of(target),
        provider_id=provider_message_id,
        error=error,
        detail={"provider_status": status, **({"provider": provider} if provider else {})},
        at=now,
    )


def delivery_out(delivery: Delivery) -> DeliveryOut:
    """A delivery as the API shows it."""
    return DeliveryOut(
        channel=Channel(delivery.channel),
        contact_point_id=delivery.contact_point_id,
        status=delivery.status,
        attempts=delivery.attempts,
        provider_message_id=delivery.provider_message_id,
        last_error=delivery.last_error,
    )


def status_entry(event: MessageEvent) -> StatusEntry:
    """A step of a message's history as the API shows it."""
    return StatusEntry(
        at=event.at,
        channel=Channel(event.channel) if event.channel else None,
        status=event.status,
        provider_message_id=event.provider_message_id,
        error=event.error,
        detail=event.detail,
    )
