"""Every model, imported in one place so that Alembic and the drift test see the whole schema."""

from app.chains.models import Chain, ChainRun, ChainStep
from app.console.models import ChainCheck, ConsoleLink, ConsoleSession
from app.emails.models import ConfirmationToken
from app.ledger.models import Consent, ConsentEvent, Contact, ContactPoint, LedgerHead, RobinsonKey, Suppression
from app.lib.models import IdempotencyKey, ProviderCallback, RateLimitHit
from app.lib.orm import Base
from app.lifecycle.models import Repermission
from app.messages.models import Delivery, Message, MessageEvent
from app.preferences.models import PreferenceLink
from app.privacy.models import Erasure, ErasureRequest
from app.purchases.models import Purchase
from app.purposes.models import Notice, Purpose
from app.reports.models import (
    ReportConsentCount,
    ReportConsentDaily,
    ReportDoi,
    ReportMessageCount,
    ReportMessageDaily,
    ReportMessageQueue,
    ReportWatermark,
)
from app.twilio.models import InboundMessage
from app.webhooks.models import WebhookDelivery, WebhookSubscription
from app.workspaces.models import ApiKey, Workspace

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "Chain",
    "ChainCheck",
    "ChainRun",
    "ChainStep",
    "ConfirmationToken",
    "Consent",
    "ConsentEvent",
    "ConsoleLink",
    "ConsoleSession",
    "Contact",
    "ContactPoint",
    "Delivery",
    "Erasure",
    "ErasureRequest",
    "IdempotencyKey",
    "InboundMessage",
    "LedgerHead",
    "Message",
    "MessageEvent",
    "Notice",
    "PreferenceLink",
    "ProviderCallback",
    "Purchase",
    "Purpose",
    "RateLimitHit",
    "Repermission",
    "ReportConsentCount",
    "ReportConsentDaily",
    "ReportDoi",
    "ReportMessageCount",
    "ReportMessageDaily",
    "ReportMessageQueue",
    "ReportWatermark",
    "RobinsonKey",
    "Suppression",
    "WebhookDelivery",
    "WebhookSubscription",
    "Workspace",
    "metadata",
]
