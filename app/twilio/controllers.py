"""``POST /webhooks/twilio/{workspace}/inbound`` and ``/status``: authenticated by Twilio's signature only.

A valid signature proves the request came from the Twilio account, not that the message is this workspace's:
with an account several workspaces share, the path alone would let a STOP sent to one workspace's number land in
another's ledger. So the number the message was sent to (inbound: ``To``; status: ``From``) or its Messaging
Service must be one this workspace holds (the settings ``PUT`` claimed it); otherwise ``403 sender_not_owned``
and nothing is recorded.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import structlog
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator, get_signature_algorithm

from app.lib.errors import Forbidden, InvalidInput, again_if_raced
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.settings import Settings
from app.twilio import service
from app.workspaces.service import sealing_context, settings_and_sender
from app.workspaces.settings import WorkspaceSettings

log = structlog.get_logger(__name__)


async def _authenticated(
    request: Request[Any, Any, Any],
    app_settings: Settings,
    keys: Keys,
    db: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    our_number: str,
) -> tuple[WorkspaceSettings, dict[str, list[str]]]:
    """The workspace's settings and every form parameter, after the signature, account and sender were checked.

    ``our_number`` names the parameter holding the workspace's own number (``To`` inbound, ``From`` in a status).
    """
    form = await request.form()
    params = {name: [str(v) for v in form.getall(name)] for name in form}
    senders = [*params.get(our_number, [])[:1], *params.get("MessagingServiceSid", [])[:1]]
    # one statement: the workspace's settings, and whether it holds the sender (used only once the signature holds)
    name, settings, owned = await settings_and_sender(db, workspace_id, senders)
    settings = msgspec.structs.replace(settings, brand=settings.brand or name)
    token = app_settings.twilio.auth_token
    if settings.twilio.auth_token_sealed:
        token = keys.unseal(settings.twilio.auth_token_sealed, sealing_context(workspace_id))
    if not token:
        raise Forbidden("No Twilio auth token is configured for this workspace.", code="twilio_not_configured")
    # Twilio signs the URL it was configured with: the public one, not the one a proxy hands us.
    url = app_settings.public_base_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    algorithm = get_signature_algorithm(request.headers.get("x-twilio-webhooks-signature-settings"))
    signature = request.headers.get("x-twilio-signature", "")
    if not signature or not RequestValidator(token).validate(url, _MultiParams(params), signature, algorithm):
        log.warning(
            "twilio_signature_rejected", workspace_id=str(workspace_id), route=request.scope.get("path_template")
        )
        raise Forbidden("The X-Twilio-Signature does not match this request.", code="invalid_signature")
    expected_account = settings.twilio.account_sid or app_settings.twilio.account_sid
    if expected_account and params.get("AccountSid", [None])[0] != expected_account:
        raise Forbidden("The request is for another Twilio account.", code="account_mismatch")
    if not owned:
        log.warning("twilio_sender_not_owned", workspace_id=str(workspace_id), route=request.scope.get("path_template"))
        raise Forbidden(
            f"The message's {our_number} number (and Messaging Service, if any) is not a sender of this workspace: "
            "nothing was recorded. Set it as phone.sms_from or phone.whatsapp_from in this workspace's settings.",
            code="sender_not_owned",
        )
    return settings, params


class _MultiParams(dict[str, list[str]]):
    """What ``RequestValidator`` reads multi-valued parameters through (``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def _one(params: dict[str, list[str]], name: str, *, required: bool = True) -> str:
    values = params.get(name) or []
    if not values and required:
        raise InvalidInput(f"The webhook lacks the '{name}' parameter.", code="missing_parameter")
    return values[0] if values else ""


class TwilioWebhookController(Controller):
    """Inbound SMS/WhatsApp and message status from Twilio."""

    path = "/webhooks/twilio/{workspace_id:uuid}"
    tags = ["webhooks"]  # noqa: RUF012  # Litestar reads class attributes

    @post(
        "/inbound",
        operation_id="twilioInbound",
        status_code=200,
        media_type="application/xml",
        responses=errors(403, 404, 422),
    )
    async def inbound(
        self,
        request: Request[Any, Any, Any],
        workspace_id: FromPath[uuid.UUID],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> Response[str]:
        """An inbound message: start word, STOP, HELP. Answers TwiML (`application/xml`); idempotent on MessageSid."""
        # Twilio does not send an inbound message again: a STOP refused by a merge committed meanwhile is taken again
        reply = await again_if_raced(
            lambda: self._inbound(request, workspace_id, db, keys, settings), what="twilio_inbound"
        )
        return Response(reply, media_type="application/xml")

    @staticmethod
    async def _inbound(
        request: Request[Any, Any, Any], workspace_id: uuid.UUID, db: AsyncSession, keys: Keys, settings: Settings
    ) -> str:
        async with db.begin():
            workspace, params = await _authenticated(request, settings, keys, db, workspace_id, our_number="To")
            message = service.Inbound(
                message_sid=_one(params, "MessageSid"),
                sender=_one(params, "From"),
                recipient=_one(params, "To", required=False),
                body=_one(params, "Body", required=False),
                raw=params,
            )
            return await service.handle_inbound(db, keys, workspace_id, workspace, message)

    @post("/status", operation_id="twilioStatus", status_code=204, responses=errors(403, 404, 422))
    async def status(
        self,
        request: Request[Any, Any, Any],
        workspace_id: FromPath[uuid.UUID],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> None:
        """A message status callback; error 21610 marks the number `provider_blocked` and withdraws consent.

        The error codes of a number that cannot receive (21211, 21614, 21635, 30005, 30006, 63024) mark it
        `undeliverable` (consent stays); other codes change nothing about the number.
        """

        async def handle() -> None:
            async with db.begin():
                workspace, params = await _authenticated(request, settings, keys, db, workspace_id, our_number="From")
                names = ("MessageSid", "MessageStatus", "ErrorCode", "To", "From")
                fields = {name: _one(params, name, required=name in {"MessageSid", "MessageStatus"}) for name in names}
                fields["delivery"] = request.query_params.get("delivery", "")  # our status_callback URL names it
                await service.handle_status(db, workspace_id, workspace, fields)

        # a 21610 withdraws the number's consent: raced by a merge of its contact, it is taken again, not lost
        await again_if_raced(handle, what="twilio_status")
