"""The landing page and the API reference in a real browser: with and without JavaScript, accessible
(axe-core, WCAG 2.2 AA), and never reaching beyond the service."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import SCREENSHOTS, describe

pytestmark = pytest.mark.slow


async def test_landing_page_has_no_wcag_22_aa_violations_in_light_and_dark(new_visit):
    for scheme in ("light", "dark"):
        tab = await new_visit(color_scheme=scheme)
        response = await tab.page.goto(tab.base_url + "/")
        assert response is not None
        assert response.status == 200
        violations = await tab.axe()
        assert violations == [], f"{scheme}:\n{describe(violations)}"
        assert tab.errors == []
        assert tab.left_localhost() == []
        name = "landing.png" if scheme == "light" else "landing-dark.png"
        await tab.page.screenshot(path=SCREENSHOTS / name, full_page=True)


async def test_landing_page_works_without_javascript(new_visit):
    tab = await new_visit(java_script_enabled=False)
    page = tab.page
    await page.goto(tab.base_url + "/")
    assert await page.title() == "Consent Service"
    assert await page.get_by_role("heading", level=1).inner_text() == "Consent and opt-in management"
    assert await page.get_by_role("main").is_visible()
    assert await page.get_by_role("navigation", name="Service").is_visible()
    assert await page.get_by_role("row", name="WhatsApp").is_visible()
    assert await page.get_by_text("Staff sign in to the").is_visible()

    # the stylesheet applied (it is not inline, so the CSP let the file through)
    body_font = await page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "system-ui" in body_font

    # the links lead somewhere
    await page.get_by_role("main").get_by_role("link", name="Health").click()
    assert json.loads(await page.locator("body").inner_text()) == {"status": "ok"}
    await page.go_back()
    await page.get_by_role("main").get_by_role("link", name="API reference").click()
    assert page.url == tab.base_url + "/schema"
    assert await page.get_by_text("The interactive reference needs JavaScript, which is off").is_visible()
    await page.get_by_role("main").get_by_role("link", name="OpenAPI document").click()
    assert page.url == tab.base_url + "/schema/openapi.json"
    assert tab.left_localhost() == []


async def test_keyboard_focus_starts_at_a_visible_skip_link_and_is_always_outlined(new_visit):
    tab = await new_visit()
    page = tab.page
    await page.goto(tab.base_url + "/")
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    assert await skip.evaluate("element => element === document.activeElement")
    assert await skip.is_visible()
    box = await skip.bounding_box()
    assert box is not None
    assert box["y"] >= 0  # moved into view on focus
    for _ in range(4):
        outline = await page.evaluate(
            "() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; }"
        )
        assert outline == ["solid", "3px"]
        await page.keyboard.press("Tab")
    await skip.focus()
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "content"


async def test_api_reference_renders_every_operation_and_calls_only_this_service(new_visit):
    tab = await new_visit()
    page = tab.page
    await page.goto(tab.base_url + "/schema")
    await page.locator(".opblock").first.wait_for()
    document = httpx.get(tab.base_url + "/schema/openapi.json").json()
    operations = sum(len(item) for item in document["paths"].values())
    assert await page.locator(".opblock").count() == operations
    assert await page.get_by_role("heading", level=1, name="Consent Service API").is_visible()
    await page.screenshot(path=SCREENSHOTS / "api-reference.png")  # before "Try it out" shows this run's port

    health = page.locator("#operations-operations-health")
    await health.locator(".opblock-summary-control").click()
    await health.get_by_role("button", name="Try it out").click()
    await health.get_by_role("button", name="Execute").click()
    status = health.locator(".live-responses-table .response .response-col_status")
    await status.wait_for()
    assert (await status.inner_text()).strip() == "200"

    assert tab.errors == [], tab.errors  # a CSP violation would be one
    assert tab.left_localhost() == []
    assert any(url.endswith("/static/vendor/swagger-ui-dist/swagger-ui-bundle.js") for url in tab.requests)


async def test_api_reference_has_no_wcag_22_aa_violations(new_visit):
    # Swagger UI's own markup fails several rules; the page's stylesheet and starter script fix them
    # (contrast, nested deep links, an unnamed select, unnamed dialog buttons, a hover-only button)
    tab = await new_visit()
    page = tab.page
    await page.goto(tab.base_url + "/schema")
    await page.locator(".opblock").first.wait_for()
    found = {"listed": await tab.axe()}

    purposes = page.locator("#operations-setup-createPurpose")
    await purposes.locator(".opblock-summary-control").click()
    await purposes.get_by_role("button", name="Try it out").click()
    await purposes.locator(".body-param").wait_for()
    await page.mouse.move(0, 0)
    found["operation open, trying it out"] = await tab.axe()

    await page.get_by_role("button", name="Authorize").first.click()
    await page.get_by_role("dialog").wait_for()
    found["authorisation dialog"] = await tab.axe()
    await page.get_by_role("dialog").get_by_role("button", name="Close").first.click()  # the named icon
    await page.get_by_role("dialog").wait_for(state="detached")

    await page.locator(".models-control").click()
    model = page.locator(".models .json-schema-2020-12").first
    await model.locator(".json-schema-2020-12-expand-deep-button").click()
    await model.locator(".json-schema-2020-12-body").first.wait_for()
    found["schemas open, one expanded"] = await tab.axe()

    report = "\n".join(f"{state}:\n{describe(violations)}" for state, violations in found.items() if violations)
    assert report == ""
    assert tab.errors == []
    assert tab.left_localhost() == []
