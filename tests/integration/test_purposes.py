"""Purposes: created per workspace, listed, keys unique per workspace."""

from __future__ import annotations


async def test_create_and_list_purposes(client, admin):
    created = await client.post(
        "/v1/purposes", json={"key": "newsletter", "name": "Newsletter", "kind": "marketing"}, headers=admin
    )
    assert created.status_code == 201
    assert created.json()["kind"] == "marketing"
    await client.post(
        "/v1/purposes", json={"key": "order_updates", "name": "Orders", "kind": "transactional"}, headers=admin
    )
    listed = (await client.get("/v1/purposes", headers=admin)).json()
    assert [p["key"] for p in listed] == ["newsletter", "order_updates"]


async def test_duplicate_key_is_a_conflict_and_leaves_the_first(client, admin):
    await client.post("/v1/purposes", json={"key": "offers", "name": "Offers", "kind": "marketing"}, headers=admin)
    again = await client.post(
        "/v1/purposes", json={"key": "offers", "name": "Other", "kind": "transactional"}, headers=admin
    )
    assert again.status_code == 409
    assert again.json()["code"] == "purpose_exists"
    listed = (await client.get("/v1/purposes", headers=admin)).json()
    assert [(p["key"], p["name"]) for p in listed] == [("offers", "Offers")]


async def test_purposes_are_per_workspace(client, admin, other_tenant):
    theirs = await other_tenant.key()
    await client.post("/v1/purposes", json={"key": "offers", "name": "Offers", "kind": "marketing"}, headers=theirs)
    mine = await client.post("/v1/purposes", json={"key": "offers", "name": "Mine", "kind": "marketing"}, headers=admin)
    assert mine.status_code == 201
    assert [p["name"] for p in (await client.get("/v1/purposes", headers=admin)).json()] == ["Mine"]
