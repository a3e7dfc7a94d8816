"""Recycled phone numbers (issue 19 item 5): the former owner's consents end, the new owner starts afresh.

`POST /v1/contacts/{contact}/reassigned-numbers`, the import's `reassigned_at` column, and Twilio's error codes of
a number that cannot receive (send answer and signed status callback) against the local Twilio stand-in.
"""

# ruff: noqa: F811  # the fixtures imported from test_messages are parameters of the tests

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from twilio.base.exceptions import TwilioRestException

from app.ledger.models import ConsentEvent, ContactPoint, Suppression
from app.lib.auth import Scope
from app.lib.orm import utcnow
from channel_providers.base import Outcome
from channel_providers.twilio import _mapped
from tests.conftest import consent_cli
from tests.integration import test_messages
from tests.integration.test_messages import (  # the provider stand-ins and Jane, opted in by SMS and email
    adapters,  # noqa: F401  # fixture
    dispatcher,  # noqa: F401  # fixture
    providers,  # noqa: F401  # fixture
    settings,  # noqa: F401  # fixture
    world,  # noqa: F401  # fixture
)
from tests.integration.test_twilio import ACCOUNT, PERSON, SENDER, Phone, sid
from tests.integration.test_twilio import configured as configured  # noqa: PLC0414  # a fixture, re-exported

PATH = "/v1/contacts/{}/reassigned-numbers"


@pytest.fixture
def phone(client, tenant):
    return Phone(client, tenant.id)


async def events(session, **where):
    query = select(func.count()).select_from(ConsentEvent)
    for name, value in where.items():
        query = query.where(getattr(ConsentEvent, name) == value)
    return await session.scalar(query)


async def consents(client, tenant, contact):
    body = (await client.get(f"/v1/contacts/{contact}", headers=await tenant.key(Scope.AUDIT_READ))).json()
    return {
        p["channel"]: {"reachability": p["reachability"], **{c["purpose"]: c["state"] for c in p["consents"]}}
        for p in body["contact_points"]
    }


async def suppressions(session, tenant):
    """How many suppressions the test's workspace holds (a full run's database holds other workspaces' too)."""
    query = select(func.count()).select_from(Suppression).where(Suppression.workspace_id == tenant.id)
    return await session.scalar(query)


async def holder(session, tenant, channel):
    """The contact that holds the number on ``channel`` now (after a report: the new owner's, not the former's)."""
    session.expire_all()
    point = await session.scalar(
        select(ContactPoint).where(
            ContactPoint.workspace_id == tenant.id, ContactPoint.channel == channel, ContactPoint.value == PERSON
        )
    )
    return str(point.contact_id)


async def report(client, tenant, contact, number, when, **extra):
    body = {"number": number, "reassigned_at": when.isoformat(), **extra}
    return await client.post(PATH.format(contact), json=body, headers=await tenant.key(Scope.CONSENTS_WRITE))


@pytest.fixture
async def holders(tenant, ledger):
    """Anna holds the number for SMS, Ben for WhatsApp; both opted in to the newsletter (and Anna to offers)."""
    newsletter = await ledger.purpose("newsletter")
    offers = await ledger.purpose("offers")
    sms = await ledger.point("sms", PERSON, external_id="anna")
    whatsapp = await ledger.point("whatsapp", PERSON, external_id="ben")
    await ledger.apply(sms, newsletter.id, "signup", "start_word")
    await ledger.apply(sms, offers.id, "signup")  # asked, never confirmed: pending
    await ledger.apply(whatsapp, newsletter.id, "signup", "start_word")
    return {"sms": sms, "whatsapp": whatsapp, "newsletter": newsletter, "offers": offers}


async def test_every_holder_of_the_number_loses_the_consents_given_before_the_date(client, tenant, holders, session):
    response = await report(client, tenant, "anna", "0151 23456789", utcnow(), evidence={"ticket": "T-7"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["number"] == PERSON
    assert body["suppressions_lifted"] == 0
    ended = {(c["channel"], c["purpose"], c["from_state"], c["state"]) for c in body["changes"]}
    assert ended == {
        ("sms", "newsletter", "opted_in", "expired"),
        ("sms", "offers", "pending", "expired"),
        ("whatsapp", "newsletter", "opted_in", "expired"),  # Ben's: the number is reassigned for every holder
    }
    assert "sms" not in await consents(client, tenant, "anna"), "the former owner's contact loses the number"
    assert "whatsapp" not in await consents(client, tenant, "ben")
    new_owner = await holder(session, tenant, "sms")
    assert new_owner == await holder(session, tenant, "whatsapp"), "one new contact holds the number on both channels"
    moved = await consents(client, tenant, new_owner)
    assert (moved["sms"]["newsletter"], moved["sms"]["offers"], moved["whatsapp"]["newsletter"]) == ("expired",) * 3
    shown = (await client.get(f"/v1/contacts/{new_owner}", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert shown["external_id"] is None
    assert {p["verified_via"] for p in shown["contact_points"]} == {None}, "the new owner has proven nothing yet"
    recorded = (await session.scalars(select(ConsentEvent).where(ConsentEvent.trigger == "reassigned"))).all()
    assert len(recorded) == 3
    for event in recorded:
        assert event.actor_type == "api_key"
        assert event.legal_basis is None
        evidence = event.personal["evidence"]
        assert evidence["reassigned_at"] == body["reassigned_at"].replace("Z", "+00:00")
        assert evidence["ticket"] == "T-7"
        assert evidence["reported_for_contact"] == body["contact_id"]
    verified = (await client.get("/v1/audit/verify", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert verified["valid"] is True


async def test_consents_given_after_the_date_stay_and_a_repeat_records_nothing(
    client, tenant, holders, ledger, session
):
    reassigned_at = utcnow()
    await ledger.apply(holders["whatsapp"], holders["offers"].id, "signup", "start_word")  # the new owner's
    first = await report(client, tenant, "ben", PERSON, reassigned_at)
    assert first.status_code == 200, first.text
    assert len(first.json()["changes"]) == 3
    assert (await consents(client, tenant, await holder(session, tenant, "whatsapp")))["whatsapp"][
        "offers"
    ] == "opted_in"
    before = await events(session)
    again = await report(client, tenant, "ben", PERSON, reassigned_at)
    assert again.status_code == 200
    assert again.json()["changes"] == []
    assert await events(session) == before, "a repeated report records nothing"


async def test_a_withdrawal_of_the_former_owner_stays_and_binds_nobody_new(client, tenant, holders, ledger, session):
    await ledger.apply(holders["sms"], holders["newsletter"].id, "stop_word")
    response = await report(client, tenant, "anna", PERSON, utcnow())
    assert ("sms", "newsletter") not in {(c["channel"], c["purpose"]) for c in response.json()["changes"]}
    assert (await consents(client, tenant, await holder(session, tenant, "sms")))["sms"]["newsletter"] == "opted_out"


@pytest.mark.parametrize(
    ("contact", "body", "status", "code"),
    [
        ("nobody", {"number": PERSON}, 404, "contact_not_found"),
        ("anna", {"number": "12"}, 422, "invalid_phone_number"),
        ("anna", {"number": "+4915199999999"}, 422, "number_not_held"),
        ("anna", {"number": PERSON, "reassigned_at": "2026-01-01T00:00:00"}, 422, "timezone_required"),
        ("anna", {"number": PERSON, "reassigned_at": "2999-01-01T00:00:00Z"}, 422, "reassigned_at_in_future"),
        ("anna", {"number": PERSON, "reassigned_at": "0001-01-01T00:00:00+14:00"}, 422, "invalid_reassigned_at"),
    ],
)
async def test_bad_reports_are_refused_and_change_nothing(
    client, tenant, holders, session, contact, body, status, code
):
    before = await events(session)
    payload = {"reassigned_at": utcnow().isoformat(), **body}
    response = await client.post(PATH.format(contact), json=payload, headers=await tenant.key(Scope.CONSENTS_WRITE))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert await events(session) == before


async def test_reporting_needs_consents_write_and_stays_in_its_workspace(client, tenant, other_tenant, holders):
    body = {"number": PERSON, "reassigned_at": utcnow().isoformat()}
    read_only = await client.post(PATH.format("anna"), json=body, headers=await tenant.key(Scope.AUDIT_READ))
    assert read_only.status_code == 403
    foreign = await client.post(PATH.format("anna"), json=body, headers=await other_tenant.key(Scope.CONSENTS_WRITE))
    assert foreign.status_code == 404


async def test_the_same_idempotency_key_answers_the_first_answer(client, tenant, holders, session):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    body = {"number": PERSON, "reassigned_at": utcnow().isoformat()}
    headers = {**key, "Idempotency-Key": "reassigned-1"}
    first = await client.post(PATH.format("anna"), json=body, headers=headers)
    count = await events(session)
    second = await client.post(PATH.format("anna"), json=body, headers=headers)
    assert second.status_code == 200
    assert second.headers.get("idempotent-replayed") == "true"
    assert second.json() == first.json()
    assert await events(session) == count


async def _eligibility(client, tenant, contact):
    response = await client.get(
        f"/v1/eligibility?contact={contact}&channel=sms&purpose=newsletter",
        headers=await tenant.key(Scope.ELIGIBILITY_READ),
    )
    return response.json()


@pytest.fixture
async def keyword_only(client, admin, configured):
    """The workspace takes a start word without a signup, and sends at any hour."""
    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    current["phone"]["keyword_only_opt_in"] = True
    current["phone"]["default_purpose"] = "newsletter"
    current["send_windows"] = {}
    current["twilio"] = {"account_sid": ACCOUNT}
    assert (await client.put("/v1/workspace/settings", json=current, headers=admin)).status_code == 200
    return configured


async def test_the_former_owners_suppression_goes_so_the_new_owner_can_text_start(
    client, tenant, keyword_only, ledger, phone, session
):
    await ledger.point("sms", PERSON, external_id="anna")
    objection = await client.post(
        "/v1/objections",
        json={"contact": "anna", "scope": "all_marketing", "kind": "art21"},
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert objection.status_code == 201, objection.text
    assert await suppressions(session, tenant) > 0
    response = await report(client, tenant, "anna", PERSON, utcnow(), evidence={"agent_id": "desk-3"})
    assert response.status_code == 200, response.text
    assert response.json()["suppressions_lifted"] > 0
    assert await suppressions(session, tenant) == 0
    # no consent was left to end (the objection ended it): the lift is noted in the ledger all the same
    [note] = response.json()["changes"]
    assert (note["channel"], note["from_state"], note["state"]) == ("sms", "opted_out", "opted_out")
    before = await events(session)
    assert (await report(client, tenant, "anna", PERSON, utcnow())).json()["changes"] == []
    assert await events(session) == before

    await phone.text("START")  # the new owner
    decision = await _eligibility(client, tenant, await holder(session, tenant, "sms"))
    assert decision["eligible"] is True, decision
    assert decision["reason"] == "opted_in"
    former = await _eligibility(client, tenant, "anna")
    assert (former["eligible"], former["reason"]) == (False, "no_contact_point"), "the START is not Anna's"


async def test_a_suppression_made_after_the_date_stays(client, tenant, keyword_only, ledger, session):
    # a day before: the test's database clock stands at the start of its transaction (created_at = now())
    reassigned_at = utcnow() - timedelta(days=1)
    await ledger.point("sms", PERSON, external_id="anna")
    await client.post(
        "/v1/objections",
        json={"contact": "anna", "scope": "all_marketing", "kind": "art21"},
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    kept = await suppressions(session, tenant)
    response = await report(client, tenant, "anna", PERSON, reassigned_at)
    assert response.json()["suppressions_lifted"] == 0
    assert await suppressions(session, tenant) == kept


async def test_twilio_start_lifts_its_block_and_a_campaign_word_does_not(client, tenant, keyword_only, ledger, phone):
    from app.ledger import repository  # noqa: PLC0415

    sms = await ledger.point("sms", PERSON, external_id="anna")
    async with ledger.database.sessionmaker() as db, db.begin():
        await repository.set_reachability(db, sms.id, "provider_blocked", utcnow())
    await phone.text("NEWS")  # the workspace's start word, not Twilio's: Twilio's block holds
    assert (await consents(client, tenant, "anna"))["sms"]["reachability"] == "provider_blocked"
    await phone.text("start")
    assert (await consents(client, tenant, "anna"))["sms"]["reachability"] == "reachable"
    assert (await _eligibility(client, tenant, "anna"))["eligible"] is True


async def test_an_undeliverable_number_that_texts_us_is_reachable_again(client, tenant, keyword_only, ledger, phone):
    from app.ledger import repository  # noqa: PLC0415

    sms = await ledger.point("sms", PERSON, external_id="anna")
    async with ledger.database.sessionmaker() as db, db.begin():
        await repository.set_reachability(db, sms.id, "undeliverable", utcnow())
    await phone.text("NEWS")
    assert (await consents(client, tenant, "anna"))["sms"]["reachability"] == "reachable"


async def _status(phone, code, *, to=PERSON, status="undelivered", whatsapp=False, message_sid=None):
    params = {
        "MessageSid": message_sid or sid(),
        "MessageStatus": status,
        "AccountSid": ACCOUNT,
        "To": f"whatsapp:{to}" if whatsapp else to,
        "From": f"whatsapp:{SENDER}" if whatsapp else SENDER,
        "ErrorCode": code,
    }
    response = await phone.post(params, kind="status")
    assert response.status_code == 204, response.text


@pytest.mark.parametrize(
    ("code", "whatsapp", "reachability"),
    [
        ("30005", False, "undeliverable"),  # unknown handset: the number is no longer in service
        ("30006", False, "undeliverable"),  # landline or unreachable carrier
        ("21614", False, "undeliverable"),  # not a mobile number
        ("63024", True, "undeliverable"),  # not a WhatsApp user
        ("30003", False, "reachable"),  # handset off or out of coverage: it passes
        ("30007", False, "reachable"),  # carrier filtering: the message, not the number
    ],
)
async def test_a_status_callback_marks_a_number_that_cannot_receive(
    client, tenant, configured, ledger, phone, code, whatsapp, reachability
):
    channel = "whatsapp" if whatsapp else "sms"
    point = await ledger.point(channel, PERSON, external_id="anna")
    await ledger.apply(point, configured["purpose"].id, "signup", "start_word")
    await _status(phone, code, whatsapp=whatsapp)
    shown = (await consents(client, tenant, "anna"))[channel]
    assert shown["reachability"] == reachability
    assert shown["newsletter"] == "opted_in", "the consent stays: no one withdrew it"


async def test_a_late_unreachable_report_does_not_turn_twilios_block_into_undeliverable(
    client, tenant, configured, keyword_only, ledger, phone
):
    """Hostile review of 2026-12-05: a 30005 of an earlier message, reported after a 21610, left the number
    ``undeliverable``, which any text from it clears, while Twilio still refuses sends until START."""
    point = await ledger.point("sms", PERSON, external_id="anna")
    await ledger.apply(point, configured["purpose"].id, "signup", "start_word")
    await _status(phone, "21610", status="failed")  # Twilio: the number texted STOP to Twilio
    assert (await consents(client, tenant, "anna"))["sms"]["reachability"] == "provider_blocked"
    await _status(phone, "30005")  # an earlier message's failure, reported late
    assert (await consents(client, tenant, "anna"))["sms"]["reachability"] == "provider_blocked"
    await phone.text("Hello?")  # not Twilio's START: its block holds
    assert (await consents(client, tenant, "anna"))["sms"]["reachability"] == "provider_blocked"
    await phone.text("START")
    assert (await consents(client, tenant, "anna"))["sms"]["reachability"] == "reachable"


async def _sent_sms(database, tenant, point, purpose_id, at) -> str:
    """A message of ours to ``point`` that Twilio took at ``at``: its MessageSid."""
    from app.messages import repository as messages  # noqa: PLC0415
    from app.messages.status import DeliveryStatus, Step  # noqa: PLC0415

    message_sid = sid()
    async with database.sessionmaker() as db, db.begin():
        message = await messages.add_message(
            db, tenant.id, contact_id=point.contact_id, purpose_id=purpose_id, strategy="first_eligible",
            route=["sms"], content={}, decision={}, status="queued", send_at=None,
        )  # fmt: skip
        delivery = await messages.add_delivery(
            db, tenant.id, message.id, channel="sms", contact_point_id=point.id, status=DeliveryStatus.SENT,
            next_attempt_at=at, at=at,
        )  # fmt: skip
        messages.add_event(db, tenant.id, message.id, delivery.id, "sms", Step.SENT, at=at)
        await messages.write_staged(db)
        await db.execute(
            text("UPDATE deliveries SET provider_message_id = :sid WHERE id = :d"),
            {"sid": message_sid, "d": delivery.id},
        )
    return message_sid


async def test_a_late_block_report_of_a_message_sent_before_start_neither_blocks_nor_withdraws(
    client, tenant, configured, keyword_only, ledger, phone, database, session
):
    """Hostile review of 2026-12-05: after START, a late 21610 of an earlier message blocked the number again and
    recorded a withdrawal nobody made."""
    point = await ledger.point("sms", PERSON, external_id="anna")
    purpose_id = configured["purpose"].id
    await ledger.apply(point, purpose_id, "signup", "start_word")
    earlier = await _sent_sms(database, tenant, point, purpose_id, utcnow() - timedelta(minutes=10))
    await _status(phone, "21610", status="failed")  # Twilio blocks the number: the person texted STOP to Twilio
    await phone.text("START")

    async def shown() -> tuple[str, str]:
        sms = (await consents(client, tenant, "anna"))["sms"]
        return sms["reachability"], sms["newsletter"]

    assert await shown() == ("reachable", "opted_in")
    blocks = (
        select(func.count())
        .select_from(ConsentEvent)
        .where(ConsentEvent.contact_point_id == point.id, ConsentEvent.trigger == "provider_block")
    )
    before = await session.scalar(blocks)

    await _status(phone, "21610", status="failed", message_sid=earlier)  # sent before START, reported late
    await _status(phone, "30005", message_sid=earlier)
    assert await shown() == ("reachable", "opted_in")
    assert await session.scalar(blocks) == before

    later = await _sent_sms(database, tenant, point, purpose_id, utcnow() + timedelta(seconds=1))
    await _status(phone, "21610", status="failed", message_sid=later)  # a message after START: Twilio blocks again
    assert (await consents(client, tenant, "anna"))["sms"]["reachability"] == "provider_blocked"
    assert await session.scalar(blocks) > before


@pytest.mark.parametrize(
    ("code", "reachability"), [(21211, "undeliverable"), (21614, "undeliverable"), (21617, "reachable")]
)
async def test_a_send_refused_for_the_number_marks_it_undeliverable(
    client, admin, world, providers, dispatcher, code, reachability
):
    providers["twilio"].replies = [(400, {"code": code, "message": "refused", "status": 400})]
    body = (await test_messages.send(client, world, ["sms"])).json()
    await dispatcher.run_once()
    shown = await test_messages.detail(client, world, body["message_id"])
    assert shown["status"] == "failed"
    contact = (await client.get("/v1/contacts/jane", headers=admin)).json()
    [sms] = [p for p in contact["contact_points"] if p["channel"] == "sms"]
    assert sms["reachability"] == reachability
    assert {c["purpose"]: c["state"] for c in sms["consents"]}["newsletter"] == "opted_in"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(21610, Outcome.BLOCKED), (21211, Outcome.GONE), (63024, Outcome.GONE), (21617, Outcome.PERMANENT)],
)
def test_the_adapter_names_a_number_that_cannot_receive_gone(code, outcome):
    result = _mapped(TwilioRestException(400, "https://api.twilio.com/x", msg="refused", code=code))
    assert (result.outcome, result.error_code) == (outcome, str(code))


CSV_HEAD = "contact,channel,address,purpose,state,captured_at,source,notice_text,reassigned_at\n"


async def _import(client, tenant, text):
    response = await client.post(
        "/v1/imports/consents",
        content=io.BytesIO(text.encode()).getvalue(),
        headers={**await tenant.key(Scope.CONSENTS_WRITE), "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_import_column_ends_the_former_owners_consents(client, tenant, holders, session):
    when = utcnow()
    old = (when - timedelta(days=400)).isoformat()
    new = when.isoformat()
    text = (
        CSV_HEAD
        + f"anna,sms,{PERSON},newsletter,opted_in,{old},crm,Ja,{when.isoformat()}\n"
        + f"anna,email,anna@example.com,newsletter,opted_in,{new},crm,Ja,{when.isoformat()}\n"
    )
    report = await _import(client, tenant, text)
    problems = {p["line"]: p["code"] for p in report["problems"]}
    assert problems == {2: "before_reassignment", 3: "invalid_reassigned_at"}
    assert (await consents(client, tenant, "anna"))["sms"]["newsletter"] == "expired"
    assert (await consents(client, tenant, "ben"))["whatsapp"]["newsletter"] == "expired"
    assert await events(session, trigger="reassigned") == 3
    before = await events(session)
    await _import(client, tenant, text)
    assert await events(session) == before, "importing the file again records nothing"


async def test_an_imported_opt_in_after_the_date_is_the_new_owners(client, tenant, holders, session):
    when = utcnow() - timedelta(minutes=1)
    text = CSV_HEAD + f"anna,sms,{PERSON},newsletter,opted_in,{utcnow().isoformat()},crm,Ja,{when.isoformat()}\n"
    report = await _import(client, tenant, text)
    assert report["recorded"] == 1, report
    assert (await consents(client, tenant, "anna"))["sms"]["newsletter"] == "opted_in"
    point = await session.scalar(select(ContactPoint).where(ContactPoint.channel == "sms"))
    assert point is not None


async def test_an_import_line_refused_changes_nothing(client, tenant, holders, session):
    when = utcnow().isoformat()
    ahead = (utcnow() + timedelta(days=1)).isoformat()
    text = (
        CSV_HEAD
        + f"anna,sms,{PERSON},no-such-purpose,opted_out,{when},crm,,{when}\n"  # refused: its number stays as it is
        + f"anna,sms,{PERSON},newsletter,opted_out,{when},crm,,{ahead}\n"  # a date in the future
    )
    report = await _import(client, tenant, text)
    assert {p["line"]: p["code"] for p in report["problems"]} == {2: "purpose_not_found", 3: "invalid_reassigned_at"}
    assert await events(session, trigger="reassigned") == 0
    assert (await consents(client, tenant, "anna"))["sms"]["newsletter"] == "opted_in"


@pytest.mark.slow
async def test_the_cli_import_reads_the_column(pg_server, tmp_path):
    url = await pg_server.create_database("consent_reassigned_cli", migrated=True)
    run = consent_cli(url)
    line = {  # a line that is right but for its reassigned_at, which only a number may have
        "contact": "crm-1",
        "channel": "print",
        "postal_address": {"name": "Anna Roe", "street": "Schulstr. 1", "postcode": "10115", "city": "Berlin"},
        "state": "objected",
        "captured_at": "2024-01-01T00:00:00Z",
        "source": "letter",
        "reassigned_at": "2025-01-01T00:00:00Z",
    }
    try:
        assert run("migrate").returncode == 0
        workspace = json.loads(run("workspace", "create", "Acme", "--json").stdout.strip().splitlines()[-1])
        lines = tmp_path / "consents.ndjson"
        lines.write_text(json.dumps(line) + "\n")
        result = run("import", "consents", "--workspace", workspace["id"], str(lines), "--json")
        assert result.returncode == 4, result.stderr  # the line was rejected
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert [p["code"] for p in report["problems"]] == ["invalid_reassigned_at"], "read, and refused for print"
    finally:
        await pg_server.drop_database(url)


async def test_each_ended_consent_is_a_consent_changed_webhook(client, admin, tenant, holders, session):
    from app.webhooks.models import WebhookDelivery  # noqa: PLC0415

    subscribed = await client.post(
        "/v1/webhook-subscriptions",
        json={"url": "https://crm.example.com/hooks", "events": ["consent.changed"]},
        headers=admin,
    )
    assert subscribed.status_code == 201, subscribed.text
    await report(client, tenant, "anna", PERSON, utcnow())
    payloads = (await session.scalars(select(WebhookDelivery.payload))).all()
    changed = [p["data"] for p in payloads if p["data"].get("trigger") == "reassigned"]
    assert sorted((d["channel"], d["to_state"]) for d in changed) == [
        ("sms", "expired"),
        ("sms", "expired"),
        ("whatsapp", "expired"),
    ]


async def test_a_no_said_on_the_number_since_the_date_is_the_new_owners_and_stays(client, tenant, ledger, session):
    """Hostile review: the former owner objected 30 days ago, the number went to someone else 10 days ago, the new
    owner objects today; the same suppression keeps its first date, so a report dated 10 days ago deleted it."""
    await ledger.point("sms", PERSON, external_id="anna")
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    objection = {"contact": "anna", "scope": "all_marketing", "kind": "art21"}
    assert (await client.post("/v1/objections", json=objection, headers=writer)).status_code == 201
    async with ledger.database.sessionmaker() as db, db.begin():
        await db.execute(
            text("UPDATE suppressions SET created_at = now() - interval '30 days' WHERE workspace_id = :w"),
            {"w": tenant.id},
        )
    assert (await client.post("/v1/objections", json=objection, headers=writer)).status_code == 201  # today's
    response = await report(client, tenant, "anna", PERSON, utcnow() - timedelta(days=10))
    assert response.status_code == 200, response.text
    assert response.json()["suppressions_lifted"] == 0
    assert await suppressions(session, tenant) > 0


async def test_an_import_line_naming_another_contact_ends_nobodys_consents(client, tenant, holders, session):
    """Hostile review: the API refuses a report by a contact that does not hold the number; so does the import."""
    now = utcnow().isoformat()
    before = await events(session)
    result = await _import(client, tenant, CSV_HEAD + f"zed,sms,{PERSON},newsletter,opted_out,{now},crm,,{now}\n")
    assert {p["line"]: p["code"] for p in result["problems"]} == {2: "number_not_held"}
    assert (await consents(client, tenant, "anna"))["sms"]["newsletter"] == "opted_in"
    assert (await consents(client, tenant, "ben"))["whatsapp"]["newsletter"] == "opted_in"
    assert await events(session) == before


async def test_a_number_migrated_from_another_system_leaves_the_former_owners_contact(
    client, admin, tenant, ledger, session
):
    """Newcomer review of 2026-12-05: an imported number (its contact made today, its consent captured in June) stayed
    on the former owner's contact after a reassignment in November, and their order texts were still eligible."""
    from tests.integration.test_consent_import import email_line, ndjson, post  # noqa: PLC0415

    await ledger.purpose("newsletter")
    orders = await ledger.purpose("orders", "transactional")
    line = email_line(contact="crm-42", channel="sms", address=PERSON, captured_at="2026-06-01T10:00:00Z")
    imported = await post(client, admin, ndjson(line))
    assert imported.json()["recorded"] == 1, imported.text
    when = utcnow() - timedelta(days=20)
    assert (await report(client, tenant, "crm-42", PERSON, when)).status_code == 200
    former = (await client.get("/v1/contacts/crm-42", headers=admin)).json()
    assert [p for p in former["contact_points"] if p["channel"] == "sms"] == []
    answer = await client.get(
        "/v1/eligibility",
        params={"contact": "crm-42", "channel": "sms", "purpose": orders.key},
        headers=await tenant.key(Scope.ELIGIBILITY_READ),
    )
    assert answer.json()["eligible"] is False, "no order text of theirs goes to the number's new owner"
    assert await holder(session, tenant, "sms") != former["id"]


async def test_a_repeated_report_does_not_take_the_number_from_its_new_owner(client, tenant, holders, ledger, session):
    """Hostile review of 2026-12-05: after a detach, the new owner's contact holds the former owner's old row; a
    repeated report (a retry, a corrected date) moved it on to yet another contact, with the new owner's consents."""
    await session.execute(
        text("UPDATE contact_points SET created_at = now() - interval '60 days' WHERE workspace_id = :w"),
        {"w": tenant.id},
    )
    await session.execute(
        text("UPDATE contacts SET created_at = now() - interval '60 days' WHERE workspace_id = :w"), {"w": tenant.id}
    )
    when = utcnow() - timedelta(days=3)
    assert (await report(client, tenant, "anna", PERSON, when)).status_code == 200
    new_owner = await holder(session, tenant, "sms")
    point = await session.scalar(
        select(ContactPoint).where(
            ContactPoint.workspace_id == tenant.id, ContactPoint.channel == "sms", ContactPoint.value == PERSON
        )
    )
    await ledger.apply(point, holders["offers"].id, "signup", "start_word")  # the new owner's own consent
    again = await report(client, tenant, "anna", PERSON, when)
    assert again.status_code == 200, again.text
    assert await holder(session, tenant, "sms") == new_owner
    shown = (await client.get(f"/v1/contacts/{new_owner}", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert [c["state"] for p in shown["contact_points"] for c in p["consents"] if c["purpose"] == "offers"] == [
        "opted_in"
    ]
