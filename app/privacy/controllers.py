"""``GET /v1/contacts/{contact}/export`` (Art. 15) and ``DELETE /v1/contacts/{contact}`` (Art. 17)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import ActorType, RequestChannel
from app.ledger.service import Actor
from app.lib.auth import Principal, Scope
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.privacy import access, erasure
from app.privacy.schemas import REQUEST_REF_PATTERN, ErasureOut, SubjectAccessOut
from app.settings import Settings


class DataSubjectController(Controller):
    """Data-subject requests about a contact: subject access and erasure."""

    path = "/contacts"
    tags = ["consents"]  # noqa: RUF012  # Litestar reads class attributes

    @get(
        "/{contact:str}/export",
        operation_id="exportContact",
        responses=errors(401, 403, 404),
        opt={"scope": Scope.AUDIT_READ},
    )
    async def export(
        self, contact: FromPath[str], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> SubjectAccessOut:
        """Everything held about the contact (GDPR Art. 15), with a Kantara-shaped consent receipt per consent given.

        The contact, every address with what is stored with it and the suppressions that cover it, every consent
        with the exact notice text, every ledger event with its evidence, every message with content and history.
        """
        async with db.begin():
            return await access.subject_access(db, principal.workspace_id, contact)

    @delete(
        "/{contact:str}",
        operation_id="eraseContact",
        status_code=200,
        responses=errors(401, 403, 404, 409, 422),
        opt={"scope": Scope.ADMIN},
    )
    async def erase(
        self,
        contact: FromPath[str],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
        *,
        request_ref: Annotated[
            str | None,
            Parameter(
                min_length=1,
                max_length=100,
                pattern=REQUEST_REF_PATTERN,
                description="Your reference of the request (a ticket number); kept with the erasure: no personal data.",
            ),
        ] = None,
        received_via: FromQuery[RequestChannel | None] = None,
    ) -> ErasureOut:
        """Erasure (GDPR Art. 17): the contact, its addresses, consents, tokens and messages are deleted.

        The person's mails, messages and letters in the outbox folder (development) and in print batch files not
        yet collected are deleted too (`deleted.outbox_files`).

        Kept, and said so in the answer: suppression keys (hashes) that stop the addresses from being marketed
        to again, the ledger without its evidence, and a record of this erasure. Repeating the request with the
        contact id answers the same report.
        """
        async with db.begin():
            return await erasure.erase(
                db,
                keys,
                principal.workspace_id,
                contact,
                request_ref=request_ref,
                received_via=received_via,
                actor=Actor(ActorType.API_KEY, str(principal.api_key_id)),
                outbox=settings.data_dir / "outbox",
            )
