"""``/p/{token}/export`` and ``/p/{token}/erase``: the "My data" part of the preference centre (Art. 15, Art. 17).

It lives here, not in :mod:`app.preferences`, because it runs the privacy package's export and erasure, which the
layers put above the preference centre; the page's own guards (the link, the form token, the origin check) are
the preference centre's, imported.

Both are ``POST`` only. The download is read-only, but a ``GET`` would hand the whole unmasked record (addresses,
postal details, IP addresses of every consent) to whatever fetches the link: mail scanners and link previewers
open every URL in a message, and a URL is kept in histories and proxy logs. Behind the page's form token and the
same-origin check, only a person who opened the page and pressed the button gets the file, as for every change.
The API's export (``GET /v1/contacts/{contact}/export``) records no access; neither does this one.

"Delete me" asks first: the first ``POST`` shows what goes and what is kept; only a second one with
``confirm=yes`` records the request, and executes it or queues it for review (:mod:`app.privacy.requests`).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Controller, MediaType, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from app.emails.pages import PAGE_ERRORS
from app.lib.keys import Keys
from app.lib.openapi import pages
from app.lib.orm import utcnow
from app.preferences import render, service
from app.preferences.brand import look_for
from app.preferences.controllers import (  # the page's own guards, shared so that they cannot drift apart
    PAGE_HEADERS,
    browser_lang,
    page_response,
    refusal,
    same_origin,
)
from app.preferences.models import PreferenceLink
from app.preferences.service import SOURCE, LinkState
from app.privacy import access, requests
from app.privacy.requests import ErasureOutcome
from app.settings import Settings

_MONTHS_EN = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_MONTHS_DE = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
]


def _date(lang: str, moment: datetime) -> str:
    if lang == "de":
        return f"{moment.day}. {_MONTHS_DE[moment.month - 1]} {moment.year}"
    return f"{moment.day} {_MONTHS_EN[moment.month - 1]} {moment.year}"


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("app.preferences", "templates"), autoescape=select_autoescape(), auto_reload=False
    )


def _render(template: str, lang: str, brand: str, **context: Any) -> str:
    def say(key: str, **values: Any) -> str:
        return render.word(lang, key, brand=brand, **values)

    return _templates().get_template(template).render(lang=lang, brand=brand, say=say, **context)


class MyDataPages(Controller):
    """``/p/{token}/export`` and ``/p/{token}/erase``: the person's data, downloaded or deleted."""

    path = "/p/{token:str}"
    tags = ["hosted pages"]  # noqa: RUF012  # Litestar reads class attributes
    exception_handlers = PAGE_ERRORS  # a page, not the API's JSON, for an error no handler took

    @post(
        "/export",
        operation_id="exportMyData",
        status_code=200,
        media_type=MediaType.JSON,
        responses=pages(403, 404, 410),
    )
    async def export(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
        lang: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """Everything held about the person (GDPR Art. 15), as a JSON file to save: `GET /v1/contacts/{c}/export`.

        Needs the page's `form_token` and a same-origin request, like every form of the page.
        """
        form = await request.form()
        async with db.begin():
            link, refused = await self._guard(request, db, keys, settings, token=token, lang=lang, form=form)
            if refused is not None:
                return refused  # type: ignore[return-value]  # an HTML page instead of the file
            assert link is not None
            data = await access.subject_access(db, link.workspace_id, str(link.contact_id))
        name = f"my-data-{data.generated_at:%Y-%m-%d}.json"
        return Response(
            msgspec.json.encode(data),
            media_type=MediaType.JSON,
            headers={**PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    @post(
        "/erase",
        operation_id="eraseMyData",
        status_code=200,
        media_type=MediaType.HTML,
        responses=pages(403, 404, 410),
    )
    async def erase(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
        lang: FromQuery[str | None] = None,
    ) -> Response[str]:
        """Delete me (GDPR Art. 17): without `confirm=yes` a page saying what goes and what is kept; with it, done.

        The request is recorded and executed at once, or, where the workspace reviews erasures, queued for an
        `admin` key (`/v1/erasure-requests`), due within one month. A second request finds the first. The erasure
        is the API's (`DELETE /v1/contacts/{contact}`), with the person as actor and the page's evidence (source,
        link id, IP address, user agent). Afterwards the link opens nothing.
        """
        form = await request.form()
        async with db.begin():
            link, refused = await self._guard(request, db, keys, settings, token=token, lang=lang, form=form)
            if refused is not None:
                return refused
            assert link is not None
            view = await service.view(db, link, lang)
            page_lang, brand = view.lang, view.brand
            look = await look_for(db, link.workspace_id)
            pending = await requests.pending_of(db, link)
            if pending is None and form.get("confirm") != "yes":
                review = await requests.review_required(db, link.workspace_id)
                return page_response(
                    _render(
                        "mydata_confirm.html",
                        page_lang,
                        brand,
                        action=f"/p/{token}/erase?lang={page_lang}",
                        back=f"/p/{token}?lang={page_lang}",
                        form_token=service.form_token(keys, link),
                        review=review,
                        due=_date(page_lang, requests.one_month_after(utcnow())),
                        look=look,
                    ),
                    look=look,
                )
            outcome = ErasureOutcome.ALREADY_PENDING
            if pending is None:
                proof = {**self._meta(request), "source": SOURCE, "method": "erase", "preference_link_id": str(link.id)}
                requested = await requests.request_erasure(db, keys, link, proof, outbox=settings.data_dir / "outbox")
                outcome, pending = requested.outcome, requested.request
        if outcome in (ErasureOutcome.ERASED, ErasureOutcome.GONE):
            return page_response(
                _render("mydata_outcome.html", page_lang, brand, name="erased", back=None, look=look), look=look
            )
        assert pending is not None
        return page_response(
            _render(
                "mydata_outcome.html",
                page_lang,
                brand,
                name="queued",
                due=_date(page_lang, pending.due_at),
                back=f"/p/{token}?lang={page_lang}",
                look=look,
            ),
            look=look,
        )

    @staticmethod
    async def _guard(
        request: Request[Any, Any, Any],
        db: AsyncSession,
        keys: Keys,
        settings: Settings,
        *,
        token: str,
        lang: str | None,
        form: Any,
    ) -> tuple[PreferenceLink | None, Response[str] | None]:
        """The link, or the page that refuses: unknown or expired link (404, 410), forged form (403)."""
        status, link = await service.open_link(db, token)
        if status is not LinkState.VALID or link is None:
            return None, await refusal(db, status, link, browser_lang(request, lang), lang)
        if not same_origin(request, settings) or not service.form_token_valid(
            keys, link, str(form.get("form_token", ""))
        ):
            view = await service.view(db, link, lang)
            return None, page_response(render.message_page(view.lang, "refused", brand=view.brand), 403)
        if not service.proves_identity(link):  # a link from a mail's footer: forwardable, not the person's proof
            view = await service.view(db, link, lang)
            return None, page_response(render.message_page(view.lang, "mydata_needs_link", brand=view.brand), 403)
        return link, None

    @staticmethod
    def _meta(request: Request[Any, Any, Any]) -> dict[str, Any]:
        agent = request.headers.get("user-agent")
        return {"ip": request.client.host if request.client else None, "user_agent": agent[:1000] if agent else None}
