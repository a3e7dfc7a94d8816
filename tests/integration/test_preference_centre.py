"""The preference centre, first slice (issue 17): links, the page ``/p/{token}``, withdrawals and print objections."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.ledger import repository as ledger_repository
from app.ledger.models import ConsentEvent
from app.lib.auth import Scope
from app.lib.db import Database
from app.preferences import service
from app.preferences.models import PreferenceLink
from tests.conftest import own_database

BASE = "https://consent.example.com"


@pytest.fixture
async def jane(ledger, client, admin):
    """Jane: newsletter and offers by email, newsletter by SMS, and a postal address (print allowed)."""
    newsletter = await ledger.purpose("newsletter")
    offers = await ledger.purpose("offers")
    email = await ledger.point("email", "jane@example.com")
    sms = await ledger.point("sms", "+4915112345678", contact_id=email.contact_id)
    for purpose in (newsletter, offers):
        await ledger.apply(email, purpose.id, "signup", "confirm")
    await ledger.apply(sms, newsletter.id, "signup", "start_word")
    postal = {"name": "Jane Doe", "street": "Hauptstraße 1", "postcode": "10115", "city": "Berlin"}
    answer = await client.post(f"/v1/contacts/{email.contact_id}/postal-addresses", json=postal, headers=admin)
    assert answer.status_code == 201, answer.text
    return {"contact_id": email.contact_id, "email": email, "sms": sms, "newsletter": newsletter, "offers": offers}


async def link_of(client, tenant, contact_id) -> str:
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    answer = await client.post(f"/v1/contacts/{contact_id}/preference-link", headers=writer)
    assert answer.status_code == 201, answer.text
    return answer.json()["url"].removeprefix(BASE)


async def requested_link_of(database, tenant, contact_id) -> str:
    """A link as ``/p`` mails it on the person's request to their (verified) email address: it opens My data."""
    async with database.sessionmaker() as session, session.begin():
        points = await ledger_repository.contact_points_of(session, contact_id)
        [email] = [p for p in points if p.channel == "email"]
        issued = await service.issue_link(
            session, tenant.id, str(contact_id), issued_by=service.ON_REQUEST, point_id=email.id
        )
    return f"/p/{issued.token}"


def form_token(html: str) -> str:
    found = re.search(r'name="form_token" value="([0-9a-f]+)"', html)
    assert found is not None
    return found.group(1)


async def event_count(session) -> int:
    return await session.scalar(select(func.count()).select_from(ConsentEvent))


async def eligibility(client, tenant, contact_id, channel, purpose):
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    query = {"contact": str(contact_id), "channel": channel, "purpose": purpose}
    return (await client.get("/v1/eligibility", params=query, headers=reader)).json()


async def test_a_link_needs_consents_write_and_is_stored_only_as_its_hash(client, tenant, jane, session):
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    refused = await client.post(f"/v1/contacts/{jane['contact_id']}/preference-link", headers=reader)
    assert refused.status_code == 403
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    answer = await client.post(f"/v1/contacts/{jane['contact_id']}/preference-link", headers=writer)
    assert answer.status_code == 201
    body = answer.json()
    assert body["url"].startswith(f"{BASE}/p/")
    token = body["url"].rsplit("/", 1)[1]
    assert len(token) >= 43, "256 bits, base64url"
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    [row] = (await session.scalars(select(PreferenceLink))).all()
    assert row.token_hash == hashlib.sha256(token.encode()).digest()
    assert row.contact_id == jane["contact_id"]
    assert token not in repr([getattr(row, c.key) for c in PreferenceLink.__table__.columns])


async def test_a_link_stays_in_its_workspace(client, other_tenant, jane):
    foreign = await other_tenant.key(Scope.CONSENTS_WRITE)
    answer = await client.post(f"/v1/contacts/{jane['contact_id']}/preference-link", headers=foreign)
    assert answer.status_code == 404


async def test_unknown_and_expired_links_answer_404_and_410(client, tenant, jane, session):
    assert (await client.get("/p/" + "x" * 43)).status_code == 404
    assert (await client.get("/p/" + "x" * 500)).status_code == 404
    path = await link_of(client, tenant, jane["contact_id"])
    assert (await client.get(path)).status_code == 200
    await session.execute(update(PreferenceLink).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    expired = await client.get(path)
    assert expired.status_code == 410
    assert "abgelaufen" in expired.text
    posted = await client.post(path, data={"action": "withdraw_all", "form_token": "0" * 64})
    assert posted.status_code == 410


async def test_the_page_shows_every_channel_and_purpose_and_get_changes_nothing(client, tenant, jane, session):
    path = await link_of(client, tenant, jane["contact_id"])
    before = await event_count(session)
    page = await client.get(path)
    assert (await client.head(path)).status_code == 200
    assert await event_count(session) == before
    assert page.status_code == 200
    html = page.text
    assert '<html lang="de">' in html, "the contact's locale"
    assert "j***@example.com" in html
    assert "jane@example.com" not in html
    assert "+49151" in html
    assert "Berlin" not in html
    assert "Sie erhalten dies." in html
    assert "Newsletter per SMS abbestellen" in html
    assert "Werbung per Post widersprechen" in html
    assert "Content-Security-Policy" in page.headers
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "same-origin", "the token-bearing URL goes to no other site"
    english = await client.get(path, params={"lang": "en"})
    assert '<html lang="en">' in english.text
    assert "Stop Newsletter by email" in english.text


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        (None, {}),
        ("0" * 64, {}),
        ("valid", {"Origin": "https://evil.example"}),
        ("valid", {"Origin": "null"}),
        ("valid", {"Sec-Fetch-Site": "cross-site"}),
    ],
    ids=["missing-token", "wrong-token", "foreign-origin", "null-origin", "cross-site"],
)
async def test_a_forged_post_is_refused_and_changes_nothing(client, tenant, jane, session, token, headers):
    path = await link_of(client, tenant, jane["contact_id"])
    real = form_token((await client.get(path)).text)
    data = {"action": "withdraw_all"}
    if token is not None:
        data["form_token"] = real if token == "valid" else token
    before = await event_count(session)
    answer = await client.post(path, data=data, headers=headers)
    assert answer.status_code == 403
    assert await event_count(session) == before
    assert (await eligibility(client, tenant, jane["contact_id"], "email", "newsletter"))["eligible"] is True


async def test_the_form_token_of_one_link_does_not_work_for_another(client, tenant, jane, session):
    first = await link_of(client, tenant, jane["contact_id"])
    second = await link_of(client, tenant, jane["contact_id"])
    token = form_token((await client.get(first)).text)
    before = await event_count(session)
    assert (await client.post(second, data={"action": "withdraw_all", "form_token": token})).status_code == 403
    assert await event_count(session) == before


async def test_a_link_cannot_change_another_contact(client, tenant, ledger, jane, session):
    john = await ledger.point("email", "john@example.com")
    await ledger.apply(john, jane["newsletter"].id, "signup", "confirm")
    path = await link_of(client, tenant, jane["contact_id"])
    token = form_token((await client.get(path)).text)
    before = await event_count(session)
    tampered = {"action": "withdraw", "form_token": token, "point": str(john.id), "purpose": str(jane["newsletter"].id)}
    answer = await client.post(path, data=tampered)
    assert answer.status_code == 403
    assert await event_count(session) == before
    assert (await eligibility(client, tenant, john.contact_id, "email", "newsletter"))["eligible"] is True


async def test_a_purpose_of_another_workspace_is_refused(client, tenant, other_tenant, database, jane, session):
    from tests.conftest import Ledger  # noqa: PLC0415

    foreign = await Ledger(database, other_tenant.id).purpose("newsletter")
    path = await link_of(client, tenant, jane["contact_id"])
    token = form_token((await client.get(path)).text)
    before = await event_count(session)
    tampered = {"action": "withdraw", "form_token": token, "point": str(jane["email"].id), "purpose": str(foreign.id)}
    assert (await client.post(path, data=tampered)).status_code == 403
    assert (await client.post(path, data={**tampered, "purpose": "not-a-uuid"})).status_code == 403
    assert await event_count(session) == before


async def test_withdrawing_one_purpose_is_recorded_with_the_person_and_evidence(client, tenant, jane, session):
    path = await link_of(client, tenant, jane["contact_id"])
    link = await session.scalar(select(PreferenceLink))
    token = form_token((await client.get(path)).text)
    form = {"action": "withdraw", "form_token": token, "point": str(jane["email"].id)}
    answer = await client.post(
        path,
        data={**form, "purpose": str(jane["newsletter"].id)},
        headers={"User-Agent": "Jane's browser", "Origin": BASE, "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 200
    assert "Erledigt: Sie erhalten Newsletter per E-Mail nicht mehr." in answer.text
    event = await last_event(session, tenant.id)
    assert event.trigger == "unsubscribe"
    assert event.to_state == "opted_out"
    assert event.purpose_id == jane["newsletter"].id
    assert event.contact_point_id == jane["email"].id
    assert event.actor_type == "subject"
    assert event.personal["evidence"]["preference_link_id"] == str(link.id)
    assert event.personal["evidence"]["ip"] == "203.0.113.7"
    assert event.personal["evidence"]["user_agent"] == "Jane's browser"
    assert event.personal["evidence"]["source"] == "preference_centre"
    newsletter = await eligibility(client, tenant, jane["contact_id"], "email", "newsletter")
    assert newsletter["eligible"] is False
    assert newsletter["reason"] == "opted_out"
    assert (await eligibility(client, tenant, jane["contact_id"], "email", "offers"))["eligible"] is True
    sms = await eligibility(client, tenant, jane["contact_id"], "sms", "newsletter")
    assert sms["reason"] in {"opted_in", "outside_send_window"}, "SMS untouched (quiet hours aside)"
    count = await event_count(session)
    again = await client.post(path, data={**form, "purpose": str(jane["newsletter"].id)})
    assert again.status_code == 200
    assert await event_count(session) == count, "a repeated click records nothing new"


async def test_objecting_to_print_makes_print_objected(client, tenant, jane, session):
    assert (await eligibility(client, tenant, jane["contact_id"], "print", "newsletter"))["eligible"] is True
    path = await link_of(client, tenant, jane["contact_id"])
    token = form_token((await client.get(path)).text)
    answer = await client.post(path, data={"action": "object_print", "form_token": token})
    assert answer.status_code == 200
    assert "Widerspruch gegen Werbung per Post ist eingetragen" in answer.text
    decision = await eligibility(client, tenant, jane["contact_id"], "print", "newsletter")
    assert decision["eligible"] is False
    assert decision["reason"] == "objected"
    event = await last_event(session, tenant.id)
    assert (event.channel, event.trigger, event.actor_type) == ("print", "objection", "subject")
    assert event.personal["evidence"]["kind"] == "art21"
    assert "Werbung per Post widersprechen" not in answer.text, "the page shows the objection"


async def test_nothing_at_all_withdraws_every_channel_and_objects_to_print(client, tenant, jane):
    path = await link_of(client, tenant, jane["contact_id"])
    token = form_token((await client.get(path)).text)
    answer = await client.post(path, data={"action": "withdraw_all", "form_token": token})
    assert answer.status_code == 200
    for channel, purpose in [("email", "newsletter"), ("email", "offers"), ("sms", "newsletter"), ("print", "offers")]:
        decision = await eligibility(client, tenant, jane["contact_id"], channel, purpose)
        assert decision["eligible"] is False, (channel, purpose)


async def test_an_erasure_deletes_the_contacts_links(client, tenant, admin, jane, session):
    path = await link_of(client, tenant, jane["contact_id"])
    erased = await client.delete(f"/v1/contacts/{jane['contact_id']}", headers=admin)
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["preference_links"] == 1
    assert await session.scalar(select(func.count()).select_from(PreferenceLink)) == 0
    assert (await client.get(path)).status_code == 404


async def last_event(session, workspace_id):
    """The workspace's newest ledger event (``seq`` counts per workspace: other tests' workspaces have their own)."""
    return await session.scalar(
        select(ConsentEvent).where(ConsentEvent.workspace_id == workspace_id).order_by(ConsentEvent.seq.desc()).limit(1)
    )


async def test_the_page_fits_what_the_person_has(client, tenant, jane):
    """Newcomer review: an objected postal address offers no pause; some addresses paused reads "partly paused";
    without a postal address "nothing at all" does not speak of post; a never-received purpose is "opted in to"."""
    path = await link_of(client, tenant, jane["contact_id"])
    page = (await client.get(path)).text
    assert "Wie lange Werbung per Post" in page
    assert "und widerspricht Werbung per Post" in page, "a postal address is known"
    token = form_token(page)
    await client.post(path, data={"action": "object_print", "form_token": token})
    pause = {"action": "pause", "point": str(jane["sms"].id), "weeks": "4", "form_token": token}
    after = (await client.post(path, data=pause)).text
    assert "Wie lange Werbung per Post" not in after, "objected: nothing to pause"
    assert "Teilweise pausiert." in after


async def test_without_a_postal_address_nothing_at_all_does_not_speak_of_post(client, tenant, ledger, jane):
    john = await ledger.point("email", "john@example.com")
    await ledger.apply(john, jane["newsletter"].id, "signup", "confirm")
    page = (await client.get(await link_of(client, tenant, john.contact_id))).text
    assert "Ein Klick widerruft jede Werbeeinwilligung auf jedem Kanal. Nachrichten" in page
    assert "Werbung per Post" not in page


class TestAChangeRacingARealMerge:
    """On a database of the class's own, where the merge really commits in another transaction."""

    @pytest.fixture
    async def own_engine(self, pg_server):
        async with own_database(pg_server) as own:
            yield own

    @pytest.fixture
    def database(self, own_engine):
        return Database(own_engine, async_sessionmaker(own_engine, expire_on_commit=False))

    async def test_a_withdrawal_refused_by_a_merge_committed_meanwhile_is_taken_again(
        self, client, tenant, ledger, database, monkeypatch
    ):
        """The hostile review of 2026-12-06: the person's click answered 409 JSON when a merge of the contact
        committed in its transaction; it is taken again and answers the page."""
        from app.domain.model import ActorType  # noqa: PLC0415
        from app.ledger import merge as merging  # noqa: PLC0415
        from app.ledger.service import Actor  # noqa: PLC0415

        news = await ledger.purpose("newsletter")
        email = await ledger.point("email", "jane@example.com", external_id="crm-1")
        await ledger.apply(email, news.id, "signup", "confirm")
        survivor = await ledger.point("email", "other@example.com", external_id="crm-2")
        path = await link_of(client, tenant, email.contact_id)
        token = form_token((await client.get(path)).text)
        real = service.withdraw_point
        calls = []

        async def merged_first(session, workspace_id, point, **kwargs):
            calls.append(point.contact_id)
            if len(calls) == 1:
                async with database.sessionmaker() as db, db.begin():
                    await merging.merge(
                        db,
                        workspace_id,
                        survivor_ref=str(survivor.contact_id),
                        duplicate_ref=str(point.contact_id),
                        evidence={},
                        actor=Actor(ActorType.SYSTEM),
                    )
            return await real(session, workspace_id, point, **kwargs)

        monkeypatch.setattr(service, "withdraw_point", merged_first)
        answer = await client.post(
            path,
            data={"action": "withdraw", "form_token": token, "point": str(email.id), "purpose": str(news.id)},
            headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert calls == [email.contact_id, survivor.contact_id]
        async with database.sessionmaker() as db:
            withdrawn = await db.scalar(
                select(func.count())
                .select_from(ConsentEvent)
                .where(ConsentEvent.contact_id == survivor.contact_id, ConsentEvent.to_state == "opted_out")
            )
        assert withdrawn == 1
