"""Pauses (issue 17): "pause all marketing for 1 / 4 / 12 weeks" on the preference centre.

A pause is a suppression with an end: the send gate, eligibility (route, hot path, batch), the audience export and
the dispatcher respect it until its end and by themselves no longer after; transactional messages go on. Pausing
and ending a pause are ledger events by the person with the page's evidence.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from app.eligibility import service as eligibility_service
from app.ledger.models import Consent, ConsentEvent, Suppression
from app.lib.auth import Scope
from app.messages import repository as messages_repository
from app.preferences.models import PreferenceLink
from tests.integration import test_messages

# the dispatcher's fixtures: local servers speaking the providers' protocols; Jane opted in by SMS and email
providers = test_messages.providers
settings = test_messages.settings
world = test_messages.world
adapters = test_messages.adapters
dispatcher = test_messages.dispatcher
send = test_messages.send
detail = test_messages.detail

BASE = "https://consent.example.com"
WEEK = timedelta(weeks=1)


@pytest.fixture
async def page(client, world):
    """Jane's preference page: its path, and a poster of its forms with the page's own form token."""
    answer = await client.post(f"/v1/contacts/{world['sms'].contact_id}/preference-link", headers=world["writer"])
    assert answer.status_code == 201, answer.text
    path = answer.json()["url"].removeprefix(BASE)
    html = (await client.get(path)).text
    token = re.search(r'name="form_token" value="([0-9a-f]+)"', html)
    assert token is not None

    async def post(action, lang="de", headers=None, **fields):
        data = {"action": action, "form_token": token.group(1), **fields}
        return await client.post(path, params={"lang": lang}, data=data, headers=headers or {})

    return {"path": path, "post": post}


async def eligibility(client, tenant, channel, purpose="newsletter", contact="jane", **extra):
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    query = {"contact": contact, "channel": channel, "purpose": purpose, **extra}
    answer = await client.get("/v1/eligibility", params=query, headers=reader)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def events(session, workspace_id, trigger):
    return (
        await session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.workspace_id == workspace_id, ConsentEvent.trigger == trigger)
            .order_by(ConsentEvent.seq)
        )
    ).all()


async def test_a_paused_address_is_answered_paused_with_its_end_on_every_path(client, tenant, world, page):
    before = datetime.now(UTC)
    answer = await page["post"]("pause", point=str(world["sms"].id), weeks="4")
    assert answer.status_code == 200, answer.text
    assert "Erledigt: Werbung per SMS ist bis" in answer.text

    fast = await eligibility(client, tenant, "sms")
    routed = await eligibility(client, tenant, "sms", via="route")  # an extra parameter: the regular route
    for body in (fast, routed):
        assert (body["eligible"], body["reason"]) == (False, "paused")
        until = datetime.fromisoformat(body["paused_until"])
        assert before + 4 * WEEK <= until <= datetime.now(UTC) + 4 * WEEK
        assert [p["reason"] for p in body["contact_points"]] == ["paused"]
    assert {k: v for k, v in fast.items() if k != "decided_at"} == {
        k: v for k, v in routed.items() if k != "decided_at"
    }

    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    batch = await client.post(
        "/v1/eligibility/batch",
        json={"contacts": ["jane"], "channels": ["sms", "email"], "purpose": "newsletter"},
        headers=reader,
    )
    sms, email = batch.json()["decisions"]
    assert (sms["eligible"], sms["reason"], sms["paused_until"]) == (False, "paused", fast["paused_until"])
    assert (email["eligible"], email["reason"], email["paused_until"]) == (True, "opted_in", None)

    mail = await eligibility(client, tenant, "email")
    assert (mail["eligible"], mail["paused_until"]) == (True, None), "only the SMS address is paused"


async def test_the_page_shows_the_pause_and_its_end_in_words(client, tenant, world, page):
    plain = (await client.get(page["path"])).text
    assert "Eine Pause einlegen" in plain
    assert '<label for="weeks-2">Wie lange Werbung per SMS (+49' in plain, "every control names its channel"
    assert "Werbung auf allen Kanälen pausieren" in plain
    await page["post"]("pause", point="all", weeks="12")
    body = await eligibility(client, tenant, "email")
    end = datetime.fromisoformat(body["paused_until"]).astimezone(ZoneInfo("Europe/Berlin"))
    german = (await client.get(page["path"], params={"lang": "de"})).text
    months = {1: "Januar", 2: "Februar", 3: "März", 4: "April", 5: "Mai", 6: "Juni", 7: "Juli", 8: "August"}
    months |= {9: "September", 10: "Oktober", 11: "November", 12: "Dezember"}
    assert f"Pausiert bis {end.day}. {months[end.month]} {end.year}." in german
    assert "Pause der Werbung per E-Mail (j***@example.com) jetzt beenden" in german
    english = (await client.get(page["path"], params={"lang": "en"})).text
    assert f"Paused until {end.day} {end.strftime('%B')} {end.year}." in english
    assert "End the pause of advertising on all channels now" in english
    assert "Pause advertising by email" not in english, "a paused address offers the end, not another pause"


async def test_pausing_and_ending_are_ledger_events_by_the_person_with_evidence(client, tenant, world, page, session):
    link_id = str((await session.scalar(select(PreferenceLink))).id)
    consent_before = await session.scalar(
        select(Consent).where(Consent.contact_point_id == world["sms"].id, Consent.purpose_id == world["newsletter"].id)
    )
    since, last_event = consent_before.since, consent_before.last_event_id
    headers = {"User-Agent": "Jane's phone", "Origin": BASE, "Sec-Fetch-Site": "same-origin"}
    assert (await page["post"]("pause", point=str(world["sms"].id), weeks="1", headers=headers)).status_code == 200

    [event] = await events(session, tenant.id, "pause")
    assert event.actor_type == "subject"
    assert event.contact_point_id == world["sms"].id
    assert event.purpose_id is None
    assert event.from_state == event.to_state, "a pause moves no consent"
    evidence = event.personal["evidence"]
    assert evidence["preference_link_id"] == link_id
    assert evidence["source"] == "preference_centre"
    assert evidence["method"] == "pause"
    assert evidence["ip"] == "203.0.113.7"
    assert evidence["user_agent"] == "Jane's phone"
    assert evidence["weeks"] == 1
    paused_until = (await eligibility(client, tenant, "sms"))["paused_until"]
    assert datetime.fromisoformat(evidence["paused_until"]) == datetime.fromisoformat(paused_until)

    consent_id = consent_before.id
    session.expire_all()
    consent = await session.scalar(select(Consent).where(Consent.id == consent_id))
    assert (consent.state, consent.since, consent.last_event_id) == ("opted_in", since, last_event)

    ended = await page["post"]("end_pause", lang="en", point=str(world["sms"].id), headers=headers)
    assert "Done: the pause of advertising by SMS has ended." in ended.text
    [end] = await events(session, tenant.id, "pause_ended")
    assert (end.actor_type, end.contact_point_id) == ("subject", world["sms"].id)
    assert end.personal["evidence"]["method"] == "end_pause"
    assert end.personal["evidence"]["preference_link_id"] == link_id
    assert (await eligibility(client, tenant, "sms"))["eligible"] is True

    again = await page["post"]("end_pause", lang="en", point=str(world["sms"].id))
    assert "Nothing changed: this was not paused." in again.text
    assert len(await events(session, tenant.id, "pause_ended")) == 1

    audit = await client.get("/v1/audit/verify", headers=await tenant.key(Scope.AUDIT_READ))
    assert audit.json()["valid"] is True, "the chain holds the pause events"


async def test_the_audience_export_leaves_a_paused_address_out_until_the_end(
    client, tenant, world, page, ledger, session
):
    other = await ledger.point("email", "john@example.com", external_id="john")
    await ledger.apply(other, world["newsletter"].id, "signup", "confirm")
    reader = await tenant.key(Scope.ELIGIBILITY_READ)

    async def audience():
        answer = await client.get("/v1/audiences", params={"purpose": "newsletter", "channel": "email"}, headers=reader)
        return sorted(json.loads(line)["address"] for line in answer.text.splitlines())

    assert await audience() == ["jane@example.com", "john@example.com"]
    await page["post"]("pause", point=str(world["email"].id), weeks="1")
    assert await audience() == ["john@example.com"]
    await session.execute(update(Suppression).values(until=datetime.now(UTC) - timedelta(seconds=1)))
    assert await audience() == ["jane@example.com", "john@example.com"], "over: nothing had to be swept"


async def test_a_marketing_send_is_refused_and_a_queued_one_blocked_at_send(client, world, page, providers, dispatcher):
    queued = (await send(client, world, ["sms"])).json()
    assert queued["status"] == "queued"
    await page["post"]("pause", point=str(world["sms"].id), weeks="4")

    await dispatcher.run_once()
    assert providers["twilio"].requests == []
    shown = await detail(client, world, queued["message_id"])
    assert shown["status"] == "blocked_at_send"
    assert shown["history"][-1]["error"] == "paused"

    refused = (await send(client, world, ["sms"])).json()
    assert refused["status"] == "no_eligible_channel"
    assert refused["decision"]["skipped"] == [{"channel": "sms", "reason": "paused"}]
    fallback = (await send(client, world, ["sms", "email"])).json()
    assert fallback["decision"]["channel"] == "email", "the other channel is not paused"


async def test_transactional_messages_are_not_paused(client, tenant, world, page, providers, dispatcher):
    await page["post"]("pause", point="all", weeks="12")
    assert (await eligibility(client, tenant, "email"))["reason"] == "paused"
    orders = await eligibility(client, tenant, "email", purpose="orders")
    assert (orders["eligible"], orders["reason"], orders["paused_until"]) == (True, "transactional", None)
    body = (await send(client, world, ["email"], purpose="orders")).json()
    assert body["status"] == "queued"
    await dispatcher.run_once()
    assert len(providers["inbox"].messages) == 1


async def test_a_pause_ends_by_itself(client, tenant, world, page, providers, dispatcher, monkeypatch):
    queued = (await send(client, world, ["sms"])).json()
    assert queued["status"] == "queued"
    await page["post"]("pause", point=str(world["sms"].id), weeks="1")
    assert (await eligibility(client, tenant, "sms"))["reason"] == "paused"

    later = datetime.now(UTC) + WEEK + timedelta(minutes=1)
    monkeypatch.setattr(eligibility_service, "utcnow", lambda: later)
    after = await eligibility(client, tenant, "sms")
    assert (after["eligible"], after["reason"], after["paused_until"]) == (True, "opted_in", None)

    async def a_week_later(_driver):
        return later

    monkeypatch.setattr(messages_repository, "database_now", a_week_later)  # the gate's moment at send time
    assert await dispatcher.run_once() == 1
    assert len(providers["twilio"].requests) == 1
    assert (await detail(client, world, queued["message_id"]))["status"] == "sent"


async def test_pausing_again_sets_the_new_end_and_end_pause_of_all_ends_every_pause(
    client, tenant, world, page, session
):
    await page["post"]("pause", point=str(world["sms"].id), weeks="1")
    first = datetime.fromisoformat((await eligibility(client, tenant, "sms"))["paused_until"])
    await page["post"]("pause", point="all", weeks="12")
    sms = datetime.fromisoformat((await eligibility(client, tenant, "sms"))["paused_until"])
    assert sms - first > 10 * WEEK, "the latest choice holds"
    assert (await eligibility(client, tenant, "email"))["reason"] == "paused"
    assert len(await events(session, tenant.id, "pause")) == 3, "one event per address and pause"

    ended = await page["post"]("end_pause", lang="en", point="all")
    assert "Done: the pause of all advertising has ended." in ended.text
    assert len(await events(session, tenant.id, "pause_ended")) == 2
    for channel in ("sms", "email"):
        assert (await eligibility(client, tenant, channel))["eligible"] is True
    assert await session.scalar(select(Suppression).where(Suppression.until.is_not(None))) is None


async def test_an_objection_during_a_pause_outlasts_it(client, tenant, world, page, session):
    await page["post"]("pause", point=str(world["email"].id), weeks="1")
    objection = {"contact": "jane", "scope": "all_marketing", "kind": "art21"}
    assert (await client.post("/v1/objections", json=objection, headers=world["writer"])).status_code == 201
    [row] = (await session.scalars(select(Suppression).where(Suppression.channel == "email"))).all()
    assert (row.reason, row.until) == ("objection_art21", None), "the pause became the permanent suppression"
    await page["post"]("end_pause", point=str(world["email"].id))
    after = await eligibility(client, tenant, "email")
    assert (after["eligible"], after["paused_until"]) == (False, None)
    assert after["reason"] != "paused"
    assert await session.scalar(select(Suppression).where(Suppression.channel == "email")) is not None


async def test_a_pause_stays_with_its_contact(client, tenant, world, page, ledger, session):
    john = await ledger.point("email", "john@example.com", external_id="john")
    await ledger.apply(john, world["newsletter"].id, "signup", "confirm")
    await page["post"]("pause", point="all", weeks="4")
    assert (await eligibility(client, tenant, "email", contact="john"))["eligible"] is True

    before = len(await events(session, tenant.id, "pause"))
    tampered = await page["post"]("pause", point=str(john.id), weeks="4")
    assert tampered.status_code == 403
    assert (await page["post"]("end_pause", point=str(john.id))).status_code == 403
    assert len(await events(session, tenant.id, "pause")) == before
    assert (await eligibility(client, tenant, "email", contact="john"))["eligible"] is True


@pytest.mark.parametrize("weeks", ["3", "0", "", "four", "-1", "1" * 400])
async def test_only_1_4_or_12_weeks(client, tenant, world, page, session, weeks):
    answer = await page["post"]("pause", point=str(world["sms"].id), weeks=weeks)
    assert answer.status_code == 400
    assert "Das Formular ist unvollständig" in answer.text
    assert await session.scalar(select(Suppression)) is None
    assert await events(session, tenant.id, "pause") == []


async def test_a_forged_pause_is_refused(client, tenant, world, page, session):
    path = page["path"]
    forged = {"action": "pause", "point": "all", "weeks": "12", "form_token": "0" * 64}
    assert (await client.post(path, data=forged)).status_code == 403
    cross_site = await page["post"]("pause", point="all", weeks="12", headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403
    assert await session.scalar(select(Suppression)) is None
    assert (await eligibility(client, tenant, "email"))["eligible"] is True


async def test_the_subject_access_export_says_when_a_pause_ends(client, admin, world, page):
    """Newcomer review: the export listed a pause without its end."""
    assert (await page["post"]("pause", point=str(world["sms"].id), weeks="4")).status_code == 200
    export = (await client.get(f"/v1/contacts/{world['sms'].contact_id}/export", headers=admin)).json()
    [sms] = [p for p in export["contact_points"] if p["channel"] == "sms"]
    [pause] = sms["suppressions"]
    assert pause["reason"] == "paused"
    ends = datetime.fromisoformat(pause["until"]) - datetime.now(UTC)
    assert timedelta(days=27) < ends <= timedelta(weeks=4)
