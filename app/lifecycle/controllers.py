"""``/r/{token}``: the "keep me subscribed" page of a re-permission message.

No API key: the token in the URL is the capability (256 bits, only its hash stored, until the consent's end).
``GET`` and ``HEAD`` never change anything (mail scanners fetch every link); only a ``POST`` from our own origin
(``Origin`` / ``Sec-Fetch-Site``, as the preference centre checks) renews, so another site cannot make a visitor's
browser renew a consent.
"""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Controller, HttpMethod, MediaType, Request, Response, post, put, route
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.emails.pages import PAGE_ERRORS
from app.emails.service import RequestMeta
from app.lib.auth import Principal, Scope
from app.lib.openapi import errors, pages
from app.lifecycle import service
from app.lifecycle.service import RepermissionStatus, RepermissionView
from app.preferences.controllers import browser_lang, page_response, per_method, same_origin
from app.purposes import service as purposes
from app.purposes.controllers import purpose_out
from app.purposes.schemas import PurposeLifecycleIn, PurposeOut
from app.settings import Settings

#: Longer than any token we issue: answered as unknown without a lookup.
_MAX_TOKEN = 200

_WORDS = {
    "de": {
        "title": "Weiter informiert bleiben",
        "open": "Sie erhalten „{purpose}“ von {brand} an {address}. Ihre Einwilligung endet am {date}. "
        "Möchten Sie die Nachrichten weiter erhalten?",
        "button": "Ja, ich möchte weiter informiert werden",
        "renewed": "Danke! Sie erhalten „{purpose}“ von {brand} weiterhin.",
        "expired": "Dieser Link ist abgelaufen. Wenn Sie wieder Nachrichten erhalten möchten, melden Sie sich bitte "
        "neu an.",
        "ended": "Für diese Adresse besteht keine Einwilligung mehr, die verlängert werden könnte. Wenn Sie wieder "
        "Nachrichten erhalten möchten, melden Sie sich bitte neu an.",
        "unknown": "Diesen Link kennen wir nicht.",
        "forbidden": "Diese Anfrage kam nicht von unserer Seite; es wurde nichts geändert.",
    },
    "en": {
        "title": "Stay subscribed",
        "open": "You receive “{purpose}” from {brand} at {address}. Your consent ends on {date}. "
        "Would you like to keep receiving these messages?",
        "button": "Yes, keep me subscribed",
        "renewed": "Thank you! You will keep receiving “{purpose}” from {brand}.",
        "expired": "This link has expired. If you would like to receive messages again, please sign up again.",
        "ended": "There is no consent for this address left to renew. If you would like to receive messages again, "
        "please sign up again.",
        "unknown": "We do not know this link.",
        "forbidden": "This request did not come from our page; nothing was changed.",
    },
}


def render(view: RepermissionView, token: str, lang: str, *, forbidden: bool = False) -> str:
    """The page: the question and its button, or what happened. Tenant text is escaped, never markup."""
    words = _WORDS[lang if lang in _WORDS else "en"]
    date = ""
    if view.ends_on is not None:
        date = view.ends_on.strftime("%d.%m.%Y") if lang == "de" else view.ends_on.isoformat()
    values = {"purpose": view.purpose, "brand": view.brand, "address": view.address, "date": date}
    key = "forbidden" if forbidden else view.status.value
    text = escape(words[key].format(**values))
    form = ""
    if view.status is RepermissionStatus.OPEN and not forbidden:
        form = (
            f'<form method="post" action="/r/{escape(token, quote=True)}">'
            f'<button type="submit">{escape(words["button"])}</button></form>'
        )
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{escape(words['title'])}</title>"
        # the hosted pages' own stylesheet (the preference centre's; CSP: style-src 'self')
        '<link rel="stylesheet" href="/assets/preferences.css"></head>'
        f"<body><main><h1>{escape(words['title'])}</h1><p>{text}</p>{form}</main></body></html>"
    )


def _meta(request: Request[Any, Any, Any]) -> RequestMeta:
    agent = request.headers.get("user-agent")
    return RequestMeta(ip=request.client.host if request.client else None, user_agent=agent[:1000] if agent else None)


class RepermissionPages(Controller):
    """``/r/{token}``: keep a consent before its end."""

    path = "/r/{token:str}"
    tags = ["hosted pages"]  # noqa: RUF012  # Litestar reads class attributes
    exception_handlers = PAGE_ERRORS  # a page, not the API's JSON, for an error no handler took

    @route(
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        operation_id=per_method("repermissionPage"),
        media_type=MediaType.HTML,
        responses=pages(404, 410),
    )
    async def show(
        self, request: Request[Any, Any, Any], token: FromPath[str], db: NamedDependency[AsyncSession]
    ) -> Response[str]:
        """The question with a "keep me subscribed" button; changes nothing (404 unknown, 410 expired or ended)."""
        view = RepermissionView(RepermissionStatus.UNKNOWN)
        if len(token) <= _MAX_TOKEN:
            async with db.begin():
                view = await service.look_up(db, token)
        lang = browser_lang(request, view.lang if view.status is not RepermissionStatus.UNKNOWN else None)
        return page_response(render(view, token, lang), service.STATUS_CODES[view.status])

    @post(operation_id="renewConsent", status_code=200, media_type=MediaType.HTML, responses=pages(403, 404, 410))
    async def renew(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Response[str]:
        """Keep the consent: records ``renewed`` with IP, user agent and the link; validity counts from now."""
        if len(token) > _MAX_TOKEN:
            return page_response(
                render(RepermissionView(RepermissionStatus.UNKNOWN), token, browser_lang(request, None)), 404
            )
        if not same_origin(request, settings):
            async with db.begin():
                view = await service.look_up(db, token)
            return page_response(render(view, token, browser_lang(request, view.lang), forbidden=True), 403)
        async with db.begin():
            view = await service.renew(db, token, _meta(request))
        lang = browser_lang(request, view.lang if view.status is not RepermissionStatus.UNKNOWN else None)
        return page_response(render(view, token, lang), service.STATUS_CODES[view.status])


class PurposeLifecycleController(Controller):
    """When a purpose's consents end (scope `admin`)."""

    path = "/purposes"
    tags = ["setup"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.ADMIN}  # noqa: RUF012

    @put("/{key:str}/lifecycle", operation_id="setPurposeLifecycle", responses=errors(401, 403, 404, 422))
    async def set_lifecycle(
        self,
        key: FromPath[str],
        data: JSONBody[PurposeLifecycleIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
    ) -> PurposeOut:
        """Replace the purpose's `validity`, `inactivity` and `repermission_before` (a field left out is cleared).

        Applies at once to every consent of the purpose: eligibility and audiences compute each consent's end from
        these spans. Consents already past their end under the old spans are ended first (`validity_ended`, dated
        at their end), so they stay ended whatever the new spans say, whether or not the sweep had got to them.
        """
        async with db.begin():
            purpose = await purposes.require_purpose(db, principal.workspace_id, key)
            spans = purposes.check_lifecycle(purpose.kind, data.validity, data.inactivity, data.repermission_before)
            await purposes.lock_purpose(db, purpose)
            await service.end_due(db, purpose.id)
            await purposes.set_lifecycle(db, purpose, spans)
        return purpose_out(purpose)
