"""``/v1/contacts/{contact}/purchases``: sales that make a contact an existing customer (UWG §7(3))."""

from __future__ import annotations

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import ActorType
from app.ledger.service import Actor
from app.lib.auth import Principal, Scope
from app.lib.errors import Conflict
from app.lib.keys import Keys
from app.lib.openapi import answer, errors
from app.purchases import service
from app.purchases.schemas import PurchaseIn, PurchaseOut


class PurchaseController(Controller):
    """Purchases of a contact (record: `consents:write`; read: `consents:write` or `audit:read`)."""

    path = "/contacts/{contact:str}/purchases"
    tags = ["consents"]  # noqa: RUF012  # Litestar reads class attributes

    @post(
        operation_id="recordPurchase",
        status_code=201,
        responses={
            **errors(401, 403, 404, 409, 422),
            **answer(200, PurchaseOut, "This reference was recorded before with the same sale: that record"),
        },
        opt={"scope": Scope.CONSENTS_WRITE},
    )
    async def record(
        self,
        contact: FromPath[str],
        data: JSONBody[PurchaseIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> Response[PurchaseOut]:
        """Record a sale made with an email address of the contact (or a new one, attached to it).

        Purposes whose `similar_products_of` names the sale's `category` become eligible by email without consent,
        on the basis `uwg_7_3` (eligibility `reason: existing_customer`, with this purchase's ledger event as
        evidence), until the person withdraws or objects: any unsubscribe, complaint or objection on the address
        for that purpose or for all of them ends it for good, and a later purchase does not bring it back (it is
        recorded all the same). Requires `objection_notice_shown: true` (422 `objection_notice_required`).
        Idempotent on `reference`: the same sale again answers 200 with the first record; another sale under the
        same reference answers 409 `purchase_reference_taken`.
        """
        actor = Actor(ActorType.API_KEY, str(principal.api_key_id))
        for attempt in range(2):
            try:
                async with db.begin():
                    out, created = await service.record_purchase(
                        db, keys, principal.workspace_id, contact_ref=contact, data=data, actor=actor
                    )
                return Response(out, status_code=201 if created else 200)
            except service.ReferenceRaced:
                if attempt:
                    break
        raise Conflict("Another request is recording this reference; ask again.", code="purchase_reference_taken")

    @get(
        operation_id="listPurchases",
        responses=errors(401, 403, 404),
        opt={"scope": (Scope.CONSENTS_WRITE, Scope.AUDIT_READ)},
    )
    async def list_purchases(
        self, contact: FromPath[str], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> list[PurchaseOut]:
        """The sales recorded for the contact's email addresses, oldest first."""
        return await service.purchases_of(db, principal.workspace_id, contact)
