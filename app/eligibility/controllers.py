"""``/v1/eligibility``, ``/v1/eligibility/batch``, ``/v1/audiences``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.response import Stream

from app.domain.model import Channel, PurposeKind
from app.eligibility import repository, service
from app.eligibility.schemas import MAX_BATCH_CONTACTS, BatchIn, BatchOut, EligibilityOut
from app.lib.auth import Principal, Scope
from app.lib.copystream import copy_response, wants_csv
from app.lib.db import Database
from app.lib.errors import AppError
from app.lib.openapi import errors
from app.purposes.service import require_purpose
from app.settings import Settings


class PayloadTooLarge(AppError):
    """More than a batch may hold (413)."""

    status = 413
    code = "batch_too_large"
    title = "Request too large"


class EligibilityController(Controller):
    """What campaign tools ask before every send (scope `eligibility:read`)."""

    path = "/"
    tags = ["eligibility"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.ELIGIBILITY_READ}  # noqa: RUF012

    @get("/eligibility", operation_id="getEligibility", responses=errors(401, 403, 404))
    async def single(
        self,
        *,
        principal: NamedDependency[Principal],
        database: NamedDependency[Database],
        contact: Annotated[str, QueryParameter(min_length=1, max_length=200)],
        channel: FromQuery[Channel],
        purpose: Annotated[str, QueryParameter(min_length=1, max_length=63)],
        settings: NamedDependency[Settings],
    ) -> EligibilityOut:
        """May we contact this person on this channel for this purpose now, why, and on which evidence."""
        return await service.single(
            database,
            principal.workspace_id,
            contact_ref=contact,
            channel=channel,
            purpose_key=purpose,
            push_services=settings.web_push_services,
        )

    @post(
        "/eligibility/batch",
        operation_id="getEligibilityBatch",
        status_code=200,
        responses=errors(401, 403, 404, 413, 422),
        opt={"idempotent": False},  # a read: a repeat must answer what holds now, never a stored answer
    )
    async def batch(
        self,
        data: JSONBody[BatchIn],
        principal: NamedDependency[Principal],
        database: NamedDependency[Database],
        settings: NamedDependency[Settings],
    ) -> BatchOut:
        """One decision per contact and channel, for up to 10,000 contacts (more answers 413)."""
        if len(data.contacts) > MAX_BATCH_CONTACTS:
            raise PayloadTooLarge(
                f"A batch holds at most {MAX_BATCH_CONTACTS:,} contacts; this one has {len(data.contacts):,}. "
                "Split it, or stream a whole audience with GET /v1/audiences."
            )
        purpose, decided_at, decisions = await service.batch(
            database,
            principal.workspace_id,
            refs=data.contacts,
            channels=data.channels,
            purpose_key=data.purpose,
            push_services=settings.web_push_services,
        )
        return BatchOut(purpose=purpose, decided_at=decided_at, decisions=decisions)

    @get(
        "/audiences",
        operation_id="streamAudience",
        responses=errors(401, 403, 404, 429, 503),
        media_type="application/x-ndjson",
    )
    async def audience(
        self,
        *,
        request: Request[Any, Any, Any],
        database: NamedDependency[Database],
        principal: NamedDependency[Principal],
        purpose: Annotated[str, QueryParameter(min_length=1, max_length=63)],
        channel: Annotated[list[Channel], QueryParameter(min_items=1)],
        settings: NamedDependency[Settings],
    ) -> Stream:
        """Every eligible contact point, streamed as NDJSON (or CSV with `Accept: text/csv`) in constant memory.

        The send window is a send-time check and is not applied here; routing re-checks every message. A key
        may have a few streams open at a time (429 beyond), the server a few more (503 beyond, both with
        Retry-After); a client that stops reading is cut off after a while.
        """
        async with database.sessionmaker() as session:
            found = await require_purpose(session, principal.workspace_id, purpose)
        as_csv = wants_csv(request.headers.get("accept", ""))
        kind, channels = PurposeKind(found.kind), sorted(set(channel))

        async def copy(driver: Any, sink: Callable[[bytes], Awaitable[None]]) -> None:
            await repository.copy_audience(
                driver,
                principal.workspace_id,
                found.id,
                kind,
                channels,
                as_csv=as_csv,
                sink=sink,
                push_services=settings.web_push_services,
                policy=repository.lifecycle_policy(found.validity, found.inactivity),
            )

        return copy_response(request, database, copy, as_csv=as_csv)
