"""A branded preference centre in a real browser (issue 17, "Brandable and safe"): the logo loads from exactly its
own origin (the CSP blocks any other), the colours come from our generated stylesheet, axe-core (WCAG 2.2 AA) finds
nothing, the mobile layout does not overflow; screenshot for docs/."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import SCREENSHOTS, describe
from test_preference_centre_browser import MOBILE, new_link, shop  # noqa: F401  # shop: the module's fixture

pytestmark = pytest.mark.slow

LOGO = "https://logo.acme.test/brand/logo.svg"
OTHER = "https://other.acme.test/pixel.svg"
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="180" height="48" viewBox="0 0 180 48">'
    b'<rect width="180" height="48" rx="8" fill="#0b5394"/><circle cx="24" cy="24" r="12" fill="#ffeedd"/>'
    b'<text x="46" y="31" font-family="sans-serif" font-size="18" font-weight="700" fill="#ffffff">Acme Mode</text>'
    b"</svg>"
)
BRANDING = {"logo_url": LOGO, "primary_color": "#0b5394", "accent_color": "#ffeedd"}


async def brand(shop: Any, base_url: str) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=base_url, headers=shop.admin) as client:
        answer = await client.put("/v1/workspace/settings", json={"brand": "Acme Mode", "branding": BRANDING})
        assert answer.status_code == 200, answer.text


async def serve_images(page: Any) -> list[str]:
    """Both image hosts answer (from the test, no network): only the page's CSP can keep one out.

    Answers the URLs the browser actually fetched.
    """
    served: list[str] = []

    async def answer(route: Any) -> None:
        served.append(route.request.url)
        await route.fulfill(status=200, body=SVG, content_type="image/svg+xml")

    for pattern in ("https://logo.acme.test/**", "https://other.acme.test/**"):
        await page.route(pattern, answer)
    return served


async def test_the_branded_page_loads_its_logo_only_and_passes_axe(new_visit, shop, base_url):  # noqa: F811
    await brand(shop, base_url)
    url, _ = await new_link(shop, base_url, locale="en")
    tab = await new_visit()
    page = tab.page
    served = await serve_images(page)
    response = await page.goto(url)
    assert response is not None
    assert response.status == 200
    policy = await response.header_value("content-security-policy")
    assert policy is not None
    assert policy.endswith("; img-src https://logo.acme.test")

    logo = page.get_by_role("img", name="Acme Mode")
    await logo.wait_for()
    assert await logo.evaluate("img => img.complete && img.naturalWidth > 0"), "the CSP lets the logo load"
    colours = await page.evaluate(
        """() => ({
            body: getComputedStyle(document.body).backgroundColor,
            button: getComputedStyle(document.querySelector('button:not(.secondary)')).backgroundColor,
            buttonText: getComputedStyle(document.querySelector('button:not(.secondary)')).color,
            secondary: getComputedStyle(document.querySelector('button.secondary')).color,
            brand: getComputedStyle(document.querySelector('.top .langs a')).color,
        })"""
    )
    assert [u for u in tab.left_localhost() if u != LOGO] == [], "nothing but the logo leaves the service"
    assert colours == {
        "body": "rgb(255, 238, 221)",
        "button": "rgb(11, 83, 148)",
        "buttonText": "rgb(255, 255, 255)",
        "secondary": "rgb(11, 83, 148)",
        "brand": "rgb(0, 0, 0)",
    }

    # an image of any other origin is refused by the browser, though its host would answer
    blocked = await page.evaluate(
        """src => new Promise(done => {
            const img = new Image();
            img.onload = () => done('loaded');
            img.onerror = () => done('blocked');
            img.src = src;
        })""",
        OTHER,
    )
    assert blocked == "blocked"
    assert any("Content Security Policy" in error and "other.acme.test" in error for error in tab.errors), tab.errors
    assert served == [LOGO], "the browser fetched the logo, and never the other origin's image"

    found = {"desktop": await tab.axe()}
    await page.screenshot(path=SCREENSHOTS / "preferences-branded-en-desktop.png", full_page=True)
    await page.set_viewport_size(MOBILE)
    found["mobile"] = await tab.axe()
    overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the logo does not widen the mobile page"
    box = await logo.bounding_box()
    assert box is not None
    assert box["width"] <= MOBILE["width"]
    assert box["height"] <= 60

    await page.goto(f"{base_url}/p?w={shop.workspace_id}&lang=en")
    await page.get_by_role("img", name="Acme Mode").wait_for()
    found["request page"] = await tab.axe()
    report = "\n".join(f"{state}:\n{describe(violations)}" for state, violations in found.items() if violations)
    assert report == ""


async def test_the_branded_page_works_with_javascript_off(new_visit, shop, base_url):  # noqa: F811
    await brand(shop, base_url)
    url, _ = await new_link(shop, base_url, locale="en")
    tab = await new_visit(java_script_enabled=False)
    page = tab.page
    served = await serve_images(page)
    await page.goto(url)
    await page.get_by_role("img", name="Acme Mode").wait_for()
    await page.get_by_role("button", name="Send me nothing at all").click()
    await page.get_by_role("status").wait_for()
    assert "no more marketing" in await page.get_by_role("status").inner_text()
    assert await page.get_by_role("img", name="Acme Mode").is_visible()
    assert [u for u in tab.left_localhost() if u != LOGO] == []
    assert set(served) == {LOGO}
