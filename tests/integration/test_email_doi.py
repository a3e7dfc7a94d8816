"""Email double opt-in end to end over real SMTP (an in-process aiosmtpd server); CHANNEL_RULES.md §1."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from aiosmtpd.smtp import SMTP
from sqlalchemy import func, select, update

from app.emails import repository as email_repository
from app.emails import service as emails
from app.emails.models import ConfirmationToken
from app.ledger.models import ConsentEvent
from app.lib.auth import Scope
from app.lib.models import RateLimitHit
from app.lib.orm import utcnow
from app.main import create_app
from app.settings import MailSettings, Settings
from tests.conftest import TEST_SECRET, running

LINK = re.compile(r"https://consent\.example\.com/c/[A-Za-z0-9_\-]+")


class Inbox:
    """What the SMTP server received; ``refuse`` makes RCPT answer 550 for an address."""

    def __init__(self):
        self.raw: list[bytes] = []
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, _server, _session, envelope, address, _options):  # noqa: N802  # aiosmtpd hook
        if address in self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server, _session, envelope):  # noqa: N802  # aiosmtpd hook
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.raw.append(envelope.original_content or envelope.content)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 2.0.0 Queued as TEST"

    def last_link(self) -> str:
        return LINK.search(self.text(-1)).group(0)

    def text(self, index: int) -> str:
        return self.messages[index].get_body(("plain",)).get_content()


@pytest.fixture
async def inbox():
    handler = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="mx.test"), "127.0.0.1", 0)
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
        public_base_url="https://consent.example.com",
        mail=MailSettings(host="127.0.0.1", port=inbox.port, tls="none", mail_from="Acme <news@acme.example>"),
    )


@pytest.fixture
async def form(client, tenant, ledger, admin):
    """A newsletter purpose with an email notice, and a signup-scoped key."""
    await ledger.purpose("newsletter")
    notice = await client.post(
        "/v1/notices",
        json={"purpose": "newsletter", "channels": ["email"], "locale": "de", "text": "Ja, ich will den Newsletter."},
        headers=admin,
    )
    assert notice.status_code == 201, notice.text
    return {"notice_id": notice.json()["notice_id"], "key": await tenant.key(Scope.SIGNUP)}


@pytest.fixture
def client_for(database, tenant):
    """An app with other settings on the test's database, and an admin key of ``tenant``."""

    @asynccontextmanager
    async def make(settings):
        application = create_app(settings, database=database)
        async with running(application):
            transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
                yield http, await tenant.key(Scope.ADMIN)

    return make


async def sign_up(client, form, address="Jane.Doe@Example.COM", locale="de", ip="198.51.100.23", **extra):
    return await client.post(
        "/v1/signups",
        json={
            "channel": "email",
            "address": address,
            "purpose": "newsletter",
            "notice_id": form["notice_id"],
            "contact": {"locale": locale},
            "evidence": {"ip": ip, "user_agent": "Mozilla/5.0 (form)", "source_url": "https://acme.example/nl"},
            **extra,
        },
        headers=form["key"],
    )


async def consent_of(client, admin, contact_id, purpose="newsletter"):
    contact = (await client.get(f"/v1/contacts/{contact_id}", headers=admin)).json()
    [point] = [p for p in contact["contact_points"] if p["channel"] == "email"]
    states = {c["purpose"]: c for c in point["consents"]}
    return states.get(purpose), point


async def events_of(client, admin, contact_id):
    return (await client.get(f"/v1/contacts/{contact_id}/events", headers=admin)).json()


def path_of(link: str) -> str:
    return link.removeprefix("https://consent.example.com")


async def test_the_whole_double_opt_in(client, admin, form, inbox):  # noqa: PLR0915  # one story, told whole
    response = await sign_up(client, form)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["state"] == "pending"
    assert "instructions" not in body or body["instructions"] is None
    contact_id = body["contact_id"]

    # the mail: one, to the normalised address, German, ad-free, with the link
    [mail] = inbox.messages
    assert inbox.envelopes[0] == ("news@acme.example", ["Jane.Doe@example.com"])
    assert mail["Subject"].startswith("Bitte bestätigen")
    assert mail["Message-ID"]
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in mail, "a confirmation mail is not a list mail"
    text = inbox.text(0)
    for advertising in ("Angebot", "Rabatt", "%", "offer", "sale"):
        assert advertising not in text
    assert "Newsletter" in text
    assert "Acme" in text
    html = mail.get_body(("html",)).get_content()
    assert "<script" not in html
    link = inbox.last_link()
    assert link in html

    # a scanner fetching the link changes nothing
    page = await client.get(path_of(link), headers={"User-Agent": "BingPreview/1.0b"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "noindex" in page.headers["x-robots-tag"]
    assert '<form method="post"' in page.text
    assert "<script" not in page.text
    assert "J***@example.com" in page.text
    head = await client.head(path_of(link))
    assert head.status_code == 200
    assert head.content == b""
    consent, _ = await consent_of(client, admin, contact_id)
    assert consent["state"] == "pending"

    # the person presses the button
    confirmed = await client.post(path_of(link), headers={"User-Agent": "Mozilla/5.0 (person)"})
    assert confirmed.status_code == 200
    assert "Vielen Dank" in confirmed.text
    consent, _ = await consent_of(client, admin, contact_id)
    assert consent["state"] == "opted_in"
    assert consent["legal_basis"] == "consent"
    assert consent["notice_id"] == form["notice_id"]

    signup_event, confirm_event = await events_of(client, admin, contact_id)
    assert signup_event["trigger"] == "signup"
    assert signup_event["evidence"]["ip"] == "198.51.100.23"
    assert signup_event["notice_id"] == form["notice_id"]
    assert confirm_event["trigger"] == "confirm"
    assert confirm_event["actor_type"] == "subject"
    evidence = confirm_event["evidence"]
    assert evidence["ip"] == "203.0.113.7"  # the confirming request's client
    assert evidence["user_agent"] == "Mozilla/5.0 (person)"
    assert evidence["method"] == "button_post"
    assert evidence["mail_message_id"] == mail["Message-ID"]
    assert evidence["seconds_after_sending"] < 10
    assert "fast_confirmation" in evidence["signals"], "seconds after sending: the evidence carries the signal"
    assert confirm_event["occurred_at"]

    again = await client.post(path_of(link))
    assert again.status_code == 200
    assert "Bereits bestätigt" in again.text
    assert len(await events_of(client, admin, contact_id)) == 2, "a repeat POST records nothing"


async def test_a_confirmation_the_suppression_of_an_erasure_still_stops_says_so(client, admin, form, inbox):
    """A newcomer's finding: signed up again after an erasure, the page said "confirmed" and no mail ever came."""
    first = (await sign_up(client, form)).json()
    assert (await client.post(path_of(inbox.last_link()))).status_code == 200
    erased = await client.delete(f"/v1/contacts/{first['contact_id']}", headers=admin)
    assert erased.status_code == 200, erased.text

    again = await sign_up(client, form)
    assert again.status_code == 202, again.text
    page = await client.post(path_of(inbox.last_link()))
    assert page.status_code == 200
    assert "noch kommt keine Post" in page.text
    assert "Vielen Dank" not in page.text
    consent, _ = await consent_of(client, admin, again.json()["contact_id"])
    assert consent["state"] == "opted_in", "the confirmation is recorded all the same"
    query = {"contact": again.json()["contact_id"], "channel": "email", "purpose": "newsletter"}
    eligible = (await client.get("/v1/eligibility", params=query, headers=admin)).json()
    assert eligible["reason"] == "suppressed"


async def test_the_token_row_keeps_the_mail_proof_and_only_a_hash(client, form, inbox, session):
    await sign_up(client, form)
    token = inbox.last_link().rsplit("/", 1)[1]
    row = await session.scalar(select(ConfirmationToken))
    assert row.token_hash != token.encode()
    assert len(row.token_hash) == 32
    assert token not in str(row.__dict__)
    assert row.mail_message_id == inbox.messages[0]["Message-ID"]
    assert row.mail_sent_at is not None
    assert row.mail_response.startswith("2.0.0 Queued") or "Queued" in row.mail_response
    assert row.expires_at - row.created_at > timedelta(hours=71)
    assert len(token) >= 43, "256 bits"


async def test_erasing_tokens_deletes_those_of_the_addresses_in_their_workspace_only(
    client, form, inbox, session, tenant, other_tenant
):
    await sign_up(client, form)
    await sign_up(client, form, address="john@example.com")
    jane = await session.scalar(select(ConfirmationToken).order_by(ConfirmationToken.created_at).limit(1))
    point_id = jane.contact_point_id
    assert await email_repository.erase_tokens(session, other_tenant.id, [point_id]) == 0, "another workspace"
    assert await email_repository.erase_tokens(session, tenant.id, [point_id]) == 1
    left = (await session.scalars(select(ConfirmationToken.contact_point_id))).all()
    assert len(left) == 1
    assert point_id not in left, "the other address keeps its link"


async def test_english_for_an_english_contact(client, form, inbox):
    await sign_up(client, form, locale="en-GB")
    assert inbox.messages[0]["Subject"].startswith("Please confirm")
    page = await client.get(path_of(inbox.last_link()))
    assert "Confirm your subscription" in page.text
    assert 'lang="en"' in page.text


async def test_a_scanner_user_agent_is_flagged_but_a_real_post_still_confirms(client, admin, form, inbox):
    contact_id = (await sign_up(client, form)).json()["contact_id"]
    response = await client.post(path_of(inbox.last_link()), headers={"User-Agent": "Mozilla/5.0 Barracuda"})
    assert response.status_code == 200
    *_, confirm = await events_of(client, admin, contact_id)
    assert "scanner_user_agent" in confirm["evidence"]["signals"]
    consent, _ = await consent_of(client, admin, contact_id)
    assert consent["state"] == "opted_in"


async def test_unknown_and_garbage_tokens_get_a_friendly_404(client, form):
    for token in ("nope", "x" * 43, "y" * 500):
        page = await client.get(f"/c/{token}")
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert "<h1>" in page.text
        post = await client.post(f"/c/{token}")
        assert post.status_code == 404


async def test_a_new_signup_while_pending_resends_and_replaces_the_old_link(client, admin, form, inbox):
    contact_id = (await sign_up(client, form)).json()["contact_id"]
    first = inbox.last_link()
    assert (await sign_up(client, form)).json()["contact_id"] == contact_id
    second = inbox.last_link()
    assert first != second
    assert len(inbox.messages) == 2

    old = await client.get(path_of(first))
    assert old.status_code == 410
    assert "/renew" in old.text
    assert (await client.post(path_of(first))).status_code == 410
    consent, _ = await consent_of(client, admin, contact_id)
    assert consent["state"] == "pending", "the replaced link confirms nothing"

    assert (await client.post(path_of(second))).status_code == 200
    consent, _ = await consent_of(client, admin, contact_id)
    assert consent["state"] == "opted_in"
    triggers = [e["trigger"] for e in await events_of(client, admin, contact_id)]
    assert triggers == ["signup", "resend", "confirm"]


async def test_an_expired_link_lapses_the_signup_and_offers_a_new_mail(client, admin, form, inbox, session):
    contact_id = (await sign_up(client, form)).json()["contact_id"]
    link = inbox.last_link()
    await session.execute(update(ConfirmationToken).values(expires_at=utcnow() - timedelta(minutes=1)))
    await session.commit()

    page = await client.get(path_of(link))
    assert page.status_code == 410
    assert f'action="{path_of(link)}/renew"' in page.text
    consent, _ = await consent_of(client, admin, contact_id)
    assert consent["state"] == "pending", "GET changes nothing, not even the lapse"

    assert (await client.post(path_of(link))).status_code == 410
    consent, _ = await consent_of(client, admin, contact_id)
    assert consent["state"] == "expired"

    renewed = await client.post(f"{path_of(link)}/renew")
    assert renewed.status_code == 200
    assert "E-Mail gesendet" in renewed.text
    assert len(inbox.messages) == 2
    assert (await client.post(path_of(inbox.last_link()))).status_code == 200
    consent, _ = await consent_of(client, admin, contact_id)
    assert consent["state"] == "opted_in"
    triggers = [e["trigger"] for e in await events_of(client, admin, contact_id)]
    assert triggers == ["signup", "lapse", "signup", "confirm"]


async def test_the_sweep_lapses_expired_signups(client, admin, form, inbox, database, session):
    contact_id = (await sign_up(client, form)).json()["contact_id"]
    fresh_id = (await sign_up(client, form, address="fresh@example.com")).json()["contact_id"]
    jane = (await consent_of(client, admin, contact_id))[1]["id"]
    await session.execute(
        update(ConfirmationToken)
        .where(ConfirmationToken.contact_point_id == jane)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    await session.commit()
    async with database.sessionmaker() as db, db.begin():
        assert await emails.lapse_expired(db) == 1
    async with database.sessionmaker() as db, db.begin():
        assert await emails.lapse_expired(db) == 0, "a lapsed token is handled once"
    assert (await consent_of(client, admin, contact_id))[0]["state"] == "expired"
    assert (await consent_of(client, admin, fresh_id))[0]["state"] == "pending"
    *_, lapse = await events_of(client, admin, contact_id)
    assert lapse["trigger"] == "lapse"
    assert lapse["actor_type"] == "system"


async def test_confirmation_mails_are_limited_per_address(client, form, inbox, session):
    for _ in range(3):
        assert (await sign_up(client, form)).status_code == 202
    limited = await sign_up(client, form)
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert limited.json()["code"] == "too_many_confirmation_mails"
    retry_after = int(limited.headers["retry-after"])
    assert 23 * 3600 < retry_after <= 24 * 3600
    assert len(inbox.messages) == 3, "no fourth mail"
    # the counters hold keyed hashes, never the address or IP
    keys = (await session.scalars(select(RateLimitHit.key))).all()
    assert all(b"example" not in key and b"198.51" not in key for key in keys)


async def test_confirmation_mails_are_limited_per_client_ip(client, admin, form, inbox):
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    settings["email"]["ip_limit"] = {"count": 2, "window_minutes": 60}
    put = await client.put("/v1/workspace/settings", json=settings, headers=admin)
    assert put.status_code == 200, put.text
    assert (await sign_up(client, form, address="a@example.com")).status_code == 202
    assert (await sign_up(client, form, address="b@example.com")).status_code == 202
    limited = await sign_up(client, form, address="c@example.com")
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 3600
    assert (await sign_up(client, form, address="c@example.com", ip="192.0.2.99")).status_code == 202
    assert len(inbox.messages) == 3


async def test_an_address_already_in_gets_the_same_answer_and_a_notice_mail(client, admin, form, inbox):
    first = (await sign_up(client, form)).json()
    await client.post(path_of(inbox.last_link()))
    again = await sign_up(client, form)
    assert again.status_code == 202
    assert again.json().keys() == first.keys()
    assert again.json()["state"] == "pending", "the answer does not reveal that the address was subscribed"
    assert len(inbox.messages) == 2
    assert "bereits angemeldet" in inbox.messages[1]["Subject"]
    assert LINK.search(inbox.text(1)) is None
    consent, _ = await consent_of(client, admin, first["contact_id"])
    assert consent["state"] == "opted_in"
    assert len(await events_of(client, admin, first["contact_id"])) == 2


async def test_an_invalid_address_is_refused_and_nothing_is_written(client, form, inbox, session, tenant):
    response = await sign_up(client, form, address="not-an-address")
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_email"
    assert inbox.messages == []
    events = select(func.count()).select_from(ConsentEvent).where(ConsentEvent.workspace_id == tenant.id)
    assert await session.scalar(events) == 0


@pytest.mark.parametrize(
    ("evidence", "says"),
    [
        ({"checkbox_checked": False}, "did not tick the consent box"),
        ({"ip": "not-ip"}, "not an IPv4 or IPv6 address"),
        ({"ip": "198.51.100.300"}, "not an IPv4 or IPv6 address"),
        ({"ip": "fe80::1%not an ip at all"}, "not an IPv4 or IPv6 address"),  # the hostile review: a zone takes text
    ],
)
async def test_evidence_against_the_signup_is_refused_and_nothing_is_written(
    client, form, inbox, session, tenant, evidence, says
):
    """A newcomer's finding: an unticked box or an ``ip`` that is none was stored as the proof of a consent."""
    response = await sign_up(client, form, evidence=evidence)
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]
    # the field the struct's own check is about, not the struct (newcomer review)
    assert response.json()["errors"][0]["field"] == f"evidence.{next(iter(evidence))}"
    assert inbox.messages == []
    events = select(func.count()).select_from(ConsentEvent).where(ConsentEvent.workspace_id == tenant.id)
    assert await session.scalar(events) == 0
    ticked = await sign_up(client, form, evidence={"ip": "2001:db8::7", "checkbox_checked": True})
    assert ticked.status_code == 202, ticked.text
    withdrawal = {"contact": ticked.json()["contact_id"], "channel": "email", "purpose": "all"}
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    bad = await client.post("/v1/withdrawals", json={**withdrawal, "evidence": {"ip": "x"}}, headers=writer)
    assert bad.status_code == 422, bad.text
    assert "not an IPv4 or IPv6 address" in bad.json()["detail"]


async def test_a_notice_for_another_channel_is_refused(client, admin, form):
    sms_notice = await client.post(
        "/v1/notices",
        json={"purpose": "newsletter", "channels": ["sms"], "locale": "de", "text": "SMS"},
        headers=admin,
    )
    response = await sign_up(client, {**form, "notice_id": sms_notice.json()["notice_id"]})
    assert response.status_code == 422
    assert response.json()["code"] == "notice_mismatch"


async def test_a_relay_refusing_the_address_answers_422(client, form, inbox, session):
    inbox.refuse.add("nobody@example.com")
    response = await sign_up(client, form, address="nobody@example.com")
    assert response.status_code == 422
    assert response.json()["code"] == "mail_rejected"
    row = await session.scalar(select(ConfirmationToken))
    assert row.mail_sent_at is None
    assert "550" in row.mail_response


async def test_a_relay_that_is_down_answers_503_and_a_retry_resends(client, admin, form, inbox, app):
    sender = app.state.mail_sender
    port = sender.config.port
    sender.config = type(sender.config)(host="127.0.0.1", port=1, tls="none", timeout=2)
    response = await sign_up(client, form)
    assert response.status_code == 503
    assert response.json()["code"] == "mail_not_sent"
    assert response.headers["retry-after"] == "60"
    sender.config = type(sender.config)(host="127.0.0.1", port=port, tls="none")
    retried = await sign_up(client, form)
    assert retried.status_code == 202
    assert len(inbox.messages) == 1
    assert (await client.post(path_of(inbox.last_link()))).status_code == 200


async def test_without_smtp_host_mail_goes_to_the_outbox_folder(tmp_path, database, client_for, ledger):
    settings = Settings(
        data_dir=tmp_path / "dev", secret_key=TEST_SECRET, public_base_url="https://consent.example.com"
    )
    async with client_for(settings) as (http, tenant_key):
        await ledger.purpose("newsletter")
        notice = await http.post(
            "/v1/notices",
            json={"purpose": "newsletter", "channels": ["email"], "locale": "en", "text": "Yes"},
            headers=tenant_key,
        )
        response = await http.post(
            "/v1/signups",
            json={
                "channel": "email",
                "address": "dev@example.com",
                "purpose": "newsletter",
                "notice_id": notice.json()["notice_id"],
            },
            headers=tenant_key,
        )
        assert response.status_code == 202
    [eml] = (tmp_path / "dev" / "outbox" / "email").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "dev@example.com"
    assert LINK.search(message.get_body(("plain",)).get_content())


class _Login:
    def __call__(self, _server, _session, _envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult  # noqa: PLC0415

        ok = mechanism in ("LOGIN", "PLAIN") and (auth_data.login, auth_data.password) == (b"relay-user", b"relay-pass")
        return AuthResult(success=ok)


@pytest.fixture
async def relay_with_login():
    handler = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler, hostname="relay.test", authenticator=_Login(), auth_required=True, auth_require_tls=False
        ),
        "127.0.0.1",
        0,
    )
    handler.port = server.sockets[0].getsockname()[1]
    try:
        yield handler
    finally:
        server.close()
        await server.wait_closed()


def _message(to="jane@example.com"):
    from channel_providers.email import compose  # noqa: PLC0415

    return compose(sender="Acme <news@acme.example>", to=to, subject="Hi", text="Hello")


# aiosmtpd warns about AUTH without TLS (this relay is on loopback) and about its own deprecated attribute
@pytest.mark.filterwarnings("ignore::UserWarning:aiosmtpd.smtp", "ignore::DeprecationWarning:aiosmtpd.smtp")
async def test_the_smtp_adapter_logs_in_and_maps_refusals(relay_with_login):
    from channel_providers.email import MailOutcome, SmtpConfig, SmtpSender  # noqa: PLC0415

    good = SmtpSender(
        SmtpConfig(
            host="127.0.0.1", port=relay_with_login.port, tls="none", username="relay-user", password="relay-pass"
        )
    )
    result = await good.send(_message())
    assert result.outcome is MailOutcome.ACCEPTED, result.response
    assert len(relay_with_login.messages) == 1

    relay_with_login.refuse.add("gone@example.com")
    gone = await good.send(_message("gone@example.com"))
    assert gone.outcome is MailOutcome.PERMANENT_FAILURE
    assert "550" in gone.response


async def test_a_long_list_unsubscribe_reaches_the_relay_as_one_plain_header_line(inbox):
    from channel_providers.email import MailOutcome, SmtpConfig, SmtpSender, Unsubscribe, compose  # noqa: PLC0415

    url = "https://consent.example.com/u/" + "t" * 180 + "/one-click"
    message = compose(
        sender="Acme <news@acme.example>",
        to="jane@example.com",
        subject="Herbst",
        text="Neu da",
        unsubscribe=Unsubscribe(url=url, page_url="https://consent.example.com/u/" + "t" * 180),
    )
    result = await SmtpSender(SmtpConfig(host="127.0.0.1", port=inbox.port, tls="none")).send(message)
    assert result.outcome is MailOutcome.ACCEPTED, result.response
    assert inbox.envelopes == [("news@acme.example", ["jane@example.com"])]
    raw = inbox.raw[0]
    assert b"=?utf-8?" not in raw, "no RFC 2047 encoded-words"
    assert f"List-Unsubscribe: <{url}>".encode() in raw.replace(b"\r\n", b"\n").split(b"\n")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw


async def test_a_temporary_refusal_is_transient(inbox):
    from channel_providers.email import MailOutcome, SmtpConfig, SmtpSender  # noqa: PLC0415

    async def busy(_server, _session, _envelope, _address, _options):
        return "451 4.3.0 Try again later"

    inbox.handle_RCPT = busy
    result = await SmtpSender(SmtpConfig(host="127.0.0.1", port=inbox.port, tls="none")).send(_message())
    assert result.outcome is MailOutcome.TRANSIENT_FAILURE
    assert "451" in result.response


async def test_a_retried_signup_with_its_idempotency_key_sends_no_second_mail(client, form, inbox):
    keyed = {**form, "key": {**form["key"], "Idempotency-Key": "form-submit-77"}}
    first = await sign_up(client, keyed)
    again = await sign_up(client, keyed)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(inbox.messages) == 1


async def test_a_rate_limited_answer_is_not_kept_for_the_key(client, admin, form, inbox):
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    settings["email"]["address_limit"] = {"count": 1, "window_minutes": 60}
    assert (await client.put("/v1/workspace/settings", json=settings, headers=admin)).status_code == 200
    assert (await sign_up(client, form)).status_code == 202
    keyed = {**form, "key": {**form["key"], "Idempotency-Key": "later"}}
    assert (await sign_up(client, keyed)).status_code == 429
    retry = await sign_up(client, keyed)
    assert retry.status_code == 429
    assert "idempotent-replayed" not in retry.headers, "429 says 'try again': the retry runs again"


async def test_the_confirmation_link_verifies_the_address_for_transactional_mail(client, admin, form, inbox, ledger):
    """Finding 21 (issue 16): a form's address is usable for order mails only once its owner confirmed it."""
    await ledger.purpose("orders", kind="transactional")
    contact_id = (await sign_up(client, form)).json()["contact_id"]
    _, point = await consent_of(client, admin, contact_id)
    assert (point["verified_at"], point["verified_via"]) == (None, None)
    query = {"contact": contact_id, "channel": "email", "purpose": "orders"}
    before = (await client.get("/v1/eligibility", params=query, headers=admin)).json()
    assert (before["eligible"], before["reason"]) == (False, "unverified_address")

    confirmed = await client.post(path_of(inbox.last_link()), headers={"User-Agent": "Mozilla/5.0 (person)"})
    assert confirmed.status_code == 200
    _, point = await consent_of(client, admin, contact_id)
    assert point["verified_via"] == "confirmed"
    assert point["verified_at"] is not None
    after = (await client.get("/v1/eligibility", params=query, headers=admin)).json()
    assert (after["eligible"], after["reason"]) == (True, "transactional")


async def _relay_result(inbox, **config):
    from channel_providers.email import SmtpConfig, SmtpSender  # noqa: PLC0415

    return await SmtpSender(SmtpConfig(host="127.0.0.1", port=inbox.port, tls="none", **config)).send(_message())


async def test_a_relay_lost_while_it_takes_the_content_may_have_accepted_the_message(inbox):
    """Gone silent or disconnected after the content was handed over (``DATA``): the relay may have queued it, so
    the result says so (marketing is then not sent again); a failure before that cannot have been accepted."""
    from channel_providers.email import MailOutcome  # noqa: PLC0415

    async def silent(_server, _session, _envelope):
        await asyncio.sleep(5)
        return "250 OK"

    async def hang_up(server, _session, _envelope):
        server.transport.close()
        return "250 OK"

    for handler in (silent, hang_up):
        inbox.handle_DATA = handler
        result = await _relay_result(inbox, timeout=0.5)
        assert result.outcome is MailOutcome.TRANSIENT_FAILURE, (handler.__name__, result)
        assert result.maybe_accepted, handler.__name__

    async def refused_data(_server, _session, _envelope):
        return "451 4.3.0 Queue full"

    inbox.handle_DATA = refused_data
    answered = await _relay_result(inbox)
    assert answered.outcome is MailOutcome.TRANSIENT_FAILURE
    assert not answered.maybe_accepted, "a reply is an answer: not taken"

    async def silent_at_rcpt(_server, _session, _envelope, _address, _options):
        await asyncio.sleep(5)
        return "250 OK"

    inbox.handle_RCPT = silent_at_rcpt
    early = await _relay_result(inbox, timeout=0.5)
    assert early.outcome is MailOutcome.TRANSIENT_FAILURE
    assert not early.maybe_accepted, "the envelope was not complete: nothing can have been queued"


async def test_a_relay_not_listening_has_accepted_nothing():
    from channel_providers.email import MailOutcome, SmtpConfig, SmtpSender  # noqa: PLC0415

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await SmtpSender(SmtpConfig(host="127.0.0.1", port=port, tls="none", timeout=2)).send(_message())
    assert result.outcome is MailOutcome.TRANSIENT_FAILURE
    assert not result.maybe_accepted
