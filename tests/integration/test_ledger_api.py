"""Notices, contacts, events, withdrawals, objections and chain verification through the HTTP API."""

from __future__ import annotations

import hashlib

from app.lib.auth import Scope


async def test_notices_are_versioned_immutable_and_hashed(client, admin, ledger):
    await ledger.purpose("newsletter")
    text = "Ja, ich möchte den Newsletter per E-Mail erhalten. Abmeldung jederzeit."
    body = {"purpose": "newsletter", "channels": ["email"], "locale": "de", "text": text}
    first = await client.post("/v1/notices", json=body, headers=admin)
    assert first.status_code == 201
    notice = first.json()
    assert notice["version"] == 1
    assert notice["sha256"] == hashlib.sha256(text.encode()).hexdigest()

    again = await client.post("/v1/notices", json=body, headers=admin)
    assert again.status_code == 200
    assert again.json()["notice_id"] == notice["notice_id"]

    changed = await client.post("/v1/notices", json={**body, "text": text + " Neu."}, headers=admin)
    assert changed.status_code == 201
    assert changed.json()["version"] == 2
    fetched = await client.get(f"/v1/notices/{notice['notice_id']}", headers=admin)
    assert fetched.json()["text"] == text, "an old version keeps its exact text"
    assert (await client.put(f"/v1/notices/{notice['notice_id']}", json=body, headers=admin)).status_code == 405
    assert (await client.delete(f"/v1/notices/{notice['notice_id']}", headers=admin)).status_code == 405


async def test_notice_for_unknown_purpose_or_bad_locale_is_refused(client, admin):
    response = await client.post(
        "/v1/notices", json={"purpose": "nope", "channels": ["email"], "locale": "de", "text": "x"}, headers=admin
    )
    assert response.status_code == 404
    assert response.json()["code"] == "purpose_not_found"
    response = await client.post(
        "/v1/notices", json={"purpose": "nope", "channels": ["fax"], "locale": "german", "text": "x"}, headers=admin
    )
    assert response.status_code == 422


async def test_contact_shows_points_consents_and_events(client, tenant, ledger):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com", external_id="crm-42")
    await ledger.apply(point, purpose.id, "signup", "confirm")
    headers = await tenant.key(Scope.AUDIT_READ)

    by_external = await client.get("/v1/contacts/crm-42", headers=headers)
    assert by_external.status_code == 200
    contact = by_external.json()
    by_id = await client.get(f"/v1/contacts/{contact['id']}", headers=headers)
    assert by_id.json() == contact
    [email] = contact["contact_points"]
    assert email["address"] == "jane@example.com"
    assert email["address_masked"] == "j***@example.com"
    assert email["reachability"] == "reachable"
    [consent] = email["consents"]
    assert consent["purpose"] == "newsletter"
    assert consent["state"] == "opted_in"
    assert consent["legal_basis"] == "consent"

    events = (await client.get("/v1/contacts/crm-42/events", headers=headers)).json()
    assert [(e["trigger"], e["from_state"], e["to_state"]) for e in events] == [
        ("signup", "none", "pending"),
        ("confirm", "pending", "opted_in"),
    ]
    assert events[1]["prev_hash"] == events[0]["hash"]
    assert events[0]["evidence"] == {"ip": "198.51.100.4"}
    page = (
        await client.get("/v1/contacts/crm-42/events", params={"after_seq": events[0]["seq"]}, headers=headers)
    ).json()
    assert [e["id"] for e in page] == [events[1]["id"]]


async def test_contact_of_another_workspace_answers_like_an_unknown_one(client, ledger, other_tenant):
    await ledger.point("email", "jane@example.com", external_id="crm-42")
    theirs = await other_tenant.key(Scope.AUDIT_READ)
    foreign = await client.get("/v1/contacts/crm-42", headers=theirs)
    unknown = await client.get("/v1/contacts/crm-43", headers=theirs)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["code"] == unknown.json()["code"] == "contact_not_found"


async def test_contacts_need_consents_or_audit_scope(client, tenant, ledger):
    await ledger.point("email", "jane@example.com", external_id="crm-42")
    response = await client.get("/v1/contacts/crm-42", headers=await tenant.key(Scope.ELIGIBILITY_READ))
    assert response.status_code == 403
    assert response.json()["accepted_scopes"] == ["consents:write", "audit:read", "admin"]  # admin passes too


async def test_withdrawal_of_one_purpose_answers_the_resulting_state(client, tenant, ledger):
    newsletter = await ledger.purpose("newsletter")
    offers = await ledger.purpose("offers")
    point = await ledger.point("email", "jane@example.com", external_id="crm-42")
    await ledger.apply(point, newsletter.id, "signup", "confirm")
    await ledger.apply(point, offers.id, "signup", "confirm")
    headers = await tenant.key(Scope.CONSENTS_WRITE)

    response = await client.post(
        "/v1/withdrawals",
        json={"contact": "crm-42", "channel": "email", "purpose": "newsletter", "evidence": {"ip": "203.0.113.9"}},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    [change] = response.json()["changes"]
    assert (change["purpose"], change["from_state"], change["state"]) == ("newsletter", "opted_in", "opted_out")
    contact = (await client.get("/v1/contacts/crm-42", headers=headers)).json()
    states = {c["purpose"]: c["state"] for c in contact["contact_points"][0]["consents"]}
    assert states == {"newsletter": "opted_out", "offers": "opted_in"}


async def test_withdrawal_of_everything_covers_future_purposes(client, tenant, ledger):
    newsletter = await ledger.purpose("newsletter")
    await ledger.purpose("order_updates", kind="transactional")
    email = await ledger.point("email", "jane@example.com", external_id="crm-42")
    sms = await ledger.point("sms", "+4915123456789", contact_id=email.contact_id)
    await ledger.apply(email, newsletter.id, "signup", "confirm")
    await ledger.apply(sms, newsletter.id, "signup", "start_word")
    headers = await tenant.key(Scope.CONSENTS_WRITE)

    response = await client.post(
        "/v1/withdrawals", json={"contact": "crm-42", "channel": "all", "purpose": "all"}, headers=headers
    )
    assert response.status_code == 200, response.text
    changes = {(c["channel"], c["purpose"]): c["state"] for c in response.json()["changes"]}
    assert changes == {
        ("email", None): "opted_out",
        ("email", "newsletter"): "opted_out",
        ("sms", None): "opted_out",
        ("sms", "newsletter"): "opted_out",
    }, "transactional purposes are not touched; the channel-level row covers purposes created later"


async def test_transactional_purpose_cannot_be_withdrawn(client, tenant, ledger):
    await ledger.purpose("order_updates", kind="transactional")
    await ledger.point("email", "jane@example.com", external_id="crm-42")
    response = await client.post(
        "/v1/withdrawals",
        json={"contact": "crm-42", "channel": "email", "purpose": "order_updates"},
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert response.status_code == 422
    assert response.json()["code"] == "purpose_not_withdrawable"


async def test_objection_by_postal_address_creates_the_contact_and_objects(client, tenant, ledger, session):
    headers = await tenant.key(Scope.CONSENTS_WRITE)
    body = {
        "postal_address": {
            "name": "Dr. Hans Müller",
            "street": "Karl-Marx-Straße 12a",
            "postcode": "12043",
            "city": "Berlin",
        },
        "scope": "print",
        "kind": "art21",
        "evidence": {"document_ref": "letter 2026-11-20"},
    }
    response = await client.post("/v1/objections", json=body, headers=headers)
    assert response.status_code == 201, response.text
    [change] = response.json()["changes"]
    assert (change["channel"], change["purpose"], change["state"]) == ("print", None, "objected")

    # the same person written differently finds the same contact point
    again = await client.post(
        "/v1/objections",
        json={
            **body,
            "postal_address": {
                "name": "MUELLER, Hans",
                "street": "Karl Marx Str. 12 A",
                "postcode": "12043",
                "city": "BERLIN",
            },
        },
        headers=headers,
    )
    assert again.json()["contact_id"] == response.json()["contact_id"]
    assert again.json()["changes"][0]["from_state"] == "objected"

    from sqlalchemy import text  # noqa: PLC0415

    rows = (await session.execute(text("SELECT key, reason, scope FROM suppressions"))).all()
    assert rows, "an objection leaves a suppression key"
    assert all(r.reason == "objection_art21" and r.scope == "all_marketing" for r in rows)
    stored = " ".join(str(bytes(r.key)) for r in rows)
    assert "mueller" not in stored.lower(), "no clear text in suppressions"


async def test_objection_to_all_marketing_withdraws_every_channel(client, tenant, ledger):
    newsletter = await ledger.purpose("newsletter")
    email = await ledger.point("email", "jane@example.com", external_id="crm-42")
    await ledger.apply(email, newsletter.id, "signup", "confirm")
    response = await client.post(
        "/v1/objections",
        json={
            "contact": "crm-42",
            "postal_address": {"street": "Hauptstr. 1", "postcode": "10115", "city": "Berlin"},
            "scope": "all_marketing",
            "kind": "personal",
        },
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert response.status_code == 201, response.text
    changes = {(c["channel"], c["purpose"]): c["state"] for c in response.json()["changes"]}
    assert changes == {("email", None): "opted_out", ("print", None): "objected"}


async def test_invalid_postal_address_is_a_specific_422(client, tenant):
    response = await client.post(
        "/v1/objections",
        json={
            "postal_address": {"street": "Hauptstr. 1", "postcode": "1011", "city": "Berlin"},
            "scope": "print",
            "kind": "personal",
        },
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_postcode"
    response = await client.post(
        "/v1/objections",
        json={
            "postal_address": {"street": "Hauptstraße", "postcode": "10115", "city": "Berlin"},
            "scope": "print",
            "kind": "personal",
        },
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert response.json()["code"] == "invalid_postal_address"
    assert "house number" in response.json()["detail"]


async def test_lifting_an_objection_needs_proof_and_an_objection(client, tenant, ledger):
    point = await ledger.point("print", "DE|10115|hauptstr|1", external_id="crm-7")
    headers = await tenant.key(Scope.CONSENTS_WRITE)
    no_proof = await client.post(
        "/v1/objections/withdrawals", json={"contact": "crm-7", "evidence": {}}, headers=headers
    )
    assert no_proof.status_code == 422
    assert no_proof.json()["code"] == "proof_required"

    not_objected = await client.post(
        "/v1/objections/withdrawals", json={"contact": "crm-7", "evidence": {"document_ref": "scan-1"}}, headers=headers
    )
    assert not_objected.status_code == 409
    problem = not_objected.json()
    assert problem["code"] == "transition_not_allowed"
    assert problem["current_state"] == "none"

    await ledger.apply(point, None, "objection")
    lifted = await client.post(
        "/v1/objections/withdrawals", json={"contact": "crm-7", "evidence": {"document_ref": "scan-1"}}, headers=headers
    )
    assert lifted.status_code == 200
    assert lifted.json()["changes"][0]["state"] == "none"


async def test_audit_verify_reports_a_valid_chain(client, tenant, ledger):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("sms", "+4915123456789")
    await ledger.apply(point, purpose.id, "signup", "start_word", "stop_word")
    response = await client.get("/v1/audit/verify", headers=await tenant.key(Scope.AUDIT_READ))
    assert response.status_code == 200
    assert response.json() == {
        "events_checked": 3,
        "valid": True,
        "first_broken_event_id": None,
        "first_broken_seq": None,
        "reason": None,
    }
