"""Unsubscribe pages, RFC 8058 one-click, and the signed bounce/complaint webhook (CHANNEL_RULES.md §1.5, §1.7)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from sqlalchemy import func, select, text

from app.domain.model import Channel
from app.emails import service as emails
from app.emails.tokens import UnsubscribeTarget
from app.ledger.models import ConsentEvent, ContactPoint, Suppression
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.lib.signatures import sign
from channel_providers.email import compose
from tests.conftest import TEST_SECRET

SECRET = "s" * 40


@pytest.fixture
async def subscribed(ledger):
    """Jane, opted in to two marketing purposes by email."""
    newsletter = await ledger.purpose("newsletter")
    offers = await ledger.purpose("offers")
    point = await ledger.point("email", "jane@example.com")
    for purpose in (newsletter, offers):
        await ledger.apply(point, purpose.id, "signup", "confirm")
    return {"point": point, "newsletter": newsletter, "offers": offers}


def urls(settings, point, purpose=None):
    return emails.unsubscribe_urls(
        settings, Keys(TEST_SECRET), UnsubscribeTarget(point.id, purpose.id if purpose else None)
    )


def local(url: str) -> str:
    return url.removeprefix("https://consent.example.com")


async def states(client, admin, point):
    contact = (await client.get(f"/v1/contacts/{point.contact_id}", headers=admin)).json()
    [found] = [p for p in contact["contact_points"] if p["id"] == str(point.id)]
    return {c["purpose"]: c["state"] for c in found["consents"]}, found


async def event_count(session):
    return await session.scalar(select(func.count()).select_from(ConsentEvent))


def test_marketing_mail_carries_rfc_8058_headers_and_a_visible_link(settings):
    point_id = uuid.uuid4()
    unsubscribe = emails.unsubscribe_urls(settings, Keys(TEST_SECRET), UnsubscribeTarget(point_id, None), "de")
    unsubscribe = type(unsubscribe)(
        url=unsubscribe.url, page_url=unsubscribe.page_url, mailto="mailto:u@acme.example", locale="de"
    )
    message = compose(
        sender="Acme <news@acme.example>",
        to="jane@example.com",
        subject="News",
        text="Hallo",
        html="<html><body><p>Hallo</p></body></html>",
        unsubscribe=unsubscribe,
    )
    assert message["List-Unsubscribe"] == f"<{unsubscribe.url}>, <mailto:u@acme.example>"
    raw = bytes(message).decode()
    assert f"List-Unsubscribe: <{unsubscribe.url}>, <mailto:u@acme.example>" in raw, "on the wire, not encoded"
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    assert unsubscribe.url.startswith("https://consent.example.com/u/")
    assert unsubscribe.url.endswith("/one-click")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe.page_url in message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert f'href="{unsubscribe.page_url}"' in html
    assert html.index("Abmelden") < html.index("</body>")


async def test_one_click_urlencoded_unsubscribes_the_purpose_without_redirect(
    client, admin, settings, subscribed, session
):
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    response = await client.post(
        local(target.url),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": "session=whatever"},
    )
    assert response.status_code == 200
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/plain")
    current, _ = await states(client, admin, subscribed["point"])
    assert current["newsletter"] == "opted_out"
    assert current["offers"] == "opted_in", "one-click removes from the list of that message only"

    events = await event_count(session)
    again = await client.post(local(target.url), data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert await event_count(session) == events, "a retried one-click records nothing new"

    [last] = (await client.get(f"/v1/contacts/{subscribed['point'].contact_id}/events", headers=admin)).json()[-1:]
    assert last["trigger"] == "unsubscribe"
    assert last["actor_type"] == "subject"
    assert last["evidence"]["method"] == "rfc8058_one_click"
    assert last["evidence"]["list_unsubscribe"] == "One-Click"


@pytest.mark.parametrize("form", [False, True], ids=["one_click", "page"])
async def test_an_unsubscribe_refused_by_a_merge_committed_meanwhile_is_taken_again(
    client, admin, settings, subscribed, monkeypatch, form
):
    """A mail client does not send a one-click POST again: refused by a merge committing in its transaction (the
    database's CM001), it is taken again instead of answering 409 and losing the unsubscribe."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from app.emails import service as emails  # noqa: PLC0415

    real = emails.unsubscribe
    tries = []

    class MergedMeanwhile(Exception):
        sqlstate = "CM001"

    async def refused_once(*args, **kwargs):
        tries.append(1)
        await real(*args, **kwargs)
        if len(tries) == 1:  # written, then refused: the transaction is rolled back
            raise DBAPIError("INSERT INTO consents …", None, MergedMeanwhile("contact was merged"))

    monkeypatch.setattr(emails, "unsubscribe", refused_once)
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    if form:
        response = await client.post(local(target.page_url), data={"scope": "purpose"})
    else:
        response = await client.post(local(target.url), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200, response.text
    assert len(tries) == 2
    current, _ = await states(client, admin, subscribed["point"])
    assert current["newsletter"] == "opted_out"


async def test_one_click_multipart_works_too(client, admin, settings, subscribed):
    target = urls(settings, subscribed["point"], subscribed["offers"])
    response = await client.post(local(target.url), files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    current, _ = await states(client, admin, subscribed["point"])
    assert current["offers"] == "opted_out"
    assert current["newsletter"] == "opted_in"


async def test_eligibility_follows_the_one_click_at_once(client, tenant, settings, subscribed):
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    query = {"contact": str(subscribed["point"].contact_id), "channel": "email", "purpose": "newsletter"}
    assert (await client.get("/v1/eligibility", params=query, headers=reader)).json()["eligible"] is True
    await client.post(local(target.url), data={"List-Unsubscribe": "One-Click"})
    decision = (await client.get("/v1/eligibility", params=query, headers=reader)).json()
    assert decision["eligible"] is False
    assert decision["reason"] == "opted_out"


async def test_a_forged_or_damaged_token_is_refused(client, admin, settings, subscribed, session):
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    token = local(target.page_url).split("/")[2]
    forged = emails.unsubscribe_urls(settings, Keys(b"x" * 32), UnsubscribeTarget(subscribed["point"].id, None))
    events = await event_count(session)
    for bad in (
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        token[:20],
        "2" + token[1:],
        local(forged.page_url).split("/")[2],
    ):
        response = await client.post(f"/u/{bad}/one-click", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 404, bad
        assert response.json()["code"] == "unsubscribe_token_invalid"
        page = await client.get(f"/u/{bad}")
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
    assert await event_count(session) == events


async def test_the_page_offers_a_choice_and_get_changes_nothing(client, admin, settings, subscribed, session):
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    events = await event_count(session)
    page = await client.get(local(target.page_url), headers={"User-Agent": "Mozilla/5.0 Barracuda"})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert 'name="scope" value="purpose"' in page.text
    assert 'name="scope" value="all"' in page.text
    assert "Newsletter" in page.text
    assert "j***@example.com" in page.text
    assert "<script" not in page.text
    assert (await client.head(local(target.page_url))).status_code == 200
    assert await event_count(session) == events


async def test_the_page_can_unsubscribe_from_everything(client, admin, settings, subscribed, ledger):
    later = await ledger.purpose("later")  # created afterwards: covered by the channel-level row
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    response = await client.post(local(target.page_url), data={"scope": "all"})
    assert response.status_code == 200
    assert "abgemeldet" in response.text
    current, _ = await states(client, admin, subscribed["point"])
    assert current == {None: "opted_out", "newsletter": "opted_out", "offers": "opted_out"}
    reader = await ledger_key(client, ledger)
    decision = await client.get(
        "/v1/eligibility",
        params={"contact": str(subscribed["point"].contact_id), "channel": "email", "purpose": later.key},
        headers=reader,
    )
    assert decision.json()["eligible"] is False


async def ledger_key(client, ledger):
    from tests.conftest import Tenant  # noqa: PLC0415

    return await Tenant(ledger.workspace_id, ledger.database).key(Scope.ELIGIBILITY_READ)


async def test_the_page_default_is_the_purpose_of_the_mail(client, admin, settings, subscribed):
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    assert (await client.post(local(target.page_url), data={"scope": "purpose"})).status_code == 200
    current, _ = await states(client, admin, subscribed["point"])
    assert current["newsletter"] == "opted_out"
    assert current["offers"] == "opted_in"


# --- bounces and complaints ----------------------------------------------------------------------------------


@pytest.fixture
async def webhook(client, admin, tenant):
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    settings["email"]["webhook_secret"] = SECRET
    response = await client.put("/v1/workspace/settings", json=settings, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["email"]["webhook_secret_set"] is True
    assert SECRET not in response.text

    async def post(events, *, secret=SECRET, timestamp=None, raw=None):
        body = raw if raw is not None else json.dumps({"events": events}).encode()
        header = sign(secret, body, int(timestamp or time.time()))
        return await client.post(
            f"/webhooks/email/{tenant.id}/events",
            content=body,
            headers={"Content-Type": "application/json", "X-Consent-Signature": header},
        )

    return post


async def test_a_hard_bounce_makes_the_address_undeliverable(client, admin, subscribed, webhook, tenant):
    response = await webhook(
        [
            {
                "id": "ev-1",
                "type": "bounce",
                "bounce_type": "hard",
                "recipient": " jane@Example.COM ",
                "diagnostic": "5.1.1",
            }
        ]
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"processed": 1, "duplicates": 0, "unknown_recipients": 0}
    current, point = await states(client, admin, subscribed["point"])
    assert point["reachability"] == "undeliverable"
    assert current["newsletter"] == "opted_in", "reachability is kept apart from permission"
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    decision = await client.get(
        "/v1/eligibility",
        params={"contact": str(subscribed["point"].contact_id), "channel": "email", "purpose": "newsletter"},
        headers=reader,
    )
    assert decision.json()["reason"] == "undeliverable"


async def test_a_soft_bounce_is_counted_and_changes_nothing(client, admin, subscribed, webhook, session):
    for number in (1, 2):
        response = await webhook(
            [{"id": f"soft-{number}", "type": "bounce", "bounce_type": "soft", "recipient": "jane@example.com"}]
        )
        assert response.status_code == 200
    _, point = await states(client, admin, subscribed["point"])
    assert point["reachability"] == "reachable"
    details = await session.scalar(select(ContactPoint.details).where(ContactPoint.id == subscribed["point"].id))
    assert details["soft_bounces"] == 2


async def test_a_bounce_diagnostic_is_remembered_only_as_its_status_code(subscribed, webhook, session):
    # relays' diagnostics name the recipient; the dedup record outlives an erasure, so it keeps the code alone
    diagnostic = "452 4.2.2 <jane@example.com>: Mailbox full (Jane Roe)"
    events = [{"id": "soft-9", "type": "bounce", "bounce_type": "soft", "recipient": "jane@example.com"}]
    response = await webhook([{**events[0], "diagnostic": diagnostic}])
    assert response.status_code == 200, response.text
    stored = (
        await session.execute(text("SELECT error_code FROM provider_callbacks WHERE message_sid = 'soft-9'"))
    ).all()
    assert stored == [("4.2.2",)]
    free_text = await session.scalar(
        text("SELECT count(*) FROM provider_callbacks WHERE error_code LIKE '%jane%' OR error_code LIKE '%Roe%'")
    )
    assert free_text == 0


async def test_a_complaint_opts_out_and_suppresses(client, admin, subscribed, webhook, session, tenant):
    response = await webhook(
        [{"id": "fbl-1", "type": "complaint", "recipient": "jane@example.com", "diagnostic": "abuse"}]
    )
    assert response.status_code == 200
    current, _ = await states(client, admin, subscribed["point"])
    assert current == {None: "opted_out", "newsletter": "opted_out", "offers": "opted_out"}
    [suppression] = (await session.scalars(select(Suppression).where(Suppression.workspace_id == tenant.id))).all()
    assert suppression.reason == "complaint"
    assert suppression.scope == "all_marketing"
    assert suppression.channel == Channel.EMAIL
    events = await event_count(session)

    repeat = await webhook([{"id": "fbl-1", "type": "complaint", "recipient": "jane@example.com"}])
    assert repeat.json() == {"processed": 0, "duplicates": 1, "unknown_recipients": 0}
    assert await event_count(session) == events, "a retried delivery records nothing"


async def test_a_complaint_about_an_unknown_address_still_suppresses_it(client, webhook, session, tenant):
    response = await webhook([{"id": "fbl-2", "type": "complaint", "recipient": "stranger@example.com"}])
    assert response.json() == {"processed": 1, "duplicates": 0, "unknown_recipients": 1}
    assert (
        await session.scalar(select(func.count()).select_from(Suppression).where(Suppression.workspace_id == tenant.id))
        == 1
    )


@pytest.mark.parametrize(
    "tamper",
    ["wrong_secret", "stale", "no_header", "body_changed"],
)
async def test_bad_signatures_are_refused_and_nothing_is_recorded(client, subscribed, webhook, tenant, session, tamper):
    events = [{"id": "ev-9", "type": "complaint", "recipient": "jane@example.com"}]
    before = await event_count(session)
    if tamper == "wrong_secret":
        response = await webhook(events, secret="w" * 40)
    elif tamper == "stale":
        response = await webhook(events, timestamp=time.time() - 600)
    elif tamper == "no_header":
        response = await client.post(f"/webhooks/email/{tenant.id}/events", json={"events": events})
    else:
        body = json.dumps({"events": events}).encode()
        header = sign(SECRET, body, int(time.time()))
        response = await client.post(
            f"/webhooks/email/{tenant.id}/events",
            content=body.replace(b"ev-9", b"ev-8"),
            headers={"X-Consent-Signature": header, "Content-Type": "application/json"},
        )
    assert response.status_code == 403
    # a matching signature sent too late says so (newcomer review); a wrong one is only "does not match"
    assert response.json()["code"] == ("signature_expired" if tamper == "stale" else "invalid_signature")
    assert await event_count(session) == before
    assert (
        await session.scalar(select(func.count()).select_from(Suppression).where(Suppression.workspace_id == tenant.id))
        == 0
    )


async def test_the_webhook_needs_a_configured_secret(client, tenant):
    body = b'{"events": []}'
    response = await client.post(
        f"/webhooks/email/{tenant.id}/events",
        content=body,
        headers={"X-Consent-Signature": sign(SECRET, body, int(time.time()))},
    )
    assert response.status_code == 403
    assert response.json()["code"] == "webhook_not_configured"
    unknown = await client.post(f"/webhooks/email/{uuid.uuid4()}/events", content=body)
    assert unknown.status_code == 404


async def test_malformed_deliveries_answer_4xx(webhook):
    missing_type = await webhook([{"id": "b-1", "type": "bounce", "recipient": "jane@example.com"}])
    assert missing_type.status_code == 422
    assert missing_type.json()["code"] == "bounce_type_required"
    wrong = await webhook([{"id": "b-2", "type": "delivered", "recipient": "jane@example.com"}])
    assert wrong.status_code == 422
    broken = await webhook(None, raw=b"{not json")
    assert broken.status_code == 422
    assert broken.json()["code"] == "malformed_json"


async def test_a_short_webhook_secret_is_refused(client, admin):
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    settings["email"]["webhook_secret"] = "short"
    response = await client.put("/v1/workspace/settings", json=settings, headers=admin)
    assert response.status_code == 422
    assert response.json()["code"] == "webhook_secret_too_short"
