"""An imported consent older than its purpose's validity arrives expired: recorded, then ended (issue 19 item 1)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text

from app.domain.validity import Span
from app.lib.auth import Scope
from tests.integration.test_consent_import import email_line, ndjson, post
from tests.integration.test_consent_validity import ask, iso, make_purpose
from tests.validity_oracle import add_span


async def test_a_2019_consent_under_24_months_validity_is_expired_on_arrival(client, admin, database, tenant, session):
    await make_purpose(database, tenant, validity="P24M")
    lines = ndjson(
        email_line(captured_at="2019-05-31T22:30:00Z"),  # 2019-06-01 00:30 in Berlin
        email_line(contact="crm-2", address="new@example.com", captured_at="2025-11-01T10:00:00Z"),
    )
    response = await post(client, admin, lines)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["recorded"], report["expired"], report["rejected"], report["skipped"]) == (2, 1, 0, 0)

    rows = await session.execute(
        text(
            "SELECT trigger, to_state, occurred_at FROM consent_events e JOIN contacts c ON c.id = e.contact_id"
            " WHERE e.workspace_id = :w AND c.external_id = 'crm-1' ORDER BY seq"
        ),
        {"w": tenant.id},
    )
    end = add_span(datetime.fromisoformat("2019-05-31T22:30:00+00:00"), Span(24, 0), "Europe/Berlin")
    assert [(r.trigger, r.to_state, r.occurred_at) for r in rows] == [
        ("import", "opted_in", datetime.fromisoformat("2019-05-31T22:30:00+00:00")),
        ("validity_ended", "expired", end),
    ]
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    old = await ask(client, reader, "crm-1")
    assert (old["reason"], old["expires_at"]) == ("expired", iso(end))
    assert (await ask(client, reader, "crm-2"))["reason"] == "opted_in"

    again = (await post(client, admin, lines)).json()  # idempotent: nothing recorded, nothing ended twice
    assert (again["recorded"], "expired" in again) == (0, False)


async def test_an_import_without_validity_reports_no_expired(client, admin, database, tenant):
    await make_purpose(database, tenant)
    report = (await post(client, admin, ndjson(email_line(captured_at="2019-05-31T22:30:00Z")))).json()
    assert (report["recorded"], "expired" in report) == (1, False)  # left out while 0
