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
