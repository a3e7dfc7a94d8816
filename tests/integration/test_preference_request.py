"""Reaching the preference centre (issue 17, "Reaching it"): ``GET/POST /p`` by email address without enumeration,
the "Einstellungen / Preferences" link of every marketing mail (``/p/via/{token}``), and the links on ``/u`` and
``/c``. Mail goes through a real SMTP server (in-process aiosmtpd)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import httpx
import pytest
from aiosmtpd.smtp import SMTP
from sqlalchemy import func, select, text

from app.emails.tokens import UnsubscribeTarget, sign_unsubscribe
from app.ledger.models import ConsentEvent
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.lib.models import RateLimitHit
from app.messages.dispatcher import DispatchConfig, Dispatcher
from app.preferences import request as preference_request
from app.preferences.models import PreferenceLink
from app.settings import MailSettings, Settings
from tests.conftest import TEST_SECRET

BASE = "https://consent.example.com"
KEYS = Keys(TEST_SECRET)
PREFERENCE_LINK = re.compile(r"https://consent\.example\.com/p/(?!via/)[A-Za-z0-9_\-]{43}")
VIA_LINK = re.compile(r"https://consent\.example\.com/p/via/[A-Za-z0-9_\-]+")
SAME_ORIGIN = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}


class Inbox:
    """What the SMTP server received; ``gate`` holds every DATA until it is set."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse = False
        self.refused = 0

    async def handle_DATA(self, _server, _session, envelope):  # noqa: N802  # aiosmtpd hook
        await self.gate.wait()
        if self.refuse:
            self.refused += 1
            return "554 5.7.1 Refused"
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 2.0.0 Queued as TEST"

    def text(self, index: int = -1) -> str:
        return self.messages[index].get_body(("plain",)).get_content()

    def html(self, index: int = -1) -> str:
        return self.messages[index].get_body(("html",)).get_content()


@pytest.fixture
async def inbox():
    handler = Inbox()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler, hostname="mx.test"), "127.0.0.1", 0)
    handler.port = server.sockets[0].getsockname()[1]
    try:
        yield handler
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def settings(tmp_path, inbox):
    return Settings(
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        public_base_url=BASE,
        mail=MailSettings(host="127.0.0.1", port=inbox.port, tls="none", mail_from="Acme <news@acme.example>"),
    )


@pytest.fixture
def client_from(app):
    """``async with client_from(ip) as http``: a client of the app seen from another IP."""

    @asynccontextmanager
    async def make(ip: str):
        transport = httpx.ASGITransport(app=app, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            yield http

    return make


@pytest.fixture
async def jane(ledger):
    """Jane (German): newsletter by email; Otto (another contact of the same workspace): newsletter by email."""
    newsletter = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "jane@example.com")
    await ledger.apply(mail, newsletter.id, "signup", "confirm")
    otto = await ledger.point("email", "otto@example.com")
    await ledger.apply(otto, newsletter.id, "signup", "confirm")
    return {"email": mail, "contact_id": mail.contact_id, "newsletter": newsletter, "otto": otto}


def request_path(workspace_id, **extra) -> str:
    return "/p?" + urlencode({"w": str(workspace_id), **extra})


def form_token_of(html: str) -> str:
    found = re.search(r'name="form_token" value="([0-9]+\.[0-9a-f]+)"', html)
    assert found is not None, html
    return found.group(1)


async def ask(http, workspace_id, address: str, **headers: str) -> httpx.Response:
    page = await http.get(request_path(workspace_id))
    assert page.status_code == 200, page.text
    form = {"email": address, "form_token": form_token_of(page.text)}
    return await http.post(request_path(workspace_id), data=form, headers={**SAME_ORIGIN, **headers})


async def links(session) -> list[PreferenceLink]:
    return list((await session.scalars(select(PreferenceLink).order_by(PreferenceLink.created_at))).all())


# --- asking for a link at /p ---------------------------------------------------------------------------------


async def test_a_known_address_gets_exactly_one_mail_with_a_link_to_its_own_page(client, tenant, jane, inbox, session):
    page = await client.get(request_path(tenant.id), headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert page.status_code == 200
    assert '<html lang="de">' in page.text
    assert '<label for="email">E-Mail-Adresse</label>' in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    answer = await client.post(
        request_path(tenant.id),
        data={"email": "  Jane@EXAMPLE.com ", "form_token": form_token_of(page.text)},
        headers=SAME_ORIGIN,
    )
    assert answer.status_code == 200
    assert len(inbox.messages) == 1
    [mail] = inbox.messages
    assert mail["To"] == "jane@example.com"
    assert mail["Subject"] == "Ihre Einstellungen bei Acme", "the contact's language"
    assert "List-Unsubscribe" not in mail, "a mail the person asked for, not a list mail"
    [url] = PREFERENCE_LINK.findall(inbox.text())
    assert f'href="{url}"' in inbox.html()
    [link] = await links(session)
    assert link.contact_id == jane["contact_id"]
    assert link.contact_point_id == jane["email"].id, "the link proves control of the address it was mailed to"
    assert link.issued_by == "request:email"
    opened = await client.get(url.removeprefix(BASE))
    assert opened.status_code == 200
    assert "j***@example.com" in opened.text
    assert "o***@example.com" not in opened.text, "Otto's page is not Jane's"


async def test_an_unknown_address_gets_no_mail_and_the_very_same_page(client, tenant, jane, inbox, session):
    known = await ask(client, tenant.id, "jane@example.com")
    unknown = await ask(client, tenant.id, "nobody@example.com")
    assert len(inbox.messages) == 1
    assert inbox.messages[0]["To"] == "jane@example.com"
    assert len(await links(session)) == 1
    assert unknown.status_code == known.status_code == 200
    assert unknown.text == known.text
    varying = ("date", "x-request-id")
    assert {k: v for k, v in unknown.headers.items() if k not in varying} == {
        k: v for k, v in known.headers.items() if k not in varying
    }
    assert "nobody" not in unknown.text


async def test_an_address_of_another_workspace_gets_no_mail(client, tenant, other_tenant, database, inbox, session):
    from tests.conftest import Ledger  # noqa: PLC0415

    await Ledger(database, other_tenant.id).point("email", "globex@example.com")
    answer = await ask(client, tenant.id, "globex@example.com")
    assert answer.status_code == 200
    assert inbox.messages == []
    assert await links(session) == []


async def test_an_address_stored_with_capitals_in_its_local_part_is_found_and_mailed_as_stored(
    client, client_from, tenant, ledger, inbox, session
):
    """Hostile review: ``Jane@example.com`` stored, ``jane@example.com`` typed found nothing (the local part keeps its
    case). The link goes to the stored address only, and the page and the limits are those of any address."""
    stored = await ledger.point("email", "Jane.Doe@example.com")
    unknown = await ask(client, tenant.id, "nobody@example.com")
    answer = await ask(client, tenant.id, "jane.doe@EXAMPLE.com")
    assert (answer.status_code, answer.text) == (200, unknown.text)
    [mail] = inbox.messages
    assert mail["To"] == "Jane.Doe@example.com", "to the address as stored, not as typed"
    [link] = await links(session)
    assert (link.contact_id, link.contact_point_id) == (stored.contact_id, stored.id)
    count = preference_request.ADDRESS_LIMIT.count
    for index, spelling in enumerate(["JANE.DOE@example.com", "jAnE.dOe@example.com", "jane.doe@example.com"]):
        async with client_from(f"198.51.100.{index + 1}") as http:
            assert (await ask(http, tenant.id, spelling)).status_code == (200 if index < count - 1 else 429)
    assert len(inbox.messages) == count, "the per-address limit counts every spelling of the address"


async def test_addresses_differing_only_in_case_each_get_their_own_link(client, tenant, ledger, inbox, session):
    """Two stored spellings (RFC 5321 lets a server tell them apart; here two contacts): each is mailed a link to its
    own contact, at its own address; nothing of one goes to the other."""
    first = await ledger.point("email", "Jane@example.com")
    second = await ledger.point("email", "jane@example.com")
    await ledger.point("email", "JANE@example.com", verified=None)  # a form's, unconfirmed: no link
    answer = await ask(client, tenant.id, "JANE@example.com")
    assert answer.status_code == 200
    assert sorted(mail["To"] for mail in inbox.messages) == ["Jane@example.com", "jane@example.com"]
    made = {(link.contact_id, link.contact_point_id) for link in await links(session)}
    assert made == {(first.contact_id, first.id), (second.contact_id, second.id)}


async def test_unconfirmed_spellings_planted_first_do_not_hide_the_confirmed_address(
    client, tenant, ledger, inbox, session
):
    """Hostile review: five older unconfirmed spellings (a form key's signups) took every place of the lookup's limit,
    so the confirmed address, typed exactly as stored, got no link."""
    planted = [
        (await ledger.point("email", spelling, verified=None)).id
        for spelling in (
            "JANE@example.com",
            "JAne@example.com",
            "JANe@example.com",
            "jANE@example.com",
            "jaNE@example.com",
        )
    ]
    await session.execute(
        text("UPDATE contact_points SET created_at = created_at - interval '1 day' WHERE id = ANY(:ids)"),
        {"ids": planted},
    )
    await session.commit()
    await ledger.point("email", "jane@example.com")  # confirmed
    assert (await ask(client, tenant.id, "jane@example.com")).status_code == 200
    assert [mail["To"] for mail in inbox.messages] == ["jane@example.com"]


async def test_the_answer_is_sent_before_the_address_is_looked_up_or_mailed(app, tenant, jane, inbox):
    """Both branches answer in the same time: the lookup and the SMTP round trip come after the response."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        token = form_token_of((await http.get(request_path(tenant.id))).text)
    body = urlencode({"email": "jane@example.com", "form_token": token}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/p",
        "raw_path": b"/p",
        "query_string": f"w={tenant.id}".encode(),
        "headers": [
            (b"host", b"consent.example.com"),
            (b"origin", BASE.encode()),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("203.0.113.9", 1),
        "server": ("consent.example.com", 443),
        "root_path": "",
    }
    sent: list[dict] = []
    answered = asyncio.Event()
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    inbox.gate.clear()  # the relay holds the mail
    task = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(answered.wait(), 10)
    assert sent[0]["status"] == 200
    assert inbox.messages == [], "the answer went out while the mail was still on its way"
    assert not task.done()
    inbox.gate.set()
    await asyncio.wait_for(task, 10)
    assert len(inbox.messages) == 1


async def test_a_refused_mail_still_answers_the_same_page(client, tenant, jane, inbox):
    unknown = await ask(client, tenant.id, "nobody@example.com")
    inbox.refuse = True
    refused = await ask(client, tenant.id, "jane@example.com")
    assert inbox.refused == 1, "the relay was asked and refused"
    assert inbox.messages == []
    assert (refused.status_code, refused.text) == (unknown.status_code, unknown.text) == (200, unknown.text)


async def test_no_workspace_or_an_unknown_one_answers_a_plain_404_page(client, tenant):
    for path in ("/p", "/p?w=nonsense", "/p?w=00000000-0000-0000-0000-000000000000", "/p?w=" + "a" * 500):
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert "text/html" in answer.headers["content-type"]
        posted = await client.post(path, data={"email": "jane@example.com"}, headers=SAME_ORIGIN)
        assert posted.status_code == 404


async def test_an_invalid_address_is_refused_with_a_labelled_error_and_nothing_counted(
    client, tenant, jane, inbox, session
):
    for typed in ("not an address", "", "x" * 400 + "@example.com"):
        answer = await ask(client, tenant.id, typed, **{"Accept-Language": "en"})
        assert answer.status_code == 400
        assert 'aria-invalid="true"' in answer.text
        assert "Please enter a valid email address" in answer.text
    assert inbox.messages == []
    assert await session.scalar(select(func.count()).select_from(RateLimitHit)) == 0


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        (None, {}),
        ("garbage", {}),
        ("expired", {}),
        ("other-workspace", {}),
        ("valid", {"Origin": "https://evil.example"}),
        ("valid", {"Origin": "null"}),
        ("valid", {"Sec-Fetch-Site": "cross-site"}),
    ],
    ids=["missing-token", "garbage-token", "expired-token", "other-workspace", "foreign-origin", "null-origin", "xs"],
)
async def test_a_forged_request_is_refused_and_sends_nothing(
    client, tenant, other_tenant, jane, inbox, session, token, headers
):
    tokens = {
        "valid": preference_request.form_token(KEYS, tenant.id),
        "garbage": "123.abc",
        "expired": preference_request.form_token(KEYS, tenant.id, now=time.time() - 3 * 3600),
        "other-workspace": preference_request.form_token(KEYS, other_tenant.id),
    }
    form = {"email": "jane@example.com"}
    if token is not None:
        form["form_token"] = tokens[token]
    answer = await client.post(request_path(tenant.id), data=form, headers={**SAME_ORIGIN, **headers})
    assert answer.status_code == 403
    assert "Nothing was sent" in answer.text or "nichts gesendet" in answer.text
    assert inbox.messages == []
    assert await links(session) == []


async def test_the_limit_per_address_holds_across_ips_and_says_nothing_about_existence(
    client_from, tenant, jane, inbox
):
    count = preference_request.ADDRESS_LIMIT.count
    for address in ("jane@example.com", "nobody@example.com"):
        answers = []
        for index in range(count + 1):
            async with client_from(f"198.51.100.{index + 1}") as http:
                answers.append(await ask(http, tenant.id, address))
        assert [a.status_code for a in answers] == [200] * count + [429], address
        wait = int(answers[-1].headers["Retry-After"])
        assert wait > 0
        assert f"in {-(-wait // 60)} Minuten erneut" in answers[-1].text, "the wait in words, not 'a moment'"
    assert len(inbox.messages) == count, "only the known address got mail, and only up to the limit"
    async with client_from("198.51.100.1") as http:
        known, unknown = (
            await ask(http, tenant.id, "jane@example.com"),
            await ask(http, tenant.id, "nobody@example.com"),
        )
    assert known.status_code == unknown.status_code == 429
    assert known.text == unknown.text


async def test_the_limit_per_ip_holds_across_addresses(client, client_from, tenant, jane, inbox):
    count = preference_request.IP_LIMIT.count
    answers = [await ask(client, tenant.id, f"someone{index}@example.com") for index in range(count)]
    assert {a.status_code for a in answers} == {200}
    limited = await ask(client, tenant.id, "jane@example.com")
    assert limited.status_code == 429
    assert inbox.messages == []
    async with client_from("198.51.100.77") as http:
        assert (await ask(http, tenant.id, "jane@example.com")).status_code == 200
    assert len(inbox.messages) == 1


async def test_a_link_asked_for_by_one_address_never_opens_another_contact(client, tenant, jane, inbox, session):
    await ask(client, tenant.id, "otto@example.com")
    [url] = PREFERENCE_LINK.findall(inbox.text())
    assert inbox.messages[0]["To"] == "otto@example.com"
    [link] = await links(session)
    assert link.contact_id == jane["otto"].contact_id
    page = await client.get(url.removeprefix(BASE))
    assert "o***@example.com" in page.text
    assert "j***@example.com" not in page.text
    # the form of Otto's page cannot name Jane's address
    token = re.search(r'name="form_token" value="([0-9a-f]+)"', page.text).group(1)
    tampered = {
        "action": "withdraw",
        "form_token": token,
        "point": str(jane["email"].id),
        "purpose": str(jane["newsletter"].id),
    }
    before = await session.scalar(select(func.count()).select_from(ConsentEvent))
    assert (await client.post(url.removeprefix(BASE), data=tampered, headers=SAME_ORIGIN)).status_code == 403
    assert await session.scalar(select(func.count()).select_from(ConsentEvent)) == before


# --- the link in every marketing mail ----------------------------------------------------------------------------


@pytest.fixture
async def campaign(client, admin, tenant, jane, settings, app, database):
    """Sends one marketing mail to Jane through the real message path and dispatcher."""
    from app.channels.adapters import Adapters  # noqa: PLC0415

    workspace = (await client.get("/v1/workspace/settings", headers=admin)).json()
    workspace["send_windows"] = {}
    assert (await client.put("/v1/workspace/settings", json=workspace, headers=admin)).status_code == 200
    sender = await tenant.key(Scope.MESSAGES_SEND)
    content = {
        "email": {
            "subject": "Herbst",
            "text": "Die Herbstkollektion ist da.",
            "html": "<html><body><p>Herbst</p></body></html>",
        }
    }
    body = {"contact": str(jane["contact_id"]), "purpose": "newsletter", "route": ["email"], "content": content}
    answer = await client.post("/v1/messages", json=body, headers=sender)
    assert answer.status_code == 202, answer.text
    adapters = Adapters(settings, KEYS, app.state.mail_sender)
    try:
        config = DispatchConfig(concurrency=1, deadline=1.0, base_backoff=0.0, max_attempts=3)
        assert await Dispatcher(database, KEYS, settings, adapters, config=config).run_once() == 1
    finally:
        await adapters.aclose()


async def test_a_marketing_mail_links_to_the_preferences_beside_unsubscribe(client, jane, inbox, campaign, session):
    assert len(inbox.messages) == 1
    text, html = inbox.text(), inbox.html()
    [via] = VIA_LINK.findall(text)
    assert "Einstellungen" in text, "German, as the contact"
    assert "/u/" in text
    assert f'<a href="{via}">Einstellungen</a>' in html
    assert html.index(">Abmelden</a>") < html.index(">Einstellungen</a>"), "beside the unsubscribe link"
    assert await links(session) == [], "no row per marketing mail"
    path = via.removeprefix(BASE)
    before = await session.scalar(select(func.count()).select_from(ConsentEvent))
    shown = await client.get(path)
    assert shown.status_code == 200
    assert (await client.head(path)).status_code == 200
    assert "j***@example.com" in shown.text
    assert f'action="{path}"' in shown.text
    assert await links(session) == [], "GET (a mail scanner) mints nothing"
    opened = await client.post(path, headers=SAME_ORIGIN)
    assert opened.status_code == 303
    target = opened.headers["location"]
    assert re.fullmatch(r"/p/[A-Za-z0-9_\-]{43}", target)
    [link] = await links(session)
    assert link.contact_id == jane["contact_id"]
    assert link.contact_point_id == jane["email"].id
    assert link.issued_by == "unsubscribe_token"
    page = await client.get(target)
    assert page.status_code == 200
    assert "j***@example.com" in page.text
    assert await session.scalar(select(func.count()).select_from(ConsentEvent)) == before, "nothing changed"


async def test_the_footer_link_refuses_cross_site_posts_forgeries_and_floods(client, jane, session):
    token = sign_unsubscribe(KEYS.unsubscribe, UnsubscribeTarget(jane["email"].id, jane["newsletter"].id))
    path = f"/p/via/{token}"
    assert (await client.post(path, headers={"Sec-Fetch-Site": "cross-site"})).status_code == 403
    assert (await client.post(path, headers={"Origin": "https://evil.example"})).status_code == 403
    assert await links(session) == []
    forged = sign_unsubscribe(b"k" * 32, UnsubscribeTarget(jane["email"].id, None))
    for bad in (forged, token[:-2], "x" * 500):
        assert (await client.get(f"/p/via/{bad}")).status_code == 404
        assert (await client.post(f"/p/via/{bad}", headers=SAME_ORIGIN)).status_code == 404
    english = await client.get(path, params={"lang": "en"})
    assert f'action="{path}?lang=en"' in english.text, "the language chosen goes on to the page"
    opened = await client.post(path, params={"lang": "en"}, headers=SAME_ORIGIN)
    assert opened.headers["location"].endswith("?lang=en")
    for _ in range(preference_request.VIA_LIMIT.count - 1):
        assert (await client.post(path, headers=SAME_ORIGIN)).status_code == 303
    assert (await client.post(path, headers=SAME_ORIGIN)).status_code == 429
    assert len(await links(session)) == preference_request.VIA_LIMIT.count


async def test_the_footer_token_of_one_address_opens_only_its_own_contact(client, jane, session):
    otto = sign_unsubscribe(KEYS.unsubscribe, UnsubscribeTarget(jane["otto"].id, None))
    target = (await client.post(f"/p/via/{otto}", headers=SAME_ORIGIN)).headers["location"]
    page = await client.get(target)
    assert "o***@example.com" in page.text
    assert "j***@example.com" not in page.text
    [link] = await links(session)
    assert link.contact_id == jane["otto"].contact_id


# --- /u and /c link to the preference centre -----------------------------------------------------------------


async def test_the_unsubscribe_page_links_to_the_preferences(client, jane):
    token = sign_unsubscribe(KEYS.unsubscribe, UnsubscribeTarget(jane["email"].id, jane["newsletter"].id))
    page = await client.get(f"/u/{token}")
    assert page.status_code == 200
    assert f'href="/p/via/{token}"' in page.text
    assert "Einstellungen" in page.text
    done = await client.post(f"/u/{token}", data={"scope": "purpose"})
    assert done.status_code == 200
    assert f'href="/p/via/{token}"' in done.text
    followed = await client.get(f"/p/via/{token}")
    assert followed.status_code == 200
    assert "j***@example.com" in followed.text


async def test_the_confirmation_page_links_to_the_preferences_of_its_address(client, tenant, ledger, inbox, session):
    await ledger.purpose("newsletter")
    notice = await client.post(
        "/v1/notices",
        json={"purpose": "newsletter", "channels": ["email"], "locale": "en", "text": "Yes, the newsletter."},
        headers=await tenant.key(Scope.ADMIN),
    )
    assert notice.status_code == 201, notice.text
    signup = await client.post(
        "/v1/signups",
        json={
            "channel": "email",
            "address": "maria@example.com",
            "purpose": "newsletter",
            "notice_id": notice.json()["notice_id"],
            "contact": {"locale": "en"},
            "evidence": {"ip": "198.51.100.23", "user_agent": "Mozilla/5.0", "source_url": "https://acme.example/nl"},
        },
        headers=await tenant.key(Scope.SIGNUP),
    )
    assert signup.status_code in (201, 202), signup.text
    confirm = re.search(r"https://consent\.example\.com(/c/[A-Za-z0-9_\-]+)", inbox.text()).group(1)
    page = await client.get(confirm)
    found = re.search(r'href="(/p/via/[A-Za-z0-9_\-]+)"', page.text)
    assert found is not None, page.text
    assert "Preferences" in page.text
    done = await client.post(confirm)
    assert "/p/via/" in done.text
    via = await client.get(found.group(1))
    assert via.status_code == 200
    assert "m***@example.com" in via.text
    unknown = await client.get("/c/" + "x" * 43)
    assert "/p/via/" not in unknown.text
