"""SMS through Twilio (or the outbox), from the workspace's number or messaging service."""

from __future__ import annotations

import uuid

from app.channels import _twilio
from app.channels.adapters import Adapters
from app.channels.base import ChannelSpec, Sending
from app.domain.model import Channel
from app.workspaces.settings import WorkspaceSettings
from channel_providers.base import ChannelAdapter, Outbound


def adapter(adapters: Adapters, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> ChannelAdapter:
    """The workspace's Twilio account, else the outbox."""
    return _twilio.adapter(adapters, workspace_id, settings) or adapters.outbox(Channel.SMS, workspace_id)


def compose(sending: Sending) -> Outbound:
    """From the workspace's SMS sender, with Twilio's status callback."""
    return sending.outbound(sender=sending.settings.phone.sms_from, extras=_twilio.extras(sending))


SPEC = ChannelSpec(
    channel=Channel.SMS, adapter=adapter, compose=compose, feedback=_twilio.FEEDBACK, reports=_twilio.REPORTS
)
