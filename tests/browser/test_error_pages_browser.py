"""The hosted pages' error page in a real browser: accessible (axe-core, WCAG 2.2 AA) in both languages, under its
own headers (CSP included), with and without JavaScript, and never reaching beyond the service.

The page is the one ``app.emails.pages.page_error`` answers (its body and headers, as the service sends them),
served at a hosted page's address through the browser's request interception: a database race cannot be made to
happen on demand inside the served process.
"""

from __future__ import annotations

import pytest
from asyncpg.exceptions import DeadlockDetectedError, ForeignKeyViolationError
from conftest import SCREENSHOTS, describe
from litestar import Request
from playwright.async_api import Route

from app.emails.pages import page_error

pytestmark = pytest.mark.slow


def answered(exc: Exception, lang: str) -> tuple[int, dict[str, str], bytes]:
    scope = {"type": "http", "method": "POST", "path": "/u/t", "headers": [(b"accept-language", lang.encode())]}
    response = page_error(Request(scope={**scope, "query_string": b"", "state": {}}), exc)  # type: ignore[arg-type]
    body = response.content
    assert isinstance(body, str)
    assert response.media_type == "text/html"
    return response.status_code, {**response.headers, "Content-Type": "text/html; charset=utf-8"}, body.encode()


@pytest.mark.parametrize(
    ("exc", "lang", "status", "heading", "shot"),
    [
        (DeadlockDetectedError("raced"), "de", 503, "Bitte versuchen Sie es gleich noch einmal", "error-page-busy-de"),
        (ForeignKeyViolationError("raced"), "en", 409, "Something changed meanwhile", None),
        (RuntimeError("a fault"), "en", 500, "Something went wrong", None),
    ],
)
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
async def test_the_error_page_is_accessible_and_says_what_to_do(
    new_visit, exc, lang, status, heading, shot, javascript
):
    code, headers, body = answered(exc, lang)
    assert code == status
    tab = await new_visit(java_script_enabled=javascript, locale=lang)

    async def the_services_answer(route: Route) -> None:
        await route.fulfill(status=code, headers=headers, body=body)

    address = tab.base_url + "/u/a-token"
    await tab.page.route(address, the_services_answer)
    response = await tab.page.goto(address)
    assert response is not None
    assert response.status == status
    assert await tab.page.locator("h1").inner_text() == heading
    assert await tab.page.get_attribute("html", "lang") == lang
    if javascript:
        violations = await tab.axe()
        assert violations == [], describe(violations)
    # the browser reports the page's own status (4xx, 5xx) as an error; anything else would be a CSP violation
    errors = [e for e in tab.errors if not e.startswith("Failed to load resource: the server responded")]
    assert errors == [], "no CSP violation: the page needs nothing its headers forbid"
    assert tab.left_localhost() == []
    if shot and javascript:
        await tab.page.screenshot(path=SCREENSHOTS / f"{shot}.png", full_page=True)
