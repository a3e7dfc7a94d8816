"""Every package's privacy hook, in the order an erasure runs them, and the tables that hold no personal data.

Adding a table means adding it to its package's hook, or to :data:`NO_PERSONAL_DATA` with the reason; a test
(tests/unit/test_privacy_hooks.py) fails otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.chains.privacy import HOOK as CHAINS
from app.emails.privacy import HOOK as EMAILS
from app.ledger.privacy import HOOK as LEDGER
from app.lib.privacy import HOOK as SHARED
from app.lib.privacy import PrivacyHook, Subject
from app.messages.privacy import HOOK as MESSAGES
from app.preferences.privacy import HOOK as PREFERENCES
from app.twilio.privacy import HOOK as TWILIO
from app.webhooks.privacy import HOOK as WEBHOOKS


async def _keep(_session: AsyncSession, _subject: Subject) -> Mapping[str, int]:
    return {}


#: The privacy package's own table is kept: it is the evidence that the erasure was made.
PRIVACY = PrivacyHook(
    package="privacy",
    tables={
        "erasures": "kept: the record of the erasure, naming the contact only by its now meaningless id (Art. 5(2))"
    },
    erase=_keep,
)

#: The ledger's rows go last: the other packages' rows reference its contacts and addresses.
HOOKS: tuple[PrivacyHook, ...] = (SHARED, CHAINS, MESSAGES, WEBHOOKS, EMAILS, PREFERENCES, TWILIO, PRIVACY, LEDGER)

NO_PERSONAL_DATA = {
    "workspaces": "the tenant: its name and settings (sealed provider credentials), nobody's personal data",
    "api_keys": "the tenant's keys: hashed secrets, names and scopes",
    "purposes": "the tenant's purposes",
    "chains": "the tenant's chain definitions (steps, content templates), nobody's personal data",
    "notices": "the texts shown to everyone who signed up",
    "ledger_heads": "the hash of each workspace's last event",
    "webhook_subscriptions": "the tenant's receiver URLs and sealed signing secrets",
    "sender_identities": "the tenant's own sender numbers and Messaging Services, nobody's personal data",
    "report_watermarks": "how far the reports have read each workspace's ledger",
    "report_consent_counts": "counts of ledger events per hour, channel, purpose, source and trigger",
    "report_consent_daily": "the same counts per day",
    "report_doi": "counts of double opt-ins per signup day and seconds to confirm",
    "report_message_counts": "counts of message outcomes per hour, channel, provider and purpose",
    "report_message_daily": "the same counts per day",
    "report_message_queue": "ids of message events not counted yet; they go with the event when it is erased",
}
