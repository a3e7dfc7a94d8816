"""Existing customers (UWG §7(3), CHANNEL_RULES.md E3; issue 19 item 2): purchases, the ``existing_customer`` basis in
eligibility, audiences and routing, its end by any withdrawal or objection, and the objection notice in every mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from aiosmtpd.smtp import SMTP
from sqlalchemy import func, select

from app.channels.adapters import Adapters
from app.ledger.models import ConsentEvent
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.messages.dispatcher import DispatchConfig, Dispatcher
from app.purchases.models import Purchase
from app.settings import MailSettings, Settings
from tests.conftest import TEST_SECRET
from tests.integration.test_consent_validity import given

NOTICE_EN = (
    "You can object to this use of your address at any time; it costs you nothing but the basic transmission rate"
)
NOTICE_DE = "Sie können der Verwendung Ihrer E-Mail-Adresse für Werbung jederzeit widersprechen"


class Inbox:
    """The mail server the dispatcher sends to (aiosmtpd): keeps every message it accepts."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, _server, _session, envelope):  # noqa: N802  # aiosmtpd hook
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
async def inbox():
    box = Inbox()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(box, hostname="mx.test"), "127.0.0.1", 0)
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()


@pytest.fixture
def settings(tmp_path, inbox):
    return Settings(
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        public_base_url="https://consent.example.com",
        mail=MailSettings(host="127.0.0.1", port=inbox.port, tls="none", mail_from="Acme <news@acme.example>"),
    )


@pytest.fixture
async def shop(client, admin, tenant):
    """A shop: `coffee_offers` advertises to buyers of coffee and tea; `newsletter` to nobody without consent."""
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    settings["send_windows"] = {}
    assert (await client.put("/v1/workspace/settings", json=settings, headers=admin)).status_code == 200
    made = await client.post(
        "/v1/purposes",
        json={
            "key": "coffee_offers",
            "name": "Coffee offers",
            "kind": "marketing",
            "similar_products_of": ["coffee", "tea"],
        },
        headers=admin,
    )
    assert made.status_code == 201, made.text
    assert made.json()["similar_products_of"] == ["coffee", "tea"]
    assert (
        await client.post(
            "/v1/purposes", json={"key": "newsletter", "name": "News", "kind": "marketing"}, headers=admin
        )
    ).status_code == 201
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    contact = await client.post("/v1/contacts", json={"external_id": "jane", "locale": "de"}, headers=writer)
    assert contact.status_code == 201, contact.text
    return {
        "writer": writer,
        "reader": await tenant.key(Scope.ELIGIBILITY_READ),
        "sender": await tenant.key(Scope.MESSAGES_SEND),
        "contact_id": contact.json()["id"],
        "admin": admin,
    }


def sale(reference="A-1001", category="coffee", address="Jane@Example.com", **changes):
    return {
        "reference": reference,
        "purchased_at": "2026-11-20T10:15:00+01:00",
        "category": category,
        "email": address,
        "objection_notice_shown": True,
        "objection_notice_version": "checkout-2026-10",
        **changes,
    }


async def buy(client, shop, contact="jane", **changes):
    return await client.post(f"/v1/contacts/{contact}/purchases", json=sale(**changes), headers=shop["writer"])


async def eligibility(client, shop, purpose="coffee_offers", channel="email", contact="jane"):
    response = await client.get(
        "/v1/eligibility", params={"contact": contact, "channel": channel, "purpose": purpose}, headers=shop["reader"]
    )
    assert response.status_code == 200, response.text
    return response.json()


async def audience(client, shop, purpose="coffee_offers", channels=("email",)):
    response = await client.get(
        "/v1/audiences", params={"purpose": purpose, "channel": list(channels)}, headers=shop["reader"]
    )
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


async def test_a_purchase_is_recorded_with_a_chained_event_that_moves_no_consent(client, shop, session, admin):
    response = await buy(client, shop)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["reference"], body["category"], body["objection_notice_version"]) == (
        "A-1001",
        "coffee",
        "checkout-2026-10",
    )
    assert body["address_masked"] != "jane@example.com"
    event = await session.get(ConsentEvent, body["event_id"])
    assert (event.trigger, event.legal_basis, event.from_state, event.to_state, event.channel) == (
        "purchase",
        "uwg_7_3",
        "none",
        "none",
        "email",
    )
    evidence = event.personal["evidence"]
    assert (evidence["reference"], evidence["category"], evidence["purchased_at"]) == (
        "A-1001",
        "coffee",
        "2026-11-20T10:15:00+01:00",
    )
    assert evidence["objection_notice_shown"] is True
    assert evidence["objection_notice_version"] == "checkout-2026-10"
    assert event.occurred_at.isoformat() == "2026-11-20T09:15:00+00:00"
    contact = (await client.get("/v1/contacts/jane", headers=shop["writer"])).json()
    [point] = contact["contact_points"]
    assert (point["address"], point["id"], point["verified_via"]) == (
        "Jane@example.com",
        body["contact_point_id"],
        "api",
    )
    assert point["consents"] == [], "a purchase is no consent"
    verified = (await client.get("/v1/audit/verify", headers=admin)).json()
    assert verified["valid"] is True
    listed = (await client.get("/v1/contacts/jane/purchases", headers=shop["writer"])).json()
    assert [p["id"] for p in listed] == [body["id"]]


async def test_without_the_objection_notice_at_collection_nothing_is_recorded(client, shop, session):
    for changes in ({"objection_notice_shown": False}, {"objection_notice_shown": None}):
        body = sale(**changes)
        if changes["objection_notice_shown"] is None:
            del body["objection_notice_shown"]
        response = await client.post("/v1/contacts/jane/purchases", json=body, headers=shop["writer"])
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "objection_notice_required"
        assert "object" in response.json()["detail"]
    assert await session.scalar(select(func.count()).select_from(Purchase)) == 0
    assert await session.scalar(select(func.count()).select_from(ConsentEvent)) == 0
    assert (await eligibility(client, shop))["reason"] == "no_contact_point"


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"purchased_at": "2026-11-20T10:15:00"}, 422),  # no time zone
        ({"purchased_at": "2999-01-01T00:00:00Z"}, 422),
        ({"purchased_at": None}, 422),  # no time of sale at all
        ({"occurred_at": "2026-11-21T10:15:00+01:00"}, 422),  # two different times
        ({"purchased_at": None, "occurred_at": "2999-01-01T00:00:00Z"}, 422),
        ({"category": "Coffee Beans"}, 422),
        ({"email": "not an address"}, 422),
        ({"reference": ""}, 422),
        ({"reference": "A\n1"}, 422),
        ({"surprise": 1}, 422),
    ],
)
async def test_bad_purchases_are_refused_with_what_is_wrong(client, shop, changes, status):
    response = await client.post("/v1/contacts/jane/purchases", json=sale(**changes), headers=shop["writer"])
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_same_reference_is_the_same_purchase_and_another_sale_under_it_is_refused(client, shop, session):
    first = await buy(client, shop)
    again = await buy(client, shop)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert await session.scalar(select(func.count()).select_from(ConsentEvent)) == 1
    other = await buy(client, shop, category="tea")
    assert other.status_code == 409
    assert other.json()["code"] == "purchase_reference_taken"
    replayed = await client.post(
        "/v1/contacts/jane/purchases", json=sale(reference="A-2"), headers={**shop["writer"], "Idempotency-Key": "k-1"}
    )
    repeat = await client.post(
        "/v1/contacts/jane/purchases", json=sale(reference="A-2"), headers={**shop["writer"], "Idempotency-Key": "k-1"}
    )
    assert repeat.headers.get("idempotent-replayed") == "true"
    assert repeat.json() == replayed.json()
    assert await session.scalar(select(func.count()).select_from(Purchase)) == 2


async def test_an_address_of_another_contact_is_refused_and_another_workspace_sees_nothing(client, shop, other_tenant):
    writer = shop["writer"]
    assert (await client.post("/v1/contacts", json={"external_id": "john"}, headers=writer)).status_code == 201
    assert (await buy(client, shop)).status_code == 201
    taken = await buy(client, shop, contact="john", reference="B-1")
    assert taken.status_code == 409
    assert taken.json()["code"] == "address_of_another_contact"
    stranger = await other_tenant.key(Scope.CONSENTS_WRITE)
    response = await client.post("/v1/contacts/jane/purchases", json=sale(reference="C-1"), headers=stranger)
    assert response.status_code == 404
    assert (await client.get("/v1/contacts/jane/purchases", headers=stranger)).status_code == 404
    reader = await other_tenant.key(Scope.ELIGIBILITY_READ)
    assert (await client.post("/v1/contacts/jane/purchases", json=sale(), headers=reader)).status_code in (401, 403)


async def test_a_buyer_in_a_named_category_is_eligible_by_email_without_consent(client, shop):
    assert (await eligibility(client, shop))["reason"] == "no_contact_point"
    bought = (await buy(client, shop)).json()
    decision = await eligibility(client, shop)
    assert (decision["eligible"], decision["reason"], decision["evidence_event_id"]) == (
        True,
        "existing_customer",
        bought["event_id"],
    )
    assert [p["reason"] for p in decision["contact_points"]] == ["existing_customer"]
    newsletter = await eligibility(client, shop, purpose="newsletter")
    assert (newsletter["eligible"], newsletter["reason"]) == (False, "no_consent"), "not a purpose of similar products"
    batch = await client.post(
        "/v1/eligibility/batch",
        json={"contacts": ["jane", shop["contact_id"]], "channels": ["email", "sms"], "purpose": "coffee_offers"},
        headers=shop["reader"],
    )
    assert [(d["channel"], d["eligible"], d["reason"]) for d in batch.json()["decisions"]] == [
        ("email", True, "existing_customer"),
        ("sms", False, "no_contact_point"),
    ] * 2
    assert batch.json()["decisions"][0]["evidence_event_id"] == bought["event_id"]


async def test_the_newest_purchase_in_a_named_category_is_the_evidence(client, shop):
    await buy(client, shop, reference="X-1", category="shoes")
    assert (await eligibility(client, shop))["reason"] == "no_consent", "shoes are not coffee or tea"
    await buy(client, shop, reference="X-2", purchased_at="2026-01-01T00:00:00Z", category="coffee")
    newest = (await buy(client, shop, reference="X-3", purchased_at="2026-03-01T00:00:00Z", category="tea")).json()
    assert (await eligibility(client, shop))["evidence_event_id"] == newest["event_id"]


async def test_never_for_sms_or_whatsapp_even_for_a_buyer_with_a_phone(client, shop, ledger):
    await buy(client, shop)
    contact_id = (await client.get("/v1/contacts/jane", headers=shop["writer"])).json()["id"]
    await ledger.point("sms", "+4915123456789", contact_id=contact_id)
    await ledger.point("whatsapp", "whatsapp:+4915123456789", contact_id=contact_id)
    for channel in ("sms", "whatsapp"):
        decision = await eligibility(client, shop, channel=channel)
        assert (decision["eligible"], decision["reason"]) == (False, "no_consent")
    assert [r["channel"] for r in await audience(client, shop, channels=("email", "sms", "whatsapp"))] == ["email"]


async def test_audiences_take_existing_customers_as_the_gate_does(client, shop, ledger, session):
    bought = (await buy(client, shop)).json()
    olga = await ledger.point("email", "olga@example.com", external_id="olga")
    confirmed = await ledger.apply(olga, await purpose_of(session, "coffee_offers"), "signup", "confirm")
    rows = await audience(client, shop)
    assert sorted((r["external_id"], r["reason"], r["evidence_event_id"]) for r in rows) == [
        ("jane", "existing_customer", bought["event_id"]),
        ("olga", "opted_in", str(confirmed[-1].event_id)),
    ]
    assert await audience(client, shop, purpose="newsletter") == []


@pytest.mark.parametrize(
    ("trigger", "on_purpose"),
    [
        ("unsubscribe", True),
        ("unsubscribe", False),
        ("complaint", False),
        ("objection", False),
        ("objection", True),
    ],
)
async def test_any_withdrawal_ends_it_for_good_and_a_later_purchase_does_not_bring_it_back(
    client, shop, ledger, session, trigger, on_purpose
):
    first = (await buy(client, shop)).json()
    purpose_id = await session.scalar(
        select(ConsentEvent.purpose_id).where(ConsentEvent.id == first["event_id"])
    )  # None: the purchase is the address's note
    assert purpose_id is None
    point = await ledger_point(session, first["contact_point_id"])
    coffee = await purpose_of(session, "coffee_offers")
    await ledger.apply(point, coffee if on_purpose else None, trigger)
    decision = await eligibility(client, shop)
    assert (decision["eligible"], decision["reason"]) == (False, "opted_out")
    assert await audience(client, shop) == []

    # the person signs up again but never confirms: pending is no basis, the purchase does not stand in for it
    await ledger.apply(point, coffee, "signup")
    later = await buy(client, shop, reference="A-1002", purchased_at="2026-11-28T09:00:00Z")
    assert later.status_code == 201, "a later purchase is recorded"
    decision = await eligibility(client, shop)
    assert (decision["eligible"], decision["reason"]) == (False, "pending_confirmation")
    assert await audience(client, shop) == []
    # any withdrawal ends the basis for every purpose, a purpose's own included (issue 19: "any objection or
    # unsubscribe ends it")
    other = await client.post(
        "/v1/purposes",
        json={"key": "tea_offers", "name": "Tea", "kind": "marketing", "similar_products_of": ["coffee"]},
        headers=await shop_admin(client, shop),
    )
    assert other.status_code == 201
    tea = await eligibility(client, shop, purpose="tea_offers")
    assert tea["eligible"] is False, tea


async def test_a_confirmed_opt_in_after_an_objection_is_consent_again_not_the_old_basis(client, shop, ledger, session):
    first = (await buy(client, shop)).json()
    point = await ledger_point(session, first["contact_point_id"])
    coffee = await purpose_of(session, "coffee_offers")
    await ledger.apply(point, None, "unsubscribe")
    await ledger.apply(point, coffee, "signup", "confirm")
    decision = await eligibility(client, shop)
    assert (decision["eligible"], decision["reason"]) == (True, "opted_in")


async def test_the_one_click_link_of_a_customers_mail_ends_it(client, shop, inbox, database, settings, app):
    await buy(client, shop)
    dispatcher = await make_dispatcher(database, settings, app)
    queued = await send(client, shop)
    assert queued["decision"]["chosen"][0]["channel"] == "email"
    assert await dispatcher.run_once() == 1
    [mail] = inbox.messages
    one_click = mail["List-Unsubscribe"].split(",")[0].strip("<> ")
    response = await client.post(
        urlsplit(one_click).path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert (await eligibility(client, shop))["reason"] == "opted_out"
    assert (await buy(client, shop, reference="A-1003")).status_code == 201
    assert (await eligibility(client, shop))["reason"] == "opted_out"
    refused = await send(client, shop)
    assert refused["status"] == "no_eligible_channel"


async def test_every_mail_on_the_basis_carries_the_objection_notice(
    client, shop, inbox, database, settings, app, ledger
):
    await buy(client, shop)
    dispatcher = await make_dispatcher(database, settings, app)
    queued = await send(client, shop)
    assert queued["status"] == "queued"
    assert await dispatcher.run_once() == 1
    [mail] = inbox.messages
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert NOTICE_DE in text, "Jane's locale is de"
    assert NOTICE_DE in html
    page = mail["List-Unsubscribe"].split(",")[0].strip("<> ").removesuffix("/one-click")
    assert page in text, "the notice names where to object"
    status = (await client.get(f"/v1/messages/{queued['message_id']}", headers=shop["sender"])).json()
    assert status["status"] == "sent"

    # a subscriber's mail rests on consent: the ordinary footer, no such notice
    olga = await ledger.point("email", "olga@example.com", external_id="olga")
    await ledger.apply(olga, await purpose_of_session(database, "coffee_offers"), "signup", "confirm")
    await send(client, shop, contact="olga")
    assert await dispatcher.run_once() == 1
    plain = inbox.messages[1].get_body(("plain",)).get_content()
    assert NOTICE_DE not in plain
    assert NOTICE_EN not in plain


async def test_an_objection_between_queue_and_send_blocks_the_customers_mail(
    client, shop, inbox, database, settings, app
):
    await buy(client, shop)
    dispatcher = await make_dispatcher(database, settings, app)
    queued = await send(client, shop)
    objected = await client.post(
        "/v1/objections", json={"contact": "jane", "scope": "all_marketing", "kind": "art21"}, headers=shop["writer"]
    )
    assert objected.status_code == 201, objected.text
    assert await dispatcher.run_once() == 1
    assert inbox.messages == []
    status = (await client.get(f"/v1/messages/{queued['message_id']}", headers=shop["sender"])).json()
    assert status["status"] == "blocked_at_send"


async def test_the_purchases_are_in_the_subject_access_export_and_go_with_an_erasure(client, shop, admin, session):
    bought = (await buy(client, shop)).json()
    export = await client.get("/v1/contacts/jane/export", headers=admin)
    assert export.status_code == 200, export.text
    [exported] = export.json()["purchases"]
    assert (exported["reference"], exported["event_id"]) == ("A-1001", bought["event_id"])
    erased = await client.delete("/v1/contacts/jane", headers=admin)
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["purchases"] == 1
    assert await session.scalar(select(func.count()).select_from(Purchase)) == 0
    event = await session.get(ConsentEvent, bought["event_id"])
    assert event.personal is None, "the ledger keeps the event, not its evidence"


async def test_similar_products_of_is_for_marketing_purposes_with_well_formed_categories(client, admin):
    transactional = await client.post(
        "/v1/purposes",
        json={"key": "orders", "name": "Orders", "kind": "transactional", "similar_products_of": ["coffee"]},
        headers=admin,
    )
    assert transactional.status_code == 422
    assert transactional.json()["code"] == "similar_products_of_marketing_only"
    bad = await client.post(
        "/v1/purposes",
        json={"key": "offers", "name": "Offers", "kind": "marketing", "similar_products_of": ["Coffee!"]},
        headers=admin,
    )
    assert bad.status_code == 422
    plain = await client.post(
        "/v1/purposes", json={"key": "offers", "name": "Offers", "kind": "marketing"}, headers=admin
    )
    assert plain.json()["similar_products_of"] == []
    listed = (await client.get("/v1/purposes", headers=admin)).json()
    assert listed == [plain.json()]


async def ledger_point(session, point_id):
    from app.ledger.models import ContactPoint  # noqa: PLC0415

    return await session.get(ContactPoint, point_id)


async def purpose_of(session, key):
    from app.purposes.models import Purpose  # noqa: PLC0415

    return await session.scalar(select(Purpose.id).where(Purpose.key == key))


async def purpose_of_session(database, key):
    async with database.sessionmaker() as db_session:
        return await purpose_of(db_session, key)


async def shop_admin(_client, shop):
    return shop["admin"]


async def make_dispatcher(database, settings, app):
    adapters = Adapters(settings, Keys(TEST_SECRET), app.state.mail_sender)
    config = DispatchConfig(concurrency=1, deadline=2.0, base_backoff=0.0, max_attempts=2)
    return Dispatcher(database, Keys(TEST_SECRET), settings, adapters, config=config)


CONTENT = {
    "email": {"subject": "Neuer Kaffee", "text": "Frisch geröstet.", "html": "<html><body><p>Frisch</p></body></html>"}
}


async def send(client, shop, contact="jane"):
    body = {"contact": contact, "purpose": "coffee_offers", "route": ["email"], "content": CONTENT}
    response = await client.post("/v1/messages", json=body, headers=shop["sender"])
    assert response.status_code == 202, response.text
    return response.json()


async def test_a_merge_moves_the_purchase_with_its_address_and_a_duplicates_objection_ends_the_basis(
    client, shop, ledger
):
    bought = (await buy(client, shop, contact="jane")).json()
    writer = shop["writer"]
    assert (await client.post("/v1/contacts", json={"external_id": "jane-2"}, headers=writer)).status_code == 201
    merged = await client.post("/v1/contacts/jane-2/merge", json={"duplicate": "jane"}, headers=writer)
    assert merged.status_code == 200, merged.text
    decision = await eligibility(client, shop, contact="jane-2")
    assert (decision["reason"], decision["evidence_event_id"]) == ("existing_customer", bought["event_id"])
    assert [p["reference"] for p in (await client.get("/v1/contacts/jane-2/purchases", headers=writer)).json()] == [
        "A-1001"
    ]

    # a duplicate that objected to all marketing: the merged contact's addresses take its no, for good
    await ledger.point("sms", "+4915199999999", external_id="jane-3")
    objected = await client.post(
        "/v1/objections", json={"contact": "jane-3", "scope": "all_marketing", "kind": "art21"}, headers=writer
    )
    assert objected.status_code == 201, objected.text
    assert (
        await client.post("/v1/contacts/jane-2/merge", json={"duplicate": "jane-3"}, headers=writer)
    ).status_code == 200
    decision = await eligibility(client, shop, contact="jane-2")
    assert (decision["eligible"], decision["reason"]) == (False, "opted_out")


async def test_an_address_the_contact_already_has_is_used_and_verified_by_the_shops_records(client, shop, ledger):
    contact_id = shop["contact_id"]
    known = await ledger.point("email", "jane@example.com", contact_id=contact_id, verified=None)  # a form brought it
    bought = (await buy(client, shop, address="  jane@EXAMPLE.com ")).json()
    assert bought["contact_point_id"] == str(known.id)
    [point] = (await client.get("/v1/contacts/jane", headers=shop["writer"])).json()["contact_points"]
    assert point["verified_via"] == "api"


async def test_the_audience_sql_and_the_gate_agree_on_random_customers_and_histories(
    client, shop, ledger, session, database
):
    """The export's SQL and decide_point give the same points, reasons and evidence with purchases in the mix."""
    import random  # noqa: PLC0415
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from app.domain.gate import decide_point  # noqa: PLC0415
    from app.domain.model import Channel, PurposeKind  # noqa: PLC0415
    from app.domain.transitions import TransitionNotAllowed  # noqa: PLC0415
    from app.eligibility import repository  # noqa: PLC0415

    rng = random.Random(20261205)  # noqa: S311  # reproducible test data, not cryptography
    coffee = await purpose_of(session, "coffee_offers")
    points = []
    for i in range(40):
        channel = rng.choice([Channel.EMAIL, Channel.EMAIL, Channel.EMAIL, Channel.SMS])
        value = f"c{i}@example.com" if channel is Channel.EMAIL else f"+49151000{i:05d}"
        point = await ledger.point(channel.value, value, external_id=f"c{i}")
        points.append(point)
        for step in range(rng.randint(0, 3)):
            if channel is Channel.EMAIL and rng.random() < 0.5:
                when = (datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=step)).isoformat()
                bought = await client.post(
                    f"/v1/contacts/c{i}/purchases",
                    json=sale(f"R-{i}-{step}", rng.choice(["coffee", "tea", "shoes"]), value, purchased_at=when),
                    headers=shop["writer"],
                )
                assert bought.status_code == 201, bought.text
            else:
                trigger = rng.choice(["signup", "confirm", "unsubscribe", "complaint", "objection", "lapse"])
                if channel is Channel.SMS:
                    trigger = rng.choice(["signup", "start_word", "stop_word"])
                with contextlib.suppress(TransitionNotAllowed):
                    await ledger.apply(point, rng.choice([coffee, None]), trigger)
    contact_ids = sorted({p.contact_id for p in points})
    facts = await repository.point_facts(session, ledger.workspace_id, contact_ids, ["email", "sms"], coffee)
    by_gate = {}
    for _, f in facts:
        decision = decide_point(
            f, PurposeKind.MARKETING, now=datetime.now(UTC), window=None, default_timezone="Europe/Berlin"
        )
        if decision.eligible:
            by_gate[str(f.id)] = (decision.reason.value, str(decision.evidence_event_id))
    rows = await audience(client, shop, channels=("email", "sms"))
    by_sql = {r["contact_point_id"]: (r["reason"], str(r["evidence_event_id"])) for r in rows}
    assert by_sql == by_gate
    reasons = {reason for reason, _ in by_gate.values()}
    assert reasons == {"existing_customer", "opted_in"}, "the random data should hold both bases"
    assert len(by_gate) < len(points), "and points that are not eligible"
    assert any(f.customer_event_id and f.customer_withdrawn for _, f in facts), "and customers who withdrew"


async def test_a_consent_past_its_validity_leaves_the_customer_basis_standing_in_the_gate_and_the_audience(
    client, shop, admin, database, tenant, ledger
):
    """Both lifecycle rules at once (issue 19 items 1 and 2): an opted-in consent past its end is expired before
    any sweep, and there, as for a recorded expiry, the existing-customer basis stands in — the single check and
    the audience export agree."""
    lifecycle = {"validity": "P1M", "inactivity": None, "repermission_before": None}
    assert (await client.put("/v1/purposes/coffee_offers/lifecycle", json=lifecycle, headers=admin)).status_code == 200
    listed = (await client.get("/v1/purposes", headers=admin)).json()
    purpose_id = uuid.UUID(next(p["id"] for p in listed if p["key"] == "coffee_offers"))
    point = await ledger.point("email", "jane@example.com", contact_id=uuid.UUID(shop["contact_id"]))
    await given(database, tenant, point, purpose_id, datetime.now(UTC) - timedelta(days=90))
    assert (await eligibility(client, shop))["reason"] == "expired", "no purchase yet: the consent has ended"
    assert await audience(client, shop) == []
    assert (await buy(client, shop, address="jane@example.com")).status_code == 201
    decided = await eligibility(client, shop)
    assert (decided["eligible"], decided["reason"]) == (True, "existing_customer")
    assert decided.get("expires_at") is None, "the ended consent's date is not the basis's end"
    [row] = await audience(client, shop)
    assert (row["contact_point_id"], row["reason"]) == (str(point.id), "existing_customer")


async def test_the_preference_page_shows_the_customer_basis_and_withdrawing_objects_to_it(client, shop):
    """Helper review: an existing customer saw "not receiving" and had no way to object on the page."""
    assert (await buy(client, shop, address="jane@example.com")).status_code == 201
    link = await client.post(f"/v1/contacts/{shop['contact_id']}/preference-link", headers=shop["writer"])
    path = "/p/" + link.json()["url"].rsplit("/p/", 1)[1]
    page = (await client.get(path, params={"lang": "en"})).text
    assert "You receive this as a customer of" in page
    view = (await client.get(f"{path}/preferences")).json()
    [email] = [a for a in view["addresses"] if a["channel"] == "email"]
    coffee = next(p for p in email["purposes"] if p["key"] == "coffee_offers")
    assert (coffee["state"], coffee["can_withdraw"]) == ("customer", True)
    change = {"action": "withdraw", "point": email["point_id"], "purpose": "coffee_offers"}
    answer = await client.post(f"{path}/preferences", json=change, headers={"Origin": "https://consent.example.com"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] is True
    decided = await eligibility(client, shop)
    assert (decided["eligible"], decided["reason"]) == (False, "opted_out")
    assert (await buy(client, shop, reference="A-2002", address="jane@example.com")).status_code == 201
    assert (await eligibility(client, shop))["eligible"] is False, "a new purchase brings nothing back"


async def test_a_purchase_time_outside_the_calendar_is_422_not_a_500(client, shop):
    """Hostile review: year 1 at +14:00 has no UTC time; it failed in the ledger's hash with a 500."""
    answer = await buy(client, shop, purchased_at="0001-01-01T00:00:00+14:00")
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_datetime"


async def test_a_purchase_may_name_its_time_occurred_at_as_the_contract_does(client, shop, session):
    """API.md names the time of sale `occurred_at`; `purchased_at` is the service's own name: either is taken."""
    answer = await buy(client, shop, purchased_at=None, occurred_at="2026-11-20T10:15:00+01:00")
    assert answer.status_code == 201, answer.text
    stored = await session.scalar(select(Purchase.purchased_at))
    assert stored == datetime.fromisoformat("2026-11-20T10:15:00+01:00")
    assert (await eligibility(client, shop))["reason"] == "existing_customer"


@pytest.mark.parametrize(
    ("field", "when"),
    [
        ("purchased_at", "0001-01-02T00:00:00Z"),  # year 1: made the contact an existing customer (hostile review)
        ("purchased_at", "1970-01-01T00:00:05Z"),  # what a Unix timestamp 5 was read as
        ("occurred_at", "1999-12-31T23:59:59+01:00"),
        ("purchased_at", "ten years and a day ago"),
    ],
)
async def test_a_sale_dated_before_the_lower_bound_is_refused_naming_the_field_and_the_bound(
    client, shop, session, field, when
):
    if when == "ten years and a day ago":
        when = (datetime.now(UTC) - timedelta(days=3654)).isoformat()
    changes = {"purchased_at": None, "occurred_at": when} if field == "occurred_at" else {"purchased_at": when}
    answer = await buy(client, shop, **changes)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "purchased_at_too_old"
    assert problem["errors"][0]["field"] == field
    earliest = datetime.fromisoformat(problem["earliest"])
    assert abs(earliest - (datetime.now(UTC) - timedelta(days=3653))) < timedelta(minutes=1)
    assert problem["earliest"] in problem["detail"]
    assert "10 years" in problem["detail"]
    assert await session.scalar(select(func.count()).select_from(Purchase)) == 0
    assert (await eligibility(client, shop))["reason"] != "existing_customer"


async def test_a_sale_just_inside_the_bounds_is_taken_and_one_beyond_the_clock_skew_is_refused(client, shop):
    old = (datetime.now(UTC) - timedelta(days=3650)).isoformat()
    assert (await buy(client, shop, reference="OLD", purchased_at=old)).status_code == 201
    soon = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    assert (await buy(client, shop, reference="SKEW", purchased_at=soon)).status_code == 201
    later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    answer = await buy(client, shop, reference="LATER", purchased_at=later)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "purchased_at_in_future"
    assert answer.json()["errors"][0]["field"] == "purchased_at"
    assert answer.json()["latest"] in answer.json()["detail"]


async def test_a_withdrawal_on_another_purpose_between_gate_and_mark_blocks_the_customers_mail(
    client, shop, inbox, database, settings, app, ledger, session, monkeypatch
):
    """UWG §7(3) ends with any withdrawal on the address (``customer_withdrawn``), whatever its purpose: one recorded
    on 'newsletter' after the gate read the facts of Jane's 'coffee_offers' mail, before its in-flight mark, blocks it
    (the mark compares the facts of its own statement with the gate's; a re-check of the mail's purpose alone missed
    it, hostile review 2026-12-06)."""
    first = (await buy(client, shop)).json()
    point = await ledger_point(session, first["contact_point_id"])
    newsletter = await purpose_of(session, "newsletter")
    dispatcher = await make_dispatcher(database, settings, app)
    queued = await send(client, shop)
    assert queued["status"] == "queued", queued
    assert (await eligibility(client, shop))["reason"] == "existing_customer"
    facts = Dispatcher._facts
    done = []

    async def facts_then_withdraw(self, *args):
        read = await facts(self, *args)
        if not done:
            done.append(True)
            await ledger.apply(point, newsletter, "unsubscribe")
        return read

    monkeypatch.setattr(Dispatcher, "_facts", facts_then_withdraw)
    assert await dispatcher.run_once() == 1
    assert done
    assert inbox.messages == []
    status = (await client.get(f"/v1/messages/{queued['message_id']}", headers=shop["sender"])).json()
    assert status["status"] == "blocked_at_send", status
