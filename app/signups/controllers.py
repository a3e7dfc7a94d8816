"""``POST /v1/signups``."""

from __future__ import annotations

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import ActorType
from app.emails.controllers import deliver_or_fail
from app.ledger.service import Actor
from app.lib.auth import Principal, Scope
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.settings import Settings
from app.signups import service
from app.signups.schemas import SignupIn, SignupOut
from channel_providers.email import MailSender


class SignupController(Controller):
    """Starting opt-ins (scope `signup`, safe to embed in a signup form's backend)."""

    path = "/signups"
    tags = ["opt-in"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.SIGNUP}  # noqa: RUF012

    @post(operation_id="createSignup", status_code=202, responses=errors(401, 403, 404, 422, 429, 503))
    async def create(
        self,
        data: JSONBody[SignupIn],
        *,
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
        mail_sender: NamedDependency[MailSender],
    ) -> SignupOut:
        """Record the signup as `pending` with its evidence and notice; answers what the person must do next.

        Email sends the confirmation mail (German or English by the contact's locale). Confirmation mails are
        limited per address and per `evidence.ip` (429 with `Retry-After`); a mail the relay could not take
        answers 503 (the signup stays recorded, asking again resends).
        """
        async with db.begin():
            actor = Actor(ActorType.API_KEY, str(principal.api_key_id))
            out, outgoing = await service.sign_up(
                db,
                keys,
                settings,
                principal.workspace_id,
                data,
                actor=actor,
                tenant_records=principal.allows(Scope.CONSENTS_WRITE),
            )
        if outgoing is not None:
            await deliver_or_fail(db, mail_sender, outgoing)
        return out
