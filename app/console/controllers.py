"""``POST /v1/console-links`` and the console's pages under ``/console`` (issue 18).

The pages need no API key: a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS, path ``/console``)
made by a single-use login link stands for the key that created the link. Every request re-checks the key, so a
revoked key ends its sessions at once. ``GET`` never changes anything; every ``POST`` needs the session's form token
and a same-origin request (``Origin`` / ``Sec-Fetch-Site``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
from litestar import Controller, HttpMethod, MediaType, Request, Response, get, post, route
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.router import Router
from litestar.static_files import create_static_files_router
from sqlalchemy.ext.asyncio import AsyncSession

from app.console import render, service
from app.console.service import COOKIE, Staff
from app.domain.identifiers import mask
from app.domain.model import ActorType, Channel
from app.emails.render import locale_of
from app.ledger import repository as ledger
from app.ledger import sealer
from app.ledger.service import Actor
from app.lib.auth import Principal, Scope
from app.lib.copystream import copy_response
from app.lib.db import Database
from app.lib.errors import InvalidInput, Unavailable
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.lib.orm import utcnow
from app.privacy import access, erasure, requests
from app.privacy.schemas import REQUEST_REF_PATTERN, ErasureRequestStatus
from app.reports import service as reports
from app.reports.schemas import ReportOut, ReportRowOut, to_csv
from app.settings import Settings

ASSETS_DIR = Path(__file__).parent / "assets"
LANG_COOKIE = "console_lang"
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on the page's own POSTs
    "Referrer-Policy": "same-origin",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    # this service's stylesheet, its script and the vendored Chart.js; nothing inline, no third party
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
}
_REQUEST_REF = re.compile(REQUEST_REF_PATTERN)
_MAX_REQUEST_REF = 100


class ConsoleLinkOut(msgspec.Struct, kw_only=True):
    """A single-use login link to `/console` (valid 10 minutes), acting as the calling key."""

    url: str
    expires_at: datetime


class ConsoleLinkController(Controller):
    """Login links to the console (scope `audit:read` or `admin`)."""

    path = "/console-links"
    tags = ["reports"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": (Scope.AUDIT_READ, Scope.ADMIN)}  # noqa: RUF012

    # the answer holds the login token, of which only the hash is stored: never kept for an Idempotency-Key replay
    @post(
        operation_id="createConsoleLink",
        status_code=201,
        responses=errors(401, 403, 409),
        opt={"answer_holds_secret": True},
    )
    async def create(
        self,
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> ConsoleLinkOut:
        """A short-lived, single-use login link to the console for this key's workspace and scopes.

        Opening it shows a "Sign in" button; only that button (a `POST`) uses the link up, so a mail scanner that
        fetches it does not. The session it opens ends after 8 hours without use, after 24 hours, or when this
        key is revoked.
        """
        async with db.begin():
            issued = await service.issue_link(db, principal)
        return ConsoleLinkOut(url=login_url(settings, issued.token), expires_at=issued.expires_at)


def login_url(settings: Settings, token: str) -> str:
    """Where a login link points."""
    return f"{settings.public_base_url}/console/login?{urlencode({'token': token})}"


class SignedOut(Exception):  # a state, not a failure of the code
    """No valid session: answered with the sign-in page (401)."""


class Refused(Exception):
    """A state-changing form without the session's token or from another origin (403)."""


def _lang(request: Request[Any, Any, Any]) -> str:
    chosen = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if chosen in ("de", "en"):
        return chosen
    accepted = [part.split(";")[0].strip() for part in request.headers.get("accept-language", "").split(",")]
    return locale_of(*accepted)


def _secure(request: Request[Any, Any, Any], settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.public_base_url.startswith("https:")


def _html(
    request: Request[Any, Any, Any],
    template: str,
    *,
    title: str,
    staff: Staff | None = None,
    status: int = 200,
    cookies: list[Cookie] | None = None,
    **context: Any,
) -> Response[str]:
    lang = _lang(request)

    def lang_href(code: str) -> str:
        query = {k: v for k, v in request.query_params.items() if k != "lang"}
        return f"{request.url.path}?{urlencode({**query, 'lang': code})}"

    def when(moment: datetime | None) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else render.DASH

    def pretty(value: Any) -> str:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)

    body = render.page(
        template,
        lang,
        title=title,
        staff=staff,
        csrf=service.csrf_token(_secret(request.app.state.settings), staff) if staff else "",
        lang_href=lang_href,
        when=when,
        pretty=pretty,
        channels=[c.value for c in Channel],
        **context,
    )
    all_cookies = list(cookies or [])
    if request.query_params.get("lang") in ("de", "en"):
        all_cookies.append(
            Cookie(
                key=LANG_COOKIE,
                value=lang,
                path="/console",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                max_age=365 * 86400,
            )
        )
    return Response(body, status_code=status, media_type=MediaType.HTML, headers=_PAGE_HEADERS, cookies=all_cookies)


def _message(
    request: Request[Any, Any, Any], name: str, status: int, text: str | None = None, **context: Any
) -> Response[str]:
    lang = _lang(request)
    return _html(
        request,
        "message.html",
        title=render.say(lang, f"{name}_title"),
        text=text if text is not None else render.say(lang, f"{name}_text"),
        status=status,
        **context,
    )


def _signed_out(request: Request[Any, Any, Any], _exc: Exception) -> Response[str]:
    gone = Cookie(key=COOKIE, value="", path="/console", max_age=0, httponly=True, samesite="strict")
    return _message(request, "signed_out", 401, cookies=[gone])


def _refused(request: Request[Any, Any, Any], _exc: Exception) -> Response[str]:
    return _message(request, "refused", 403)


def _secret(settings: Settings) -> bytes:
    if settings.secret_key is None:  # only tooling builds an app without one
        raise Unavailable("CONSENT_SECRET_KEY is not configured.", code="secret_key_missing")
    return settings.secret_key


def _same_origin(request: Request[Any, Any, Any], settings: Settings) -> bool:
    """A form POST from our own page: no cross-site fetch metadata, and an ``Origin`` (if sent) that is ours."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # browsers send it on every POST; tools that omit it still need the form token
    host = urlsplit(origin).netloc
    return bool(host) and host in {urlsplit(settings.public_base_url).netloc, request.headers.get("host", "")}


async def _staff(request: Request[Any, Any, Any], db: AsyncSession) -> Staff:
    staff = await service.current(db, request.cookies.get(COOKIE))
    if staff is None:
        raise SignedOut
    return staff


async def _form_staff(request: Request[Any, Any, Any], db: AsyncSession, settings: Settings) -> tuple[Staff, Any]:
    """The session of a state-changing request, after its CSRF token and origin are checked; and the form."""
    staff = await _staff(request, db)
    form = await request.form()
    if not _same_origin(request, settings) or not service.csrf_valid(
        _secret(settings), staff, str(form.get("csrf", ""))
    ):
        raise Refused
    return staff, form


def _download(body: bytes | str, media_type: str, filename: str) -> Response[Any]:
    return Response(
        body,
        media_type=media_type,
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


Handler = Callable[..., Awaitable[Response[Any]]]


class ConsolePages(Controller):
    """``/console``: overview, contact lookup, audit; sign-in with a login link."""

    path = "/console"
    include_in_schema = False
    exception_handlers = {SignedOut: _signed_out, Refused: _refused}  # noqa: RUF012

    @route("/login", http_method=[HttpMethod.GET, HttpMethod.HEAD], media_type=MediaType.HTML)
    async def login_page(
        self, request: Request[Any, Any, Any], db: NamedDependency[AsyncSession], token: FromQuery[str] = ""
    ) -> Response[str]:
        """The "Sign in" button of a login link; changes nothing (scanners fetch links)."""
        async with db.begin():
            state = await service.link_state(db, token)
        lang = _lang(request)
        return _html(
            request,
            "login.html",
            title=render.say(lang, "login_title"),
            state=state,
            token=token if state == "valid" else "",
            status=200 if state == "valid" else (410 if state in ("used", "expired") else 404),
        )

    @post("/login", media_type=MediaType.HTML, status_code=303)
    async def login(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Response[str]:
        """Use the link up and open a session (cookie), then go to the overview."""
        form = await request.form()
        lang = _lang(request)
        if not _same_origin(request, settings):
            raise Refused
        async with db.begin():
            opened = await service.redeem(db, str(form.get("token", "")))
        if opened is None:
            return _html(
                request, "login.html", title=render.say(lang, "login_title"), state="refused", token="", status=403
            )
        secret, _staff_member = opened
        cookie = Cookie(
            key=COOKIE,
            value=secret,
            path="/console",
            httponly=True,
            secure=_secure(request, settings),
            samesite="strict",
            max_age=int(service.SESSION_LIFETIME.total_seconds()),
        )
        return Response("", status_code=303, headers={**_PAGE_HEADERS, "Location": "/console"}, cookies=[cookie])

    @post("/logout", media_type=MediaType.HTML, status_code=303)
    async def logout(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Response[str]:
        """End the session."""
        async with db.begin():
            staff, _form = await _form_staff(request, db, settings)
            await service.sign_out(db, staff)
        gone = Cookie(key=COOKIE, value="", path="/console", max_age=0, httponly=True, samesite="strict")
        return _message(request, "signed_out", 200, cookies=[gone])

    @get("/", media_type=MediaType.HTML)
    async def overview(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        to: FromQuery[str | None] = None,
        purpose: FromQuery[str | None] = None,
        campaign: FromQuery[str | None] = None,
    ) -> Response[str]:
        """The six channels side by side over a period, with charts and their tables; one purpose or campaign."""
        lang = _lang(request)
        problem = None
        today = utcnow().date()
        try:
            period = service.period_of(request.query_params.get("from"), to, today)
        except InvalidInput as exc:
            problem, period = exc.detail, service.period_of(None, None, today)
        filters = service.Filters.of(purpose, campaign)
        async with db.begin():
            staff = await _staff(request, db)
            try:
                async with db.begin_nested():
                    data = await service.overview(db, staff.workspace_id, period, filters)
            except InvalidInput as exc:  # a purpose the workspace does not have: say so, show everything
                problem = exc.detail
                data = await service.overview(db, staff.workspace_id, period)
        return _html(
            request,
            "overview.html",
            title=render.say(lang, "overview"),
            staff=staff,
            section="overview",
            charts=True,
            period=period,
            data=data,
            problem=problem,
            status=422 if problem else 200,
        )

    @get("/reports/{name:str}", media_type="text/csv")
    async def report_csv(
        self,
        request: Request[Any, Any, Any],
        name: FromPath[str],
        db: NamedDependency[AsyncSession],
        *,
        to: FromQuery[str | None] = None,
        group_by: FromQuery[str] = "channel",
        purpose: FromQuery[str | None] = None,
        campaign: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """A chart's report as CSV (the reports API's CSV), for the session's workspace."""
        kinds = {
            "consents.csv": (reports.consent_report, reports.CONSENT_METRICS, reports.CONSENT_GROUPS),
            "messages.csv": (reports.message_report, reports.MESSAGE_METRICS, reports.MESSAGE_GROUPS),
        }
        async with db.begin():
            staff = await _staff(request, db)
            if name not in kinds:
                return _message(request, "invalid", 404, staff=staff, text=name[:40])
            build, metrics, groups = kinds[name]
            try:
                period = service.period_of(request.query_params.get("from"), to, utcnow().date())
                query = service.report_query(period, group_by[:200], groups, service.Filters.of(purpose, campaign))
            except InvalidInput as exc:
                lang = _lang(request)
                return _html(
                    request, "message.html", title=render.say(lang, "invalid_title"), text=exc.detail, status=422
                )
            series = await build(db, staff.workspace_id, query)
        report = ReportOut(
            from_=query.start,
            to=query.end,
            granularity=query.granularity,
            group_by=list(query.group_by),
            metrics=list(metrics),
            series=[ReportRowOut(bucket=r.bucket, group=r.group, metrics=r.metrics) for r in series],
        )
        filename = f"{name[:-4]}-{period.first}-{period.last}-{'-'.join(query.group_by) or 'all'}.csv"
        return _download(to_csv(report), "text/csv", filename)

    @get("/contacts", media_type=MediaType.HTML)
    async def contacts(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        q: FromQuery[str] = "",
    ) -> Response[str]:
        """Find a contact by id, external id or address: addresses (masked), consents, ledger timeline, messages."""
        lang = _lang(request)
        q = q.strip()[:320]
        found = None
        masked: dict[uuid.UUID, str] = {}
        async with db.begin():
            staff = await _staff(request, db)
            contact = await service.find_contact(db, staff.workspace_id, q) if q else None
            if contact is not None:
                found = await access.subject_access(db, staff.workspace_id, str(contact.id))
                masked = {p.id: mask(Channel(p.channel), p.address) for p in found.contact_points}
        return _html(
            request,
            "contacts.html",
            title=render.say(lang, "contacts"),
            staff=staff,
            section="contacts",
            q=q,
            found=found,
            masked=masked,
            status=404 if q and found is None else 200,
        )

    @get("/contacts/{contact:str}/export")
    async def export(
        self, request: Request[Any, Any, Any], contact: FromPath[str], db: NamedDependency[AsyncSession]
    ) -> Response[Any]:
        """The contact's Art. 15 export (as ``GET /v1/contacts/{contact}/export``), as a JSON download."""
        async with db.begin():
            staff = await _staff(request, db)
            found = await service.live_contact(db, staff.workspace_id, contact)
            if found is None:
                return _message(
                    request, "invalid", 404, staff=staff, text=render.say(_lang(request), "not_found", q=contact[:80])
                )
            exported = await access.subject_access(db, staff.workspace_id, str(found.id))
        return _download(msgspec.json.encode(exported), "application/json", f"contact-{found.id}-art15.json")

    @get("/contacts/{contact:str}/erase", media_type=MediaType.HTML)
    async def erase_page(
        self,
        request: Request[Any, Any, Any],
        contact: FromPath[str],
        db: NamedDependency[AsyncSession],
    ) -> Response[str]:
        """The confirmation step of an erasure (admin only)."""
        async with db.begin():
            staff = await _staff(request, db)
            if not staff.is_admin:
                return _message(request, "forbidden", 403, staff=staff)
            found = await service.live_contact(db, staff.workspace_id, contact)
        if found is None:
            text = render.say(_lang(request), "not_found", q=contact[:80])
            return _message(request, "invalid", 404, staff=staff, text=text)
        lang = _lang(request)
        return _html(
            request,
            "erase.html",
            title=render.say(lang, "erase_title", id=found.external_id or found.id),
            staff=staff,
            section="contacts",
            contact=found,
        )

    @post("/contacts/{contact:str}/erase", media_type=MediaType.HTML, status_code=200)
    async def erase(
        self,
        request: Request[Any, Any, Any],
        contact: FromPath[str],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> Response[str]:
        """Erase the contact (GDPR Art. 17, as ``DELETE /v1/contacts/{contact}``): admin, form token, confirmation."""
        lang = _lang(request)
        async with db.begin():
            staff, form = await _form_staff(request, db, settings)
            if not staff.is_admin:
                return _message(request, "forbidden", 403, staff=staff)
            found = await service.live_contact(db, staff.workspace_id, contact)
            if found is None:
                return _message(
                    request, "invalid", 404, staff=staff, text=render.say(lang, "not_found", q=contact[:80])
                )
            reference = str(form.get("request_ref", "")).strip() or None
            problem = None
            if form.get("confirm") != "yes":
                problem = render.say(lang, "erase_unconfirmed")
            elif reference is not None and (len(reference) > _MAX_REQUEST_REF or not _REQUEST_REF.match(reference)):
                problem = render.say(lang, "request_ref")
            if problem is not None:
                return _html(
                    request,
                    "erase.html",
                    title=render.say(lang, "erase_title", id=found.external_id or found.id),
                    staff=staff,
                    section="contacts",
                    contact=found,
                    problem=problem,
                    status=422,
                )
            report = await erasure.erase(
                db,
                keys,
                staff.workspace_id,
                str(found.id),
                request_ref=reference,
                received_via=None,
                actor=Actor(ActorType.API_KEY, str(staff.principal.api_key_id)),
                outbox=settings.data_dir / "outbox",
            )
        deleted = sum(v for v in msgspec.structs.asdict(report.deleted).values() if isinstance(v, int))
        text = render.say(
            lang, "erased_text", id=report.erasure_id, at=report.erased_at.strftime("%Y-%m-%d %H:%M UTC"), count=deleted
        )
        return _html(
            request,
            "message.html",
            title=render.say(lang, "erased_title"),
            text=text,
            staff=staff,
            section="contacts",
        )

    @get("/audit", media_type=MediaType.HTML)
    async def audit(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
    ) -> Response[str]:
        """Chain verification status with the time of the last check, pending erasure requests, the audit stream."""
        async with db.begin():
            staff = await _staff(request, db)
            check = await service.last_check(db, staff.workspace_id)
            pending = await requests.list_requests(db, staff.workspace_id, ErasureRequestStatus.PENDING, 200)
        return _html(
            request,
            "audit.html",
            title=render.say(_lang(request), "audit"),
            staff=staff,
            section="audit",
            check=check,
            pending=pending,
            period=service.period_of(None, None, utcnow().date()),
        )

    @post("/audit/verify", media_type=MediaType.HTML, status_code=303)
    async def verify(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Response[str]:
        """Verify the chain now and record the outcome; back to the audit page."""
        async with db.begin():
            staff, _form = await _form_staff(request, db, settings)
            await service.check_chain(db, staff.workspace_id)
        return Response("", status_code=303, headers={**_PAGE_HEADERS, "Location": "/console/audit"})

    @get("/audit/events")
    async def audit_events(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        database: NamedDependency[Database],
        to: FromQuery[str | None] = None,
        format: FromQuery[str] = "csv",  # noqa: A002  # the form's field name
    ) -> Response[Any]:
        """The audit stream (``GET /v1/audit/events``) of the period's days, as a CSV or NDJSON download."""
        async with db.begin():
            staff = await _staff(request, db)
        try:
            period = service.period_of(request.query_params.get("from"), to, utcnow().date())
        except InvalidInput as exc:
            lang = _lang(request)
            return _html(request, "message.html", title=render.say(lang, "invalid_title"), text=exc.detail, status=422)
        as_csv = format != "ndjson"
        start, end, workspace_id = period.start, period.end, staff.workspace_id

        async def copy(driver: Any, sink: Callable[[bytes], Awaitable[None]]) -> None:
            await ledger.copy_events(driver, workspace_id, start, end, as_csv=as_csv, sink=sink)

        await sealer.seal_on_database(database, workspace_id)  # every committed event in chain order, with its hash

        request.scope["auth"] = staff.principal  # the stream budget counts it against the key
        stream = copy_response(request, database, copy, as_csv=as_csv)
        stream.headers["Content-Disposition"] = (
            f'attachment; filename="audit-{period.first}-{period.last}.{"csv" if as_csv else "ndjson"}"'
        )
        return stream


def assets_router() -> Router:
    """``/console/assets/…``: the console's stylesheet and chart script (public files, no data)."""
    return create_static_files_router(
        path="/console/assets",
        directories=[ASSETS_DIR],
        name="console_assets",
        include_in_schema=False,
        opt={"public": True},
    )
