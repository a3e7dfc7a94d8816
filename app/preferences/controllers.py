"""``POST /v1/contacts/{contact}/preference-link`` and the page ``/p/{token}``.

The page needs no API key: the token in the URL is the capability. ``GET`` and ``HEAD`` never change anything
(mail scanners fetch every link). A ``POST`` acts only with the page's form token (an HMAC of the link's id) and
only from our own origin (``Origin`` / ``Sec-Fetch-Site``), so another site cannot make a visitor's browser change
their preferences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from litestar import Controller, HttpMethod, MediaType, Request, Response, post, route
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel
from app.emails.pages import PAGE_ERRORS
from app.emails.render import locale_of
from app.lib.auth import Principal, Scope
from app.lib.errors import InvalidInput, again_if_raced
from app.lib.keys import Keys
from app.lib.openapi import errors, pages
from app.preferences import render, service
from app.preferences.brand import Look, look_for, page_headers
from app.preferences.models import PreferenceLink
from app.preferences.schemas import PreferenceLinkOut
from app.preferences.service import Action, LinkState
from app.settings import Settings

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # not no-referrer: with it, browsers send "Origin: null" on the page's own POSTs, and the origin check could not
    # tell them from a sandboxed frame's; same-origin still sends the token-bearing URL to nobody else
    "Referrer-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # its own stylesheets and nothing else: no script, no third party; forms post back here only; a page showing the
    # workspace's logo adds "img-src" of exactly the logo's origin (app/preferences/brand.py), no other image source
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
}


class PreferenceLinkController(Controller):
    """Links to the preference centre (scope `consents:write`)."""

    path = "/contacts/{contact:str}/preference-link"
    tags = ["preference centre"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.CONSENTS_WRITE}  # noqa: RUF012

    # the answer holds the link's token, of which only the hash is stored: never kept for an Idempotency-Key replay
    @post(
        operation_id="createPreferenceLink",
        status_code=201,
        responses=errors(401, 403, 404, 409),
        opt={"answer_holds_secret": True},
    )
    async def create(
        self,
        contact: FromPath[str],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> PreferenceLinkOut:
        """A link for the brand's own messages: the person sees and withdraws every consent there, for 30 days."""
        async with db.begin():
            issued = await service.issue_link(
                db, principal.workspace_id, contact, issued_by=f"api_key:{principal.api_key_id}"
            )
        return PreferenceLinkOut(
            url=f"{settings.public_base_url}/p/{issued.token}", expires_at=issued.expires_at, link_id=issued.link_id
        )


#: The refusals of a form that names what is not this link's (403); any other is an incomplete form (400).
NOT_YOURS = frozenset({"not_this_contact", "opt_in_not_here", "purpose_not_found", "notice_not_found"})


def per_method(name: str) -> Callable[[Any, Any, Any], str]:
    """An operation id per method of a ``GET``/``HEAD`` route (OpenAPI needs them unique)."""
    return lambda _handler, method, _path: name if method == HttpMethod.GET else f"{name}Head"


def page_response(
    body: str, status: int = 200, headers: dict[str, str] | None = None, look: Look | None = None
) -> Response[str]:
    """A hosted page with the pages' headers (``img-src`` of the logo's origin when the page shows one)."""
    page = page_headers(PAGE_HEADERS, look)
    return Response(body, status_code=status, media_type="text/html", headers={**page, **(headers or {})})


def browser_lang(request: Request[Any, Any, Any], chosen: str | None, fallback: str | None = None) -> str:
    """The language asked for, else the browser's first one we speak, else ``fallback``'s (else English)."""
    if chosen in ("de", "en"):
        return chosen
    accepted = [part.split(";")[0].strip() for part in request.headers.get("accept-language", "").split(",")]
    return locale_of(*accepted, fallback)


def same_origin(request: Request[Any, Any, Any], settings: Settings) -> bool:
    """A form POST from our own page: no cross-site fetch metadata, and an ``Origin`` (if sent) that is ours.

    Ours is the configured public URL's host; without a configured one (development), also the host the request
    was sent to. With ``PUBLIC_BASE_URL`` set, the ``Host`` header is not trusted: a rebound DNS name could make a
    page of another site send our host.
    """
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # no browser omits it on a cross-site POST; tools that omit it still need the form token
    host = urlsplit(origin).netloc
    ours = {urlsplit(settings.public_base_url).netloc}
    if not settings.public_base_url_configured:
        ours.add(request.headers.get("host", ""))
    return bool(host) and host in ours


async def refusal(
    db: AsyncSession, status: LinkState, link: PreferenceLink | None, lang: str, chosen: str | None
) -> Response[str]:
    """The 404 or 410 page; an expired link still knows its contact, so the page speaks their language."""
    if link is not None:
        lang = (await service.view(db, link, chosen)).lang
    name = "expired" if status is LinkState.EXPIRED else "unknown"
    return page_response(render.message_page(lang, name), status.value)


class PreferencePages(Controller):
    """``/p/{token}``: the preference centre."""

    path = "/p/{token:str}"
    tags = ["hosted pages"]  # noqa: RUF012
    exception_handlers = PAGE_ERRORS  # a page, not the API's JSON, for an error no handler took

    @route(
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        operation_id=per_method("preferencePage"),
        media_type=MediaType.HTML,
        responses=pages(404, 410),
    )
    async def show(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        lang: FromQuery[str | None] = None,
    ) -> Response[str]:
        """Every address of the contact with every marketing purpose and its state; changes nothing."""
        async with db.begin():
            status, link = await service.open_link(db, token)
            if status is not LinkState.VALID or link is None:
                return await refusal(db, status, link, browser_lang(request, lang), lang)
            view = await service.view(db, link, lang)
            look = await look_for(db, link.workspace_id)
        return page_response(self._page(view, token, keys, look=look), look=look)

    @post(
        operation_id="changePreferences",
        status_code=200,
        media_type=MediaType.HTML,
        responses=pages(400, 403, 404, 410),
    )
    async def change(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
        lang: FromQuery[str | None] = None,
    ) -> Response[str]:
        """Apply one form of the page (`action`: `withdraw` with `point` and `purpose`, `withdraw_all`, `object_print`).

        `opt_in` with `point` and `purpose`: only on the email address a link mailed on request (or a brand's link
        naming it) proves control of; any other link or address, or a suppressed one, is refused (403).

        A pause: `pause` with `point` (an address or `all`) and `weeks` (1, 4 or 12), `end_pause` with `point`.

        Needs the page's `form_token` and a same-origin request; each change is a ledger event by the person.
        """
        form = await request.form()
        page_lang = browser_lang(request, lang)
        brand = ""

        async def attempt() -> Response[str] | tuple[service.View, Any, str]:
            nonlocal page_lang, brand
            async with db.begin():
                status, link = await service.open_link(db, token)
                if status is not LinkState.VALID or link is None:
                    return await refusal(db, status, link, page_lang, lang)
                before = await service.view(db, link, lang)
                page_lang, brand = before.lang, before.brand
                if not same_origin(request, settings) or not service.form_token_valid(
                    keys, link, str(form.get("form_token", ""))
                ):
                    return page_response(render.message_page(page_lang, "refused", brand=brand), 403)
                if form.get("action") == service.OPT_IN:
                    proof = service.evidence(link, self._meta(request), service.OPT_IN)
                    notice = await self._opt_in(db, link, form=form, proof=proof, before=before)
                else:
                    try:
                        action: Action | None = Action(str(form.get("action", "")))
                    except ValueError:
                        action = None
                    proof = service.evidence(link, self._meta(request), action or Action.WITHDRAW)
                    notice = await self._apply(db, keys, link, action=action, form=form, proof=proof, before=before)
                return await service.view(db, link, lang), await look_for(db, link.workspace_id), notice

        try:
            # a person's click: a merge committing in its transaction takes it again rather than answer 409
            done = await again_if_raced(attempt, what="preference_change")
        except InvalidInput as exc:  # rolled back, nothing changed
            if exc.code in NOT_YOURS:  # a form naming what is not this link's
                return page_response(render.message_page(page_lang, "invalid", brand=brand), 403)
            return page_response(render.message_page(page_lang, "incomplete", brand=brand), 400)
        except service.OptInSuppressed:  # the person's (or an erasure's) do-not-contact: never lifted here
            return page_response(render.message_page(page_lang, "optin_suppressed", brand=brand), 403)
        if isinstance(done, Response):
            return done
        view, look, notice = done
        return page_response(self._page(view, token, keys, notice, look=look), look=look)

    @staticmethod
    async def _apply(
        db: AsyncSession,
        keys: Keys,
        link: PreferenceLink,
        *,
        action: Action | None,
        form: Any,
        proof: dict[str, Any],
        before: service.View,
    ) -> str:
        lang = before.lang
        if action is Action.WITHDRAW:
            applied = await service.withdraw(
                db, link, point_id=str(form.get("point", "")), purpose_id=str(form.get("purpose", "")), proof=proof
            )
            if not any(a.event_id for a in applied):
                return render.word(lang, "done_nothing")
            [address] = [a for a in before.addresses if str(a.point.id) == str(form.get("point"))]
            [row] = [r for r in address.rows if str(r.purpose.id) == str(form.get("purpose"))]
            by = render.word(lang, "by_" + Channel(address.point.channel))
            return render.word(lang, "done_withdraw", purpose=row.purpose.name, by=by)
        if action is Action.WITHDRAW_ALL:
            await service.withdraw_everything(db, keys, link, proof)
            return render.word(lang, "done_everything", brand=before.brand)
        if action is Action.OBJECT_PRINT:
            applied = await service.object_to_print(db, keys, link, proof)
            return render.word(lang, "done_print" if applied else "done_nothing")
        if action in (Action.PAUSE, Action.END_PAUSE):
            return await PreferencePages._pause(db, keys, link, action=action, form=form, proof=proof, before=before)
        raise InvalidInput("Unknown action.", code="unknown_action")

    @staticmethod
    async def _opt_in(
        db: AsyncSession, link: PreferenceLink, *, form: Any, proof: dict[str, Any], before: service.View
    ) -> str:
        """Opt in again on the email address this link proves control of (the service refuses any other)."""
        lang, point_id, purpose_id = before.lang, str(form.get("point", "")), str(form.get("purpose", ""))
        notice_id = str(form.get("notice", "")) or None
        applied = await service.opt_in(
            db, link, point_id=point_id, purpose_id=purpose_id, proof=proof, notice_id=notice_id
        )
        if not any(a.event_id for a in applied):
            return render.word(lang, "done_nothing_opted_in")
        [address] = [a for a in before.addresses if str(a.point.id) == point_id]
        [row] = [r for r in address.rows if str(r.purpose.id) == purpose_id]
        return render.word(lang, "done_opt_in", purpose=row.purpose.name, address=address.masked)

    @staticmethod
    async def _pause(
        db: AsyncSession,
        keys: Keys,
        link: PreferenceLink,
        *,
        action: Action,
        form: Any,
        proof: dict[str, Any],
        before: service.View,
    ) -> str:
        """Pause one address or all of them (``point``: an address id or ``all``) for ``weeks``, or end the pause."""
        lang, point_id = before.lang, str(form.get("point", ""))
        if action is Action.PAUSE:
            paused = await service.pause(
                db, keys, link, point_id=point_id, weeks=str(form.get("weeks", "")), proof=proof
            )
            assert paused.until is not None
            until = render.date(lang, paused.until, before.timezone)
            return render.word(lang, "done_pause", what=render.paused_what(lang, paused.points), until=until)
        ended = await service.end_pause(db, keys, link, point_id=point_id, proof=proof)
        if not ended.points:
            return render.word(lang, "done_nothing_paused")
        return render.word(lang, "done_end_pause", what=render.paused_what(lang, ended.points))

    @staticmethod
    def _meta(request: Request[Any, Any, Any]) -> dict[str, Any]:
        agent = request.headers.get("user-agent")
        return {"ip": request.client.host if request.client else None, "user_agent": agent[:1000] if agent else None}

    @staticmethod
    def _page(
        view: service.View, token: str, keys: Keys, notice: str | None = None, *, look: Look | None = None
    ) -> str:
        action = f"/p/{token}?lang={view.lang}"
        return render.preferences_page(
            view, action=action, form_token=service.form_token(keys, view.link), notice=notice, look=look
        )
