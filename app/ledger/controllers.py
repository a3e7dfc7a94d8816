"""``/v1/contacts``, ``/v1/withdrawals``, ``/v1/objections``, ``/v1/audit/verify``, ``/v1/audit/events``."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.identifiers import mask, normalise_phone
from app.domain.model import ActorType, Channel, Reachability, State, VerifiedVia
from app.ledger import actions, merge, reassigned, repository, sealer
from app.ledger.audit import verify_chain
from app.ledger.models import Contact
from app.ledger.schemas import (
    ChangesOut,
    ConsentChange,
    ConsentOut,
    ContactIn,
    ContactOut,
    ContactPointOut,
    EventOut,
    MergeIn,
    MergeOut,
    ObjectionIn,
    ObjectionWithdrawalIn,
    ObjectionWithdrawalOut,
    PostalAddressIn,
    ReassignedNumberIn,
    ReassignedNumberOut,
    VerificationOut,
    WithdrawalIn,
    event_out,
)
from app.ledger.service import Actor, Applied, require_contact
from app.lib.auth import Principal, Scope
from app.lib.copystream import copy_response, wants_csv
from app.lib.db import Database
from app.lib.errors import Conflict, InvalidInput
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.lib.orm import utcnow
from app.purposes import repository as purposes
from app.workspaces.service import settings_of

_READ = (Scope.CONSENTS_WRITE, Scope.AUDIT_READ)


def _actor(principal: Principal) -> Actor:
    return Actor(ActorType.API_KEY, str(principal.api_key_id))


async def _changes(
    db: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID, applied: Sequence[Applied]
) -> ChangesOut:
    names = {p.id: p.key for p in await purposes.list_purposes(db, workspace_id)}
    return ChangesOut(
        contact_id=contact_id,
        changes=[
            ConsentChange(
                contact_point_id=a.contact_point_id,
                channel=a.channel,
                purpose=names.get(a.purpose_id) if a.purpose_id else None,
                from_state=a.from_state,
                state=a.to_state,
                event_id=a.event_id,
                skipped=a.skipped,
            )
            for a in applied
        ],
    )


async def _contact_out(db: AsyncSession, workspace_id: uuid.UUID, found: Contact) -> ContactOut:
    """A contact with every address, its reachability and every consent that has an event."""
    names = {p.id: p.key for p in await purposes.list_purposes(db, workspace_id)}
    consents = await repository.consents_of(db, found.id)
    points = []
    for point in await repository.contact_points_of(db, found.id):
        channel = Channel(point.channel)
        points.append(
            ContactPointOut(
                id=point.id,
                channel=channel,
                address=point.value,
                address_masked=mask(channel, point.value),
                reachability=Reachability(point.reachability),
                verified_at=point.verified_at,
                verified_via=VerifiedVia(point.verified_via) if point.verified_via else None,
                consents=[
                    ConsentOut(
                        purpose=names.get(c.purpose_id) if c.purpose_id else None,
                        state=State(c.state),
                        legal_basis=c.legal_basis,
                        since=c.since,
                        notice_id=c.notice_id,
                        last_event_id=c.last_event_id,
                    )
                    for c in consents
                    if c.contact_point_id == point.id and c.last_event_id is not None
                ],
            )
        )
    return ContactOut(
        id=found.id,
        external_id=found.external_id,
        locale=found.locale,
        timezone=found.timezone,
        created_at=found.created_at,
        contact_points=points,
    )


class ContactController(Controller):
    """Contacts with their addresses, consents and ledger (scope `consents:write` or `audit:read`)."""

    path = "/contacts"
    tags = ["consents"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": _READ}  # noqa: RUF012

    @get("/{contact:str}", operation_id="getContact", responses=errors(401, 403, 404))
    async def get_contact(
        self, contact: FromPath[str], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> ContactOut:
        """Every address of the contact with reachability and every consent with state, legal basis and notice."""
        found = await require_contact(db, principal.workspace_id, contact)
        return await _contact_out(db, principal.workspace_id, found)

    @post(
        operation_id="createContact",
        status_code=201,
        responses=errors(401, 403, 409, 422),
        opt={"scope": Scope.CONSENTS_WRITE},
    )
    async def create_contact(
        self,
        data: JSONBody[ContactIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> ContactOut:
        """A contact as your CRM knows it, optionally with a postal address (print needs no opt-in)."""
        address = data.postal_address.normalised() if data.postal_address else None
        async with db.begin():
            if data.external_id and await repository.find_contact(db, principal.workspace_id, data.external_id):
                raise Conflict("A contact with this external_id exists.", code="contact_exists")
            found = await repository.add_contact(
                db, principal.workspace_id, data.external_id, data.locale, data.timezone
            )
            if address is not None:
                await actions.add_postal_address(db, keys, principal.workspace_id, found, address)
            return await _contact_out(db, principal.workspace_id, found)

    @post(
        "/{contact:str}/postal-addresses",
        operation_id="addPostalAddress",
        status_code=201,
        responses=errors(401, 403, 404, 409, 422),
        opt={"scope": Scope.CONSENTS_WRITE},
    )
    async def add_postal_address(
        self,
        contact: FromPath[str],
        data: JSONBody[PostalAddressIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> ContactOut:
        """Add a postal address (normalised; matched against objections, stickers and Robinson entries)."""
        address = data.normalised()
        async with db.begin():
            found = await require_contact(db, principal.workspace_id, contact)
            await actions.add_postal_address(db, keys, principal.workspace_id, found, address)
            return await _contact_out(db, principal.workspace_id, found)

    @post(
        "/{contact:str}/merge",
        operation_id="mergeContacts",
        status_code=200,
        responses=errors(401, 403, 404, 409, 422),
        opt={"scope": Scope.CONSENTS_WRITE},
    )
    async def merge(
        self,
        contact: FromPath[str],
        data: JSONBody[MergeIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
    ) -> MergeOut:
        """Merge the `duplicate` into this contact: its addresses, consents, messages and external id move here.

        Where a contact-wide statement of either (a withdrawal on every channel, an objection to all marketing or
        to postal advertising) covers the other's addresses, the most restrictive state wins; each address gets a
        `merged` event. The duplicate's id answers 409 `contact_merged` naming this contact from then on; webhook
        `contact.merged`.
        """
        await sealer.seal_first(db, principal.workspace_id)  # the statements it finds name their events' seq
        async with db.begin():
            done = await merge.merge(
                db,
                principal.workspace_id,
                survivor_ref=contact,
                duplicate_ref=data.duplicate,
                evidence=data.evidence.as_dict(),
                actor=_actor(principal),
            )
            changed = await _changes(db, principal.workspace_id, done.survivor.id, done.applied)
        return MergeOut(
            contact_id=done.survivor.id,
            merged_contact_id=done.duplicate_id,
            moved=done.moved,
            changes=changed.changes,
        )

    @post(
        "/{contact:str}/reassigned-numbers",
        operation_id="reportReassignedNumber",
        status_code=200,
        responses=errors(401, 403, 404, 409, 422),
        opt={"scope": Scope.CONSENTS_WRITE},
    )
    async def reassigned_number(
        self,
        contact: FromPath[str],
        data: JSONBody[ReassignedNumberIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> ReassignedNumberOut:
        """A recycled number: this contact's `number` went to someone else at `reassigned_at`.

        Every SMS and WhatsApp consent of the number given before that date ends (`reassigned` → `expired`), on
        the addresses of whichever contacts of the workspace hold it; consents given since stay. The number's
        suppressions from before the date are lifted, so the new owner can opt in by texting the start word.
        422 `number_not_held` when this contact holds the number on neither channel. Repeating it records nothing.
        """
        when = reassigned.check_date(data.reassigned_at, utcnow())
        async with db.begin():
            number = normalise_phone(data.number, (await settings_of(db, principal.workspace_id)).default_region)
            found, done = await reassigned.report(
                db,
                keys,
                principal.workspace_id,
                contact_ref=contact,
                number=number,
                reassigned_at=when,
                evidence=data.evidence.as_dict(),
                actor=_actor(principal),
            )
            changed = await _changes(db, principal.workspace_id, found.id, done.applied)
        return ReassignedNumberOut(
            contact_id=found.id,
            number=number,
            reassigned_at=when,
            suppressions_lifted=len(done.suppressions_lifted),
            changes=changed.changes,
        )

    @get("/{contact:str}/events", operation_id="listContactEvents", responses=errors(401, 403, 404))
    async def events(
        self,
        contact: FromPath[str],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        # Litestar applies the bounds of a QueryParameter, not a msgspec.Meta nested in FromQuery
        after_seq: Annotated[int, QueryParameter(ge=0, le=_MAX_SEQ)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 1000,
    ) -> list[EventOut]:
        """The contact's ledger entries, oldest first (page on with `after_seq` = the last `seq` seen)."""
        await sealer.seal_first(db, principal.workspace_id)  # every committed event with its seq (the cursor)
        found = await require_contact(db, principal.workspace_id, contact)
        names = {p.id: p.key for p in await purposes.list_purposes(db, principal.workspace_id)}
        events = await repository.events_of_contact(db, found.id, after_seq, limit)
        # one committed since the seal above waits for its seq: the next page shows it
        return [event_out(e, names) for e in events if e.seq is not None]


_MAX_SEQ = 2**63 - 1  # a bigint: a larger value would overflow in PostgreSQL


class WithdrawalController(Controller):
    """Withdrawing consent (scope `consents:write`)."""

    path = "/withdrawals"
    tags = ["consents"]  # noqa: RUF012
    opt = {"scope": Scope.CONSENTS_WRITE}  # noqa: RUF012

    @post(operation_id="createWithdrawal", status_code=200, responses=errors(401, 403, 404, 422))
    async def withdraw(
        self, data: JSONBody[WithdrawalIn], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> ChangesOut:
        """Withdraw consent for one purpose or `all`, on one channel or `all`; answers the resulting states."""
        async with db.begin():
            contact, applied = await actions.withdraw(
                db,
                principal.workspace_id,
                contact_ref=data.contact,
                channel=data.channel,
                purpose_key=data.purpose,
                evidence=data.evidence.as_dict(),
                actor=_actor(principal),
            )
            return await _changes(db, principal.workspace_id, contact.id, applied)


class ObjectionController(Controller):
    """Objections to advertising (scope `consents:write`)."""

    path = "/objections"
    tags = ["consents"]  # noqa: RUF012
    opt = {"scope": Scope.CONSENTS_WRITE}  # noqa: RUF012

    @post(operation_id="createObjection", status_code=201, responses=errors(401, 403, 404, 422))
    async def create(
        self,
        data: JSONBody[ObjectionIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> ChangesOut:
        """Record an objection for a contact and/or a postal address (an unknown address becomes a contact)."""
        if data.contact is None and data.postal_address is None:
            raise InvalidInput("Name the 'contact', the 'postal_address', or both.", code="objection_target_missing")
        address = None
        if data.postal_address is not None:
            address = data.postal_address.normalised()
        async with db.begin():
            contact, applied = await actions.object_to_marketing(
                db,
                keys,
                principal.workspace_id,
                contact_ref=data.contact,
                address=address,
                scope=data.scope,
                kind=data.kind,
                evidence=data.evidence.as_dict(),
                actor=_actor(principal),
            )
            return await _changes(db, principal.workspace_id, contact.id, applied)

    @post("/withdrawals", operation_id="withdrawObjection", status_code=200, responses=errors(401, 403, 404, 409, 422))
    async def lift(
        self,
        data: JSONBody[ObjectionWithdrawalIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> ObjectionWithdrawalOut:
        """The person lifts their print objection; the evidence must say how (e.g. `document_ref`).

        The print state returns to `none`; the objection's own suppression (`objection_art21`) is lifted where
        nothing else holds it, on the channels the withdrawn objections covered, and not under a key that an address
        of another contact also has (`shared_with_another_contact` names those channels); what still stops print to
        the contact's postal addresses is named in `still_blocked_by`: while it is not empty, print is not sent.
        """
        evidence = data.evidence.as_dict()
        if not {"document_ref", "ticket", "note"} & evidence.keys():
            raise InvalidInput(
                "Lifting an objection needs the person's proof: give evidence.document_ref, ticket or note.",
                code="proof_required",
            )
        async with db.begin():
            lifted = await actions.withdraw_objection(
                db, keys, principal.workspace_id, data.contact, evidence=evidence, actor=_actor(principal)
            )
            changes = await _changes(db, principal.workspace_id, lifted.contact.id, lifted.applied)
            return ObjectionWithdrawalOut(
                contact_id=changes.contact_id,
                changes=changes.changes,
                still_blocked_by=lifted.still_blocked_by,
                shared_with_another_contact=lifted.shared_with_another_contact,
            )


class AuditController(Controller):
    """Audit (scope `audit:read`)."""

    path = "/audit"
    tags = ["audit"]  # noqa: RUF012
    opt = {"scope": Scope.AUDIT_READ}  # noqa: RUF012

    @get("/verify", operation_id="verifyLedger", responses=errors(401, 403))
    async def verify(self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]) -> VerificationOut:
        """Recompute the workspace's hash chain; names the first event that does not verify."""
        result = await verify_chain(db, principal.workspace_id)
        return VerificationOut(
            events_checked=result.events_checked,
            valid=result.valid,
            first_broken_event_id=result.first_broken_event_id,
            first_broken_seq=result.first_broken_seq,
            reason=result.reason,
        )

    @get(
        "/events",
        operation_id="streamAuditEvents",
        responses=errors(401, 403, 422, 429, 503),
        media_type="application/x-ndjson",
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        database: NamedDependency[Database],
        principal: NamedDependency[Principal],
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> Stream:
        """The ledger events recorded in [`since`, `until`), in chain order: NDJSON, or CSV with `Accept: text/csv`.

        Streamed in constant memory. Each event carries what its hash covers, written as the chain writes it, so the
        stream can be verified on its own: hash = SHA-256(prev_hash + canonical JSON of the fields, `"v": 1` and the
        workspace id). Evidence is `null` once erased; its digest stays. Timestamps need a time zone (RFC 3339).
        """
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise InvalidInput(
                    f"'{name}' needs a time zone (RFC 3339, e.g. 2026-11-01T00:00:00Z).", code="timezone_required"
                )
        try:  # in UTC, as PostgreSQL gets them: year 1 at +14:00 or year 9999 at -14:00 would overflow mid-stream
            start, end = (since or _BEGINNING).astimezone(UTC), (until or _END).astimezone(UTC)
        except OverflowError:
            raise InvalidInput(
                "'since' and 'until' must lie between the years 1 and 9999 in UTC.", code="invalid_range"
            ) from None
        if end <= start:
            raise InvalidInput("'until' must be later than 'since'.", code="invalid_range")
        as_csv = wants_csv(request.headers.get("accept", ""))
        workspace_id = principal.workspace_id

        async def copy(driver: Any, sink: Callable[[bytes], Awaitable[None]]) -> None:
            await repository.copy_events(driver, workspace_id, start, end, as_csv=as_csv, sink=sink)

        await sealer.seal_on_database(database, workspace_id)  # every committed event in chain order, with its hash

        return copy_response(request, database, copy, as_csv=as_csv)


_BEGINNING = datetime.min.replace(tzinfo=UTC)
_END = datetime.max.replace(tzinfo=UTC)
