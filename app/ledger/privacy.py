"""The ledger's part of a data-subject request: the person, their addresses and consents, the events' evidence."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger import repository
from app.lib.privacy import PrivacyHook, Subject


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    return await repository.erase_contact(
        session, subject.workspace_id, subject.contact_id, keep_evidence_of=subject.keep_event_ids
    )


HOOK = PrivacyHook(
    package="ledger",
    tables={
        "contacts": "deleted",
        "contact_points": "deleted",
        "consents": "deleted",
        "consent_events": "kept without their evidence: the hash chain covers only its digest, so it still verifies "
        "and proves which (now anonymous) contact was permitted when",
        "suppressions": "kept: keyed hashes, no clear text, so the addresses are never marketed to again",
        "robinson_keys": "kept: the Robinson list's keyed hashes, suppressions like the others (no clear text)",
    },
    erase=_erase,
)
