"""The "keep me subscribed" page (issue 19 item 1) in a real browser: axe-core (WCAG 2.2 AA) before and after the
button, no request beyond the service, the renewal recorded; a screenshot in German."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from conftest import SCREENSHOTS, describe
from sqlalchemy import text

from app.domain.model import ActorType, State, Trigger, VerifiedVia
from app.domain.validity import Span
from app.ledger import repository as ledger
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.db import Database
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.lifecycle import service as lifecycle
from app.purposes import service as purposes
from app.workspaces import service as workspaces
from tests.validity_oracle import subtract_span

pytestmark = pytest.mark.slow

SERVER_KEYS = Keys(bytes.fromhex("ab" * 32))  # CONSENT_SECRET_KEY of the served app (tests/browser/conftest.py)


@pytest.fixture(scope="module")
async def served_database(service) -> AsyncIterator[Database]:
    """On the served app's database (``service``, which the browser modules share; each has a workspace of its own)."""
    database = Database.from_url(service.database_url, pool_size=2)
    try:
        yield database
    finally:
        await database.dispose()


async def repermission_link(database: Database, base_url: str) -> tuple[str, uuid.UUID]:
    """A newsletter consent ending in 20 days under P24M, re-asked by the sweep; the link's token and workspace."""
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme Mode")
        purpose = await purposes.create_purpose(
            session, workspace.id, "newsletter", "Newsletter", "marketing", validity="P24M", repermission_before="P30D"
        )
        contact = await ledger.add_contact(session, workspace.id, None, "de", "Europe/Berlin")
        point = await add_point(
            session,
            SERVER_KEYS,
            workspace.id,
            contact_id=contact.id,
            channel="email",
            value=f"jane.{uuid.uuid4().hex[:6]}@example.com",
            details=None,
            verified=VerifiedVia.API,
        )
        given_at = subtract_span(utcnow() + timedelta(days=20), Span(24, 0), "Europe/Berlin")
        change = Change(
            point, purpose.id, Trigger.IMPORT, {"source": "crm"}, occurred_at=given_at, target=State.OPTED_IN
        )
        await apply_changes(session, workspace.id, [change], Actor(ActorType.API_KEY))
        await lifecycle.sweep(session, push_services=None, base_url=base_url)
        content = (
            await session.execute(text("SELECT content FROM messages WHERE workspace_id = :w"), {"w": workspace.id})
        ).scalar_one()
    found = re.search(r"/r/([A-Za-z0-9_-]+)", content["email"]["text"])
    assert found is not None
    return found.group(1), workspace.id


async def test_the_page_is_accessible_and_its_button_renews(new_visit, base_url, served_database):
    token, workspace_id = await repermission_link(served_database, base_url)
    visit = await new_visit(locale="de-DE")
    response = await visit.page.goto(f"{base_url}/r/{token}")
    assert response is not None
    assert response.status == 200
    assert await visit.page.locator("h1").inner_text() == "Weiter informiert bleiben"
    violations = await visit.axe()
    assert violations == [], describe(violations)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await visit.page.screenshot(path=str(SCREENSHOTS / "repermission-de-desktop.png"), full_page=True)

    await visit.page.get_by_role("button").click()
    await visit.page.wait_for_load_state()
    assert "weiterhin" in await visit.page.locator("p").inner_text()
    violations = await visit.axe()
    assert violations == [], describe(violations)
    assert visit.left_localhost() == []
    assert visit.errors == []
    async with served_database.sessionmaker() as session:
        renewed = (
            await session.execute(
                text("SELECT count(*) FROM consent_events WHERE workspace_id = :w AND trigger = 'renewed'"),
                {"w": workspace_id},
            )
        ).scalar_one()
    assert renewed == 1
