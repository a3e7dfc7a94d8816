"""The console in a real browser (issue 18 item 4): sign in with a link, the overview of a seeded workspace with
its charts, a contact's timeline, a CSV download, the audit page; keyboard only; axe-core (WCAG 2.2 AA) on every
page; JavaScript off; screenshots of each page in docs/screenshots/console-*.png."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import SCREENSHOTS, Visit, describe

from app.domain.model import ActorType, Trigger, VerifiedVia
from app.ledger import repository as ledger
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.auth import Scope
from app.lib.db import Database
from app.lib.keys import Keys
from app.purposes import service as purposes
from app.reports import service as reports
from app.workspaces import service as workspaces

pytestmark = pytest.mark.slow

SERVER_KEYS = Keys(bytes.fromhex("ab" * 32))  # CONSENT_SECRET_KEY of the served app (tests/browser/conftest.py)
DAYS = 14

# per channel: the address, the opt-in path, and the opt-out causes drawn from
PLAN: dict[str, tuple[list[Trigger], list[Trigger]]] = {
    "email": ([Trigger.SIGNUP, Trigger.CONFIRM], [Trigger.UNSUBSCRIBE, Trigger.COMPLAINT]),
    "sms": ([Trigger.START_WORD], [Trigger.STOP_WORD]),
    "whatsapp": ([Trigger.START_WORD], [Trigger.STOP_WORD]),
    "app_push": ([Trigger.PERMISSION_GRANTED], [Trigger.PERMISSION_REVOKED, Trigger.UNINSTALLED]),
    "web_push": ([Trigger.PERMISSION_GRANTED], [Trigger.PERMISSION_REVOKED]),
}


@dataclass
class Shop:
    """A workspace on the served app's database with a seeded history, and a known contact."""

    database: Database
    workspace_id: uuid.UUID
    admin: dict[str, str]
    jane_email: str
    jane_id: uuid.UUID


def _address(channel: str, n: int) -> str:
    if channel == "email":
        return f"person{n}@example.com"
    if channel in ("sms", "whatsapp"):
        return f"+49151{n:08d}"
    if channel == "app_push":
        return f"fcm-token-{n:06d}-{'x' * 40}"
    return f"https://push.example.net/send/{n:06d}"


@pytest.fixture(scope="module")
async def shop(service) -> AsyncIterator[Shop]:
    """On the served app's database (``service``, which the browser modules share; each has a workspace of its own)."""
    database = Database.from_url(service.database_url, pool_size=2)
    rng = random.Random(18)  # noqa: S311  # a repeatable history, not a secret
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    actor = Actor(ActorType.SYSTEM)
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme Mode")
        _, secret = await workspaces.create_api_key(session, workspace.id, "browser", (Scope.ADMIN,))
        newsletter = await purposes.create_purpose(session, workspace.id, "newsletter", "Newsletter", "marketing")
        jane = await ledger.add_contact(session, workspace.id, "crm-jane", "de", "Europe/Berlin")
        jane_email = "jane.doe@example.com"
        point = await add_point(
            session, SERVER_KEYS, workspace.id, contact_id=jane.id, channel="email", value=jane_email,
            verified=VerifiedVia.API,
        )  # fmt: skip
        start = now - timedelta(days=5)
        for i, trigger in enumerate((Trigger.SIGNUP, Trigger.CONFIRM, Trigger.UNSUBSCRIBE)):
            evidence = {  # jane signed up through the footer form and left through her newsletter's link
                Trigger.SIGNUP: {"ip": "198.51.100.4", "form_id": "footer"},
                Trigger.UNSUBSCRIBE: {"ip": "198.51.100.4", "method": "unsubscribe_page"},
            }.get(trigger, {})
            change = Change(point, newsletter.id, trigger, evidence, occurred_at=start + timedelta(days=2 * i))
            await apply_changes(session, workspace.id, [change], actor)
        n = 0
        for day in range(DAYS, 0, -1):
            moment = now - timedelta(days=day)
            for channel, (opt_in, opt_out) in PLAN.items():
                for _ in range(rng.randint(1, 4)):
                    n += 1
                    contact = await ledger.add_contact(session, workspace.id, f"c-{n}", "de", "Europe/Berlin")
                    added = await add_point(
                        session, SERVER_KEYS, workspace.id, contact_id=contact.id, channel=channel,
                        value=_address(channel, n), verified=VerifiedVia.API,
                    )  # fmt: skip
                    steps = opt_in[:1] if channel == "email" and rng.random() < 0.3 else opt_in
                    if steps[-1] != Trigger.SIGNUP and rng.random() < 0.3:
                        steps = [*steps, rng.choice(opt_out)]
                    for k, trigger in enumerate(steps):
                        when = moment + timedelta(hours=3 * k + rng.randint(0, 2))
                        change = Change(added, newsletter.id, trigger, {"ip": "198.51.100.9"}, occurred_at=when)
                        await apply_changes(session, workspace.id, [change], actor)
    async with database.sessionmaker() as session, session.begin():
        await reports.take_standing(
            session, workspace.id, push_services=None
        )  # what the served app's hourly round would take
    try:
        yield Shop(database, workspace.id, {"Authorization": f"Bearer {secret}"}, jane_email, jane.id)
    finally:
        await database.dispose()


async def login_link(shop: Shop, base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, headers=shop.admin) as client:
        answer = await client.post("/v1/console-links")
        assert answer.status_code == 201, answer.text
        url: str = answer.json()["url"]
    assert url.startswith(f"{base_url}/console/login?token=")
    return url


async def signed_in(new_visit: Any, shop: Shop, base_url: str, **options: Any) -> Visit:
    tab: Visit = await new_visit(**options)
    response = await tab.page.goto(await login_link(shop, base_url) + "&lang=en")
    assert response is not None
    assert response.status == 200
    await tab.page.get_by_role("button", name="Sign in").click()
    await tab.page.get_by_role("heading", level=1, name="Overview").wait_for()
    return tab


async def contact_and_audit_pages(tab: Visit, shop: Shop, found: dict[str, Any]) -> None:
    """A contact's timeline found by its address, the erasure's confirmation step, the audit page's check."""
    page = tab.page
    # a contact's timeline, found by the address
    await page.get_by_role("link", name="Contacts").click()
    await page.get_by_label("Contact id, external id, email address or phone number").fill("JANE.doe@example.com")
    await page.get_by_role("button", name="Find").click()
    await page.get_by_role("heading", name="Ledger timeline").wait_for()
    assert await page.get_by_text("j***@example.com").first.is_visible()
    assert await page.get_by_text(shop.jane_email).count() == 0  # masked
    timeline = page.locator("ol.timeline > li")
    assert await timeline.count() == 3
    assert "Unsubscribe link" in await timeline.nth(2).inner_text()
    await page.get_by_text("Evidence").first.click()
    assert await page.get_by_text('"form_id": "footer"').is_visible()
    found["contact"] = await tab.axe()
    await page.screenshot(path=SCREENSHOTS / "console-contact.png", full_page=True)

    await page.get_by_role("link", name="Erase this contact (Art. 17)…").click()
    await page.get_by_role("button", name="Erase now").wait_for()
    found["erase confirmation"] = await tab.axe()
    await page.screenshot(path=SCREENSHOTS / "console-erase.png", full_page=True)

    # the audit page: verify the chain now
    await page.get_by_role("link", name="Audit").click()
    await page.get_by_role("button", name="Verify the chain now").click()
    await page.get_by_text("Last check:").wait_for()
    assert "Verified: all" in await page.get_by_role("status").inner_text()
    found["audit"] = await tab.axe()
    await page.screenshot(path=SCREENSHOTS / "console-audit.png", full_page=True)


async def test_sign_in_see_the_overview_open_a_timeline_and_download_a_csv(new_visit, shop, base_url):
    tab = await new_visit()
    page = tab.page
    url = await login_link(shop, base_url)
    await page.goto(url + "&lang=en")
    await page.screenshot(path=SCREENSHOTS / "console-login.png", full_page=True)
    found = {"login": await tab.axe()}
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", level=1, name="Overview").wait_for()
    cookie = next(c for c in await page.context.cookies() if c["name"] == "consent_console")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"

    # the overview: a chart per figure, drawn by the vendored Chart.js, and the tables beneath
    # a locator waits from outside the page: a wait_for_function predicate is eval'd, which the CSP refuses
    await page.locator("figure.chart canvas").nth(2).wait_for()
    assert any(u.endswith("/static/vendor/chart.js/dist/chart.umd.min.js") for u in tab.requests)
    table = page.get_by_role("table", name="The six channels side by side")
    assert await table.is_visible()
    row = await table.get_by_role("row", name="Opt-ins").inner_text()
    assert row.split("\t")[1].strip() not in ("0", "")  # email had opt-ins
    assert await page.get_by_role("table", name="Opt-outs by cause").get_by_text("STOP word").count() == 1
    assert await page.get_by_role("table", name="Double opt-in funnel").is_visible()
    found["overview"] = await tab.axe()
    await page.screenshot(path=SCREENSHOTS / "console-overview.png", full_page=True)

    # a CSV download, by the session's cookie
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download “Opt-outs by cause” as CSV").click()
    download = await download_info.value
    text = (await download.path()).read_text()
    assert text.startswith("bucket,channel,trigger,events,signups")
    assert ",sms,stop_word," in text

    await contact_and_audit_pages(tab, shop, found)

    await page.goto(base_url + "/console?lang=de")
    # a locator waits from outside the page: a wait_for_function predicate is eval'd, which the CSP refuses
    await page.locator("figure.chart canvas").nth(2).wait_for()
    assert await page.get_by_role("heading", level=1).inner_text() == "Überblick"
    found["overview de"] = await tab.axe()
    await page.screenshot(path=SCREENSHOTS / "console-overview-de.png", full_page=True)

    report = "\n".join(f"{state}:\n{describe(violations)}" for state, violations in found.items() if violations)
    assert report == ""
    assert tab.errors == [], tab.errors  # a CSP violation would be one
    assert tab.left_localhost() == []


async def test_with_javascript_off_the_tables_and_forms_still_work(new_visit, shop, base_url):
    tab = await signed_in(new_visit, shop, base_url, java_script_enabled=False)
    page = tab.page
    assert await page.locator("canvas").count() == 0
    for name in ("The six channels side by side", "Opted-in audience per day", "Opt-outs by cause"):
        assert await page.get_by_role("table", name=name).is_visible(), name
    assert await page.get_by_role("table", name="Opted-in audience per day").get_by_role("row").count() > 10
    await page.get_by_label("From").fill((datetime.now(UTC) - timedelta(days=3)).date().isoformat())
    await page.get_by_role("button", name="Show").click()
    await page.get_by_role("heading", level=1, name="Overview").wait_for()
    assert await page.get_by_role("table", name="Opted-in audience per day").get_by_role("row").count() == 5
    await page.goto(base_url + "/console/contacts?q=crm-jane")
    assert await page.locator("ol.timeline > li").count() == 3
    await page.goto(base_url + "/console/audit")
    await page.get_by_role("button", name="Verify the chain now").click()
    await page.get_by_text("Last check:").wait_for()
    assert tab.left_localhost() == []


async def test_keyboard_alone_reaches_every_control_of_the_overview(new_visit, shop, base_url):
    tab = await signed_in(new_visit, shop, base_url)
    page = tab.page
    wanted = {"Overview", "Contacts", "Audit", "Deutsch", "From", "To", "Show", "Sign out"}
    reached: set[str] = set()
    csv_links = 0
    for _ in range(60):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            """() => { const e = document.activeElement; const s = getComputedStyle(e);
                return [e.tagName, (e.labels && e.labels[0] ? e.labels[0].textContent : e.textContent).trim(),
                        s.outlineStyle, s.outlineWidth]; }"""
        )
        tag, label, style, width = focused
        if tag == "BODY":
            break
        assert (style, width) == ("solid", "3px"), f"focus on {tag} {label!r} is not visible"
        reached.add(label)
        csv_links += label.startswith("Download")
    assert wanted <= reached, wanted - reached
    assert csv_links >= 4
    # Enter on the focused "Show" submits the period form
    await page.get_by_role("button", name="Show").focus()
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", level=1, name="Overview").wait_for()
