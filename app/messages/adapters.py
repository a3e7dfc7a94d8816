"""Which adapter sends each channel, from the service's and the workspace's configuration.

Real providers where credentials are configured; otherwise the dev adapters writing to
``<CONSENT_DATA_DIR>/outbox/<channel>/``, so the service runs with no accounts.
"""

from __future__ import annotations

import uuid

from app.domain.model import Channel
from app.lib.keys import Keys
from app.settings import Settings
from app.workspaces.service import APNS_KEY, FCM_SERVICE_ACCOUNT, PRINT_HOUSE_TOKEN, sealing_context
from app.workspaces.settings import WorkspaceSettings
from channel_providers.apns import PRODUCTION, SANDBOX, ApnsAdapter, AppPushRouter
from channel_providers.base import ChannelAdapter
from channel_providers.email import EmailAdapter, MailSender
from channel_providers.fcm import FcmAdapter, parse_service_account
from channel_providers.files import FileDropAdapter, PrintBatchAdapter, PrintHouseAdapter
from channel_providers.twilio import TwilioAdapter
from channel_providers.webpush import WebPushAdapter


class Adapters:
    """Builds and caches adapters (one Twilio client per account)."""

    def __init__(self, settings: Settings, keys: Keys, mail_sender: MailSender) -> None:
        self.settings = settings
        self.keys = keys
        outbox = settings.data_dir / "outbox"
        self.email = EmailAdapter(mail_sender)
        self.files: dict[Channel, FileDropAdapter] = {
            channel: FileDropAdapter(outbox / channel.value)
            for channel in (Channel.SMS, Channel.WHATSAPP, Channel.APP_PUSH, Channel.WEB_PUSH)
        }
        self.print = PrintBatchAdapter(outbox / "print")
        self.web_push = WebPushAdapter()
        self._twilio: dict[tuple[str, str], TwilioAdapter] = {}
        self._fcm: dict[str, FcmAdapter] = {}
        self._apns: dict[tuple[str, ...], ApnsAdapter] = {}
        self._print_houses: dict[tuple[str, str | None], PrintHouseAdapter] = {}

    async def aclose(self) -> None:
        """Close the providers' connection pools."""
        for adapter in self._twilio.values():
            await adapter.aclose()
        for fcm in self._fcm.values():
            await fcm.aclose()
        for apns in self._apns.values():
            await apns.aclose()
        self._apns.clear()
        for house in self._print_houses.values():
            await house.aclose()
        self._print_houses.clear()
        self._twilio.clear()
        self._fcm.clear()

    def __call__(self, workspace_id: uuid.UUID, channel: Channel, settings: WorkspaceSettings) -> ChannelAdapter:
        """The adapter for ``channel`` in this workspace."""
        if channel is Channel.EMAIL:
            return self.email
        if channel is Channel.PRINT:
            return self._print_house_for(workspace_id, settings) or self.print
        if channel in (Channel.SMS, Channel.WHATSAPP):
            return self._twilio_for(workspace_id, settings) or self.files[channel]
        if channel is Channel.WEB_PUSH and settings.web_push.subject:
            return self.web_push
        if channel is Channel.APP_PUSH:
            fcm, apns = self._fcm_for(workspace_id, settings), self._apns_for(workspace_id, settings)
            if fcm is not None or apns is not None:
                return AppPushRouter(apns=apns, fcm=fcm, fallback=self.files[channel])
        return self.files[channel]

    def _fcm_for(self, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> FcmAdapter | None:
        sealed = settings.app_push.fcm_service_account_sealed
        if not sealed:
            return None
        if sealed not in self._fcm:
            account = self.keys.unseal(sealed, sealing_context(workspace_id, FCM_SERVICE_ACCOUNT))
            self._fcm[sealed] = FcmAdapter(parse_service_account(account), base_url=self.settings.fcm_api_base_url)
        return self._fcm[sealed]

    def _apns_for(self, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> ApnsAdapter | None:
        app = settings.app_push
        if not (app.apns_private_key_sealed and app.apns_team_id and app.apns_key_id and app.apns_topic):
            return None
        key = (app.apns_private_key_sealed, app.apns_team_id, app.apns_key_id, app.apns_topic, str(app.apns_sandbox))
        if key not in self._apns:
            self._apns[key] = ApnsAdapter(
                team_id=app.apns_team_id,
                key_id=app.apns_key_id,
                topic=app.apns_topic,
                private_key=self.keys.unseal(app.apns_private_key_sealed, sealing_context(workspace_id, APNS_KEY)),
                base_url=self.settings.apns_api_base_url or (SANDBOX if app.apns_sandbox else PRODUCTION),
            )
        return self._apns[key]

    def _print_house_for(self, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> PrintHouseAdapter | None:
        house = settings.print_house
        if not house.url:
            return None
        key = (house.url, house.token_sealed)
        if key not in self._print_houses:
            token = (
                self.keys.unseal(house.token_sealed, sealing_context(workspace_id, PRINT_HOUSE_TOKEN))
                if house.token_sealed
                else None
            )
            self._print_houses[key] = PrintHouseAdapter(house.url, token)
        return self._print_houses[key]

    def _twilio_for(self, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> TwilioAdapter | None:
        account = settings.twilio.account_sid or self.settings.twilio.account_sid
        token = self.settings.twilio.auth_token
        if settings.twilio.auth_token_sealed:
            token = self.keys.unseal(settings.twilio.auth_token_sealed, sealing_context(workspace_id))
        if not account or not token:
            return None
        key = (account, token)
        if key not in self._twilio:
            self._twilio[key] = TwilioAdapter(account, token, base_url=self.settings.twilio.api_base_url)
        return self._twilio[key]
