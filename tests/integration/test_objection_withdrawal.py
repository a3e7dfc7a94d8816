"""Withdrawing a print objection lifts its own suppression, and only that; a sticker is labelled as a sticker.

Hostile review of 2026-12-06 (docs/security.md): the withdrawal answered print `none` while the objection's
suppression kept the address out of every mailing, and a sticker was labelled an Art. 21 objection.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from app.lib.auth import Scope

ADDRESS = {"street": "Hauptstr. 12 A", "postcode": "10115", "city": "Berlin"}
PROOF = {"document_ref": "letter 2026-12-01"}


@pytest.fixture
async def letters(ledger):
    return await ledger.purpose("letters")


async def person(client, tenant, external_id: str, name: str | None = "Erika Musterfrau") -> None:
    address = {**ADDRESS, "name": name} if name else ADDRESS
    created = await client.post(
        "/v1/contacts",
        json={"external_id": external_id, "postal_address": address},
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert created.status_code == 201, created.text


async def object_(client, tenant, kind: str, *, contact: str | None = None, address: Any = None) -> None:
    body: dict[str, Any] = {"scope": "print", "kind": kind, "evidence": {"note": f"{kind} objection"}}
    if contact:
        body["contact"] = contact
    if address:
        body["postal_address"] = address
    response = await client.post("/v1/objections", json=body, headers=await tenant.key(Scope.CONSENTS_WRITE))
    assert response.status_code == 201, response.text


async def withdraw(client, tenant, contact: str, headers: dict[str, str] | None = None) -> Any:
    return await client.post(
        "/v1/objections/withdrawals",
        json={"contact": contact, "evidence": PROOF},
        headers={**(await tenant.key(Scope.CONSENTS_WRITE)), **(headers or {})},
    )


async def print_decision(client, tenant, contact: str) -> dict[str, Any]:
    response = await client.get(
        "/v1/eligibility",
        params={"contact": contact, "channel": "print", "purpose": "letters"},
        headers=await tenant.key(Scope.ELIGIBILITY_READ),
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def suppression_reasons(session, tenant) -> list[str]:
    rows = await session.execute(
        text("SELECT reason FROM suppressions WHERE workspace_id = :ws ORDER BY reason"), {"ws": tenant.id}
    )
    return list(rows.scalars())


@pytest.mark.parametrize("kind", ["personal", "art21"])
async def test_withdrawing_the_objection_makes_the_address_eligible_for_print_again(
    client, tenant, letters, kind, session
):
    await person(client, tenant, "crm-1")
    await object_(client, tenant, kind, contact="crm-1")
    assert (await print_decision(client, tenant, "crm-1"))["reason"] == "objected"

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    answer = lifted.json()
    assert [(c["channel"], c["state"]) for c in answer["changes"]] == [("print", "none")]
    assert answer["still_blocked_by"] == []
    decision = await print_decision(client, tenant, "crm-1")
    assert (decision["eligible"], decision["reason"]) == (True, "legitimate_interest")
    assert await suppression_reasons(session, tenant) == [], "the objection's own suppression is lifted"
    events = (await client.get("/v1/contacts/crm-1/events", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert [(e["trigger"], e["to_state"]) for e in events][-1] == ("objection_withdrawn", "none")
    assert events[-1]["evidence"] == PROOF, "the lifting is in the ledger with the person's proof"


async def test_a_robinson_entry_still_blocks_and_the_answer_says_so(client, tenant, letters):
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    listed = await client.post(
        "/v1/imports/robinson",
        content="Name;Straße;Hausnummer;PLZ;Ort\nErika Musterfrau;Hauptstraße;12a;10115;Berlin\n".encode(),
        headers={**(await tenant.key(Scope.CONSENTS_WRITE)), "Content-Type": "text/csv"},
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["new_entries"] == 1, "the listing is kept beside the objection, which may be withdrawn"

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["changes"][0]["state"] == "none"
    assert lifted.json()["still_blocked_by"] == ["robinson"], "the person must leave the list itself"
    decision = await print_decision(client, tenant, "crm-1")
    assert (decision["eligible"], decision["reason"]) == (False, "suppressed")


async def test_an_objection_of_kind_robinson_is_not_lifted_with_the_personal_one(client, tenant, letters):
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    await object_(client, tenant, "robinson", contact="crm-1")

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.json()["still_blocked_by"] == ["robinson"]
    assert (await print_decision(client, tenant, "crm-1"))["reason"] == "suppressed"


@pytest.mark.parametrize(
    ("name", "sticker_first"),
    [
        ("Erika Musterfrau", True),
        ("Erika Musterfrau", False),
        (None, True),  # an address without a name: its own key is the household's
        (None, False),
    ],
    ids=["person-sticker-first", "person-objection-first", "household-sticker-first", "household-objection-first"],
)
async def test_withdrawing_the_personal_objection_leaves_the_sticker(
    client, tenant, letters, name, sticker_first, session
):
    await person(client, tenant, "crm-1", name)
    kinds = ["sticker", "personal"] if sticker_first else ["personal", "sticker"]
    for kind in kinds:
        await object_(client, tenant, kind, contact="crm-1")

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["still_blocked_by"] == ["objection_sticker"]
    decision = await print_decision(client, tenant, "crm-1")
    assert (decision["eligible"], decision["reason"]) == (False, "suppressed")
    assert set(await suppression_reasons(session, tenant)) == {"objection_sticker"}


async def test_a_sticker_of_the_household_recorded_apart_stays(client, tenant, letters):
    await object_(client, tenant, "sticker", address=ADDRESS)  # the carrier saw it: no person named
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.json()["still_blocked_by"] == ["objection_sticker"]
    assert (await print_decision(client, tenant, "crm-1"))["reason"] == "suppressed"


async def test_the_household_objection_of_another_contact_stays(client, tenant, letters, session):
    await object_(client, tenant, "personal", address=ADDRESS)  # an objection for the house, no one named
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")

    lifted = await withdraw(client, tenant, "crm-1")

    assert lifted.json()["still_blocked_by"] == ["objection_art21"]
    assert await suppression_reasons(session, tenant) == ["objection_art21"], "only Erika's own key was lifted"


async def test_another_workspaces_objection_of_the_same_address_stays(client, tenant, other_tenant, letters, session):
    for workspace in (tenant, other_tenant):
        await person(client, workspace, "crm-1")
        await object_(client, workspace, "personal", contact="crm-1")

    assert (await withdraw(client, tenant, "crm-1")).status_code == 200

    assert await suppression_reasons(session, tenant) == []
    assert await suppression_reasons(session, other_tenant) == ["objection_art21"]


async def test_a_repeated_withdrawal_lifts_nothing_more(client, tenant, letters, session):
    await person(client, tenant, "crm-1")
    await object_(client, tenant, "personal", contact="crm-1")
    await object_(client, tenant, "sticker", address=ADDRESS)
    first = await withdraw(client, tenant, "crm-1", {"Idempotency-Key": "lift-1"})
    assert first.status_code == 200, first.text

    again = await withdraw(client, tenant, "crm-1", {"Idempotency-Key": "lift-1"})
    assert (again.status_code, again.json()) == (200, first.json()), "the same key answers the first answer"
    unkeyed = await withdraw(client, tenant, "crm-1")
    assert unkeyed.status_code == 409, "nothing is objected any more"
    assert unkeyed.json()["code"] == "transition_not_allowed"

    assert set(await suppression_reasons(session, tenant)) == {"objection_sticker"}
    events = (await client.get("/v1/contacts/crm-1/events", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert [e["trigger"] for e in events].count("objection_withdrawn") == 1


async def test_a_sticker_is_labelled_a_sticker_and_a_personal_objection_art21(client, tenant, letters, session):
    await object_(client, tenant, "sticker", address={**ADDRESS, "name": "Hans Sticker"})
    assert await suppression_reasons(session, tenant) == ["objection_sticker"] * 2, "the address and the household"
    await object_(client, tenant, "personal", address={**ADDRESS, "name": "Otto Objector"})
    assert await suppression_reasons(session, tenant) == ["objection_art21", "objection_sticker", "objection_sticker"]


async def test_a_sticker_on_a_key_an_objection_holds_takes_the_label(client, tenant, letters, session):
    """One row stands for the key: the sticker, which lifting the Art. 21 objection leaves, labels it."""
    house = {"street": "Lindenallee 3", "postcode": "50667", "city": "Köln"}
    await object_(client, tenant, "personal", address=house)
    await object_(client, tenant, "sticker", address=house)
    assert await suppression_reasons(session, tenant) == ["objection_sticker"]
