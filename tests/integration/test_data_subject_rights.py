"""Data-subject rights.

- Access (GDPR Art. 15): ``GET /v1/contacts/{contact}/export`` gives everything held, with consent receipts.
- Erasure (Art. 17): ``DELETE /v1/contacts/{contact}`` deletes the person, keeps suppression keys and a ledger without
  evidence that still verifies, and says what it kept and why.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from app.domain.model import ActorType, Trigger
from app.emails.models import ConfirmationToken
from app.ledger.service import Actor, Change, apply_changes
from app.lib.auth import Scope
from app.lib.orm import utcnow
from app.purposes.models import Notice
from app.twilio.models import InboundMessage

POSTAL = {"name": "Jane Roe", "street": "Hauptstraße 5", "postcode": "10115", "city": "Berlin"}
NOTICE = "Ja, ich möchte den Newsletter per E-Mail erhalten. Abmeldung jederzeit über den Link in jeder Mail."


@pytest.fixture
async def jane(client, admin, ledger, session, tenant, database):
    """A contact with email (confirmed), SMS (start word) and a postal address, a queued message, an open
    confirmation link and a stored idempotent answer that holds her addresses."""
    newsletter = await ledger.purpose("newsletter")
    await ledger.purpose("orders", kind="transactional")
    notice = await client.post(
        "/v1/notices",
        json={"purpose": "newsletter", "channels": ["email"], "locale": "de", "text": NOTICE},
        headers=admin,
    )
    assert notice.status_code == 201, notice.text
    created = await client.post(
        "/v1/contacts",
        json={"external_id": "crm-42", "postal_address": POSTAL},
        headers={**admin, "Idempotency-Key": "crm-sync-42"},
    )
    assert created.status_code == 201, created.text
    contact_id = uuid.UUID(created.json()["id"])
    email = await ledger.point("email", "jane@example.com", contact_id=contact_id)
    async with database.sessionmaker() as db_session, db_session.begin():
        shown = await db_session.get(Notice, uuid.UUID(notice.json()["notice_id"]))
        await apply_changes(
            db_session,
            tenant.id,
            [Change(email, newsletter.id, Trigger.SIGNUP, {"ip": "198.51.100.4"}, notice=shown)],
            Actor(ActorType.SYSTEM),
        )
    await ledger.apply(email, newsletter.id, "confirm")
    sms = await ledger.point("sms", "+4915112345678", contact_id=contact_id)
    await ledger.apply(sms, newsletter.id, "start_word", evidence={"message_sid": "SM1", "body": "START"})
    session.add(
        ConfirmationToken(
            workspace_id=tenant.id,
            contact_point_id=email.id,
            purpose_id=newsletter.id,
            token_hash=os.urandom(32),
            locale="de",
            expires_at=utcnow() + timedelta(days=1),
        )
    )
    session.add(
        InboundMessage(
            workspace_id=tenant.id,
            provider="twilio",
            message_sid="SM1",
            channel="sms",
            contact_point_id=sms.id,
            intent="start",
            reply="Willkommen!",
            received_at=utcnow(),
        )
    )
    await session.commit()
    message = await client.post(
        "/v1/messages",
        json={
            "contact": "crm-42",
            "purpose": "newsletter",
            "route": ["email"],
            "content": {"email": {"subject": "Hallo", "text": "Neuigkeiten"}},
        },
        headers=admin,
    )
    assert message.status_code == 202, message.text
    return {"id": contact_id, "email": email, "sms": sms}


async def erase(client, headers, ref, **params):
    return await client.delete(f"/v1/contacts/{ref}", params=params, headers=headers)


async def count(session, sql, **params):
    return (await session.execute(text(sql), params)).scalar_one()


async def test_erasure_deletes_the_person_and_reports_what_it_kept(client, admin, jane, session, tenant):
    response = await erase(client, admin, "crm-42", request_ref="DSR-2026-7", received_via="email")

    assert response.status_code == 200, response.text
    report = response.json()
    assert report["contact_id"] == str(jane["id"])
    assert report["request_ref"] == "DSR-2026-7"
    assert report["received_via"] == "email"
    assert report["deleted"] == {
        "contacts": 1,
        "contact_points": 3,
        # email: newsletter + every marketing purpose (the erasure's row); sms the same; print: channel-level
        "consents": 5,
        "confirmation_tokens": 1,
        "messages": 1,
        "webhook_deliveries": 0,  # no subscription here (see test_webhooks)
        "stored_answers": 1,
        "inbound_messages_unlinked": 1,
        "evidence_erased": 3,  # signup, confirm, start word
        "outbox_files": 0,  # the message is still queued (see test_erasure_deletes_her_files_from_the_outbox)
        "preference_links": 0,
        "chain_runs": 0,  # none started (see test_chains)
        "purchases": 0,  # none recorded (see test_existing_customers)
        "repermissions": 0,  # none sent (see test_repermission)
    }
    kept = {k["what"]: k for k in report["kept"]}
    assert kept["ledger_events"]["count"] == 6, "three events of consent, three of the erasure"
    assert kept["suppression_keys"]["count"] >= 3
    assert kept["erasure_record"]["count"] == 1
    assert all(k["why"] for k in report["kept"])
    assert len(report["event_ids"]) == 3

    for table, column in [
        ("contacts", "id"),
        ("contact_points", "contact_id"),
        ("consents", "contact_id"),
        ("messages", "contact_id"),
    ]:
        assert await count(session, f"SELECT count(*) FROM {table} WHERE {column} = :c", c=jane["id"]) == 0, table  # noqa: S608
    assert await count(session, "SELECT count(*) FROM confirmation_tokens") == 0
    assert await count(session, "SELECT count(*) FROM deliveries") == 0
    # the inbound SMS stays by provider id (a retried webhook is answered, not applied again), without its address
    assert await count(session, "SELECT count(*) FROM inbound_messages WHERE contact_point_id IS NULL") == 1
    assert (
        await count(
            session,
            "SELECT count(*) FROM idempotency_keys WHERE position(convert_to(:c, 'UTF8') IN body) > 0",
            c=str(jane["id"]),
        )
        == 0
    ), "the stored answer held her addresses"
    assert (await client.get("/v1/contacts/crm-42", headers=admin)).status_code == 404
    assert (await client.get(f"/v1/contacts/{jane['id']}", headers=admin)).status_code == 404


async def test_erasure_deletes_her_files_from_the_outbox(client, admin, jane, session, tenant, settings):
    """Her lines in a print batch not yet collected, her dev outbox files and mails go; everyone else's stay."""
    [delivery_id] = (
        await session.execute(
            text("SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE m.contact_id = :c"),
            {"c": jane["id"]},
        )
    ).scalars()
    outbox = settings.data_dir / "outbox"
    sms = outbox / str(tenant.id) / "sms"
    sms.mkdir(parents=True)
    (sms / f"{delivery_id}.json").write_text('{"to": "+4915112345678"}')
    (sms / f"{uuid.uuid4()}.json").write_text('{"to": "+4915199999999"}')
    batches = outbox / str(tenant.id) / "print"
    batches.mkdir(parents=True)
    batch = batches / "print-2026-12-04.jsonl"
    other = json.dumps({"id": str(uuid.uuid4()), "address": {"name": "Max Mustermann"}}) + "\n"
    batch.write_text(json.dumps({"id": str(delivery_id), "address": {"name": "Jane Roe"}}) + "\n" + other)
    mail = outbox / "email"
    mail.mkdir(parents=True)
    (mail / "1-hers.eml").write_text("To: Jane <JANE@example.com>\nSubject: Hallo\n\nNeuigkeiten\n")
    (mail / "2-his.eml").write_text("To: max@example.com\nSubject: Hallo\n\nNeuigkeiten\n")

    response = await erase(client, admin, "crm-42")

    assert response.status_code == 200, response.text
    assert response.json()["deleted"]["outbox_files"] == 3
    assert not (sms / f"{delivery_id}.json").exists()
    assert len(list(sms.iterdir())) == 1, "another person's delivery stays"
    assert batch.read_text() == other
    assert sorted(p.name for p in mail.iterdir()) == ["2-his.eml"]


async def test_the_ledger_keeps_the_history_without_evidence_and_still_verifies(client, admin, jane, session):
    report = (await erase(client, admin, str(jane["id"]), request_ref="DSR-2026-8", received_via="letter")).json()

    rows = (
        await session.execute(
            text(
                "SELECT id, trigger, channel, to_state, personal FROM consent_events WHERE contact_id = :c ORDER BY seq"
            ),
            {"c": jane["id"]},
        )
    ).all()
    assert [r.trigger for r in rows] == ["signup", "confirm", "start_word", "erasure", "erasure", "erasure"]
    assert all(r.personal is None for r in rows[:3]), "IP and message text are gone"
    erasures = rows[3:]
    assert sorted(str(r.id) for r in erasures) == sorted(report["event_ids"])
    assert {r.channel: r.to_state for r in erasures} == {"email": "opted_out", "sms": "opted_out", "print": "objected"}
    assert all(r.personal["evidence"] == {"request_ref": "DSR-2026-8", "received_via": "letter"} for r in erasures), (
        "the erasure's own evidence says how it was requested"
    )

    verified = (await client.get("/v1/audit/verify", headers=admin)).json()
    assert verified["valid"] is True
    assert verified["events_checked"] == 6


async def test_an_erased_address_that_comes_back_is_not_marketed_to(client, admin, jane, ledger):
    await erase(client, admin, "crm-42")
    newsletter = await ledger.purpose("promotions")
    # the CRM syncs her again, and an old opt-in is replayed for the new contact
    back = await ledger.point("email", "jane@example.com", external_id="crm-42")
    await ledger.apply(back, newsletter.id, "signup", "confirm")

    marketing = await client.get(
        "/v1/eligibility", params={"contact": "crm-42", "channel": "email", "purpose": "promotions"}, headers=admin
    )
    assert marketing.json()["eligible"] is False
    assert marketing.json()["reason"] == "suppressed"
    transactional = await client.get(
        "/v1/eligibility", params={"contact": "crm-42", "channel": "email", "purpose": "orders"}, headers=admin
    )
    assert transactional.json()["eligible"] is True, "an order confirmation is still allowed"


async def test_a_repeated_erasure_answers_the_same_report(client, admin, jane):
    first = await erase(client, admin, str(jane["id"]), request_ref="DSR-1")
    again = await erase(client, admin, str(jane["id"]), request_ref="DSR-1")
    assert again.status_code == 200
    assert again.json() == first.json()
    by_external_id = await erase(client, admin, "crm-42")
    assert by_external_id.status_code == 404, "the external id is personal data: it is gone with the contact"
    assert by_external_id.json()["code"] == "contact_not_found"


async def test_erasure_needs_the_admin_scope_and_stays_in_its_workspace(client, jane, tenant, other_tenant, session):
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    refused = await erase(client, writer, "crm-42")
    assert refused.status_code == 403
    assert refused.json()["code"] == "insufficient_scope"
    foreign = await erase(client, await other_tenant.key(Scope.ADMIN), str(jane["id"]))
    assert foreign.status_code == 404
    assert await count(session, "SELECT count(*) FROM contacts WHERE id = :c", c=jane["id"]) == 1


@pytest.mark.parametrize(
    "params",
    [{"received_via": "fax"}, {"request_ref": "ticket with spaces"}, {"request_ref": "x" * 101}],
)
async def test_bad_request_details_are_refused_and_nothing_is_erased(client, admin, jane, session, params):
    response = await erase(client, admin, "crm-42", **params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"].startswith(f"Invalid query parameter {next(iter(params))!r}: ")
    assert await count(session, "SELECT count(*) FROM contacts WHERE id = :c", c=jane["id"]) == 1
    assert await count(session, "SELECT count(*) FROM consent_events WHERE personal IS NULL") == 0


async def test_a_contact_without_addresses_is_erased_with_a_record(client, admin, session):
    created = (await client.post("/v1/contacts", json={"external_id": "lead-9"}, headers=admin)).json()
    report = (await erase(client, admin, "lead-9", received_via="web_form")).json()
    assert report["deleted"]["contacts"] == 1
    assert report["event_ids"] == []
    assert await count(session, "SELECT count(*) FROM erasures WHERE contact_id = :c", c=uuid.UUID(created["id"])) == 1
    record = (await session.execute(select(text("report")).select_from(text("erasures")))).scalar_one()
    assert "lead-9" not in str(record), "the record holds no personal data"


async def test_access_gives_everything_held_with_a_receipt_per_consent_given(client, admin, jane, tenant):
    objection = await client.post(
        "/v1/objections",
        json={"contact": "crm-42", "scope": "print", "kind": "sticker", "evidence": {"note": "sticker seen"}},
        headers=admin,
    )
    assert objection.status_code == 201, objection.text
    response = await client.get("/v1/contacts/crm-42/export", headers=await tenant.key(Scope.AUDIT_READ))

    assert response.status_code == 200, response.text
    export = response.json()
    assert export["contact"]["id"] == str(jane["id"])
    assert export["contact"]["external_id"] == "crm-42"
    points = {p["channel"]: p for p in export["contact_points"]}
    assert points["email"]["address"] == "jane@example.com"
    assert points["sms"]["address"] == "+4915112345678"
    assert points["print"]["details"]["name"] == "Jane Roe"
    assert points["print"]["details"]["city"] == "Berlin"
    assert [(s["covers"], s["scope"], s["reason"]) for s in points["print"]["suppressions"]] == [
        # a sticker is no Art. 21 objection (CHANNEL_RULES.md D7), and it covers everyone living there
        ("address", "all_marketing", "objection_sticker"),
        ("household", "all_marketing", "objection_sticker"),
    ]
    assert points["email"]["suppressions"] == []

    email_consent = next(c for c in export["consents"] if c["channel"] == "email" and c["purpose"] == "newsletter")
    assert email_consent["state"] == "opted_in"
    assert email_consent["notice"]["text"] == NOTICE, "the exact text she agreed to"
    assert [e["trigger"] for e in export["events"]] == ["signup", "confirm", "start_word", "objection"]
    assert export["events"][0]["evidence"] == {"ip": "198.51.100.4"}
    [message] = export["messages"]
    assert message["content"]["email"]["subject"] == "Hallo"
    assert message["purpose"] == "newsletter"
    assert [d["channel"] for d in message["deliveries"]] == ["email"]
    assert message["history"], "the message's status history"

    receipts = {r["services"][0]["purposes"][0]["piiCategory"][0]: r for r in export["consent_receipts"]}
    assert set(receipts) == {"email address", "mobile phone number"}, "one per consent given; print rests on none"
    mail = receipts["email address"]
    assert mail["version"] == "KI-CR-v1.1.0"
    assert mail["consentReceiptID"] == email_consent["last_event_id"]
    assert mail["piiPrincipalId"] == str(jane["id"])
    assert mail["language"] == "de"
    assert mail["jurisdiction"] == "DE"
    assert mail["collectionMethod"].startswith("double opt-in")
    assert mail["piiControllers"][0]["piiController"] == "Acme"
    assert mail["services"][0]["purposes"][0]["thirdPartyDisclosure"] is False
    sms = receipts["mobile phone number"]["services"][0]["purposes"][0]
    assert sms["termination"] == "reply STOP"
    assert sms["thirdPartyName"] == "Twilio"
    assert receipts["mobile phone number"]["collectionMethod"] == "the person texted a start word to our number"


async def test_access_needs_the_audit_scope_and_stays_in_its_workspace(client, jane, tenant, other_tenant):
    refused = await client.get("/v1/contacts/crm-42/export", headers=await tenant.key(Scope.CONSENTS_WRITE))
    assert refused.status_code == 403
    foreign = await client.get(f"/v1/contacts/{jane['id']}/export", headers=await other_tenant.key(Scope.ADMIN))
    assert foreign.status_code == 404
    assert foreign.json()["code"] == "contact_not_found"


async def test_a_request_retried_after_the_erasure_is_not_done_again(client, admin, jane, session):
    """Newcomer review: the erasure deleted the stored answer, so a retry of the request with its key made the
    contact anew (and a retried signup mailed the person)."""
    assert (await erase(client, admin, "crm-42")).status_code == 200
    retried = await client.post(
        "/v1/contacts",
        json={"external_id": "crm-42", "postal_address": POSTAL},
        headers={**admin, "Idempotency-Key": "crm-sync-42"},
    )
    assert retried.status_code == 409, retried.text
    assert retried.json()["code"] == "idempotency_answer_erased"
    assert await count(session, "SELECT count(*) FROM contacts WHERE external_id = 'crm-42'") == 0
    # nothing of the request is kept: neither its answer nor the fingerprint of its body
    kept = (
        await session.execute(text("SELECT body, fingerprint FROM idempotency_keys WHERE key = 'crm-sync-42'"))
    ).one()
    assert (kept.body, bytes(kept.fingerprint)) == (None, b"")
    # a new key does it anew (the person may ask again)
    anew = await client.post(
        "/v1/contacts",
        json={"external_id": "crm-42", "postal_address": POSTAL},
        headers={**admin, "Idempotency-Key": "crm-sync-42-again"},
    )
    assert anew.status_code == 201, anew.text
