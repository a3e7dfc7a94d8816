"""Transactional messages go only to verified addresses (issue 16, finding 21).

A form's ``signup`` key can name any address with any ``external_id``: the address then joins that contact. Before
the fix it was eligible for transactional messages at once, so whoever held a form key could redirect a customer's
order mails to an address of their own. An address is verified by its own proof (confirmation, start word, push
permission) or by the tenant's records (a ``consents:write`` key); never by a signup alone.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.channels.adapters import Adapters
from app.domain.model import ActorType, State, Trigger
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Change, apply_changes
from app.lib.auth import Scope
from app.lib.db import Database, downgrade, migrate
from app.lib.keys import Keys
from app.messages.dispatcher import DispatchConfig, Dispatcher
from app.workspaces import service as workspaces
from tests.conftest import TEST_SECRET, Ledger

CUSTOMER_PHONE = "+4915123456789"
ATTACKER = "mallory@evil.example"
ORDER_MAIL = {"email": {"subject": "Ihre Bestellung", "text": "Ihre Bestellung 4711 ist unterwegs."}}
ORDER_SMS = {"sms": {"text": "Ihre Bestellung 4711 ist unterwegs."}}


@pytest.fixture
async def shop(client, admin, tenant, ledger):
    """A customer known by the shop (``cust-42``, phone from the shop's records), a newsletter form, order updates."""
    newsletter = await ledger.purpose("newsletter")
    await ledger.purpose("orders", kind="transactional")
    notice = await client.post(
        "/v1/notices",
        json={"purpose": "newsletter", "channels": ["email", "sms"], "locale": "de", "text": "Ja, Newsletter."},
        headers=admin,
    )
    assert notice.status_code == 201, notice.text
    customer = await ledger.point("sms", CUSTOMER_PHONE, external_id="cust-42")  # as a consents:write key adds it
    return {
        "customer": customer,
        "newsletter": newsletter,
        "notice_id": notice.json()["notice_id"],
        "form": await tenant.key(Scope.SIGNUP),
        "writer": await tenant.key(Scope.CONSENTS_WRITE),
        "sender": await tenant.key(Scope.MESSAGES_SEND),
        "reader": await tenant.key(Scope.ELIGIBILITY_READ),
    }


async def form_signup(client, shop, address=ATTACKER, external_id="cust-42", key="form"):
    response = await client.post(
        "/v1/signups",
        json={
            "channel": "email",
            "address": address,
            "purpose": "newsletter",
            "notice_id": shop["notice_id"],
            "contact": {"external_id": external_id} if external_id else {},
            "evidence": {"ip": "198.51.100.66"},
        },
        headers=shop[key],
    )
    assert response.status_code == 202, response.text
    return response.json()


async def eligibility(client, shop, contact="cust-42", channel="email", purpose="orders"):
    query = {"contact": contact, "channel": channel, "purpose": purpose}
    response = await client.get("/v1/eligibility", params=query, headers=shop["reader"])
    assert response.status_code == 200, response.text
    return response.json()


async def email_point(client, admin, contact="cust-42", address=ATTACKER):
    shown = (await client.get(f"/v1/contacts/{contact}", headers=admin)).json()
    [point] = [p for p in shown["contact_points"] if p["address"] == address]
    return point


async def test_a_form_key_cannot_redirect_a_customers_order_mails(client, admin, shop):
    signup = await form_signup(client, shop)
    assert signup["contact_id"] == str(shop["customer"].contact_id), "the address joined the customer's contact"
    point = await email_point(client, admin)
    assert (point["verified_at"], point["verified_via"]) == (None, None)

    answer = await eligibility(client, shop)
    assert (answer["eligible"], answer["reason"]) == (False, "unverified_address")
    assert [p["eligible"] for p in answer["contact_points"]] == [False]
    assert [p["reason"] for p in answer["contact_points"]] == ["unverified_address"]
    batch = await client.post(
        "/v1/eligibility/batch",
        json={"contacts": ["cust-42"], "channels": ["email", "sms"], "purpose": "orders"},
        headers=shop["reader"],
    )
    decisions = {d["channel"]: (d["eligible"], d["reason"]) for d in batch.json()["decisions"]}
    assert decisions == {"email": (False, "unverified_address"), "sms": (True, "transactional")}

    # the shop sends an order update: email first, then SMS; the mail does not go to the attacker
    message = await client.post(
        "/v1/messages",
        json={
            "contact": "cust-42",
            "purpose": "orders",
            "route": ["email", "sms"],
            "strategy": "all_eligible",
            "content": {**ORDER_MAIL, **ORDER_SMS},
        },
        headers={**shop["sender"], "Idempotency-Key": "order-4711"},
    )
    assert message.status_code == 202, message.text
    decision = message.json()["decision"]
    assert [c["channel"] for c in decision["chosen"]] == ["sms"]
    assert decision["skipped"] == [{"channel": "email", "reason": "unverified_address"}]

    # signing up again (a new confirmation mail) verifies nothing: only the link would
    await form_signup(client, shop)
    assert (await eligibility(client, shop))["reason"] == "unverified_address"
    # marketing still follows consent: pending until confirmed
    newsletter = await eligibility(client, shop, purpose="newsletter")
    assert (newsletter["eligible"], newsletter["reason"]) == (False, "pending_confirmation")


async def test_an_address_a_form_attached_to_a_customer_is_not_verified_by_confirming_it(
    client, admin, shop, ledger, session
):
    """The attacker controls the address, so its confirmation link proves nothing about whose it is."""
    await form_signup(client, shop)
    [attacker] = (await session.execute(select(ContactPoint).where(ContactPoint.value == ATTACKER))).scalars()
    assert attacker.attached_by_form is True
    await ledger.apply(attacker, shop["newsletter"].id, "confirm")  # what the confirmation page records

    point = await email_point(client, admin)
    assert (point["verified_at"], point["verified_via"]) == (None, None)
    assert (await eligibility(client, shop))["reason"] == "unverified_address"
    newsletter = await eligibility(client, shop, purpose="newsletter")
    assert (newsletter["eligible"], newsletter["reason"]) == (True, "opted_in"), "the newsletter consent holds"

    # a new person's own sign-up, naming no customer id, is verified by its confirmation
    mine = await form_signup(client, shop, address="new@example.com", external_id=None)
    [own] = (await session.execute(select(ContactPoint).where(ContactPoint.value == "new@example.com"))).scalars()
    assert own.attached_by_form is False
    await ledger.apply(own, shop["newsletter"].id, "confirm")
    assert (await eligibility(client, shop, contact=mine["contact_id"]))["reason"] == "transactional"


async def test_a_form_that_names_a_customer_id_first_does_not_get_the_customers_order_mails(
    client, admin, shop, ledger, session
):
    """Hostile review: the form pre-registers an external id the shop will import later, and confirms its address."""
    await form_signup(client, shop, external_id="cust-99")
    [attacker] = (await session.execute(select(ContactPoint).where(ContactPoint.value == ATTACKER))).scalars()
    assert attacker.attached_by_form is True, "a form naming a customer id, even one nobody has yet"
    await ledger.apply(attacker, shop["newsletter"].id, "confirm")
    line = {
        "contact": "cust-99",
        "channel": "email",
        "address": "real.customer@example.com",
        "purpose": "newsletter",
        "state": "opted_out",
        "captured_at": "2024-03-01T10:00:00Z",
        "source": "crm",
    }
    imported = await client.post(
        "/v1/imports/consents",
        content=json.dumps(line).encode(),
        headers={**shop["writer"], "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 200, imported.text
    shown = (await client.get("/v1/contacts/cust-99", headers=admin)).json()
    verified = {p["address"]: p["verified_via"] for p in shown["contact_points"]}
    assert verified == {ATTACKER: None, "real.customer@example.com": "api"}
    real = next(p["id"] for p in shown["contact_points"] if p["address"] == "real.customer@example.com")
    answer = await eligibility(client, shop, contact="cust-99")
    assert [p["id"] for p in answer["contact_points"] if p["eligible"]] == [real]


async def test_the_audience_export_leaves_unverified_addresses_out_of_transactional_audiences(client, admin, shop):
    await form_signup(client, shop)
    mine = await form_signup(client, shop, address="jane@example.com", external_id="jane")
    await client.post(
        "/v1/imports/consents",
        content=json.dumps(
            {
                "contact": "jane",
                "channel": "email",
                "address": "jane@example.com",
                "purpose": "newsletter",
                "state": "opted_in",
                "captured_at": "2024-03-01T10:00:00Z",
                "source": "crm",
                "notice_text": "Ja, Newsletter.",
            }
        ).encode(),
        headers={**shop["writer"], "Content-Type": "application/x-ndjson"},
    )
    exported = await client.get(
        "/v1/audiences", params={"purpose": "orders", "channel": ["email", "sms"]}, headers=shop["reader"]
    )
    assert exported.status_code == 200, exported.text
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert {(r["channel"], r["address"]) for r in rows} == {("sms", CUSTOMER_PHONE), ("email", "jane@example.com")}
    assert {r["contact_point_id"] for r in rows} >= {mine["contact_point_id"]}


async def test_a_consents_write_import_verifies_the_address_for_its_contact(client, admin, shop):
    await form_signup(client, shop)
    line = {
        "contact": "cust-42",
        "channel": "email",
        "address": ATTACKER,
        "purpose": "newsletter",
        "state": "opted_out",
        "captured_at": "2024-03-01T10:00:00Z",
        "source": "crm",
    }
    response = await client.post(
        "/v1/imports/consents",
        content=json.dumps(line).encode(),
        headers={**shop["writer"], "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    point = await email_point(client, admin)
    assert point["verified_via"] == "api"
    assert point["verified_at"] is not None
    assert (await eligibility(client, shop))["reason"] == "transactional", "the tenant's records name the address"


async def test_a_start_word_from_the_number_verifies_it(client, admin, shop, ledger):
    """The start word is recorded through apply_changes (what the Twilio inbound webhook calls)."""
    phone = await ledger.point("sms", "+4915199999999", external_id="form-sms", verified=None)  # as a form adds it
    await ledger.apply(phone, shop["newsletter"].id, "signup")
    unverified = await eligibility(client, shop, contact="form-sms", channel="sms")
    assert unverified["reason"] == "unverified_address"
    await ledger.apply(phone, shop["newsletter"].id, "start_word")
    shown = (await client.get("/v1/contacts/form-sms", headers=admin)).json()
    assert [p["verified_via"] for p in shown["contact_points"]] == ["start_word"]
    verified = await eligibility(client, shop, contact="form-sms", channel="sms")
    assert (verified["eligible"], verified["reason"]) == (True, "transactional")


async def test_push_installations_are_verified_by_the_permission_or_a_consents_write_key(client, admin, shop):
    def report(permission, contact):
        return {"platform": "ios", "token": "tok-1", "permission": permission, "contact": contact}

    await client.post("/v1/contacts", json={"external_id": "app-user"}, headers=shop["writer"])
    denied = await client.put(
        "/v1/push/app-installations/inst-1", json=report("denied", "app-user"), headers=shop["form"]
    )
    assert denied.status_code == 200, denied.text
    [point] = (await client.get("/v1/contacts/app-user", headers=admin)).json()["contact_points"]
    assert point["verified_via"] is None, "a form key reporting a device without permission verifies nothing"
    unverified = await eligibility(client, shop, contact="app-user", channel="app_push")
    assert unverified["reason"] == "unverified_address"
    granted = await client.put(
        "/v1/push/app-installations/inst-1", json=report("granted", "app-user"), headers=shop["form"]
    )
    assert granted.status_code == 200, granted.text
    [point] = (await client.get("/v1/contacts/app-user", headers=admin)).json()["contact_points"]
    assert point["verified_via"] is None, (
        "a form key named a contact that existed before: the permission proves the device, not that it is theirs"
    )

    # the app's own installation, no contact named: its permission verifies it
    anonymous = await client.put(
        "/v1/push/app-installations/inst-3", json=report("granted", None), headers=shop["form"]
    )
    assert anonymous.status_code == 200, anonymous.text
    shown = (await client.get(f"/v1/contacts/{anonymous.json()['contact_id']}", headers=admin)).json()
    assert [p["verified_via"] for p in shown["contact_points"]] == ["permission"]

    await client.post("/v1/contacts", json={"external_id": "crm-user"}, headers=shop["writer"])
    by_writer = await client.put(
        "/v1/push/app-installations/inst-2", json=report("denied", "crm-user"), headers=shop["writer"]
    )
    assert by_writer.status_code == 200, by_writer.text
    [point] = (await client.get("/v1/contacts/crm-user", headers=admin)).json()["contact_points"]
    assert point["verified_via"] == "api"


@pytest.fixture
async def dispatcher(database, settings, app):
    adapters = Adapters(settings, Keys(TEST_SECRET), app.state.mail_sender)
    config = DispatchConfig(concurrency=1, deadline=1.0, base_backoff=0.0, max_attempts=3)
    yield Dispatcher(database, Keys(TEST_SECRET), settings, adapters, config=config)
    await adapters.aclose()


async def test_a_queued_transactional_mail_to_an_address_no_longer_verified_is_blocked_at_send(
    client, shop, ledger, session, dispatcher
):
    """The dispatcher asks the same gate: a delivery queued before the upgrade left its address unverified."""
    mail = await ledger.point("email", "old@example.com", contact_id=shop["customer"].contact_id)
    queued = await client.post(
        "/v1/messages",
        json={"contact": "cust-42", "purpose": "orders", "route": ["email"], "content": ORDER_MAIL},
        headers={**shop["sender"], "Idempotency-Key": "order-4712"},
    )
    assert queued.json()["status"] == "queued", queued.text
    await session.execute(
        text("UPDATE contact_points SET verified_at = NULL, verified_via = NULL WHERE id = :id"), {"id": mail.id}
    )
    await session.commit()
    await dispatcher.run_once()
    shown = await client.get(f"/v1/messages/{queued.json()['message_id']}", headers=shop["sender"])
    assert shown.json()["status"] == "blocked_at_send"
    assert shown.json()["history"][-1]["error"] == "unverified_address"


async def _arrange_before_the_upgrade(database: Database) -> None:
    """Addresses with every history the backfill tells apart, written by the code as it runs today."""
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme")
        writer, _ = await workspaces.create_api_key(session, workspace.id, "crm", [Scope.CONSENTS_WRITE])
        form, _ = await workspaces.create_api_key(session, workspace.id, "form", [Scope.SIGNUP])
    ledger = Ledger(database, workspace.id)
    newsletter = await ledger.purpose("newsletter")

    async def point(channel, value):
        return await ledger.point(channel, value, verified=None)  # what the point was before the upgrade: unknown

    async def record(point, trigger, key=None, **change):
        actor = Actor(ActorType.API_KEY, str(key.id)) if key else Actor(ActorType.SUBJECT)
        async with database.sessionmaker() as session, session.begin():
            await apply_changes(
                session,
                workspace.id,
                [Change(point, change.pop("purpose_id", newsletter.id), trigger, {}, **change)],
                actor,
            )

    signed_up = await point("email", "form-only@example.com")
    await record(signed_up, Trigger.SIGNUP, form)
    by_writer_form = await point("email", "writer-form@example.com")
    await record(by_writer_form, Trigger.SIGNUP, writer)
    confirmed = await point("email", "confirmed@example.com")
    await record(confirmed, Trigger.SIGNUP, form)
    await record(confirmed, Trigger.CONFIRM)
    await record(confirmed, Trigger.UNSUBSCRIBE)
    texted = await point("sms", "+4915100000001")
    await record(texted, Trigger.START_WORD)
    imported = await point("email", "imported@example.com")
    await record(imported, Trigger.IMPORT, writer, target=State.OPTED_OUT)
    await point("print", "postal-1")
    await point("web_push", "https://push.example/sub-1")
    device_of_writer = await point("app_push", "inst-writer")
    await record(device_of_writer, Trigger.PERMISSION_DENIED, writer)
    device_of_form = await point("app_push", "inst-form")
    await record(device_of_form, Trigger.PERMISSION_DENIED, form)
    granted = await point("app_push", "inst-granted")
    await record(granted, Trigger.PERMISSION_GRANTED, form, notice=None)


async def test_the_upgrade_verifies_what_the_ledger_proves_and_nothing_a_form_alone_brought(pg_server):
    """Migration 0019's backfill: the ledger's proofs, postal and web push addresses, and consents:write keys."""
    url = await pg_server.create_database("consent_verify_backfill")
    engine = create_async_engine(url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await _arrange_before_the_upgrade(Database.bound_to(conn))
            await transaction.commit()
        await downgrade(engine, "0018")  # before migration 0019, whatever came after it
        await migrate(engine)
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT value, verified_via, verified_at FROM contact_points"))
            verified = {row.value: row.verified_via for row in rows}
            proof = await conn.scalar(
                text(
                    "SELECT e.recorded_at = p.verified_at FROM consent_events e JOIN contact_points p"
                    " ON p.id = e.contact_point_id WHERE p.value = 'confirmed@example.com' AND e.trigger = 'confirm'"
                )
            )
        assert verified == {
            "form-only@example.com": None,
            "writer-form@example.com": None,
            "confirmed@example.com": "confirmed",
            "+4915100000001": "start_word",
            "imported@example.com": "api",
            "postal-1": "api",
            "https://push.example/sub-1": "permission",
            "inst-writer": "api",
            "inst-form": None,
            "inst-granted": "permission",
        }
        assert proof is True, "verified when the confirmation was recorded"
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def test_a_form_key_cannot_tell_which_customer_ids_exist_through_push(client, admin, shop):
    """Hostile review: naming a known id answered 200 and an unknown one 404 contact_not_found."""

    def report(contact, installation):
        return {"platform": "android", "token": f"tok-{installation}", "permission": "denied", "contact": contact}

    known = await client.put("/v1/push/app-installations/probe-1", json=report("cust-42", 1), headers=shop["form"])
    unknown = await client.put("/v1/push/app-installations/probe-2", json=report("cust-1002", 2), headers=shop["form"])
    assert (known.status_code, unknown.status_code) == (200, 200), unknown.text
    assert set(known.json()) == set(unknown.json())
    shown = (await client.get("/v1/contacts/cust-1002", headers=admin)).json()
    assert [p["verified_via"] for p in shown["contact_points"]] == [None], "a form's device for a customer id"


async def test_a_signup_by_a_key_that_writes_consents_is_the_tenants_record_and_its_confirmation_verifies(
    client, admin, shop, ledger, session
):
    """The README's first steps sign up with an admin key naming an external id: confirmed, the address is usable."""
    shop = {**shop, "admin": admin}
    await form_signup(client, shop, address="jane@example.com", external_id="crm-42", key="admin")
    [jane] = (await session.execute(select(ContactPoint).where(ContactPoint.value == "jane@example.com"))).scalars()
    assert jane.attached_by_form is False, "the tenant's own key, not a form's claim"
    await ledger.apply(jane, shop["newsletter"].id, "confirm")
    assert (await eligibility(client, shop, contact="crm-42"))["reason"] == "transactional"
