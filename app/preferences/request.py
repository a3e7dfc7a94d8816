"""Reaching the preference centre without an API key: ``GET/POST /p`` and ``/p/via/{token}``.

``/p?w={workspace id}`` is the page a brand links to from its own site ("manage your emails"): the person enters
an email address and, only if it is an email address of that workspace's contacts, gets a mail with a fresh
preference link bound to that address (the link then proves control of it). The answer never says which:

- the page is the same, byte for byte, for a known and an unknown address, because it is rendered before the
  address is looked up;
- the lookup, the new link and the mail happen after the answer has been sent (a background task of the
  response), so neither branch's database work nor the SMTP round trip is in the answer's time;
- the rate limits (per address and per client IP, keyed hashes in :mod:`app.lib.ratelimit`) count every request,
  known address or not, so a 429 says only "too many requests", never "this address exists".

``/p/via/{token}`` takes the stateless unsubscribe token every marketing mail carries (the footer's
"Einstellungen / Preferences" link, and the ``/u`` and ``/c`` pages): ``GET`` shows one button and changes
nothing (mail scanners follow every link), the button's same-origin ``POST`` mints a preference link for the
token's address and redirects to it. So a campaign creates no row per recipient; a row exists only for a person
who asked.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
import uuid
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Controller, HttpMethod, MediaType, Request, Response, post, route
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.identifiers import InvalidIdentifier, normalise_email
from app.domain.model import Channel
from app.emails import service as emails
from app.emails.pages import PAGE_ERRORS
from app.emails.tokens import verify_unsubscribe
from app.ledger import repository as ledger
from app.ledger.models import ContactPoint
from app.lib import ratelimit
from app.lib.db import Database
from app.lib.errors import RateLimited
from app.lib.keys import Keys
from app.lib.openapi import pages
from app.lib.orm import utcnow
from app.preferences import service
from app.preferences.brand import Look, look_for
from app.preferences.controllers import browser_lang, page_response, per_method, same_origin
from app.settings import Settings
from app.workspaces import repository as workspaces
from app.workspaces.settings import WorkspaceSettings
from channel_providers.email import MailSender

log = structlog.get_logger(__name__)

ADDRESS_LIMIT = ratelimit.Limit(3, timedelta(hours=1))
"""Link mails one address can be sent per hour: enough for a lost mail, too few to flood an inbox."""
IP_LIMIT = ratelimit.Limit(10, timedelta(hours=1))
"""Requests one client IP can make per hour and workspace (addresses known or not)."""
VIA_LIMIT = ratelimit.Limit(20, timedelta(hours=1))
"""Links minted from one footer token per hour: every click mints a row, a replayed token must not flood them."""
FORM_TTL_SECONDS = 2 * 3600
"""How long the request form's token is accepted after the page was shown."""
_MAX_TOKEN = 200
_CLOCK_SKEW_SECONDS = 60  # between the process that showed the form and the one that takes it
_MAX_ADDRESS = 320  # RFC 5321: 64 + 1 + 255, with room; longer is answered as invalid without parsing

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "language": "Language",
        "title": "Your preferences",
        "intro": (
            "Enter your email address. If {brand} knows it, we send you a link to your preferences: there you see "
            "and change everything {brand} may send you."
        ),
        "email": "Email address",
        "button": "Send me the link",
        "invalid": "Please enter a valid email address, like name@example.com.",
        "sent_title": "Please check your inbox",
        "sent_text": (
            "If {brand} knows this address, a mail with a link to your preferences is on its way. The link works "
            "for 30 days. No mail within a few minutes? Look in the spam folder, or ask again later."
        ),
        "again": "Ask for another link",
        "limited_title": "Too many links asked for",
        "limited_text": (
            "Too many links were asked for from here or for this address. Please try again in {minutes} minutes."
        ),
        "refused_title": "Please reload the page",
        "refused_text": "This form could not be accepted (it came from another page or is too old). Nothing was sent.",
        "unverified_title": "This address is not confirmed yet",
        "unverified_text": (
            "The preferences open only for an address known to be yours: confirm it with the link in the "
            "confirmation mail first, or ask the company that writes to you."
        ),
        "nowhere_title": "Page not found",
        "nowhere_text": (
            "Please use the preferences link on the website or in a message of the company that writes to you."
        ),
        "via_text": "Here you see and change everything {brand} may send to {address}.",
        "via_button": "Open my preferences",
        "via_unknown_title": "Link not found",
        "via_unknown_text": "This link is not valid. Please copy the whole link from the email.",
    },
    "de": {
        "language": "Sprache",
        "title": "Ihre Einstellungen",
        "intro": (
            "Geben Sie Ihre E-Mail-Adresse ein. Wenn {brand} sie kennt, senden wir Ihnen einen Link zu Ihren "
            "Einstellungen: Dort sehen und ändern Sie alles, was {brand} Ihnen senden darf."
        ),
        "email": "E-Mail-Adresse",
        "button": "Link zusenden",
        "invalid": "Bitte geben Sie eine gültige E-Mail-Adresse ein, etwa name@example.com.",
        "sent_title": "Bitte sehen Sie in Ihren Posteingang",
        "sent_text": (
            "Wenn {brand} diese Adresse kennt, ist eine E-Mail mit einem Link zu Ihren Einstellungen unterwegs. "
            "Der Link gilt 30 Tage. Keine E-Mail nach ein paar Minuten? Sehen Sie im Spam-Ordner nach oder "
            "fragen Sie später noch einmal."
        ),
        "again": "Einen weiteren Link anfordern",
        "limited_title": "Zu viele Links angefordert",
        "limited_text": (
            "Von hier oder für diese Adresse wurden zu viele Links angefordert. Bitte versuchen Sie es in {minutes} "
            "Minuten erneut."
        ),
        "refused_title": "Bitte laden Sie die Seite neu",
        "refused_text": (
            "Dieses Formular wurde nicht angenommen (es kam von einer anderen Seite oder ist zu alt). "
            "Es wurde nichts gesendet."
        ),
        "unverified_title": "Diese Adresse ist noch nicht bestätigt",
        "unverified_text": (
            "Die Einstellungen öffnen sich nur für eine Adresse, die nachweislich Ihre ist: Bestätigen Sie sie "
            "zuerst mit dem Link in der Bestätigungsmail, oder fragen Sie das Unternehmen, das Ihnen schreibt."
        ),
        "nowhere_title": "Seite nicht gefunden",
        "nowhere_text": (
            "Bitte verwenden Sie den Link zu den Einstellungen auf der Website oder in einer Nachricht des "
            "Unternehmens, das Ihnen schreibt."
        ),
        "via_text": "Hier sehen und ändern Sie alles, was {brand} an {address} senden darf.",
        "via_button": "Meine Einstellungen öffnen",
        "via_unknown_title": "Link nicht gefunden",
        "via_unknown_text": "Dieser Link ist nicht gültig. Bitte kopieren Sie den ganzen Link aus der E-Mail.",
    },
}


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(), auto_reload=False
    )


def _chosen(asked: str | None, default: str) -> str:
    """The language a ``?lang=`` asks for, if the pages speak it, else ``default``."""
    return asked if asked in WORDS else default


def _minutes(seconds: int) -> str:
    """A wait in whole minutes, rounded up (at least one)."""
    return str(max(1, -(-int(seconds) // 60)))


def _render(lang: str, **context: Any) -> str:
    def say(key: str, **values: str) -> str:
        return WORDS[lang][key].format(**values)

    return _templates().get_template("request.html").render(lang=lang, say=say, **context)


def _client_ip(request: Request[Any, Any, Any]) -> str | None:
    """The client's address as the per-IP limit counts it.

    An IPv6 address counts by its /64 (one subscriber's network, in which every device may choose any address),
    an IPv4 address whole.
    """
    host = request.client.host if request.client else None
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# --- the request form's token: stateless, bound to the workspace and the time the page was shown -------------


def form_token(keys: Keys, workspace_id: uuid.UUID, now: float | None = None) -> str:
    """``{unix time}.{HMAC(workspace id, time)}``: accepted for :data:`FORM_TTL_SECONDS`."""
    stamp = int(now if now is not None else time.time())
    return f"{stamp}.{_form_mac(keys, workspace_id, stamp)}"


def form_token_valid(keys: Keys, workspace_id: uuid.UUID, given: str, now: float | None = None) -> bool:
    """A token this service issued for this workspace's form, not older than :data:`FORM_TTL_SECONDS`."""
    stamp_text, _, mac = given.partition(".")
    if not stamp_text.isdigit() or len(stamp_text) > 12:  # noqa: PLR2004  # far beyond any Unix time we issue
        return False
    stamp = int(stamp_text)
    age = (now if now is not None else time.time()) - stamp
    if not -_CLOCK_SKEW_SECONDS <= age <= FORM_TTL_SECONDS:
        return False
    return hmac.compare_digest(_form_mac(keys, workspace_id, stamp), mac)


def _form_mac(keys: Keys, workspace_id: uuid.UUID, stamp: int) -> str:
    key = keys.request_fingerprint(b"preference-request-form-v1")
    return hmac.new(key, workspace_id.bytes + str(stamp).encode(), hashlib.sha256).hexdigest()


# --- what happens after the answer ---------------------------------------------------------------------------


#: How many stored spellings of one address (``Jane@…``, ``jane@…``) are each mailed a link on one request.
MAX_SPELLINGS = 5


async def send_link_if_known(
    database: Database, sender: MailSender, app_settings: Settings, workspace_id: uuid.UUID, address: str, *, keys: Keys
) -> bool:
    """Mail a fresh preference link to each email address of ``workspace_id``'s contacts that ``address`` names.

    The local part is compared without its case (``jane@…`` typed finds ``Jane@…`` stored: people do not remember
    how a shop wrote their address). Each address found is mailed a link to its own contact, at the address as
    stored, never as typed; several stored spellings of one address (a local part's case may tell mailboxes apart,
    RFC 5321) each get their own, up to :data:`MAX_SPELLINGS`. Runs after the answer was sent; answers whether a
    mail went out (for tests and the log, never the person).
    """
    try:
        async with database.sessionmaker() as session:
            async with session.begin():
                points = await _points_named(session, keys, workspace_id, address)
                if not points:
                    log.info("preference_link_requested", workspace_id=str(workspace_id), known=False)
                    return False
                mails = []
                for point in points:
                    if not service.may_receive_link(point):
                        # an address nobody proved is the contact's (a form's signup, unconfirmed or attached to a
                        # customer id) gets no link: its holder could otherwise see and change that contact
                        log.info(
                            "preference_link_requested", workspace_id=str(workspace_id), known=True, verified=False
                        )
                        continue
                    issued = await service.issue_link(
                        session, workspace_id, str(point.contact_id), issued_by=service.ON_REQUEST, point_id=point.id
                    )
                    url = f"{app_settings.public_base_url}/p/{issued.token}"
                    outgoing = await emails.preference_link_mail(
                        session, app_settings, point, url=url, expires=issued.expires_at
                    )
                    mails.append((issued.link_id, outgoing))
            sent = False
            for link_id, outgoing in mails:  # each on its own: a refused mail does not keep the others from going
                sent = await _deliver(session, sender, workspace_id, link_id, outgoing) or sent
    except Exception:  # nobody waits for this answer: log (no address) and let the person ask again
        log.exception("preference_link_request_failed", workspace_id=str(workspace_id))
        return False
    return sent


async def _points_named(session: AsyncSession, keys: Keys, workspace_id: uuid.UUID, address: str) -> list[ContactPoint]:
    """The stored email addresses equal to ``address`` but for case, the one spelled as typed first."""
    wanted = address.lower()
    found = await ledger.email_points_by_keys(
        session,
        workspace_id,
        keys.suppression_keys(Channel.EMAIL.value, wanted).values(),
        limit=MAX_SPELLINGS,
        typed=address,
    )
    same = [point for point in found if point.value.lower() == wanted]  # the keys' own comparison, made sure of
    return sorted(same, key=lambda point: point.value != address)


async def _deliver(
    session: AsyncSession, sender: MailSender, workspace_id: uuid.UUID, link_id: uuid.UUID, outgoing: emails.Outgoing
) -> bool:
    """Send one link mail in a transaction of its own; whether it was accepted."""
    try:
        async with session.begin():
            result = await emails.deliver(session, sender, outgoing, kind="preference_link_mail")
    except Exception:  # nobody waits for this answer: log (no address) and let the person ask again
        log.exception("preference_link_request_failed", workspace_id=str(workspace_id))
        return False
    log.info(
        "preference_link_requested",
        workspace_id=str(workspace_id),
        known=True,
        link_id=str(link_id),
        outcome=result.outcome.value,
    )
    return result.accepted


async def _take_limits(
    session: AsyncSession, workspace_id: uuid.UUID, counters: list[tuple[bytes, ratelimit.Limit]]
) -> None:
    await ratelimit.take(
        session,
        workspace_id,
        counters,
        now=utcnow(),
        message="Too many preference links were requested; try again later.",
        code="too_many_preference_links",
    )


async def _brand(session: AsyncSession, workspace_id: uuid.UUID) -> tuple[str, str] | None:
    """The workspace's brand name and language, or ``None`` if there is no such workspace."""
    workspace = await workspaces.get_workspace(session, workspace_id)
    if workspace is None:
        return None
    settings = WorkspaceSettings.load(workspace.settings)
    return settings.brand or workspace.name, settings.locale


def _address(typed: str) -> str | None:
    """The typed address, normalised as contact points are stored; ``None`` if it is not an email address."""
    if len(typed) > _MAX_ADDRESS:
        return None
    try:
        return normalise_email(typed)
    except InvalidIdentifier:
        return None


def _workspace_id(raw: str | None) -> uuid.UUID | None:
    if raw is None or len(raw) > 64:  # noqa: PLR2004  # a UUID in any of its spellings is shorter
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


class PreferenceRequestPages(Controller):
    """``/p?w={workspace}``: ask for a link to the preference centre by email address (no enumeration)."""

    path = "/p"
    tags = ["hosted pages"]  # noqa: RUF012  # Litestar reads class attributes
    exception_handlers = PAGE_ERRORS  # a page, not the API's JSON, for an error no handler took

    @route(
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        operation_id=per_method("preferenceRequestPage"),
        media_type=MediaType.HTML,
        responses=pages(404),
    )
    async def show(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        w: FromQuery[str | None] = None,
        lang: FromQuery[str | None] = None,
    ) -> Response[str]:
        """The form: one email address field. `w` is the workspace's id, from the brand's own link."""
        workspace_id = _workspace_id(w)
        async with db.begin():
            found = await _brand(db, workspace_id) if workspace_id else None
            look = await look_for(db, workspace_id) if workspace_id and found else None
        if workspace_id is None or found is None:
            page_lang = browser_lang(request, lang)
            return page_response(_render(page_lang, title_key="nowhere_title", text_key="nowhere_text"), 404)
        brand, locale = found
        page_lang = browser_lang(request, lang, locale)
        return page_response(self._form(page_lang, brand, workspace_id, keys, look=look), look=look)

    @post(
        operation_id="requestPreferenceLink",
        status_code=200,
        media_type=MediaType.HTML,
        responses=pages(400, 403, 404, 429),
    )
    async def ask(
        self,
        request: Request[Any, Any, Any],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
        database: NamedDependency[Database],
        mail_sender: NamedDependency[MailSender],
        w: FromQuery[str | None] = None,
        lang: FromQuery[str | None] = None,
    ) -> Response[str]:
        """Form fields `email` and `form_token`, from the page itself (same origin).

        The answer is the same whether or not the address is known; the mail is sent after it.
        """
        form = await request.form()
        workspace_id = _workspace_id(w)
        async with db.begin():
            found = await _brand(db, workspace_id) if workspace_id else None
            look = await look_for(db, workspace_id) if workspace_id and found else None
        if workspace_id is None or found is None:
            return page_response(
                _render(browser_lang(request, lang), title_key="nowhere_title", text_key="nowhere_text"), 404
            )
        brand, locale = found
        page_lang = browser_lang(request, lang, locale)
        if not same_origin(request, settings) or not form_token_valid(
            keys, workspace_id, str(form.get("form_token", ""))
        ):
            body = _render(
                page_lang, title_key="refused_title", text_key="refused_text", again=self._again(w, lang), look=look
            )
            return page_response(body, 403, look=look)
        typed = str(form.get("email", ""))
        address = _address(typed)
        if address is None:
            body = self._form(page_lang, brand, workspace_id, keys, typed=typed[:_MAX_ADDRESS], invalid=True, look=look)
            return page_response(body, 400, look=look)
        counters = [(keys.rate_limit_key("preference-request-email", address.lower()), ADDRESS_LIMIT)]
        if ip := _client_ip(request):
            counters.append((keys.rate_limit_key("preference-request-ip", ip), IP_LIMIT))
        try:
            async with db.begin():
                await _take_limits(db, workspace_id, counters)
        except RateLimited as exc:
            body = _render(
                page_lang,
                title_key="limited_title",
                text_key="limited_text",
                minutes=_minutes(exc.retry_after),
                again=self._again(w, lang),
                look=look,
            )
            return page_response(body, 429, {"Retry-After": str(exc.retry_after)}, look=look)
        body = _render(
            page_lang, title_key="sent_title", text_key="sent_text", brand=brand, again=self._again(w, lang), look=look
        )
        response = page_response(body, look=look)
        response.background = BackgroundTask(
            send_link_if_known, database, mail_sender, settings, workspace_id, address, keys=keys
        )
        return response

    @staticmethod
    def _again(w: str | None, lang: str | None) -> str:
        return "/p?" + urlencode({"w": w or "", **({"lang": lang} if lang in ("de", "en") else {})})

    @staticmethod
    def _form(
        lang: str,
        brand: str,
        workspace_id: uuid.UUID,
        keys: Keys,
        *,
        typed: str = "",
        invalid: bool = False,
        look: Look | None = None,
    ) -> str:
        query = urlencode({"w": str(workspace_id), "lang": lang})
        return _render(
            lang,
            title_key="title",
            text_key="intro",
            brand=brand,
            request_form={"action": f"/p?{query}", "form_token": form_token(keys, workspace_id), "typed": typed},
            invalid=invalid,
            languages={code: "?" + urlencode({"w": str(workspace_id), "lang": code}) for code in ("de", "en")},
            look=look,
        )


class PreferenceViaPages(Controller):
    """``/p/via/{token}``: from a marketing mail's footer (or the ``/u`` and ``/c`` pages) to the preference centre."""

    path = "/p/via/{token:str}"
    tags = ["hosted pages"]  # noqa: RUF012
    exception_handlers = PAGE_ERRORS  # a page, not the API's JSON, for an error no handler took

    @route(
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        operation_id=per_method("preferenceViaPage"),
        media_type=MediaType.HTML,
        responses=pages(404),
    )
    async def show(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        lang: FromQuery[str | None] = None,
    ) -> Response[str]:
        """One button that opens the preference centre of the token's address; changes nothing."""
        async with db.begin():
            recipient = await self._recipient(db, keys, token)
            look = await look_for(db, recipient.workspace_id) if recipient else None
        if recipient is None:
            return self._unknown(request)
        page_lang = _chosen(lang, recipient.lang)
        action = f"/p/via/{token}" + (f"?lang={page_lang}" if lang == page_lang else "")
        body = _render(
            page_lang,
            title_key="title",
            text_key="via_text",
            brand=recipient.brand,
            address=recipient.address,
            via_form={"action": action, "button": WORDS[page_lang]["via_button"]},
            look=look,
        )
        return page_response(body, look=look)

    @post(operation_id="openPreferencesVia", status_code=303, media_type=MediaType.HTML, responses=pages(403, 404, 429))
    async def open(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        *,
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
        lang: FromQuery[str | None] = None,
    ) -> Response[str]:
        """A fresh preference link for the token's address (30 days), and a 303 to it; same origin only."""
        asked = lang
        async with db.begin():
            recipient = await self._recipient(db, keys, token)
            if recipient is None:
                return self._unknown(request)
            lang = _chosen(asked, recipient.lang)
            if not same_origin(request, settings):
                body = _render(lang, title_key="refused_title", text_key="refused_text")
                return page_response(body, 403)
            if not service.may_receive_link(recipient.point):
                body = _render(lang, title_key="unverified_title", text_key="unverified_text")
                return page_response(body, 403)
            key = keys.rate_limit_key("preference-via", str(recipient.point.id))
            try:
                await _take_limits(db, recipient.workspace_id, [(key, VIA_LIMIT)])
            except RateLimited as exc:
                body = _render(
                    lang, title_key="limited_title", text_key="limited_text", minutes=_minutes(exc.retry_after)
                )
                return page_response(body, 429, {"Retry-After": str(exc.retry_after)})
            issued = await service.issue_link(
                db,
                recipient.workspace_id,
                str(recipient.point.contact_id),
                issued_by=service.FROM_A_MAIL,
                point_id=recipient.point.id,
            )
        query = f"?lang={lang}" if asked == lang else ""
        return page_response("", 303, {"Location": f"/p/{issued.token}{query}"})

    @staticmethod
    async def _recipient(db: AsyncSession, keys: Keys, token: str) -> emails.Recipient | None:
        target = verify_unsubscribe(keys.unsubscribe, token) if len(token) <= _MAX_TOKEN else None
        return await emails.recipient_of(db, target) if target else None

    @staticmethod
    def _unknown(request: Request[Any, Any, Any]) -> Response[str]:
        lang = browser_lang(request, None)
        return page_response(_render(lang, title_key="via_unknown_title", text_key="via_unknown_text"), 404)
