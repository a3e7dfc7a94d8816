"""Every package's privacy hook, in the order an erasure runs them, and the tables that hold no personal data.

Adding a table means adding it to its package's hook, or to :data:`NO_PERSONAL_DATA` with the reason; a test
(tests/unit/test_privacy_hooks.py) fails otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.chains.privacy import HOOK as CHAINS
from app.emails.privacy import HOOK as EMAILS
from app.ledger.privacy import HOOK as LEDGER
from app.lib.orm import utcnow
from app.lib.privacy import HOOK as SHARED
from app.lib.privacy import PrivacyHook, Subject
from app.lifecycle.privacy import HOOK as LIFECYCLE
from app.messages.privacy import HOOK as MESSAGES
from app.preferences.privacy import HOOK as PREFERENCES
from app.privacy import repository
from app.privacy.schemas import ErasureRequestStatus, ExportedErasureRequest
from app.purchases.privacy import HOOK as PURCHASES
from app.twilio.privacy import HOOK as TWILIO
from app.webhooks.privacy import HOOK as WEBHOOKS


async def _close_requests(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    await repository.close_requests_of(session, subject.workspace_id, subject.contact_id, utcnow())
    return {}


async def _export_requests(session: AsyncSession, subject: Subject) -> Mapping[str, Any]:
    found = await repository.requests_of(session, subject.workspace_id, subject.contact_id)
    return {
        "erasure_requests": [
            ExportedErasureRequest(
                id=r.id,
                status=ErasureRequestStatus(r.status),
                source=r.source,
                requested_at=r.requested_at,
                due_at=r.due_at,
                decided_at=r.decided_at,
                evidence=r.evidence,
            )
            for r in found
        ]
    }


#: The privacy package's own tables are kept: they are the evidence that the erasure was asked for and made.
PRIVACY = PrivacyHook(
    package="privacy",
    tables={
        "erasures": "kept: the record of the erasure, naming the contact only by its now meaningless id (Art. 5(2))",
        "erasure_requests": "kept without their evidence (IP, user agent): when and where the erasure was asked "
        "for, naming the contact only by its id; a pending one is done with the erasure",
    },
    erase=_close_requests,
    export=_export_requests,
)

#: The ledger's rows go last: the other packages' rows reference its contacts and addresses.
HOOKS: tuple[PrivacyHook, ...] = (
    SHARED,
    CHAINS,
    MESSAGES,
    WEBHOOKS,
    EMAILS,
    PREFERENCES,
    TWILIO,
    PRIVACY,
    PURCHASES,
    LIFECYCLE,
    LEDGER,
)

NO_PERSONAL_DATA = {
    "workspaces": "the tenant: its name and settings (sealed provider credentials), nobody's personal data",
    "api_keys": "the tenant's keys: hashed secrets, names and scopes",
    "operator_keys": "the service operator's keys: hashed secrets and names, no workspace's",
    "console_links": "staff login links to the console: a token hash, the API key's id and scopes, no person's data",
    "console_sessions": "staff console sessions: a session id hash, the API key's id and scopes, times",
    "console_chain_checks": "when the ledger's chain was last verified from the console, and the result",
    "workspace_deletions": "the record of a deleted workspace: counts per table and times, no personal data",
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
    "report_standing_daily": "daily snapshots of eligible addresses and suppressions per channel and purpose",
}
