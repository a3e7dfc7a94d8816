"""Bearer authentication, scopes and workspace isolation of API keys."""

from __future__ import annotations

import uuid

from app.lib.auth import Scope


async def test_missing_key_answers_401_problem(client):
    response = await client.get("/v1/purposes")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["code"] == "missing_api_key"
    assert body["status"] == 401
    assert body["instance"] == "/v1/purposes"


async def test_unknown_and_malformed_keys_answer_401(client):
    for header in ("Bearer csk_not-a-real-key", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer"):
        response = await client.get("/v1/purposes", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["code"] in {"invalid_api_key", "invalid_authorization_header"}


async def test_key_without_scope_answers_403_naming_the_scope(client, tenant):
    headers = await tenant.key(Scope.ELIGIBILITY_READ)
    response = await client.get("/v1/purposes", headers=headers)
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "insufficient_scope"
    assert body["required_scope"] == "admin"


async def test_admin_creates_key_and_secret_is_shown_once(client, admin):
    response = await client.post(
        "/v1/api-keys", json={"name": "campaign tool", "scopes": ["eligibility:read"]}, headers=admin
    )
    assert response.status_code == 201
    created = response.json()
    assert created["secret"].startswith("csk_")
    assert created["scopes"] == ["eligibility:read"]

    listed = (await client.get("/v1/api-keys", headers=admin)).json()
    mine = next(k for k in listed if k["id"] == created["id"])
    assert "secret" not in mine
    assert mine["display_prefix"] == created["secret"][:10]

    new_key = {"Authorization": f"Bearer {created['secret']}"}
    assert (await client.get("/v1/workspace", headers=new_key)).status_code == 200
    assert (await client.get("/v1/purposes", headers=new_key)).status_code == 403


async def test_only_the_hash_of_the_secret_is_stored(client, admin, session):
    created = (await client.post("/v1/api-keys", json={"name": "k", "scopes": ["audit:read"]}, headers=admin)).json()
    from sqlalchemy import text  # noqa: PLC0415

    rows = (
        (await session.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": created["id"]})).mappings().one()
    )
    stored = " ".join(str(v) for v in rows.values())
    assert created["secret"] not in stored
    assert created["secret"][4:] not in stored
    assert len(rows["secret_hash"]) == 32


async def test_revoked_key_is_refused_at_once(client, admin):
    created = (await client.post("/v1/api-keys", json={"name": "k", "scopes": ["admin"]}, headers=admin)).json()
    headers = {"Authorization": f"Bearer {created['secret']}"}
    assert (await client.get("/v1/purposes", headers=headers)).status_code == 200
    assert (await client.delete(f"/v1/api-keys/{created['id']}", headers=admin)).status_code == 204
    response = await client.get("/v1/purposes", headers=headers)
    assert response.status_code == 401
    listed = (await client.get("/v1/api-keys", headers=admin)).json()
    assert next(k for k in listed if k["id"] == created["id"])["revoked_at"] is not None


async def test_foreign_key_id_answers_exactly_like_an_unknown_id(client, admin, other_tenant):
    foreign = (
        await client.post(
            "/v1/api-keys", json={"name": "theirs", "scopes": ["admin"]}, headers=await other_tenant.key()
        )
    ).json()
    unknown = await client.delete(f"/v1/api-keys/{uuid.uuid4()}", headers=admin)
    cross = await client.delete(f"/v1/api-keys/{foreign['id']}", headers=admin)
    assert unknown.status_code == cross.status_code == 404

    def strip(body):
        return {k: v for k, v in body.items() if k not in {"instance", "request_id"}}

    assert strip(unknown.json()) == strip(cross.json())
    # and the foreign key still works
    their_headers = {"Authorization": f"Bearer {foreign['secret']}"}
    assert (await client.get("/v1/workspace", headers=their_headers)).status_code == 200


async def test_a_workspace_lists_only_its_own_keys(client, admin, other_tenant):
    await other_tenant.key(Scope.ADMIN)
    keys = (await client.get("/v1/api-keys", headers=admin)).json()
    workspace = (await client.get("/v1/workspace", headers=admin)).json()
    assert len(keys) == 1
    assert workspace["name"] == "Acme"


async def test_scopes_must_be_known(client, admin):
    response = await client.post("/v1/api-keys", json={"name": "k", "scopes": ["root"]}, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "scopes[0]"
    response = await client.post("/v1/api-keys", json={"name": "k", "scopes": []}, headers=admin)
    assert response.status_code == 422
