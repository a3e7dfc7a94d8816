"""The preference centre in a real browser (issue 17, first slice): withdraw newsletter by email and object to
postal advertising, with JavaScript on and off; keyboard only; axe-core (WCAG 2.2 AA) on every page state;
screenshots in German and English, desktop and mobile."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import SCREENSHOTS, describe
from sqlalchemy.engine import make_url

from app.domain.model import ActorType, Trigger, VerifiedVia
from app.ledger import repository as ledger
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.auth import Scope
from app.lib.db import Database
from app.lib.keys import Keys
from app.preferences import service as preferences
from app.purposes import service as purposes
from app.workspaces import service as workspaces

pytestmark = pytest.mark.slow

SERVER_KEYS = Keys(bytes.fromhex("ab" * 32))  # CONSENT_SECRET_KEY of the served app (tests/browser/conftest.py)
MOBILE = {"width": 390, "height": 844}
NEWSLETTER_NOTICES = {
    "de": (
        "Ja, ich möchte den Newsletter von Acme Mode mit Neuheiten und Angeboten per E-Mail erhalten. Meine "
        "Einwilligung kann ich jederzeit widerrufen, z. B. über den Abmeldelink in jeder E-Mail."
    ),
    "en": "Yes, send me Acme Mode's newsletter by email. I can withdraw at any time, e.g. by the link in every mail.",
}


@dataclass
class Shop:
    """A workspace on the served app's database, with an admin key and two marketing purposes."""

    database: Database
    workspace_id: uuid.UUID
    admin: dict[str, str]
    purposes: dict[str, Any]


@pytest.fixture(scope="module")
async def shop(service) -> AsyncIterator[Shop]:
    """On the served app's database (``service``, which the browser modules share; each has a workspace of its own)."""
    database = Database.from_url(service.database_url, pool_size=2)
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme Mode")
        _, secret = await workspaces.create_api_key(session, workspace.id, "browser", (Scope.ADMIN,))
        found = {
            key: await purposes.create_purpose(session, workspace.id, key, label, "marketing")
            for key, label in (("newsletter", "Newsletter"), ("offers", "Sonderangebote"))
        }
        for locale, text in NEWSLETTER_NOTICES.items():  # what opting in on the page agrees to
            await purposes.create_notice(
                session, workspace.id, purpose_key="newsletter", channels=["email"], locale=locale, text=text
            )
    assert make_url(service.database_url).database.startswith("consent_browser_")
    try:
        yield Shop(database, workspace.id, {"Authorization": f"Bearer {secret}"}, found)
    finally:
        await database.dispose()


async def new_link(shop: Shop, base_url: str, locale: str = "de") -> tuple[str, uuid.UUID]:
    """A contact opted in to both purposes by email and newsletter by SMS, with a postal address; its link."""
    async with shop.database.sessionmaker() as session, session.begin():
        contact = await ledger.add_contact(session, shop.workspace_id, None, locale, "Europe/Berlin")
        email = await add_point(
            session,
            SERVER_KEYS,
            shop.workspace_id,
            contact_id=contact.id,
            channel="email",
            value=f"jane.{uuid.uuid4().hex[:6]}@example.com",
            details=None,
            verified=VerifiedVia.API,
        )
        sms = await add_point(
            session,
            SERVER_KEYS,
            shop.workspace_id,
            contact_id=contact.id,
            channel="sms",
            value=f"+49151{uuid.uuid4().int % 10**8:08d}",
            details=None,
            verified=VerifiedVia.API,
        )
        changes = [Change(email, p.id, t, {}) for p in shop.purposes.values() for t in (Trigger.SIGNUP,)]
        changes += [Change(sms, shop.purposes["newsletter"].id, Trigger.SIGNUP, {})]
        actor = Actor(ActorType.SYSTEM)
        await apply_changes(session, shop.workspace_id, changes, actor)
        confirms = [Change(email, p.id, Trigger.CONFIRM, {}) for p in shop.purposes.values()]
        confirms += [Change(sms, shop.purposes["newsletter"].id, Trigger.START_WORD, {})]
        await apply_changes(session, shop.workspace_id, confirms, actor)
    async with httpx.AsyncClient(base_url=base_url, headers=shop.admin) as client:
        number = str(uuid.uuid4().int % 900 + 1)
        # a postal address is one per workspace: a name of its own keeps the module's many links apart (with the
        # house number alone, two of them met now and then: 409)
        name = "Jane " + "".join(chr(ord("a") + b % 26) for b in uuid.uuid4().bytes[:10]).capitalize()
        postal = {"name": name, "street": f"Hauptstraße {number}", "postcode": "10115", "city": "Berlin"}
        assert (await client.post(f"/v1/contacts/{contact.id}/postal-addresses", json=postal)).status_code == 201
        answer = await client.post(f"/v1/contacts/{contact.id}/preference-link")
        assert answer.status_code == 201, answer.text
    path = "/p/" + answer.json()["url"].rsplit("/p/", 1)[1]
    return base_url + path, contact.id


async def decision(shop: Shop, base_url: str, contact_id: uuid.UUID, channel: str, purpose: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, headers=shop.admin) as client:
        query = {"contact": str(contact_id), "channel": channel, "purpose": purpose}
        answer: dict[str, Any] = (await client.get("/v1/eligibility", params=query)).json()
        return answer


#: What a keyboard can reach on a page (hidden fields aside).
CONTROLS = "a[href], button, select, input:not([type=hidden]), textarea, summary, [tabindex]:not([tabindex='-1'])"


async def focus_is_visible(page: Any) -> None:
    outline = await page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; }"
    )
    assert outline == ["solid", "3px"], "focus is always visible"


async def tab_to(page: Any, target: Any, limit: int = 80) -> None:
    """Press Tab from the top of the page until ``target`` has the focus (never the mouse)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        await focus_is_visible(page)
        if await target.evaluate("element => element === document.activeElement"):
            return
    pytest.fail(f"Tab never reached {target}")


async def every_control_is_reached(page: Any) -> int:
    """Tab through the whole page once: every control gets the focus, visibly; answers how many there are."""
    total = await page.evaluate(
        f"() => {{ const all = document.querySelectorAll({CONTROLS!r}); all.forEach((e, i) => e.dataset.kb = i); "
        "return all.length; }"
    )
    reached: list[str] = []
    for _ in range(total + 5):
        await page.keyboard.press("Tab")
        index = await page.evaluate("() => document.activeElement.dataset.kb ?? null")
        if index is None or index in reached:
            break
        await focus_is_visible(page)
        reached.append(index)
    assert sorted(reached, key=int) == [str(i) for i in range(total)], "in document order, none skipped"
    return int(total)


async def pause_for_12_weeks(page: Any, label: str) -> None:
    """Choose 12 weeks in the pause's list and press its button, by keyboard."""
    weeks = page.get_by_label(label)
    await tab_to(page, weeks)
    await page.keyboard.press("ArrowDown")  # 4 weeks → 12 weeks, without opening the list
    assert await weeks.input_value() == "12"
    await page.keyboard.press("Tab")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")


async def test_keyboard_alone_reaches_and_operates_every_control(new_visit, shop, base_url):
    url, contact_id = await mailed_link(shop, base_url)
    tab = await new_visit(accept_downloads=True)
    page = tab.page
    await page.goto(url + "?lang=en")
    assert await every_control_is_reached(page) >= 14

    async def press(name: str, key: str = "Enter", role: str = "button", navigates: bool = True) -> None:
        await tab_to(page, page.get_by_role(role, name=name))  # type: ignore[arg-type]
        if not navigates:
            await page.keyboard.press(key)
            return
        async with page.expect_navigation():
            await page.keyboard.press(key)

    async def reason(channel: str, purpose: str = "newsletter") -> str:
        answer = await decision(shop, base_url, contact_id, channel, purpose)
        return "eligible" if answer["eligible"] else str(answer["reason"])

    await press("Deutsch", role="link")
    assert await page.evaluate("document.documentElement.lang") == "de"
    await press("English", role="link")
    assert await page.evaluate("document.documentElement.lang") == "en"

    await press("Stop Newsletter by email")
    assert await reason("email") == "opted_out"
    await press("Opt in again to Newsletter by email", key="Space")
    assert await reason("email") == "eligible"
    await press("Stop Sonderangebote by email", key="Space")
    assert await reason("email", "offers") == "opted_out"
    await press("Stop Newsletter by SMS")
    assert await reason("sms") == "opted_out"

    await pause_for_12_weeks(page, "How long to pause advertising by email")
    paused = await decision(shop, base_url, contact_id, "email", "newsletter")
    assert paused["reason"] == "paused"
    assert datetime.fromisoformat(paused["paused_until"]) - datetime.now(UTC) > timedelta(weeks=11)
    await press("End the pause of advertising by email")
    assert await reason("email") == "eligible"
    await press("Pause advertising on all channels")
    assert await reason("email") == "paused"
    await press("End the pause of advertising on all channels")
    assert await reason("email") == "eligible"

    await press("Object to advertising by post")
    assert await reason("print") == "objected"
    await press("Send me nothing at all")
    assert await reason("email") == "opted_out"

    async with page.expect_download() as download_info:
        await press("Download my data", navigates=False)
    assert (await download_info.value).suggested_filename.startswith("my-data-")
    await press("Delete my data …")
    await page.get_by_role("heading", level=1, name="Delete all your data?").wait_for()
    await press("Yes, delete all my data")
    await page.get_by_role("heading", level=1, name="Your data has been deleted").wait_for()
    assert tab.errors == [], tab.errors


async def test_every_page_state_has_no_wcag_22_aa_violations_and_screenshots(new_visit, shop, base_url):
    url, _ = await new_link(shop, base_url)
    tab = await new_visit()
    page = tab.page
    found: dict[str, Any] = {}
    for lang in ("de", "en"):
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.goto(f"{url}?lang={lang}")
        assert await page.evaluate("document.documentElement.lang") == lang
        found[f"{lang} desktop"] = await tab.axe()
        await page.screenshot(path=SCREENSHOTS / f"preferences-{lang}-desktop.png", full_page=True)
        await page.set_viewport_size(MOBILE)
        await page.reload()
        found[f"{lang} mobile"] = await tab.axe()
        await page.screenshot(path=SCREENSHOTS / f"preferences-{lang}-mobile.png", full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(f"{url}?lang=de")
    await page.get_by_role("button", name="Werbung per Post widersprechen").click()
    await page.get_by_role("status").wait_for()
    found["after a change"] = await tab.axe()
    await page.get_by_role("button", name="Nichts mehr senden").click()
    await page.get_by_role("status").wait_for()
    found["after nothing at all"] = await tab.axe()
    await page.screenshot(path=SCREENSHOTS / "preferences-de-after-everything.png", full_page=True)
    unknown = await page.goto(base_url + "/p/" + "x" * 43)
    assert unknown is not None
    assert unknown.status == 404
    found["unknown link"] = await tab.axe()
    report = "\n".join(f"{state}:\n{describe(violations)}" for state, violations in found.items() if violations)
    assert report == ""
    assert [e for e in tab.errors if "status of 404" not in e] == [], "only the unknown link's own 404"
    assert tab.left_localhost() == []


async def test_pause_sms_for_4_weeks_then_end_it(new_visit, shop, base_url):
    """With JavaScript on (the journey in test_preference_request_browser pauses with it off too)."""
    url, contact_id = await new_link(shop, base_url)
    tab = await new_visit()
    page = tab.page
    await page.goto(url)
    length = page.get_by_label("Wie lange Werbung per SMS")
    await length.select_option(label="4 Wochen")
    await page.get_by_role("button", name="Werbung per SMS").filter(has_text="pausieren").click()
    await page.get_by_role("status").wait_for()
    assert "Erledigt: Werbung per SMS ist bis" in await page.get_by_role("status").inner_text()
    sms = await decision(shop, base_url, contact_id, "sms", "newsletter")
    assert (sms["eligible"], sms["reason"]) == (False, "paused")
    assert sms["paused_until"] is not None
    assert (await decision(shop, base_url, contact_id, "email", "newsletter"))["eligible"] is True
    assert await page.get_by_text("Pausiert bis").count() == 1
    violations = await tab.axe()
    assert violations == [], describe(violations)
    await page.screenshot(path=SCREENSHOTS / "preferences-de-paused.png", full_page=True)

    await page.get_by_role("button", name="Pause der Werbung per SMS").click()
    await page.get_by_text("Die Pause für Werbung per SMS ist beendet").wait_for()
    ended = await decision(shop, base_url, contact_id, "sms", "newsletter")
    assert ended["reason"] in ("opted_in", "outside_send_window"), "no longer paused (SMS has a send window)"
    assert tab.errors == [], tab.errors
    assert tab.left_localhost() == []


async def mailed_link(shop: Shop, base_url: str, locale: str = "de") -> tuple[str, uuid.UUID]:
    """A link as the request form mails it to the contact's email address (it proves control of that address)."""
    _, contact_id = await new_link(shop, base_url, locale)
    async with shop.database.sessionmaker() as session, session.begin():
        [email] = [p for p in await ledger.contact_points_of(session, contact_id) if p.channel == "email"]
        issued = await preferences.issue_link(
            session, shop.workspace_id, str(contact_id), issued_by="request:email", point_id=email.id
        )
    return f"{base_url}/p/{issued.token}", contact_id


async def test_opt_in_again_on_the_mailed_address_passes_axe(new_visit, shop, base_url):
    url, contact_id = await mailed_link(shop, base_url)
    tab = await new_visit()
    page = tab.page
    await page.goto(url)
    opt_in = page.get_by_role("button", name="Newsletter per E-Mail wieder anmelden")
    assert await opt_in.count() == 0, "received: nothing to opt in to"
    await page.get_by_role("button", name="Newsletter per E-Mail abbestellen").click()
    await page.get_by_role("status").wait_for()
    assert await opt_in.is_visible()
    assert await opt_in.get_attribute("aria-describedby"), "the consent text describes the button"
    assert "Meine Einwilligung kann ich jederzeit widerrufen" in await page.locator(".consent-text").inner_text()
    found = {"withdrawn": await tab.axe()}
    await page.screenshot(path=SCREENSHOTS / "preferences-de-opt-in.png", full_page=True)
    await opt_in.click()
    await page.get_by_text("Erledigt: Sie erhalten Newsletter per E-Mail an").wait_for()
    found["opted in again"] = await tab.axe()
    assert (await decision(shop, base_url, contact_id, "email", "newsletter"))["eligible"] is True
    assert await page.get_by_role("button", name="Newsletter per E-Mail abbestellen").is_visible()
    report = "\n".join(f"{state}:\n{describe(violations)}" for state, violations in found.items() if violations)
    assert report == ""
    assert tab.errors == [], tab.errors


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
async def test_print_blocked_by_a_households_sticker_says_so_and_the_person_can_still_object(
    new_visit, shop, base_url, javascript
):
    """A sticker recorded for the house (no name) stops print to Jane's address: her page says post is blocked (it
    said she had objected, and took her button away), passes axe, and she can record her own objection."""
    url, contact_id = await new_link(shop, base_url)
    async with httpx.AsyncClient(base_url=base_url, headers=shop.admin) as client:
        contact = (await client.get(f"/v1/contacts/{contact_id}")).json()
        [postal] = [p for p in contact["contact_points"] if p["channel"] == "print"]
        # the stored value is country, postcode, street, number and name: the house is it without the name
        _, postcode, street, number = postal["address"].split("|")[:4]
        house = {"street": f"{street} {number.split('#')[0]}", "postcode": postcode, "city": "Berlin"}
        body = {"scope": "print", "kind": "sticker", "postal_address": house, "evidence": {"note": "carrier"}}
        recorded = await client.post("/v1/objections", json=body)
        assert recorded.status_code == 201, (postal["address"], recorded.text)
    assert (await decision(shop, base_url, contact_id, "print", "newsletter"))["eligible"] is False
    tab = await new_visit(java_script_enabled=javascript)
    page = tab.page
    await page.goto(url)
    assert await page.get_by_text("an diese Anschrift keine Werbung per Post").count() == 1
    assert await page.get_by_text("Sie haben Werbung per Post widersprochen").count() == 0
    if javascript:
        violations = await tab.axe()
        assert violations == [], describe(violations)
        await page.screenshot(path=SCREENSHOTS / "preferences-de-print-blocked.png", full_page=True)
    await page.get_by_role("button", name="Werbung per Post widersprechen").click()
    await page.get_by_text("Sie haben Werbung per Post widersprochen").wait_for()
    async with httpx.AsyncClient(base_url=base_url, headers=shop.admin) as client:
        contact = (await client.get(f"/v1/contacts/{contact_id}")).json()
    [postal] = [p for p in contact["contact_points"] if p["channel"] == "print"]
    assert {c["state"] for c in postal["consents"]} == {"objected"}, "her own objection is in the ledger"
    assert tab.errors == [], tab.errors
