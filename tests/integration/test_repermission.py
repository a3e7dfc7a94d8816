"""Re-permission (issue 19 item 1): one message per consent period before its end; the link's button renews."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import text

from app.domain.validity import Span
from app.eligibility import repository as facts_repository
from app.lib.auth import Scope
from app.lib.orm import utcnow
from app.lifecycle import service as lifecycle
from tests.integration.test_consent_validity import BASE_URL, ask, deliver, given, iso, make_purpose
from tests.validity_oracle import add_span, subtract_span

BERLIN = "Europe/Berlin"


@pytest.fixture
async def reader(tenant):
    return await tenant.key(Scope.ELIGIBILITY_READ)


async def consent_ending_in(database, tenant, ledger, purpose, days: float, address="jane@example.com", ext="jane"):
    """An opted-in email consent under P24M whose end is ``days`` from now; returns (point, end)."""
    end = utcnow() + timedelta(days=days)
    given_at = subtract_span(end, Span(24, 0), BERLIN)
    point = await ledger.point("email", address, external_id=ext)
    await given(database, tenant, point, purpose.id, given_at)
    return point, add_span(given_at, Span(24, 0), BERLIN)


async def queued(session, tenant):
    rows = await session.execute(
        text("SELECT id, route, content, campaign FROM messages WHERE workspace_id = :w ORDER BY created_at"),
        {"w": tenant.id},
    )
    return rows.all()


def token_of(message) -> str:
    found = re.search(r"/r/([A-Za-z0-9_-]+)", message.content["email"]["text"])
    assert found is not None
    return found.group(1)


async def events(session, tenant, trigger: str):
    rows = await session.execute(
        text("SELECT * FROM consent_events WHERE workspace_id = :w AND trigger = :t ORDER BY seq"),
        {"w": tenant.id, "t": trigger},
    )
    return rows.all()


async def test_one_message_per_period_is_queued_before_the_end_with_a_hashed_link(database, tenant, ledger, session):
    purpose = await make_purpose(database, tenant, validity="P24M", repermission_before="P30D")
    _, end = await consent_ending_in(database, tenant, ledger, purpose, 20)
    await consent_ending_in(database, tenant, ledger, purpose, 45, "later@example.com", "later")  # not due yet
    await consent_ending_in(database, tenant, ledger, purpose, -1, "over@example.com", "over")  # ended: not asked

    result = await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    assert (result.ended, result.asked) == (1, 1)
    [message] = await queued(session, tenant)
    assert (message.route, message.campaign) == (["email"], "repermission")
    token = token_of(message)
    assert f"{BASE_URL}/r/{token}" in message.content["email"]["text"]
    assert len(token) >= 43  # 256 bits, base64url
    link = (await session.execute(text("SELECT * FROM repermissions WHERE workspace_id = :w"), {"w": tenant.id})).one()
    assert link.token_hash == hashlib.sha256(token.encode()).digest()
    assert token.encode() not in json.dumps([str(v) for v in link]).encode()
    assert (link.ends_at, link.message_id) == (end, message.id)

    again = await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    assert again.asked == 0  # never twice for the same consent period
    assert len(await queued(session, tenant)) == 1


async def test_a_german_contact_gets_the_german_text(database, tenant, ledger, session):
    purpose = await make_purpose(database, tenant, validity="P24M", repermission_before="P30D")
    await consent_ending_in(database, tenant, ledger, purpose, 10)  # the test contacts speak German
    await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    [message] = await queued(session, tenant)
    assert message.content["email"]["subject"].startswith("Möchten Sie")


async def test_no_message_without_repermission_before(database, tenant, ledger, session):
    purpose = await make_purpose(database, tenant, validity="P24M")
    await consent_ending_in(database, tenant, ledger, purpose, 5)
    assert (await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)).asked == 0
    assert await queued(session, tenant) == []


async def test_the_link_page_changes_nothing_and_its_button_renews_with_evidence(
    client, database, tenant, ledger, session, reader
):
    purpose = await make_purpose(database, tenant, validity="P24M", repermission_before="P30D")
    await consent_ending_in(database, tenant, ledger, purpose, 20)
    await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    token = token_of((await queued(session, tenant))[0])
    events_before = len(await events(session, tenant, "import"))

    page = await client.get(f"/r/{token}")
    assert page.status_code == 200
    assert f'action="/r/{token}"' in page.text
    assert "<button" in page.text
    assert (await client.head(f"/r/{token}")).status_code == 200
    assert await events(session, tenant, "renewed") == []

    forged = await client.post(f"/r/{token}", headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403
    assert await events(session, tenant, "renewed") == []

    kept = await client.post(
        f"/r/{token}", headers={"Origin": "https://consent.example.com", "User-Agent": "Browser/1.0"}
    )
    assert kept.status_code == 200, kept.text
    assert "<button" not in kept.text
    [renewed] = await events(session, tenant, "renewed")
    assert (renewed.from_state, renewed.to_state, renewed.legal_basis, renewed.actor_type) == (
        "opted_in",
        "opted_in",
        "consent",
        "subject",
    )
    evidence = json.dumps(renewed.personal)
    link_id = (
        await session.execute(text("SELECT id FROM repermissions WHERE workspace_id = :w"), {"w": tenant.id})
    ).scalar()
    for expected in ("Browser/1.0", str(link_id), '"ip"'):
        assert expected in evidence
    assert len(await events(session, tenant, "import")) == events_before

    answer = await ask(client, reader, "jane")
    assert (answer["reason"], answer["expires_at"]) == (
        "opted_in",
        iso(add_span(renewed.occurred_at, Span(24, 0), BERLIN)),
    )
    repeat = await client.post(f"/r/{token}")
    assert repeat.status_code == 200
    assert len(await events(session, tenant, "renewed")) == 1  # a second click records nothing
    verified = await client.get("/v1/audit/verify", headers=await tenant.key(Scope.AUDIT_READ))
    assert verified.json()["valid"] is True


async def test_an_expired_unknown_or_withdrawn_link_renews_nothing(client, database, tenant, ledger, session):
    purpose = await make_purpose(database, tenant, validity="P24M", repermission_before="P30D")
    point, _ = await consent_ending_in(database, tenant, ledger, purpose, 20)
    await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    token = token_of((await queued(session, tenant))[0])

    assert (await client.get("/r/" + "x" * 43)).status_code == 404
    assert (await client.post("/r/" + "x" * 43)).status_code == 404

    await ledger.apply(point, purpose.id, "unsubscribe")
    assert (await client.get(f"/r/{token}")).status_code == 410
    assert (await client.post(f"/r/{token}")).status_code == 410
    assert await events(session, tenant, "renewed") == []

    await session.execute(
        text("UPDATE repermissions SET ends_at = :at WHERE workspace_id = :w"),
        {"at": utcnow() - timedelta(seconds=1), "w": tenant.id},
    )
    await session.flush()
    page = await client.get(f"/r/{token}")
    assert page.status_code == 410
    assert "<button" not in page.text


async def test_the_page_escapes_the_tenants_words(client, database, tenant, ledger, session, admin):
    response = await client.put("/v1/workspace/settings", json={"brand": "<script>x</script>"}, headers=admin)
    assert response.status_code == 200
    purpose = await make_purpose(database, tenant, validity="P24M", repermission_before="P30D")
    await consent_ending_in(database, tenant, ledger, purpose, 20)
    await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    token = token_of((await queued(session, tenant))[0])
    page = await client.get(f"/r/{token}")
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert page.headers["cache-control"] == "no-store"


async def test_an_erasure_deletes_the_link(client, database, tenant, ledger, session, admin):
    purpose = await make_purpose(database, tenant, validity="P24M", repermission_before="P30D")
    await consent_ending_in(database, tenant, ledger, purpose, 20)
    await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    token = token_of((await queued(session, tenant))[0])
    erased = await client.delete("/v1/contacts/jane", params={"received_via": "email"}, headers=admin)
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["repermissions"] == 1
    assert (await client.get(f"/r/{token}")).status_code == 404


async def test_a_contact_without_a_language_gets_the_workspaces_default(database, tenant, ledger, session):
    """Newcomer review: the workspace's default language (German, not stored in its settings) was read as none."""
    purpose = await make_purpose(database, tenant, validity="P24M", repermission_before="P30D")
    point, _ = await consent_ending_in(database, tenant, ledger, purpose, 10)
    await session.execute(text("UPDATE contacts SET locale = NULL WHERE id = :c"), {"c": point.contact_id})
    await session.commit()
    await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    [message] = await queued(session, tenant)
    assert message.content["email"]["subject"].startswith("Möchten Sie")


@pytest.mark.parametrize("since_then", ["objection", "new_period", "shorter_validity"])
async def test_a_link_renews_only_the_consent_it_asked_about_while_in_force(
    client, admin, database, tenant, ledger, session, reader, since_then
):
    """Hostile review: an objection of all marketing left the purpose's own row opted in and the button renewed it;
    a link of an earlier period renewed a later consent; a link outlived a shortened validity."""
    purpose = await make_purpose(database, tenant, validity="P24M", repermission_before="P30D")
    point, _ = await consent_ending_in(database, tenant, ledger, purpose, 20)
    await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    token = token_of((await queued(session, tenant))[0])
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    if since_then == "objection":
        objection = {"contact": "jane", "scope": "all_marketing", "kind": "art21"}
        assert (await client.post("/v1/objections", json=objection, headers=writer)).status_code == 201
    elif since_then == "new_period":
        await ledger.apply(point, purpose.id, "unsubscribe", "signup", "confirm")
    else:
        lifecycle_body = {"validity": "P12M", "repermission_before": "P30D"}
        assert (
            await client.put("/v1/purposes/newsletter/lifecycle", json=lifecycle_body, headers=admin)
        ).status_code == 200
    page = await client.get(f"/r/{token}")
    assert page.status_code == 410, page.text
    answer = await client.post(f"/r/{token}", headers={"Origin": "https://consent.example.com"})
    assert answer.status_code == 410
    assert await events(session, tenant, "renewed") == []


async def test_the_repermission_mail_delivered_is_no_engagement(client, database, tenant, ledger, session, reader):
    """Hostile review: under inactivity the re-permission mail's own delivery moved the end 18 months on, so the
    question renewed the consent by itself; only its button may."""
    purpose = await make_purpose(database, tenant, inactivity="P18M", repermission_before="P30D")
    given_at = subtract_span(utcnow() + timedelta(days=20), Span(18, 0), BERLIN)
    point = await ledger.point("email", "jane@example.com", external_id="jane")
    await given(database, tenant, point, purpose.id, given_at)
    before = await ask(client, reader, "jane")
    await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    [message] = await queued(session, tenant)
    delivery = (
        await session.execute(text("SELECT id FROM deliveries WHERE message_id = :m"), {"m": message.id})
    ).scalar_one()
    await session.execute(
        text(
            "INSERT INTO message_events (id, workspace_id, message_id, delivery_id, channel, status, at) "
            "VALUES (gen_random_uuid(), :w, :m, :d, 'email', 'delivered', now())"
        ),
        {"w": tenant.id, "m": message.id, "d": delivery},
    )
    await session.commit()
    after = await ask(client, reader, "jane")
    assert after["expires_at"] == before["expires_at"], "only the button renews"


async def test_due_consents_are_asked_even_behind_many_that_end_soon_but_are_not_due(database, tenant, ledger, session):
    """Hostile review of 2026-12-05: with inactivity an older consent may end later; such rows, within the horizon
    but not due, filled the batch and the due one was not asked (it could lapse unasked)."""
    purpose = await make_purpose(database, tenant, inactivity="P24M", repermission_before="P12M")
    now = utcnow()
    for n in range(2):  # given long ago, engaged recently: they end in about a year, asked from in about a week
        point = await ledger.point("email", f"blocker{n}@example.com", external_id=f"blocker{n}")
        await given(database, tenant, point, purpose.id, now - timedelta(days=700 + n))
        await deliver(session, tenant, point, purpose.id, now - timedelta(days=358))
    due = await ledger.point("email", "due@example.com", external_id="due")
    await given(database, tenant, due, purpose.id, now - timedelta(days=400))  # ends in ~330 days: due
    result = await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, limit=2, now=now)
    assert result.asked == 1
    [link] = (
        await session.execute(
            text("SELECT contact_point_id FROM repermissions WHERE workspace_id = :w"), {"w": tenant.id}
        )
    ).all()
    assert link.contact_point_id == due.id


async def test_the_end_date_in_the_message_and_on_the_page_is_the_databases_day(
    client, admin, database, tenant, ledger, session
):
    """Hostile review of 2026-12-05: the day was read with Python's tz data; for Vancouver from November 2026 the
    releases disagree (UTC-7 all year, or UTC-8), and 07:30 UTC is 00:30 of one day or 23:30 of the one before."""
    zone = "America/Vancouver"
    assert (await client.put("/v1/workspace/settings", json={"timezone": zone}, headers=admin)).status_code == 200
    purpose = await make_purpose(database, tenant, validity="P2M", repermission_before="P30D")
    target = (utcnow() + timedelta(days=10)).replace(hour=7, minute=30, second=0, microsecond=0)
    tz = "CAST(:tz AS text)"
    back = facts_repository.span_start_sql("CAST(:e AS timestamptz)", Span(2, 0), tz)
    given_at = (await session.execute(text(f"SELECT {back}"), {"e": target, "tz": zone})).scalar_one()
    point = await ledger.point("email", "bc@example.com", external_id="bc")
    await given(database, tenant, point, purpose.id, given_at)
    end = facts_repository.span_end_sql("CAST(:s AS timestamptz)", Span(2, 0), tz)
    day = await session.execute(text(f"SELECT CAST(({end}) AT TIME ZONE {tz} AS date)"), {"s": given_at, "tz": zone})
    shown = day.scalar_one().strftime("%d.%m.%Y")  # the test contacts speak German

    assert (await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)).asked == 1
    [message] = await queued(session, tenant)
    assert f"endet am {shown}" in message.content["email"]["text"]
    page = await client.get(f"/r/{token_of(message)}")
    assert shown in page.text


async def test_an_end_moved_later_by_engagement_is_asked_about_again(client, database, tenant, ledger, session):
    """Hostile review of 2026-12-05: a link asked about one end kept its period, so after new engagement moved the
    end (inactivity) the consent was never asked again and could lapse unasked."""
    purpose = await make_purpose(database, tenant, inactivity="P24M", repermission_before="P12M")
    now = utcnow()
    point = await ledger.point("email", "kept@example.com", external_id="kept")
    await given(database, tenant, point, purpose.id, now - timedelta(days=400))  # ends in ~330 days: due
    assert (await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, now=now)).asked == 1
    [first] = await queued(session, tenant)

    await deliver(session, tenant, point, purpose.id, now)  # engagement: the end moves two years from now
    swept = await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, now=now)
    assert swept.asked == 0, "not due for the new end yet"
    later = now + timedelta(days=400)  # within twelve months of the new end
    assert (await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, now=later)).asked == 1
    messages = [m for m in await queued(session, tenant) if m.campaign == "repermission"]
    assert len(messages) == 2
    link = (await session.execute(text("SELECT * FROM repermissions WHERE workspace_id = :w"), {"w": tenant.id})).one()
    assert link.message_id == messages[1].id
    assert link.ends_at > now + timedelta(days=700)
    assert (await client.get(f"/r/{token_of(first)}")).status_code == 404, "the first ask's token is replaced"
    assert (await client.get(f"/r/{token_of(messages[1])}")).status_code == 200
    assert (await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, now=later)).asked == 0, "once per end"
