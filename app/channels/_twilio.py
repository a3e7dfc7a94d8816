"""What SMS and WhatsApp share: Twilio (one client per account), its status callbacks and its error codes."""

from __future__ import annotations

import uuid
from typing import Any

from app.channels.adapters import Adapters
from app.channels.base import Effect, Report, Sending
from app.domain.model import Reachability, Trigger
from app.workspaces.service import sealing_context
from app.workspaces.settings import WorkspaceSettings
from channel_providers.base import Outcome
from channel_providers.twilio import UNREACHABLE, TwilioAdapter

#: Twilio's error 21610: the person texted STOP to the carrier. The number is blocked and its consents end.
#: The codes of :data:`~channel_providers.twilio.UNREACHABLE` (``GONE``): the number cannot receive, so it is
#: ``undeliverable``; its consents stay (no one withdrew them), and an inbound start word from it lifts the mark.
FEEDBACK = {
    Outcome.BLOCKED: Effect(Reachability.PROVIDER_BLOCKED, withdraw=Trigger.PROVIDER_BLOCK),
    Outcome.GONE: Effect(Reachability.UNDELIVERABLE),
}
#: The same codes as a status callback's ``ErrorCode`` names them.
UNREACHABLE_CODES = frozenset(str(code) for code in UNREACHABLE)

#: Twilio's ``MessageStatus`` values that settle a sent message ("read" is WhatsApp's).
REPORTS = {
    "delivered": Report.DELIVERED,
    "read": Report.DELIVERED,
    "undelivered": Report.FAILED,
    "failed": Report.FAILED,
}


def adapter(adapters: Adapters, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> TwilioAdapter | None:
    """The workspace's Twilio account (its own, else the service's), or ``None`` without credentials."""
    service = adapters.settings.twilio
    account = settings.twilio.account_sid or service.account_sid
    token = service.auth_token
    if settings.twilio.auth_token_sealed:
        token = adapters.keys.unseal(settings.twilio.auth_token_sealed, sealing_context(workspace_id))
    if not account or not token:
        return None
    return adapters.kept(
        ("twilio", account, token), lambda: TwilioAdapter(account, token, base_url=service.api_base_url)
    )


def extras(sending: Sending) -> dict[str, Any]:
    """Twilio posts its delivery reports to the workspace's status webhook, when the public URL is known.

    The URL names the delivery, so that a report can settle a delivery whose outcome is ``unknown`` (its worker
    died during the call, before Twilio's message id was written: :mod:`app.messages.policy`).
    """
    if not sending.service.public_base_url_configured:
        return {}
    base = f"{sending.service.public_base_url}/webhooks/twilio/{sending.workspace_id}/status"
    return {"status_callback": f"{base}?delivery={sending.delivery_id}"}
