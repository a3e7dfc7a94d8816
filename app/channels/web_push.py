"""Web push with the workspace's VAPID key (or the outbox before a VAPID subject is set); 404/410 ends it."""

from __future__ import annotations

import uuid

from app.channels.adapters import Adapters
from app.channels.base import ChannelSpec, Effect, Sending
from app.domain.model import Channel, Reachability, Trigger
from app.push.service import private_key
from app.workspaces.settings import WorkspaceSettings
from channel_providers.base import ChannelAdapter, Outbound, Outcome
from channel_providers.webpush import WebPushAdapter

_TIMEOUT = 10.0


def adapter(adapters: Adapters, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> ChannelAdapter:
    """The push services once the workspace has a VAPID subject, else the outbox."""
    if settings.web_push.subject:
        # endpoints come from browsers: every push goes through the outbound guard, to a known push service only
        # (checked again at send: an endpoint stored before the operator narrowed the list is not pushed to)
        hosts = adapters.settings.web_push_services
        return adapters.kept(
            ("web_push",), lambda: WebPushAdapter(_TIMEOUT, transport=adapters.guarded(_TIMEOUT, hosts=hosts))
        )
    return adapters.outbox(Channel.WEB_PUSH, workspace_id)


def compose(sending: Sending) -> Outbound:
    """Signed with the workspace's VAPID key and subject."""
    return sending.outbound(
        extras={
            "vapid_private_key": private_key(sending.keys, sending.workspace_id, sending.settings),
            "vapid_subject": sending.settings.web_push.subject,
        }
    )


SPEC = ChannelSpec(
    channel=Channel.WEB_PUSH,
    adapter=adapter,
    compose=compose,
    # the push service answered 404 or 410: the browser ended the subscription
    feedback={Outcome.GONE: Effect(Reachability.EXPIRED, withdraw=Trigger.PROVIDER_GONE)},
)
