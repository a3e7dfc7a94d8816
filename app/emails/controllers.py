"""Hosted pages ``/c/{token}`` (confirm) and ``/u/{token}`` (unsubscribe), and the bounce/complaint webhook.

The pages need no API key: the token in the URL is the capability. ``GET`` and ``HEAD`` never change anything
(mail scanners fetch every link); only a real ``POST`` from the page's button acts. The RFC 8058 one-click
target acts on ``POST`` at once, answers 200 without a redirect, and ignores cookies.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Controller, HttpMethod, MediaType, Request, Response, post, route
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from app.emails import service
from app.emails.pages import PAGE_ERRORS, browser_locale, html
from app.emails.render import Form, Link, Option, page, word
from app.emails.schemas import EmailEventsIn, EmailEventsOut
from app.emails.service import LinkStatus, RequestMeta
from app.emails.tokens import verify_unsubscribe
from app.lib import signatures
from app.lib.errors import Forbidden, InvalidInput, NotFound, RateLimited, Unavailable, again_if_raced
from app.lib.keys import Keys
from app.lib.openapi import errors, pages
from app.settings import Settings
from app.workspaces import repository as workspaces
from app.workspaces.service import EMAIL_WEBHOOK_SECRET, sealing_context
from app.workspaces.settings import WorkspaceSettings
from channel_providers.email import MailOutcome, MailSender

_MAX_TOKEN = 200  # longer than any token we issue: answered as unknown without a lookup


def _per_method(name: str) -> Callable[[Any, Any, Any], str]:
    """An operation id per method of a ``GET``/``HEAD`` route (OpenAPI needs them unique)."""
    return lambda _handler, method, _path: name if method == HttpMethod.GET else f"{name}Head"


def _meta(request: Request[Any, Any, Any]) -> RequestMeta:
    agent = request.headers.get("user-agent")
    return RequestMeta(ip=request.client.host if request.client else None, user_agent=agent[:1000] if agent else None)


_lang = browser_locale
_html = html


_LINKS_PREFERENCES = (LinkStatus.CONFIRMABLE, LinkStatus.CONFIRMED, LinkStatus.CONFIRMED_BLOCKED, LinkStatus.ALREADY)


def _link_page(
    link: service.ConfirmationLink, token: str, fallback_lang: str, keys: Keys | None = None
) -> Response[str]:
    """The page for a confirmation link in any status; a live one links to the address's preference centre."""
    status = link.status
    preferences = (
        service.preferences_path(keys, link.point.id)
        if keys is not None and link.point is not None and status in _LINKS_PREFERENCES
        else None
    )
    lang = link.lang if link.token else fallback_lang
    values = {"address": link.address, "purpose": link.purpose, "brand": link.brand}
    form: Form | None = None
    extra: Link | None = None
    if status is LinkStatus.CONFIRMABLE:
        form = Form(action=f"/c/{token}", button=word(lang, "confirm_button"))
    elif status in (LinkStatus.EXPIRED, LinkStatus.SUPERSEDED):
        form = Form(action=f"/c/{token}/renew", button=word(lang, "renew_button"))
    elif status is LinkStatus.UNKNOWN and link.signup_url:
        extra = Link(link.signup_url, word(lang, "signup_again"))
    body = page(lang, status.value, form=form, link=extra, preferences=preferences, **values)
    return _html(body, service.STATUS_CODES[status])


class ConfirmationPages(Controller):
    """``/c/{token}``: the double opt-in confirmation page."""

    path = "/c/{token:str}"
    tags = ["hosted pages"]  # noqa: RUF012  # Litestar reads class attributes
    exception_handlers = PAGE_ERRORS  # a page, not the API's JSON, for an error no handler took

    @route(
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        operation_id=_per_method("confirmationPage"),
        media_type=MediaType.HTML,
        responses=pages(404, 410),
    )
    async def show(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> Response[str]:
        """The page with a confirm button; changes nothing (404 unknown, 410 expired or replaced)."""
        if len(token) > _MAX_TOKEN:
            return _link_page(service.ConfirmationLink(LinkStatus.UNKNOWN), token, _lang(request))
        async with db.begin():
            link = await service.look_up(db, token)
        return _link_page(link, token, _lang(request), keys)

    @post(operation_id="confirm", status_code=200, media_type=MediaType.HTML, responses=pages(404, 410))
    async def confirm(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> Response[str]:
        """Confirm: records time, IP, user agent and scanner signals; a repeat shows "already confirmed"."""
        if len(token) > _MAX_TOKEN:
            return _link_page(service.ConfirmationLink(LinkStatus.UNKNOWN), token, _lang(request))
        async with db.begin():
            link = await service.confirm(db, token, _meta(request))
        return _link_page(link, token, _lang(request), keys)

    @post(
        "/renew",
        operation_id="renewConfirmation",
        status_code=200,
        media_type=MediaType.HTML,
        responses=pages(404, 410, 429, 503),
    )
    async def renew(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
        mail_sender: NamedDependency[MailSender],
    ) -> Response[str]:
        """A new confirmation mail for an expired or replaced link (rate limited per address and client IP)."""
        fallback = _lang(request)
        if len(token) > _MAX_TOKEN:
            return _link_page(service.ConfirmationLink(LinkStatus.UNKNOWN), token, fallback)
        try:
            async with db.begin():
                link, outgoing = await service.renew(db, keys, settings, token, _meta(request))
        except RateLimited as exc:
            body = page(fallback, "limited")
            return _html(body, 429, {"Retry-After": str(exc.retry_after)})
        if outgoing is None:
            return _link_page(link, token, fallback)
        async with db.begin():
            result = await service.deliver(db, mail_sender, outgoing)
        if not result.accepted:
            return _html(page(link.lang, "limited"), 503, {"Retry-After": "60"})
        return _html(page(link.lang, "renewed"))


class UnsubscribePages(Controller):
    """``/u/{token}``: unsubscribe page and the RFC 8058 one-click target."""

    path = "/u/{token:str}"
    tags = ["hosted pages"]  # noqa: RUF012

    @route(
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        operation_id=_per_method("unsubscribePage"),
        media_type=MediaType.HTML,
        responses=pages(404),
        exception_handlers=PAGE_ERRORS,
    )
    async def show(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> Response[str]:
        """Choose one purpose or every marketing email; changes nothing."""
        async with db.begin():
            recipient = await self._recipient(db, keys, token)
        if recipient is None:
            return _html(page(_lang(request), "unsubscribe_unknown"), 404)
        return _html(self._choice(recipient, token))

    @post(
        operation_id="unsubscribe",
        status_code=200,
        media_type=MediaType.HTML,
        responses=pages(404),
        exception_handlers=PAGE_ERRORS,  # the one-click target below keeps the API's answers
    )
    async def unsubscribe(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> Response[str]:
        """Apply the choice (form field ``scope``: ``purpose`` or ``all``); idempotent."""
        form = await request.form()

        async def apply() -> tuple[service.Recipient | None, bool]:
            async with db.begin():
                recipient = await self._recipient(db, keys, token)
                if recipient is None:
                    return None, False
                everything = recipient.purpose is None or form.get("scope") == "all"
                evidence = {
                    **_meta(request).evidence(),
                    "method": "unsubscribe_page",
                    "scope": "all" if everything else "purpose",
                }
                await service.unsubscribe(db, recipient, everything=everything, evidence=evidence)
                return recipient, everything

        recipient, everything = await again_if_raced(apply, what="unsubscribe_page")
        if recipient is None:
            return _html(page(_lang(request), "unsubscribe_unknown"), 404)
        lang = recipient.lang
        what = word(lang, "everything") if everything or recipient.purpose is None else recipient.purpose.name
        body = page(
            lang,
            "unsubscribed",
            preferences=service.PREFERENCES_VIA + token,
            address=recipient.address,
            brand=recipient.brand,
            what=what,
        )
        return _html(body)

    @post(
        "/one-click",
        operation_id="unsubscribeOneClick",
        status_code=200,
        media_type=MediaType.TEXT,
        responses=errors(404),
    )
    async def one_click(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> Response[str]:
        """RFC 8058 ``List-Unsubscribe-Post`` target: urlencoded or multipart, no redirect, 200, idempotent."""
        form = await request.form()
        target = verify_unsubscribe(keys.unsubscribe, token) if len(token) <= _MAX_TOKEN else None
        if target is None:
            raise NotFound("This unsubscribe link is not valid.", code="unsubscribe_token_invalid")

        async def apply() -> None:
            async with db.begin():
                recipient = await service.recipient_of(db, target)
                if recipient is not None:  # an erased address is already out of every list
                    evidence = {
                        **_meta(request).evidence(),
                        "method": "rfc8058_one_click",
                        "list_unsubscribe": str(form.get("List-Unsubscribe", ""))[:100] or None,
                    }
                    await service.unsubscribe(db, recipient, everything=False, evidence=evidence)

        await again_if_raced(apply, what="unsubscribe_one_click")  # a mail client does not send it again
        return Response("Unsubscribed.\n", media_type="text/plain", headers={"Cache-Control": "no-store"})

    @staticmethod
    async def _recipient(db: AsyncSession, keys: Keys, token: str) -> service.Recipient | None:
        target = verify_unsubscribe(keys.unsubscribe, token) if len(token) <= _MAX_TOKEN else None
        return await service.recipient_of(db, target) if target else None

    @staticmethod
    def _choice(recipient: service.Recipient, token: str) -> str:
        lang = recipient.lang
        options: tuple[Option, ...] = (Option("all", word(lang, "unsubscribe_all"), checked=True),)
        if recipient.purpose is not None:
            options = (
                Option("purpose", word(lang, "unsubscribe_purpose", purpose=recipient.purpose.name), checked=True),
                Option("all", word(lang, "unsubscribe_all")),
            )
        form = Form(action=f"/u/{token}", button=word(lang, "unsubscribe_button"), options=options)
        return page(
            lang,
            "unsubscribe",
            form=form,
            preferences=service.PREFERENCES_VIA + token,
            address=recipient.address,
            brand=recipient.brand,
        )


class EmailWebhookController(Controller):
    """``POST /webhooks/email/{workspace}/events``: bounces and complaints, HMAC-signed."""

    path = "/webhooks/email/{workspace_id:uuid}"
    tags = ["webhooks"]  # noqa: RUF012

    @post("/events", operation_id="emailEvents", status_code=200, responses=errors(400, 403, 404, 422))
    async def events(
        self,
        request: Request[Any, Any, Any],
        workspace_id: FromPath[uuid.UUID],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
    ) -> EmailEventsOut:
        """Hard bounce → `undeliverable`; complaint → `opted_out` + suppression; soft bounce counted. Idempotent.

        Signed with `X-Consent-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, at most five
        minutes old, with the workspace's `email.webhook_secret`.
        """
        body = await request.body()
        async with db.begin():
            workspace = await workspaces.get_workspace(db, workspace_id)
            if workspace is None:
                raise NotFound("Unknown workspace.", code="workspace_not_found")
            sealed = WorkspaceSettings.load(workspace.settings).email.webhook_secret_sealed
            if sealed is None:
                raise Forbidden(
                    "No email webhook secret is configured for this workspace.", code="webhook_not_configured"
                )
            secret = keys.unseal(sealed, sealing_context(workspace_id, EMAIL_WEBHOOK_SECRET))
            refused = signatures.refusal(secret, request.headers.get(signatures.HEADER, ""), body, time.time())
            if refused == "stale":
                raise Forbidden(
                    f"The X-Consent-Signature matches but its t= lies more than {signatures.TOLERANCE_SECONDS // 60} "
                    "minutes from our clock: sign each request when it is sent (and check the sender's clock).",
                    code="signature_expired",
                )
            if refused is not None:
                raise Forbidden("The X-Consent-Signature does not match this request.", code="invalid_signature")
            try:
                delivery = msgspec.json.decode(body, type=EmailEventsIn)
            except msgspec.ValidationError as exc:
                raise InvalidInput(f"The events do not match the schema: {exc}", code="validation_failed") from None
            except msgspec.DecodeError:
                raise InvalidInput("The body is not valid JSON.", code="malformed_json") from None
            for event in delivery.events:
                if event.type == "bounce" and event.bounce_type is None:
                    raise InvalidInput(
                        f"Bounce '{event.id}' needs a bounce_type (hard or soft).", code="bounce_type_required"
                    )
            report = await service.handle_events(
                db,
                keys,
                workspace_id,
                [service.ProviderEvent(**msgspec.structs.asdict(event)) for event in delivery.events],
            )
        return EmailEventsOut(
            processed=report.processed, duplicates=report.duplicates, unknown_recipients=report.unknown_recipients
        )


async def deliver_or_fail(db: AsyncSession, sender: MailSender, outgoing: service.Outgoing) -> None:
    """Send a signup's mail after its transaction committed; a failure answers 503 (retry) or 422 (refused)."""
    async with db.begin():
        result = await service.deliver(db, sender, outgoing)
    if result.outcome is MailOutcome.PERMANENT_FAILURE:
        raise InvalidInput("The mail relay refused this address.", code="mail_rejected")
    if not result.accepted:
        raise Unavailable(
            "The confirmation mail could not be sent right now; the signup is recorded, ask again to resend.",
            code="mail_not_sent",
            headers={"Retry-After": "60"},
        )
