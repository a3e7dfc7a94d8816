"""Eligibility decisions: facts from the database, the decision from the domain's send gate.

Nothing is cached, so a withdrawal acknowledged before the question is always reflected.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec

from app.domain.gate import PointFacts, Reason, decide_point, strongest
from app.domain.identifiers import mask
from app.domain.model import Channel, PurposeKind, Reachability
from app.eligibility import repository
from app.eligibility.schemas import BatchDecision, EligibilityOut, PointDecision
from app.lib.db import Database
from app.lib.errors import NotFound, contact_merged
from app.lib.orm import utcnow
from app.lib.outbound import listed
from app.workspaces.settings import WorkspaceSettings, window_of


def routable(fact: PointFacts, push_services: tuple[str, ...] | None) -> PointFacts:
    """A reachable web push endpoint off the operator's push services counts as undeliverable.

    ``push_services``: ``CONSENT_WEB_PUSH_SERVICES`` (``None``: any host). The outbound guard would refuse a send to
    such an endpoint (one stored before the operator narrowed the list): routing and eligibility pass it by.
    """
    if (
        fact.channel is Channel.WEB_PUSH
        and fact.reachability is Reachability.REACHABLE
        and not listed(fact.value, push_services)
    ):
        return dataclasses.replace(fact, reachability=Reachability.UNDELIVERABLE)
    return fact


def _routable(facts: Iterable[PointFacts], push_services: tuple[str, ...] | None) -> list[PointFacts]:
    return [routable(f, push_services) for f in facts]


async def single(
    database: Database,
    workspace_id: uuid.UUID,
    *,
    contact_ref: str,
    channel: Channel,
    purpose_key: str,
    push_services: tuple[str, ...] | None,
) -> EligibilityOut:
    """The decision for one contact, channel and purpose: one database round trip, then the gate."""
    async with database.driver() as driver:
        found = await repository.single_facts(driver, workspace_id, purpose_key, contact_ref, channel)
    purpose_id, kind, contact_id = found.purpose_id, found.kind, found.contact_id
    facts = _routable(found.facts, push_services)
    if purpose_id is None or kind is None:
        raise NotFound(f"No purpose with key '{purpose_key}'.", code="purpose_not_found")
    if contact_id is None:
        raise NotFound("No contact with this id or external id.", code="contact_not_found")
    if found.merged_into is not None:  # the duplicate of a merge: its id answers 409 naming the survivor
        raise contact_merged(found.merged_into)
    settings = msgspec.json.decode(found.settings, type=WorkspaceSettings)
    now = utcnow()
    window = window_of(settings, channel)
    decided = [
        (f, decide_point(f, PurposeKind(kind), now=now, window=window, default_timezone=settings.timezone))
        for f in facts
    ]
    best = strongest([d for _, d in decided])
    if best is None:
        return EligibilityOut(
            eligible=False,
            channel=channel,
            purpose=purpose_key,
            contact_id=contact_id,
            contact_points=[],
            reason=Reason.NO_CONTACT_POINT,
            evidence_event_id=None,
            decided_at=now,
        )
    points = [
        PointDecision(id=f.id, address_masked=mask(f.channel, f.value), eligible=d.eligible, reason=d.reason)
        for f, d in decided
    ]
    return EligibilityOut(
        eligible=best.eligible,
        channel=channel,
        purpose=purpose_key,
        contact_id=contact_id,
        contact_points=[p for p in points if p.eligible] if best.eligible else points,
        reason=best.reason,
        evidence_event_id=best.evidence_event_id,
        decided_at=now,
        next_window_opens_at=best.next_window_opens_at,
        paused_until=best.paused_until,
        expires_at=best.expires_at,
    )


async def batch(
    database: Database,
    workspace_id: uuid.UUID,
    *,
    refs: Sequence[str],
    channels: Sequence[Channel],
    purpose_key: str,
    push_services: tuple[str, ...] | None,
) -> tuple[str, datetime, list[BatchDecision]]:
    """Decisions for many contacts x channels: two round trips on the driver connection, then the gate."""
    async with database.driver() as driver:
        context = await repository.batch_context(driver, workspace_id, purpose_key)
        if context is None or context["purpose_id"] is None:
            raise NotFound(f"No purpose with key '{purpose_key}'.", code="purpose_not_found")
        resolved, facts, merged = await repository.batch_facts(
            driver,
            workspace_id,
            refs,
            [c.value for c in channels],
            context["purpose_id"],
        )
    settings = msgspec.json.decode(context["settings"], type=WorkspaceSettings)
    kind = PurposeKind(context["kind"])
    windows = {channel: window_of(settings, channel) for channel in channels}
    now = utcnow()
    decisions: list[BatchDecision] = []
    for ref in refs:
        contact_id = resolved.get(ref)
        for channel in channels:
            if contact_id is None or contact_id in merged:
                decisions.append(
                    BatchDecision(
                        contact=ref,
                        contact_id=contact_id,
                        channel=channel,
                        eligible=False,
                        reason="contact_not_found" if contact_id is None else "contact_merged",
                        evidence_event_id=None,
                        contact_point_ids=[],
                        merged_into=merged.get(contact_id) if contact_id else None,
                    )
                )
                continue
            decided = [
                (f, decide_point(f, kind, now=now, window=windows[channel], default_timezone=settings.timezone))
                for f in _routable(facts.get((contact_id, channel), ()), push_services)
            ]
            best = strongest([d for _, d in decided])
            decisions.append(
                BatchDecision(
                    contact=ref,
                    contact_id=contact_id,
                    channel=channel,
                    eligible=bool(best and best.eligible),
                    reason=(best.reason if best else Reason.NO_CONTACT_POINT).value,
                    evidence_event_id=best.evidence_event_id if best else None,
                    contact_point_ids=[f.id for f, d in decided if d.eligible],
                    next_window_opens_at=best.next_window_opens_at if best else None,
                    paused_until=best.paused_until if best else None,
                    expires_at=best.expires_at if best else None,
                )
            )
    return context["purpose_key"], now, decisions
