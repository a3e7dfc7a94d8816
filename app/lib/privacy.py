"""The contract between :mod:`app.privacy` and the packages that keep rows about a person.

Each package whose tables hold personal data exports one :class:`PrivacyHook` from its ``privacy`` module: which of
its tables it answers for and what an erasure does with their rows (Art. 17), and, where the person is owed a copy
that the ledger's own sections do not already give, a section of the subject access export (Art. 15). The privacy
package runs the hooks; it knows no package's tables. A test fails when a table is covered by no hook and not
declared free of personal data, so a new table cannot be forgotten by an erasure.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.lib import repository


@dataclass(frozen=True, slots=True)
class Subject:
    """The person a request is about, as every hook needs them."""

    workspace_id: uuid.UUID
    contact_id: uuid.UUID
    point_ids: tuple[uuid.UUID, ...]
    purpose_keys: Mapping[uuid.UUID, str] = field(default_factory=dict)
    """Purpose ids to the keys the API shows (for exports)."""
    keep_event_ids: tuple[uuid.UUID, ...] = ()
    """Ledger events an erasure keeps whole: its own, which say how it was requested."""
    merged_ids: tuple[uuid.UUID, ...] = ()
    """Contacts merged into this one (:mod:`app.ledger.merge`): rows naming their ids are the person's too."""

    @property
    def contact_ids(self) -> tuple[uuid.UUID, ...]:
        """The contact and the contacts merged into it."""
        return (self.contact_id, *self.merged_ids)


Eraser = Callable[[AsyncSession, Subject], Awaitable[Mapping[str, int]]]
"""Deletes (or unlinks) the subject's rows; answers a row count per kind of the erasure report."""
Exporter = Callable[[AsyncSession, Subject], Awaitable[Mapping[str, Any]]]
"""Answers sections of the subject access export, by field name of the export."""


@dataclass(frozen=True, slots=True)
class PrivacyHook:
    """What one package does for a data-subject request."""

    package: str
    tables: Mapping[str, str]
    """Each table the hook answers for, with what an erasure does with the subject's rows in it."""
    erase: Eraser
    export: Exporter | None = None


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    erased = 0
    for contact_id in subject.contact_ids:
        erased += await repository.erase_answers_naming(session, subject.workspace_id, contact_id)
    return {"stored_answers": erased}


#: The shared tables' part: stored idempotent answers (a POST /v1/contacts answer holds the person's addresses).
HOOK = PrivacyHook(
    package="lib",
    tables={
        "idempotency_keys": "stored answers that name the contact are erased, the key kept until it expires "
        "(24 hours) so that a retry is not done again",
        "rate_limit_hits": "kept until they expire (at most 31 days): keyed hashes of an address or client IP, "
        "no clear text, and needed to keep limiting sign-up abuse",
        "provider_callbacks": "kept until pruned (30 days): provider message ids, statuses and error codes (never a "
        "provider's free text), which name nobody once the message is gone",
    },
    erase=_erase,
)
