"""The brand on the hosted pages (issue 17, "Brandable and safe"): logo and colours in the workspace settings,
shown on the preference pages through a generated stylesheet of ours, with a CSP that allows exactly the logo."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from app.emails.tokens import UnsubscribeTarget, sign_unsubscribe
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.workspaces.models import Workspace
from app.workspaces.settings import contrast, logo_origin, text_on
from tests.conftest import TEST_SECRET
from tests.integration.test_preference_centre import BASE, form_token, link_of, requested_link_of

KEYS = Keys(TEST_SECRET)
SAME_SITE = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
LOGO = "https://cdn.acme.example/img/logo.png?v=3&size=2"
BRANDING = {"logo_url": LOGO, "primary_color": "#0B5394", "accent_color": "#ffeedd"}
STYLESHEET = "/brand/v1/0b5394-ffeedd.css"
STRICT = "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"


@pytest.fixture
async def jane(ledger):
    newsletter = await ledger.purpose("newsletter")
    email = await ledger.point("email", "jane@example.com")
    await ledger.apply(email, newsletter.id, "signup", "confirm")
    return {"contact_id": email.contact_id, "email": email, "newsletter": newsletter}


async def put_branding(client, headers, branding, brand="Acme Mode"):
    return await client.put("/v1/workspace/settings", json={"brand": brand, "branding": branding}, headers=headers)


def problem_of(answer) -> tuple[int, str, str]:
    body = answer.json()
    return answer.status_code, body.get("code", ""), body.get("detail", "")


def csp(answer) -> dict[str, str]:
    """The CSP's directives by name."""
    policy = answer.headers["content-security-policy"]
    return {part.split()[0]: part.strip() for part in policy.split(";")}


# --- settings -------------------------------------------------------------------------------------------------


async def test_the_settings_store_and_show_logo_and_colours(client, admin):
    saved = await put_branding(client, admin, BRANDING)
    assert saved.status_code == 200, saved.text
    assert saved.json()["branding"] == BRANDING
    shown = (await client.get("/v1/workspace/settings", headers=admin)).json()
    assert shown["branding"] == BRANDING
    assert shown["brand"] == "Acme Mode"
    cleared = await put_branding(client, admin, {})
    assert cleared.json()["branding"] == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.acme.example/logo.png",  # not https
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "//cdn.acme.example/logo.png",
        "https://user:secret@cdn.acme.example/logo.png",
        "https://cdn.acme.example;script-src *",  # would add a directive to the CSP
        "https://cdn.acme.example logo.png",
        "https://cdn.acme.example,https://evil.example/x.png",
        'https://cdn.acme.example/x.png"onerror="alert(1)',
        "https://[::1]/logo.png",
        "https://*.acme.example/logo.png",
        "https:///logo.png",
        "https://cdn.acme.example:99999/logo.png",
    ],
)
async def test_a_logo_url_that_is_not_plain_https_is_refused(client, admin, url):
    answer = await put_branding(client, admin, {"logo_url": url})
    status, code, detail = problem_of(answer)
    assert (status, code) == (422, "invalid_branding"), answer.text
    assert "branding.logo_url" in detail
    assert (await client.get("/v1/workspace/settings", headers=admin)).json()["branding"] == {}


@pytest.mark.parametrize(
    "colour", ["red", "#fff", "#12345g", "0b5394", "#0b5394ff", "#0b5394;}", "", " #0b5394", "#0b5394\n"]
)
async def test_a_colour_that_is_not_rrggbb_is_refused(client, admin, colour):
    for field in ("primary_color", "accent_color"):
        answer = await put_branding(client, admin, {field: colour})
        assert answer.status_code in (400, 422), answer.text
        assert field in answer.text
    assert (await client.get("/v1/workspace/settings", headers=admin)).json()["branding"] == {}


async def test_a_primary_colour_below_aa_contrast_is_refused_naming_the_ratio(client, admin):
    answer = await put_branding(client, admin, {"primary_color": "#777777"})
    status, code, detail = problem_of(answer)
    assert (status, code) == (422, "invalid_branding")
    assert "branding.primary_color" in detail
    assert "4.48:1" in detail
    assert "4.5:1" in detail
    assert answer.json()["errors"][0]["field"] == "branding.primary_color"
    # just dark enough passes; any accent passes (its text is black or white, whichever contrasts more)
    passing = await put_branding(client, admin, {"primary_color": "#767676", "accent_color": "#777777"})
    assert passing.status_code == 200, passing.text


def test_contrast_follows_wcag():
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    worst = min(
        max(contrast(f"#{v:02x}{v:02x}{v:02x}", "#000000"), contrast(f"#{v:02x}{v:02x}{v:02x}", "#ffffff"))
        for v in range(256)
    )
    assert worst >= 4.5, "black or white on any grey reaches AA"
    for accent in ("#ffeedd", "#767676", "#777777", "#0b5394", "#ff0000", "#00ff00", "#000000", "#ffffff"):
        assert contrast(text_on(accent), accent) >= 4.5
    assert logo_origin("https://CDN.Acme.example:8443/a/b.png?x=1#f") == "https://cdn.acme.example:8443"
    assert logo_origin("https://cdn.acme.example:443/a.png") == "https://cdn.acme.example"


# --- the pages ------------------------------------------------------------------------------------------------


async def test_the_preference_page_shows_the_logo_and_links_the_stylesheet(client, tenant, admin, jane):
    assert (await put_branding(client, admin, BRANDING)).status_code == 200
    path = await link_of(client, tenant, jane["contact_id"])
    page = await client.get(path)
    assert page.status_code == 200
    html = page.text
    assert '<img class="logo" src="https://cdn.acme.example/img/logo.png?v=3&amp;size=2" alt="Acme Mode">' in html
    assert f'<link rel="stylesheet" href="{STYLESHEET}">' in html
    assert html.index("/assets/preferences.css") < html.index(STYLESHEET), "the brand's rules come last"
    assert "style=" not in html, "no inline style: the CSP forbids it"
    assert "<script" not in html
    policy = csp(page)
    assert policy["img-src"] == "img-src https://cdn.acme.example"
    assert page.headers["content-security-policy"] == STRICT + "; img-src https://cdn.acme.example"
    # a change answers the same page, with the same policy
    changed = await client.post(
        path,
        data={"form_token": form_token(html), "action": "withdraw_all"},
        headers=SAME_SITE,
    )
    assert changed.status_code == 200
    assert 'alt="Acme Mode"' in changed.text
    assert csp(changed)["img-src"] == "img-src https://cdn.acme.example"


async def test_without_a_logo_no_image_is_allowed(client, tenant, admin, jane):
    path = await link_of(client, tenant, jane["contact_id"])
    plain = await client.get(path)
    assert plain.headers["content-security-policy"] == STRICT
    assert "<img" not in plain.text
    assert "/brand/" not in plain.text
    assert '<p class="brand">Acme</p>' in plain.text
    assert (await put_branding(client, admin, {"accent_color": "#202020"})).status_code == 200
    coloured = await client.get(path)
    assert coloured.headers["content-security-policy"] == STRICT
    assert "<img" not in coloured.text
    assert '<link rel="stylesheet" href="/brand/v1/1a4f9c-202020.css">' in coloured.text, "default primary"


async def test_the_request_via_and_my_data_pages_are_branded(client, database, tenant, admin, jane):
    assert (await put_branding(client, admin, BRANDING)).status_code == 200
    pages = {"request": await client.get("/p", params={"w": str(tenant.id), "lang": "en"})}
    token = sign_unsubscribe(KEYS.unsubscribe, UnsubscribeTarget(jane["email"].id, jane["newsletter"].id))
    pages["via"] = await client.get(f"/p/via/{token}")
    path = await requested_link_of(database, tenant, jane["contact_id"])
    html = (await client.get(path)).text
    pages["erase"] = await client.post(f"{path}/erase", data={"form_token": form_token(html)}, headers=SAME_SITE)
    pages["sent"] = await client.post(
        f"/p?w={tenant.id}&lang=en",
        data={"email": "nobody@example.com", "form_token": form_token_of_request(pages["request"].text)},
        headers=SAME_SITE,
    )
    for name, page in pages.items():
        assert page.status_code == 200, (name, page.text)
        assert f'<link rel="stylesheet" href="{STYLESHEET}">' in page.text, name
        assert 'alt="Acme Mode"' in page.text, name
        assert csp(page)["img-src"] == "img-src https://cdn.acme.example", name


def form_token_of_request(html: str) -> str:
    found = re.search(r'name="form_token" value="([0-9]+\.[0-9a-f]+)"', html)
    assert found is not None
    return found.group(1)


async def test_another_workspaces_brand_never_appears(client, tenant, other_tenant, admin, jane, database):
    assert (await put_branding(client, admin, BRANDING)).status_code == 200
    other_admin = await other_tenant.key(Scope.ADMIN)
    other = {"logo_url": "https://static.globex.example/g.svg", "primary_color": "#8b0000"}
    assert (await put_branding(client, other_admin, other, brand="Globex")).status_code == 200
    contact = await client.post("/v1/contacts", json={"locale": "en"}, headers=other_admin)
    assert contact.status_code == 201, contact.text
    path = await link_of(client, other_tenant, contact.json()["id"])
    pages = [await client.get(path), await client.get("/p", params={"w": str(other_tenant.id)})]
    for page in pages:
        assert page.status_code == 200
        assert "cdn.acme.example" not in page.text
        assert "Acme" not in page.text
        assert "0b5394" not in page.text
        assert "cdn.acme.example" not in page.headers["content-security-policy"]
        assert csp(page)["img-src"] == "img-src https://static.globex.example"
        assert 'alt="Globex"' in page.text
        assert '<link rel="stylesheet" href="/brand/v1/8b0000-f4f4f4.css">' in page.text
    mine = await client.get(await link_of(client, tenant, jane["contact_id"]))
    assert "globex" not in mine.text.lower()
    assert "globex" not in mine.headers["content-security-policy"]


# --- the stylesheet -------------------------------------------------------------------------------------------


async def test_the_stylesheet_holds_the_colours_and_nothing_else(client):
    answer = await client.get(STYLESHEET)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/css")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "immutable" in answer.headers["cache-control"]
    css = answer.text
    assert "background: #ffeedd;" in css
    assert "background: #0b5394; border-color: #0b5394; color: #ffffff;" in css
    assert "main a { color: #0b5394; }" in css
    assert ".top, .top .brand, .top .langs a { color: #000000; }" in css, "black on the light accent"
    colours = set(re.findall(r"#[0-9a-f]{6}\b", css))
    assert colours <= {"#0b5394", "#ffeedd", "#000000", "#ffffff", "#a11d1d"}
    assert not re.search(r"url\(|@import|expression|\\", css), "nothing that loads or escapes"
    dark = (await client.get("/brand/v1/0b5394-101010.css")).text
    assert ".top, .top .brand, .top .langs a { color: #ffffff; }" in dark, "white on the dark accent"
    again = await client.get(STYLESHEET, headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "name",
    [
        "0B5394-ffeedd.css",
        "0b5394-ffeedd",
        "0b5394-ffeed.css",
        "0b5394-ffeedd.css;x",
        "0b5394-ffeedd}body{x-ffeedd.css",
        "..%2F..%2Fassets%2Fpreferences.css",
        "0b5394-ffeedd.css%0a",
    ],
)
async def test_any_other_stylesheet_name_is_not_found(client, name):
    answer = await client.get(f"/brand/v1/{name}")
    assert answer.status_code == 404
    assert "0b5394" not in answer.text


async def test_a_stored_logo_that_no_longer_passes_is_not_shown(client, tenant, jane, session):
    """Settings written before the checks (or by hand) cannot widen the CSP: the page checks the logo again."""
    stored = {"brand": "Acme Mode", "branding": {"logo_url": "https://cdn.acme.example;script-src *"}}
    await session.execute(update(Workspace).where(Workspace.id == tenant.id).values(settings=stored))
    await session.commit()
    page = await client.get(await link_of(client, tenant, jane["contact_id"]))
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == STRICT
    assert "<img" not in page.text
    assert '<p class="brand">Acme Mode</p>' in page.text
