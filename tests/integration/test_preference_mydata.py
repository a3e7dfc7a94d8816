"""The preference centre's "My data" (issue 17): the Art. 15 download and "delete me" (Art. 17), with review."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.ledger.models import ConsentEvent, Contact, Suppression
from app.lib.auth import Scope
from app.preferences.models import PreferenceLink
from app.privacy.models import Erasure, ErasureRequest
from app.privacy.requests import one_month_after
from tests.integration.test_preference_centre import BASE, eligibility, form_token, link_of, requested_link_of

SAME_SITE = {"Origin": BASE, "Sec-Fetch-Site": "same-origin", "User-Agent": "Jane's browser"}


@pytest.fixture
async def jane(ledger, client, admin):
    """Jane: newsletter by email and SMS; John, another contact of the same workspace, whose data must not leak."""
    newsletter = await ledger.purpose("newsletter")
    email = await ledger.point("email", "jane@example.com")
    sms = await ledger.point("sms", "+4915112345678", contact_id=email.contact_id)
    await ledger.apply(email, newsletter.id, "signup", "confirm")
    await ledger.apply(sms, newsletter.id, "signup", "start_word")
    john = await ledger.point("email", "john@example.com")
    await ledger.apply(john, newsletter.id, "signup", "confirm")
    return {"contact_id": email.contact_id, "email": email, "john": john, "newsletter": newsletter}


async def page_of(client, database, tenant, contact_id) -> tuple[str, str]:
    """A link's path (one the person asked for: it opens My data) and the form token of its page."""
    path = await requested_link_of(database, tenant, contact_id)
    page = await client.get(path)
    assert page.status_code == 200
    return path, form_token(page.text)


async def review(client, admin, on: bool) -> None:
    answer = await client.put("/v1/workspace/settings", json={"erasure_review": on}, headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["erasure_review"] is on


async def contacts(session, contact_id) -> int:
    return await session.scalar(select(func.count()).select_from(Contact).where(Contact.id == contact_id))


async def test_the_page_offers_download_and_deletion(client, database, tenant, jane):
    path = await requested_link_of(database, tenant, jane["contact_id"])
    html = (await client.get(path, params={"lang": "en"})).text
    assert "Your data" in html
    assert f'action="{path}/export?lang=en"' in html
    assert f'action="{path}/erase?lang=en"' in html
    assert "Meine Daten herunterladen" in (await client.get(path)).text


async def test_the_download_is_a_file_with_her_data_and_nothing_of_another_contact(
    client, database, tenant, jane, session
):
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    events = await session.scalar(select(func.count()).select_from(ConsentEvent))
    answer = await client.post(f"{path}/export", data={"form_token": token}, headers=SAME_SITE)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert re.fullmatch(
        r'attachment; filename="my-data-\d{4}-\d{2}-\d{2}\.json"', answer.headers["content-disposition"]
    )
    assert answer.headers["cache-control"] == "no-store"
    data = json.loads(answer.content)
    assert data["contact"]["id"] == str(jane["contact_id"])
    assert sorted(p["address"] for p in data["contact_points"]) == ["+4915112345678", "jane@example.com"]
    assert len(data["consent_receipts"]) == 2
    assert "john@example.com" not in answer.text
    assert str(jane["john"].contact_id) not in answer.text
    assert await session.scalar(select(func.count()).select_from(ConsentEvent)) == events, "a download changes nothing"


@pytest.mark.parametrize("what", ["export", "erase"])
@pytest.mark.parametrize(
    ("token", "headers"),
    [
        (None, {}),
        ("0" * 64, {}),
        ("valid", {"Origin": "https://evil.example"}),
        ("valid", {"Sec-Fetch-Site": "cross-site"}),
    ],
    ids=["missing-token", "wrong-token", "foreign-origin", "cross-site"],
)
async def test_a_forged_post_gets_no_data_and_deletes_nothing(
    client, database, tenant, jane, session, what, token, headers
):
    path, real = await page_of(client, database, tenant, jane["contact_id"])
    data = {"confirm": "yes"}
    if token is not None:
        data["form_token"] = real if token == "valid" else token
    answer = await client.post(f"{path}/{what}", data=data, headers=headers)
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/html")
    assert "jane@example.com" not in answer.text
    assert await contacts(session, jane["contact_id"]) == 1
    assert await session.scalar(select(func.count()).select_from(ErasureRequest)) == 0


async def test_a_get_of_the_download_or_the_deletion_does_nothing(client, tenant, jane, session):
    path = await link_of(client, tenant, jane["contact_id"])
    for what in ("export", "erase"):
        answer = await client.get(f"{path}/{what}")
        assert answer.status_code in (404, 405)
        assert "jane@example.com" not in answer.text
    assert await contacts(session, jane["contact_id"]) == 1


async def test_unknown_and_expired_links_refuse_both(client, tenant, jane):
    for what in ("export", "erase"):
        assert (await client.post(f"/p/{'x' * 43}/{what}", data={"form_token": "0" * 64})).status_code == 404


async def test_deleting_asks_first_and_says_what_is_kept(client, database, tenant, jane, session):
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    asked = await client.post(f"{path}/erase?lang=en", data={"form_token": token}, headers=SAME_SITE)
    assert asked.status_code == 200
    assert "Delete all your data?" in asked.text
    assert "fingerprints (hashes)" in asked.text, "says that suppression hashes are kept"
    assert "At once. This cannot be undone." in asked.text
    assert 'name="confirm" value="yes"' in asked.text
    assert f'href="{path}?lang=en"' in asked.text, "a way back"
    assert await contacts(session, jane["contact_id"]) == 1, "the first POST deletes nothing"
    assert await session.scalar(select(func.count()).select_from(ErasureRequest)) == 0


async def test_a_confirmed_deletion_erases_her_and_keeps_the_suppression(
    client, database, tenant, admin, jane, session, ledger
):
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    link = await session.scalar(select(PreferenceLink).where(PreferenceLink.contact_id == jane["contact_id"]))
    done = await client.post(f"{path}/erase?lang=en", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    assert done.status_code == 200, done.text
    assert "Your data has been deleted" in done.text
    assert await contacts(session, jane["contact_id"]) == 0
    assert await contacts(session, jane["john"].contact_id) == 1, "John stays"
    suppressed = await session.scalar(
        select(func.count()).select_from(Suppression).where(Suppression.workspace_id == tenant.id)
    )
    assert suppressed >= 2, "both addresses' hashes are kept"
    [request] = (await session.scalars(select(ErasureRequest))).all()
    assert (request.status, request.source, request.link_id) == ("done", "preference_centre", link.id)
    assert request.evidence is None, "the evidence is on the ledger's erasure event, not kept twice"
    record = await session.scalar(select(Erasure).where(Erasure.id == request.erasure_id))
    assert record.actor_type == "subject"
    assert record.request_ref == f"erasure_request:{request.id}"
    assert record.received_via == "web_form"
    event = await session.scalar(
        select(ConsentEvent)
        .where(ConsentEvent.workspace_id == tenant.id, ConsentEvent.trigger == "erasure")
        .order_by(ConsentEvent.seq.desc())
        .limit(1)
    )
    assert event.actor_type == "subject"
    evidence = event.personal["evidence"]
    assert evidence["source"] == "preference_centre"
    assert evidence["preference_link_id"] == str(link.id)
    assert evidence["user_agent"] == "Jane's browser"
    assert evidence["ip"]
    # she comes back through a CRM sync with an old opt-in: no marketing reaches her
    back = await ledger.point("email", "jane@example.com")
    await ledger.apply(back, jane["newsletter"].id, "signup", "confirm")
    decision = await eligibility(client, tenant, back.contact_id, "email", "newsletter")
    assert (decision["eligible"], decision["reason"]) == (False, "suppressed")
    # the used link opens nothing, and says neutrally why that may be
    gone = await client.get(path, params={"lang": "en"})
    assert gone.status_code == 404
    assert "has been deleted" in gone.text
    assert "jane" not in gone.text.lower()
    again = await client.post(f"{path}/erase", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    assert again.status_code == 404
    assert (await client.post(f"{path}/export", data={"form_token": token}, headers=SAME_SITE)).status_code == 404


async def test_with_review_the_request_waits_a_month_for_an_admin(client, database, tenant, admin, jane, session):
    await review(client, admin, on=True)
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    asked = await client.post(f"{path}/erase?lang=en", data={"form_token": token}, headers=SAME_SITE)
    assert "checks deletion requests before carrying them out" in asked.text
    before = datetime.now(UTC)
    queued = await client.post(f"{path}/erase?lang=en", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    assert queued.status_code == 200
    assert "Your deletion request is recorded" in queued.text
    assert await contacts(session, jane["contact_id"]) == 1, "nothing is deleted before the review"
    assert (await client.get(path)).status_code == 200, "the page keeps working meanwhile"
    [request] = (await session.scalars(select(ErasureRequest))).all()
    assert request.status == "pending"
    assert request.due_at == one_month_after(request.requested_at)
    assert request.requested_at >= before
    assert request.evidence["user_agent"] == "Jane's browser"
    due = request.due_at
    assert f"{due.day} {due.strftime('%B')} {due.year}" in queued.text
    # a second click, with or without confirmation, finds the first request
    for data in ({"form_token": token, "confirm": "yes"}, {"form_token": token}):
        again = await client.post(f"{path}/erase?lang=en", data=data, headers=SAME_SITE)
        assert again.status_code == 200
        assert "Your deletion request is recorded" in again.text
    assert await session.scalar(select(func.count()).select_from(ErasureRequest)) == 1

    listed = await client.get("/v1/erasure-requests", params={"status": "pending"}, headers=admin)
    assert listed.status_code == 200, listed.text
    [shown] = listed.json()
    assert shown["id"] == str(request.id)
    assert shown["contact_id"] == str(jane["contact_id"])
    assert shown["source"] == "preference_centre"
    assert shown["overdue"] is False
    assert datetime.fromisoformat(shown["due_at"]) == due
    assert "evidence" not in shown
    assert (await client.get("/v1/erasure-requests", params={"status": "done"}, headers=admin)).json() == []

    executed = await client.post(f"/v1/erasure-requests/{request.id}/execute", headers=admin)
    assert executed.status_code == 200, executed.text
    body = executed.json()
    assert body["status"] == "done"
    assert body["erasure_id"]
    assert body["decided_by"] is not None
    assert await contacts(session, jane["contact_id"]) == 0
    await session.refresh(request)
    assert request.evidence is None
    event = await session.scalar(
        select(ConsentEvent).where(ConsentEvent.workspace_id == tenant.id, ConsentEvent.trigger == "erasure").limit(1)
    )
    assert event.actor_type == "subject"
    assert event.personal["evidence"]["erasure_request_id"] == str(request.id)
    assert event.personal["evidence"]["approved_by"] == f"api_key:{body['decided_by']}"
    assert event.personal["evidence"]["user_agent"] == "Jane's browser"
    twice = await client.post(f"/v1/erasure-requests/{request.id}/execute", headers=admin)
    assert twice.status_code == 409
    assert twice.json()["code"] == "erasure_request_decided"
    assert (await client.get(path)).status_code == 404


async def test_a_rejected_request_deletes_nothing_and_drops_its_evidence(
    client, database, tenant, admin, jane, session
):
    await review(client, admin, on=True)
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    await client.post(f"{path}/erase", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    request = await session.scalar(select(ErasureRequest))
    rejected = await client.post(f"/v1/erasure-requests/{request.id}/reject", headers=admin)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert await contacts(session, jane["contact_id"]) == 1
    await session.refresh(request)
    assert (request.status, request.evidence) == ("rejected", None)
    assert (await client.post(f"/v1/erasure-requests/{request.id}/execute", headers=admin)).status_code == 409
    # she may ask again: a new request
    asked = await client.post(f"{path}/erase?lang=en", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    assert "Your deletion request is recorded" in asked.text
    assert await session.scalar(select(func.count()).select_from(ErasureRequest)) == 2


async def test_erasure_requests_are_for_admin_keys_of_their_workspace_only(
    client, database, tenant, other_tenant, admin, jane, session
):
    await review(client, admin, on=True)
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    await client.post(f"{path}/erase", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    request = await session.scalar(select(ErasureRequest))
    for scope in (Scope.AUDIT_READ, Scope.CONSENTS_WRITE):
        weaker = await tenant.key(scope)
        assert (await client.get("/v1/erasure-requests", headers=weaker)).status_code == 403
        assert (await client.post(f"/v1/erasure-requests/{request.id}/execute", headers=weaker)).status_code == 403
    assert (await client.get("/v1/erasure-requests")).status_code == 401
    foreign = await other_tenant.key(Scope.ADMIN)
    assert (await client.get("/v1/erasure-requests", headers=foreign)).json() == []
    for action in ("execute", "reject"):
        answer = await client.post(f"/v1/erasure-requests/{request.id}/{action}", headers=foreign)
        assert answer.status_code == 404
        assert (await client.post(f"/v1/erasure-requests/not-a-uuid/{action}", headers=admin)).status_code == 404
    assert (await client.get("/v1/erasure-requests", params={"status": "maybe"}, headers=admin)).status_code == 400
    assert await contacts(session, jane["contact_id"]) == 1


async def test_an_erasure_by_the_api_closes_a_pending_request(client, database, tenant, admin, jane, session):
    await review(client, admin, on=True)
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    await client.post(f"{path}/erase", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    assert (await client.delete(f"/v1/contacts/{jane['contact_id']}", headers=admin)).status_code == 200
    request = await session.scalar(select(ErasureRequest))
    await session.refresh(request)
    assert (request.status, request.evidence) == ("done", None)


@pytest.mark.parametrize(
    ("made", "due"),
    [
        (datetime(2027, 1, 31, 10, tzinfo=UTC), datetime(2027, 2, 28, 10, tzinfo=UTC)),
        (datetime(2027, 12, 15, 10, tzinfo=UTC), datetime(2028, 1, 15, 10, tzinfo=UTC)),
        (datetime(2028, 1, 30, 10, tzinfo=UTC), datetime(2028, 2, 29, 10, tzinfo=UTC)),
    ],
)
def test_one_month_is_a_calendar_month(made, due):
    assert one_month_after(made) == due


async def test_her_download_shows_her_pending_request(client, database, tenant, admin, jane):
    await review(client, admin, on=True)
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    await client.post(f"{path}/erase", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    data = (await client.post(f"{path}/export", data={"form_token": token}, headers=SAME_SITE)).json()
    [request] = data["erasure_requests"]
    assert (request["status"], request["source"]) == ("pending", "preference_centre")
    assert request["evidence"]["user_agent"] == "Jane's browser"
    john = await requested_link_of(database, tenant, jane["john"].contact_id)
    johns = form_token((await client.get(john)).text)
    other = (await client.post(f"{john}/export", data={"form_token": johns}, headers=SAME_SITE)).json()
    assert other["erasure_requests"] == []


async def test_while_her_request_waits_for_review_nothing_is_marketed_to_her(client, database, tenant, admin, jane):
    """Hostile review: a queued "delete me" left her eligible for a month of campaigns."""
    await review(client, admin, on=True)
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    query = {"contact": str(jane["contact_id"]), "channel": "email", "purpose": "newsletter"}
    assert (await client.get("/v1/eligibility", params=query, headers=reader)).json()["eligible"] is True
    path, token = await page_of(client, database, tenant, jane["contact_id"])
    queued = await client.post(f"{path}/erase?lang=en", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
    assert queued.status_code == 200
    assert (await client.get("/v1/eligibility", params=query, headers=reader)).json()["eligible"] is False
    sms = {**query, "channel": "sms"}
    assert (await client.get("/v1/eligibility", params=sms, headers=reader)).json()["eligible"] is False


async def test_a_brands_own_link_manages_consent_but_opens_no_data(client, tenant, jane, session):
    """Hostile review: a brand puts its links into newsletters, which are forwarded; only a link the person asked for
    at /p (mailed to their address) downloads or deletes their data."""
    path = await link_of(client, tenant, jane["contact_id"])
    html = (await client.get(path, params={"lang": "en"})).text
    assert f'action="{path}/export' not in html
    assert "ask for a link by email" in html
    assert f'href="/p?w={tenant.id}&amp;lang=en"' in html
    token = form_token(html)
    for what in ("export", "erase"):
        answer = await client.post(f"{path}/{what}", data={"form_token": token, "confirm": "yes"}, headers=SAME_SITE)
        assert answer.status_code == 403, what
        assert "jane@example.com" not in answer.text
    assert await contacts(session, jane["contact_id"]) == 1
