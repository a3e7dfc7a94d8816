"""App push: FCM (service account) and APNs (token key) by platform, else the outbox; a gone token ends consent."""

from __future__ import annotations

import uuid

from app.channels.adapters import Adapters
from app.channels.base import ChannelSpec, Effect, plain
from app.domain.model import Channel, Reachability, Trigger
from app.workspaces.service import APNS_KEY, FCM_SERVICE_ACCOUNT, sealing_context
from app.workspaces.settings import WorkspaceSettings
from channel_providers.apns import PRODUCTION, SANDBOX, ApnsAdapter, AppPushRouter
from channel_providers.base import ChannelAdapter, Outcome
from channel_providers.fcm import GOOGLE_TOKEN_URI, FcmAdapter, parse_service_account

_FCM_TIMEOUT = 10.0


def adapter(adapters: Adapters, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> ChannelAdapter:
    """APNs for iOS and FCM for the rest where configured; the outbox for what is not."""
    fcm, apns = _fcm(adapters, workspace_id, settings), _apns(adapters, workspace_id, settings)
    if fcm is None and apns is None:
        return adapters.outbox(Channel.APP_PUSH, workspace_id)
    return AppPushRouter(apns=apns, fcm=fcm, fallback=adapters.outbox(Channel.APP_PUSH, workspace_id))


def _fcm(adapters: Adapters, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> FcmAdapter | None:
    sealed = settings.app_push.fcm_service_account_sealed
    if not sealed:
        return None

    def build() -> FcmAdapter:
        account = adapters.keys.unseal(sealed, sealing_context(workspace_id, FCM_SERVICE_ACCOUNT))
        # the token URI is the tenant's input: Google's only, unless the operator allows the private network (the
        # test and dev stand-ins); asked through the outbound guard either way
        return FcmAdapter(
            parse_service_account(account),
            base_url=adapters.settings.fcm_api_base_url,
            token_uris=None if adapters.settings.webhooks_allow_private else frozenset({GOOGLE_TOKEN_URI}),
            token_transport=adapters.guarded(_FCM_TIMEOUT),
        )

    return adapters.kept(("fcm", sealed), build)


def _apns(adapters: Adapters, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> ApnsAdapter | None:
    app = settings.app_push
    sealed, team_id, key_id, topic = app.apns_private_key_sealed, app.apns_team_id, app.apns_key_id, app.apns_topic
    if not (sealed and team_id and key_id and topic):
        return None

    def build() -> ApnsAdapter:
        return ApnsAdapter(
            team_id=team_id,
            key_id=key_id,
            topic=topic,
            private_key=adapters.keys.unseal(sealed, sealing_context(workspace_id, APNS_KEY)),
            base_url=adapters.settings.apns_api_base_url or (SANDBOX if app.apns_sandbox else PRODUCTION),
        )

    return adapters.kept(("apns", sealed, team_id, key_id, topic, str(app.apns_sandbox)), build)


SPEC = ChannelSpec(
    channel=Channel.APP_PUSH,
    adapter=adapter,
    compose=plain,
    # FCM UNREGISTERED, APNs 410: the app was uninstalled or the token replaced
    feedback={Outcome.GONE: Effect(Reachability.EXPIRED, withdraw=Trigger.PROVIDER_GONE)},
)
