"""API types of eligibility."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from app.domain.gate import Reason
from app.domain.model import Channel

MAX_BATCH_CONTACTS = 10_000


class PointDecision(msgspec.Struct, kw_only=True):
    """One contact point and the gate's answer for it."""

    id: uuid.UUID
    address_masked: str
    eligible: bool
    reason: Reason


class EligibilityOut(msgspec.Struct, kw_only=True):
    """May we contact the person on this channel for this purpose, now, and why.

    `reason` is the eligible point's reason, else the strongest reason of all points; `evidence_event_id` is
    the ledger event the decision rests on; `next_window_opens_at` is set for `outside_send_window`;
    `paused_until` is set for `paused` (the person paused marketing on the preference centre until then; the
    pause ends by itself). `expires_at` is when the consent the answer rests on ends under its purpose's
    `validity` or `inactivity`: in the future for `opted_in`; for `expired`, when it ended (the end of its
    validity, answered from that instant on even before the sweep records `validity_ended`, or when a pending
    signup lapsed).
    """

    eligible: bool
    channel: Channel
    purpose: str
    contact_id: uuid.UUID | None
    contact_points: list[PointDecision]
    reason: Reason
    evidence_event_id: uuid.UUID | None
    decided_at: datetime
    next_window_opens_at: datetime | None = None
    paused_until: datetime | None = None
    expires_at: datetime | None = None


class BatchIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Up to 10,000 contacts (ids or external ids) x channels, one purpose."""

    contacts: list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]]
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=6)]
    purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


class BatchDecision(msgspec.Struct, kw_only=True):
    """One contact x channel. An unknown contact is answered with reason `contact_not_found`.

    The duplicate of a merge is answered with reason `contact_merged` and the survivor's id in `merged_into` (use
    that id from now on).

    `paused_until` is set for `paused`: marketing is paused until then (it ends by itself). `expires_at` as in
    the single answer: when the consent ends (`opted_in`) or ended (`expired`).
    """

    contact: str
    contact_id: uuid.UUID | None
    channel: Channel
    eligible: bool
    reason: str
    evidence_event_id: uuid.UUID | None
    contact_point_ids: list[uuid.UUID]
    next_window_opens_at: datetime | None = None
    paused_until: datetime | None = None
    expires_at: datetime | None = None
    merged_into: uuid.UUID | None = None


class BatchOut(msgspec.Struct, kw_only=True):
    """Decisions in the order of `contacts`, then `channels`."""

    purpose: str
    decided_at: datetime
    decisions: list[BatchDecision]
