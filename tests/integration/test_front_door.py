"""The front door over HTTP: the landing page, the API reference, their headers, and the vendored Swagger UI."""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDORED = ROOT / "app" / "static" / "vendor" / "swagger-ui-dist"


class References(HTMLParser):
    """Every ``href`` and ``src`` of a page, and whether it has inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []  # <a href>
        self.assets: list[str] = []  # <link href>, <script src>, <img src>
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        elif tag in {"link", "script", "img"} and (url := attributes.get("href") or attributes.get("src")):
            self.assets.append(url)
        elif tag in {"script", "style"}:
            self.inline.append(tag)
        if "style" in attributes or any(name.startswith("on") for name in attributes):
            self.inline.append(f"{tag} attribute")


def references(html: str) -> References:
    parser = References()
    parser.feed(html)
    return parser


def csp(response) -> dict[str, str]:
    """The response's Content-Security-Policy as directive -> sources."""
    policy = response.headers["content-security-policy"]
    return {name: rest.strip() for name, _, rest in (part.strip().partition(" ") for part in policy.split(";"))}


def assert_security_headers(response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    policy = csp(response)
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert all("unsafe" not in sources and "http" not in sources for sources in policy.values()), policy


async def test_landing_page_says_what_the_service_is_without_an_api_key(client):
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<html lang="en">' in page
    for channel in ("Email", "SMS", "WhatsApp", "App push", "Web push", "Print"):
        assert f">{channel}<" in page
    assert "Staff sign in to the" in page
    links = references(page).links
    for target in ("/schema", "/schema/openapi.json", "/health", "/ready"):
        assert target in links


async def test_landing_page_has_strict_headers_and_no_script(client):
    response = await client.get("/")
    assert_security_headers(response)
    policy = csp(response)
    assert "script-src" not in policy  # falls back to default-src 'none': no script runs at all
    assert policy["style-src"] == "'self'"
    assert policy["form-action"] == "'none'"
    assert references(response.text).inline == []


async def test_every_link_and_asset_of_the_landing_page_answers(client):
    page = references((await client.get("/")).text)
    targets = [url for url in page.links if not url.startswith("#")] + page.assets
    assert all(url.startswith("/") and not url.startswith("//") for url in targets), targets  # nothing off-site
    for url in targets:
        response = await client.get(url)
        assert response.status_code == 200, url
    stylesheet = await client.get("/assets/site.css")
    assert stylesheet.headers["content-type"].startswith("text/css")
    assert stylesheet.headers["x-content-type-options"] == "nosniff"


async def test_head_of_the_landing_page_answers_without_a_body(client):
    response = await client.head("/")
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
async def test_api_reference_loads_swagger_ui_from_this_service_only(client, path):
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert_security_headers(response)
    policy = csp(response)
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"  # "Try it out" calls this service only
    page = references(response.text)
    assert page.inline == []
    assert "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js" in page.assets
    assert "/static/vendor/swagger-ui-dist/swagger-ui.css" in page.assets
    for url in page.assets + [link for link in page.links if not link.startswith("#")]:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        assert (await client.get(url)).status_code == 200, url
    assert 'data-spec-url="/schema/openapi.json"' in response.text


async def test_swagger_ui_oauth2_redirect_page_of_inline_script_is_not_served(client):
    assert (await client.get("/schema/oauth2-redirect.html")).status_code == 404


async def test_openapi_document_stays_at_its_address(client):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "Consent Service API"


def test_vendored_swagger_ui_is_the_version_in_package_lock():
    manifest = json.loads((VENDORED / "VENDORED.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]["node_modules/swagger-ui-dist"]
    assert manifest["version"] == lock["version"]
    assert manifest["integrity"] == lock["integrity"]
    assert json.loads((ROOT / "package.json").read_text())["dependencies"]["swagger-ui-dist"] == lock["version"]
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name
    assert {path.name for path in VENDORED.iterdir()} == {*manifest["files"], "VENDORED.json"}


def test_vendored_swagger_ui_equals_node_modules_when_installed():
    installed = ROOT / "node_modules" / "swagger-ui-dist"
    if not installed.is_dir():
        pytest.skip("node_modules/swagger-ui-dist is not installed (npm ci); the recorded sha256 are checked above")
    manifest = json.loads((VENDORED / "VENDORED.json").read_text())
    assert json.loads((installed / "package.json").read_text())["version"] == manifest["version"]
    for name in manifest["files"]:
        assert (VENDORED / name).read_bytes() == (installed / name).read_bytes(), name
