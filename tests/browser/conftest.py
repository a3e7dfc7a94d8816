"""Browser tests: Debian's Chromium driven by Playwright, axe-core from npm, against the real ``consent serve``.

Nothing is downloaded: Chromium is ``/usr/bin/chromium`` (``apt-get install chromium``; never
``playwright install``) and axe-core is ``node_modules/axe-core`` (``npm ci``). When either is missing the tests
skip, unless ``CONSENT_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which makes them fail instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Request, async_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests may run as root
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WCAG_22_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def _require(present: bool, reason: str) -> None:
    if present:
        return
    if os.environ.get("CONSENT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and CONSENT_REQUIRE_BROWSER=1 says the browser tests must run")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser_tools() -> None:
    """Chromium and axe-core are installed (else skip, or fail under ``CONSENT_REQUIRE_BROWSER=1``)."""
    _require(CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium")
    _require(AXE.exists(), f"{AXE.relative_to(ROOT)} is missing: npm ci")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Service:
    """The served app: where it answers, and its database (SQLAlchemy URL)."""

    url: str
    database_url: str


@pytest.fixture(scope="session")
async def service(browser_tools, pg_server, tmp_path_factory) -> AsyncIterator[Service]:
    """The real service (``consent serve``) on a free loopback port, on a database of its own.

    One for the browser modules (each arranges a workspace of its own): starting it takes seconds (processes
    importing the service). It stops at the end of the run.
    """
    database_url = await pg_server.create_database("consent_browser", migrated=True)
    data_dir = tmp_path_factory.mktemp("browser-service")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"PUBLIC_BASE_URL", "CONSENT_DATA_DIR"}},
        "DATABASE_URL": database_url.replace("+asyncpg", ""),
        "CONSENT_SECRET_KEY": "ab" * 32,
        "CONSENT_DATA_DIR": str(data_dir),
        "CONSENT_LOG_FORMAT": "json",
        "CONSENT_DISPATCHER": "off",
    }
    command = [str(Path(sys.executable).parent / "consent"), "serve", "--migrate", "--port", str(port)]
    with (data_dir / "serve.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                assert process.poll() is None, (data_dir / "serve.log").read_text()
                try:
                    if (await client.get(f"{url}/health", timeout=1)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("consent serve did not answer /health within 30 s")
        yield Service(url, database_url)
    finally:
        process.terminate()
        process.wait(timeout=30)
        await pg_server.drop_database(database_url)


@pytest.fixture(scope="session")
def base_url(service: Service) -> str:
    """Where the tabs of ``new_visit`` go: the shared service (a module may serve its own instead)."""
    return service.url


@pytest.fixture(scope="session")
async def browser(browser_tools) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for every browser module (each tab gets a fresh context)."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Visit:
    """A browser tab on the service that records every request it makes and every console error."""

    page: Page
    base_url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":  # a CSP violation is reported here
            self.errors.append(message.text)

    def left_localhost(self) -> list[str]:
        """The requests that went anywhere but the service under test."""
        origin = urlsplit(self.base_url).netloc
        return [url for url in self.requests if urlsplit(url).netloc != origin]

    async def axe(self) -> list[dict[str, object]]:
        """axe-core's WCAG 2.2 AA violations on the page as it is now."""
        result = await self.page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_22_AA
        )
        violations: list[dict[str, object]] = result["violations"]
        return violations


def describe(violations: list[dict[str, object]]) -> str:
    """axe's violations as lines a person can act on."""
    lines = []
    for violation in violations:
        nodes = violation["nodes"]
        assert isinstance(nodes, list)
        targets = ", ".join(str(node["target"]) for node in nodes[:5])
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']} — {len(nodes)} nodes: {targets}")
    return "\n".join(lines)


@pytest.fixture
async def new_visit(browser, base_url) -> AsyncIterator[Callable[..., Awaitable[Visit]]]:
    """``await new_visit(**context_options)``: a tab in a fresh context, axe-core preloaded.

    Options are Playwright's: ``java_script_enabled=False``, ``color_scheme="dark"``, … axe-core is added as an
    init script (through the DevTools protocol, so the page's CSP, which forbids inline script, does not apply
    to it); with JavaScript off it does not run, and is not needed.
    """
    contexts: list[BrowserContext] = []

    async def visit(**context_options: Any) -> Visit:
        context = await browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
        contexts.append(context)
        await context.add_init_script(path=str(AXE))
        page = await context.new_page()
        tab = Visit(page, base_url)
        page.on("request", tab.on_request)
        page.on("console", tab.on_console)
        return tab

    yield visit
    for context in contexts:
        await context.close()
