"""What a channel supplies to the registry: :class:`ChannelSpec`, and the types it is made of."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.channels.adapters import Adapters
from app.domain.model import Channel, LegalBasis, PurposeKind, Reachability, Trigger
from app.lib.keys import Keys
from app.settings import Settings
from app.workspaces.settings import WorkspaceSettings
from channel_providers.base import ChannelAdapter, Outbound, Outcome


@dataclass(frozen=True, slots=True)
class Sending:
    """One delivery about to be sent, with what a channel may compose its provider request from."""

    channel: Channel
    delivery_id: uuid.UUID
    workspace_id: uuid.UUID
    settings: WorkspaceSettings
    service: Settings
    """The service's own settings (public URL, default mail sender)."""
    keys: Keys
    point_id: uuid.UUID
    address: str
    """The contact point's value: email, E.164 number, installation id, endpoint, postal key."""
    details: Mapping[str, Any]
    content: dict[str, Any]
    """The message's content for this channel, as accepted."""
    purpose_id: uuid.UUID
    purpose_kind: PurposeKind
    locale: str | None
    """The contact's locale, if known."""
    message_id: uuid.UUID | None = None
    """The message this delivery belongs to (its unsubscribe link names it, for campaign reports)."""
    legal_basis: LegalBasis | None = None
    """The basis the send gate permitted it on, where the message must say so: ``uwg_7_3`` (existing customers) needs
    the objection notice in every mail (CHANNEL_RULES.md E3 (4)); ``None`` otherwise."""

    def outbound(self, *, sender: str | None = None, extras: dict[str, Any] | None = None) -> Outbound:
        """The provider request every channel starts from: delivery id, address, content and details."""
        return Outbound(
            id=str(self.delivery_id),
            channel=self.channel.value,
            to=self.address,
            content=self.content,
            details=dict(self.details),
            sender=sender,
            extras=extras or {},
        )


@dataclass(frozen=True, slots=True)
class Effect:
    """What a provider's answer says about the address: its reachability, and whether consent ends with it."""

    reachability: Reachability
    withdraw: Trigger | None = None
    """The trigger withdrawing the address's consents (``None``: the consents stay, only reachability changes)."""


class Report(enum.StrEnum):
    """What a provider's delivery report (status callback) says became of a delivery it had accepted."""

    DELIVERED = "delivered"
    FAILED = "failed"


AdapterFactory = Callable[[Adapters, uuid.UUID, WorkspaceSettings], ChannelAdapter]
Composer = Callable[[Sending], Outbound]


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """Everything the dispatcher and the provider callbacks need to know about one channel."""

    channel: Channel
    adapter: AdapterFactory
    """The provider adapter for a workspace (from its settings and the service's), kept in :class:`Adapters`."""
    compose: Composer
    """What the dispatcher puts into the provider request."""
    feedback: Mapping[Outcome, Effect] = field(default_factory=dict)
    """What a send's final outcome says about the address (an outcome not listed changes nothing)."""
    reports: Mapping[str, Report] = field(default_factory=dict)
    """The provider's delivery-report statuses that settle a sent delivery (a status not listed changes nothing)."""
    carries_objection_notice: Callable[[Outbound], bool] | None = None
    """Whether a composed request carries the objection notice mail to existing customers must carry (UWG §7(3)
    No. 4); ``None``: the channel cannot carry one, so nothing is sent on it on that basis."""


def plain(sending: Sending) -> Outbound:
    """Composition for channels that need nothing but the content and the address."""
    return sending.outbound()
