"""The preference centre in a real browser, the way a person reaches and uses it (issue 17).

The whole journey, with JavaScript on and off: ask for a link at ``/p`` → the mail arrives at an in-process
aiosmtpd → open its link → stop the newsletter by email (the ledger shows the withdrawal by the person) → pause SMS
for 4 weeks (eligibility: ``paused``) → object to postal advertising (eligibility: ``objected``). Then: no
enumeration, the footer's ``/p/via`` button, and axe-core (WCAG 2.2 AA) on every state of the request page with
screenshots in German and English."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP
from conftest import SCREENSHOTS, _free_port, describe

from app.domain.model import ActorType, Trigger, VerifiedVia
from app.emails.tokens import UnsubscribeTarget, sign_unsubscribe
from app.ledger import repository as ledger
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.auth import Scope
from app.lib.db import Database
from app.lib.keys import Keys
from app.purposes import service as purposes
from app.workspaces import service as workspaces

pytestmark = pytest.mark.slow

SERVER_KEYS = Keys(bytes.fromhex("ab" * 32))  # CONSENT_SECRET_KEY of the served app below
MOBILE = {"width": 390, "height": 844}


class Inbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.arrived = asyncio.Condition()
        self.port = 0

    async def handle_DATA(self, _server, _session, envelope):  # noqa: N802  # aiosmtpd hook
        async with self.arrived:
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            self.arrived.notify_all()
        return "250 2.0.0 Queued as TEST"

    async def mail_to(self, address: str, timeout: float = 15) -> email.message.EmailMessage:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: any(m["To"] == address for m in self.messages))
        return next(m for m in self.messages if m["To"] == address)


@pytest.fixture(scope="module")
async def inbox() -> AsyncIterator[Inbox]:
    handler = Inbox()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler, hostname="mx.test"), "127.0.0.1", 0)
    handler.port = server.sockets[0].getsockname()[1]
    try:
        yield handler
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Served:
    url: str
    database: Database


@pytest.fixture(scope="module")
async def served(browser_tools, pg_server, tmp_path_factory, inbox) -> AsyncIterator[Served]:
    """``consent serve`` on its own database, sending mail to :func:`inbox` over SMTP."""
    database_url = await pg_server.create_database("consent_browser_request", migrated=True)
    data_dir = tmp_path_factory.mktemp("browser-request")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "MAIL_"))},
        "DATABASE_URL": database_url.replace("+asyncpg", ""),
        "CONSENT_SECRET_KEY": "ab" * 32,
        "CONSENT_DATA_DIR": str(data_dir),
        "CONSENT_LOG_FORMAT": "json",
        "CONSENT_DISPATCHER": "off",
        "PUBLIC_BASE_URL": url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(inbox.port),
        "SMTP_TLS": "none",
        "MAIL_FROM": "Acme Mode <news@acme.example>",
    }
    command = [str(Path(sys.executable).parent / "consent"), "serve", "--migrate", "--port", str(port)]
    with (data_dir / "serve.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    database = Database.from_url(database_url, pool_size=2)
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                assert process.poll() is None, (data_dir / "serve.log").read_text()
                try:
                    if (await client.get(f"{url}/ready", timeout=1)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("consent serve was not ready within 30 s")
        yield Served(url, database)
    finally:
        await database.dispose()
        process.terminate()
        process.wait(timeout=30)
        await pg_server.drop_database(database_url)


@pytest.fixture(scope="module")
def base_url(served: Served) -> str:
    """The tabs of ``new_visit`` open this module's server."""
    return served.url


@pytest.fixture(scope="module")
async def shop(served: Served) -> dict[str, Any]:
    async with served.database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme Mode")
        newsletter = await purposes.create_purpose(session, workspace.id, "newsletter", "Newsletter", "marketing")
        _, secret = await workspaces.create_api_key(session, workspace.id, "browser", (Scope.ADMIN,))
    return {"workspace_id": workspace.id, "newsletter": newsletter.id, "admin": {"Authorization": f"Bearer {secret}"}}


async def contact(served: Served, shop: dict[str, Any], locale: str = "de") -> tuple[str, uuid.UUID]:
    """A contact opted in to the newsletter by email; its address and contact point id."""
    address = f"jane.{uuid.uuid4().hex[:6]}@example.com"
    workspace_id = shop["workspace_id"]
    async with served.database.sessionmaker() as session, session.begin():
        row = await ledger.add_contact(session, workspace_id, None, locale, "Europe/Berlin")
        point = await add_point(
            session,
            SERVER_KEYS,
            workspace_id,
            contact_id=row.id,
            channel="email",
            value=address,
            details=None,
            verified=VerifiedVia.API,
        )
        for trigger in (Trigger.SIGNUP, Trigger.CONFIRM):
            await apply_changes(
                session, workspace_id, [Change(point, shop["newsletter"], trigger, {})], Actor(ActorType.SYSTEM)
            )
    return address, point.id


async def journey_contact(served: Served, shop: dict[str, Any]) -> tuple[str, uuid.UUID]:
    """A contact receiving the newsletter by email and by SMS, with a postal address: its email address and id."""
    address, point_id = await contact(served, shop)
    async with served.database.sessionmaker() as session, session.begin():
        email_point = await ledger.get_contact_point(session, shop["workspace_id"], point_id)
        assert email_point is not None
        contact_id = email_point.contact_id
        sms = await add_point(
            session,
            SERVER_KEYS,
            shop["workspace_id"],
            contact_id=contact_id,
            channel="sms",
            value=f"+49151{uuid.uuid4().int % 10**8:08d}",
            details=None,
            verified=VerifiedVia.API,
        )
        for trigger in (Trigger.SIGNUP, Trigger.START_WORD):
            change = Change(sms, shop["newsletter"], trigger, {})
            await apply_changes(session, shop["workspace_id"], [change], Actor(ActorType.SYSTEM))
    async with httpx.AsyncClient(base_url=served.url, headers=shop["admin"]) as client:
        name = "Jane " + "".join(chr(ord("a") + b % 26) for b in uuid.uuid4().bytes[:10]).capitalize()
        postal = {"name": name, "street": "Hauptstraße 1", "postcode": "10115", "city": "Berlin"}
        added = await client.post(f"/v1/contacts/{contact_id}/postal-addresses", json=postal)
        assert added.status_code == 201, added.text
    return address, contact_id


async def eligibility(served: Served, shop: dict[str, Any], contact_id: uuid.UUID, channel: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=served.url, headers=shop["admin"]) as client:
        query = {"contact": str(contact_id), "channel": channel, "purpose": "newsletter"}
        answer: dict[str, Any] = (await client.get("/v1/eligibility", params=query)).json()
        return answer


@pytest.mark.parametrize("javascript", [True, False], ids=["js-on", "js-off"])
async def test_request_a_link_withdraw_pause_sms_and_object_to_print(new_visit, served, shop, inbox, javascript):
    address, contact_id = await journey_contact(served, shop)
    tab = await new_visit(locale="de-DE", java_script_enabled=javascript)
    page = tab.page
    await page.goto(f"{served.url}/p?w={shop['workspace_id']}")
    await page.get_by_label("E-Mail-Adresse").fill(address)
    await page.get_by_role("button", name="Link zusenden").click()
    await page.get_by_role("heading", name="Bitte sehen Sie in Ihren Posteingang").wait_for()
    mail = await inbox.mail_to(address)
    found = re.search(rf"{re.escape(served.url)}/p/[A-Za-z0-9_\-]{{43}}", mail.get_body(("plain",)).get_content())
    assert found is not None
    await page.goto(found.group(0))
    assert await page.get_by_role("heading", level=1).inner_text() == "Ihre Einstellungen"

    await page.get_by_role("button", name="Newsletter per E-Mail abbestellen").click()
    await page.get_by_role("status").wait_for()
    assert "Erledigt: Sie erhalten Newsletter per E-Mail nicht mehr." in await page.get_by_role("status").inner_text()
    email = await eligibility(served, shop, contact_id, "email")
    assert (email["eligible"], email["reason"]) == (False, "opted_out")
    async with httpx.AsyncClient(base_url=served.url, headers=shop["admin"]) as client:
        events = (await client.get(f"/v1/contacts/{contact_id}/events")).json()
    withdrawal = events[-1]
    assert (withdrawal["channel"], withdrawal["purpose"]) == ("email", "newsletter")
    assert (withdrawal["from_state"], withdrawal["to_state"]) == ("opted_in", "opted_out")
    assert withdrawal["actor_type"] == "subject", "the person, not the brand"
    assert withdrawal["evidence"]["source"] == "preference_centre"
    assert withdrawal["evidence"]["preference_link_id"]
    assert withdrawal["evidence"]["user_agent"]
    assert withdrawal["evidence"]["ip"] == "127.0.0.1"

    await page.get_by_label("Wie lange Werbung per SMS").select_option(label="4 Wochen")
    await page.get_by_role("button", name="Werbung per SMS").filter(has_text="pausieren").click()
    await page.get_by_role("status").wait_for()
    assert "Erledigt: Werbung per SMS ist bis" in await page.get_by_role("status").inner_text()
    sms = await eligibility(served, shop, contact_id, "sms")
    assert (sms["eligible"], sms["reason"]) == (False, "paused")
    paused_for = datetime.fromisoformat(sms["paused_until"]) - datetime.now(UTC)
    assert timedelta(days=27) < paused_for <= timedelta(weeks=4)

    await page.get_by_role("button", name="Werbung per Post widersprechen").click()
    await page.get_by_text("Ihr Widerspruch gegen Werbung per Post ist eingetragen").wait_for()
    printed = await eligibility(served, shop, contact_id, "print")
    assert (printed["eligible"], printed["reason"]) == (False, "objected")
    assert tab.errors == [], tab.errors  # a CSP violation would be one
    assert tab.left_localhost() == []


async def test_an_unknown_address_sees_the_same_page_and_no_mail_arrives(new_visit, served, shop, inbox):
    before = len(inbox.messages)
    tab = await new_visit(locale="en-GB")
    page = tab.page
    await page.goto(f"{served.url}/p?w={shop['workspace_id']}")
    await page.get_by_label("Email address").fill(f"nobody.{uuid.uuid4().hex[:6]}@example.com")
    await page.get_by_role("button", name="Send me the link").click()
    await page.get_by_role("heading", name="Please check your inbox").wait_for()
    await asyncio.sleep(1)
    assert len(inbox.messages) == before


async def test_the_footer_link_opens_the_preferences_with_one_button(new_visit, served, shop):
    address, point_id = await contact(served, shop, locale="en")
    token = sign_unsubscribe(SERVER_KEYS.unsubscribe, UnsubscribeTarget(point_id, shop["newsletter"]))
    for javascript in (True, False):
        tab = await new_visit(java_script_enabled=javascript)
        page = tab.page
        await page.goto(f"{served.url}/p/via/{token}")
        if javascript:
            assert await tab.axe() == []
        await page.get_by_role("button", name="Open my preferences").click()
        await page.get_by_role("button", name="Stop Newsletter by email").wait_for()
        assert re.fullmatch(rf"{re.escape(served.url)}/p/[A-Za-z0-9_\-]{{43}}", page.url)
        assert address[0] + "***@example.com" in await page.content()


async def test_the_request_page_has_no_wcag_22_aa_violations_in_any_state(new_visit, served, shop):
    tab = await new_visit()
    page = tab.page
    found = {}
    for lang in ("de", "en"):
        url = f"{served.url}/p?w={shop['workspace_id']}&lang={lang}"
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.goto(url)
        assert await page.evaluate("document.documentElement.lang") == lang
        found[f"{lang} form"] = await tab.axe()
        await page.screenshot(path=SCREENSHOTS / f"preference-request-{lang}-desktop.png", full_page=True)
        await page.set_viewport_size(MOBILE)
        await page.reload()
        found[f"{lang} mobile"] = await tab.axe()
        await page.screenshot(path=SCREENSHOTS / f"preference-request-{lang}-mobile.png", full_page=True)
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.get_by_role("textbox").fill("not an address")
        await page.get_by_role("button").click()
        await page.get_by_role("alert").wait_for()
        assert await page.get_by_role("textbox").get_attribute("aria-invalid") == "true"
        found[f"{lang} invalid address"] = await tab.axe()
        await page.get_by_role("textbox").fill(f"nobody.{uuid.uuid4().hex[:6]}@example.com")
        await page.get_by_role("button").click()
        sent = {"de": "Bitte sehen Sie in Ihren Posteingang", "en": "Please check your inbox"}[lang]
        await page.get_by_role("heading", name=sent).wait_for()
        found[f"{lang} sent"] = await tab.axe()
    nowhere = await page.goto(f"{served.url}/p")
    assert nowhere is not None
    assert nowhere.status == 404
    found["no workspace"] = await tab.axe()
    report = "\n".join(f"{state}:\n{describe(violations)}" for state, violations in found.items() if violations)
    assert report == ""
    assert [e for e in tab.errors if "status of 4" not in e] == []
    assert tab.left_localhost() == []
