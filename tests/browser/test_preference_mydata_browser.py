"""'My data' on the preference centre in a real browser (issue 17): the download arrives as a file, and "delete me"
asks first, then deletes; axe-core (WCAG 2.2 AA) finds nothing on the confirmation and the result pages."""

from __future__ import annotations

import json

import pytest
from conftest import SCREENSHOTS, describe
from test_preference_centre_browser import decision, mailed_link, shop  # noqa: F401  # shop: the module's fixture

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("javascript", [True, False], ids=["js-on", "js-off"])
async def test_download_then_delete_me_with_a_confirmation(new_visit, shop, base_url, javascript, tmp_path):  # noqa: F811
    url, contact_id = await mailed_link(shop, base_url, locale="en")
    tab = await new_visit(java_script_enabled=javascript, accept_downloads=True)
    page = tab.page
    await page.goto(url)
    found = {}

    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download my data").click()
    download = await download_info.value
    assert download.suggested_filename.startswith("my-data-")
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    data = json.loads(saved.read_text())
    assert data["contact"]["id"] == str(contact_id)
    assert {p["channel"] for p in data["contact_points"]} == {"email", "sms", "print"}

    await page.get_by_role("button", name="Delete my data …").click()
    await page.get_by_role("heading", level=1, name="Delete all your data?").wait_for()
    if javascript:
        found["confirmation"] = await tab.axe()
        await page.screenshot(path=SCREENSHOTS / "preferences-en-erase-confirm.png", full_page=True)
    assert (await decision(shop, base_url, contact_id, "email", "newsletter"))["eligible"] is True, "not yet"

    await page.get_by_role("button", name="Yes, delete all my data").click()
    await page.get_by_role("heading", level=1, name="Your data has been deleted").wait_for()
    if javascript:
        found["deleted"] = await tab.axe()
    gone = await page.goto(url)
    assert gone is not None
    assert gone.status == 404
    assert "has been deleted" in await page.get_by_role("main").inner_text()
    if javascript:
        found["the used link"] = await tab.axe()
    report = "\n".join(f"{state}:\n{describe(violations)}" for state, violations in found.items() if violations)
    assert report == ""
    assert [e for e in tab.errors if "status of 404" not in e] == [], "only the used link's own 404"
    assert tab.left_localhost() == []


async def test_back_from_the_confirmation_keeps_everything(new_visit, shop, base_url):  # noqa: F811
    url, contact_id = await mailed_link(shop, base_url, locale="de")
    tab = await new_visit()
    page = tab.page
    await page.goto(url)
    await page.get_by_role("button", name="Meine Daten löschen …").click()
    await page.get_by_role("heading", level=1, name="Alle Ihre Daten löschen?").wait_for()
    assert await tab.axe() == []
    await page.get_by_role("link", name="Nein, zurück zu meinen Einstellungen").click()
    await page.get_by_role("heading", level=1, name="Ihre Einstellungen").wait_for()
    assert (await decision(shop, base_url, contact_id, "email", "newsletter"))["eligible"] is True
