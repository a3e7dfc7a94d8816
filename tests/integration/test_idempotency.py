"""The Idempotency-Key convention of API.md on POSTs that create or send."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from app.lib.auth import Scope
from app.lib.models import IdempotencyKey
from app.lib.orm import utcnow
from app.purposes.models import Purpose

PURPOSE = {"key": "newsletter", "name": "Newsletter", "kind": "marketing"}


async def purposes(session):
    return await session.scalar(select(func.count()).select_from(Purpose))


async def test_a_repeat_answers_the_first_answer_and_does_nothing_again(client, admin, tenant, session):
    headers = {**admin, "Idempotency-Key": "create-newsletter-1"}
    first = await client.post("/v1/purposes", json=PURPOSE, headers=headers)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    other_key_same_workspace = {**(await tenant.key(Scope.ADMIN)), "Idempotency-Key": "create-newsletter-1"}
    again = await client.post("/v1/purposes", json=PURPOSE, headers=other_key_same_workspace)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["content-type"] == first.headers["content-type"]
    assert await purposes(session) == 1


async def test_the_same_key_with_another_body_is_a_conflict(client, admin, session):
    headers = {**admin, "Idempotency-Key": "k-2"}
    assert (await client.post("/v1/purposes", json=PURPOSE, headers=headers)).status_code == 201
    other = await client.post("/v1/purposes", json={**PURPOSE, "key": "offers"}, headers=headers)
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["code"] == "idempotency_key_reused"
    assert await purposes(session) == 1


async def test_keys_belong_to_a_workspace(client, admin, other_tenant, session):
    headers = {**admin, "Idempotency-Key": "shared"}
    assert (await client.post("/v1/purposes", json=PURPOSE, headers=headers)).status_code == 201
    foreign = {**(await other_tenant.key(Scope.ADMIN)), "Idempotency-Key": "shared"}
    response = await client.post("/v1/purposes", json=PURPOSE, headers=foreign)
    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers
    assert await purposes(session) == 2


async def test_a_refusal_is_replayed_too(client, admin, session):
    headers = {**admin, "Idempotency-Key": "bad-1"}
    first = await client.post("/v1/purposes", json={"key": "x"}, headers=headers)
    assert first.status_code == 422
    again = await client.post("/v1/purposes", json={"key": "x"}, headers=headers)
    assert again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["code"] == first.json()["code"]


async def test_a_malformed_key_is_refused(client, admin, session):
    for key in ("has space", "x" * 256):
        response = await client.post("/v1/purposes", json=PURPOSE, headers={**admin, "Idempotency-Key": key})
        assert response.status_code == 422, key
        assert response.json()["code"] == "invalid_idempotency_key"
    assert await purposes(session) == 0


async def test_a_request_still_running_answers_409_and_an_abandoned_claim_is_taken_over(client, admin, tenant, session):
    await session.execute(
        insert(IdempotencyKey).values(workspace_id=tenant.id, key="running", fingerprint=b"?" * 32, created_at=utcnow())
    )
    await session.commit()
    busy = await client.post("/v1/purposes", json=PURPOSE, headers={**admin, "Idempotency-Key": "running"})
    assert busy.status_code == 409
    assert busy.json()["code"] == "idempotency_key_reused", "a running claim of another request"

    await session.execute(
        insert(IdempotencyKey).values(
            workspace_id=tenant.id, key="crashed", fingerprint=b"?" * 32, created_at=utcnow() - timedelta(minutes=5)
        )
    )
    await session.commit()
    taken = await client.post("/v1/purposes", json=PURPOSE, headers={**admin, "Idempotency-Key": "crashed"})
    assert taken.status_code == 201


async def test_in_progress_with_the_same_request(client, admin, tenant, session):
    import hashlib  # noqa: PLC0415

    body = b'{"key":"newsletter","name":"Newsletter","kind":"marketing"}'
    fingerprint = hashlib.sha256(b"\0".join([b"/v1/purposes", b"", body])).digest()
    await session.execute(
        insert(IdempotencyKey).values(workspace_id=tenant.id, key="same", fingerprint=fingerprint, created_at=utcnow())
    )
    await session.commit()
    busy = await client.post(
        "/v1/purposes", content=body, headers={**admin, "Idempotency-Key": "same", "Content-Type": "application/json"}
    )
    assert busy.status_code == 409
    assert busy.json()["code"] == "idempotency_request_in_progress"
    assert busy.headers["retry-after"] == "1"


async def test_reads_are_never_answered_from_storage(client, tenant, session, ledger):
    await ledger.purpose("newsletter")
    reader = {**(await tenant.key(Scope.ELIGIBILITY_READ)), "Idempotency-Key": "batch-1"}
    body = {"contacts": ["nobody"], "channels": ["email"], "purpose": "newsletter"}
    await client.post("/v1/eligibility/batch", json=body, headers=reader)
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


async def test_without_the_header_nothing_is_stored(client, admin, session):
    assert (await client.post("/v1/purposes", json=PURPOSE, headers=admin)).status_code == 201
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


async def test_an_unknown_api_key_still_gets_401(client):
    response = await client.post(
        "/v1/purposes", json=PURPOSE, headers={"Authorization": "Bearer csk_nope", "Idempotency-Key": "a"}
    )
    assert response.status_code == 401


async def test_a_new_api_keys_secret_is_never_kept_for_replays(client, admin, session):
    headers = {**admin, "Idempotency-Key": "key-1"}
    created = await client.post("/v1/api-keys", json={"name": "ci", "scopes": ["audit:read"]}, headers=headers)
    assert created.status_code == 201
    assert created.json()["secret"].startswith("csk_")
    stored = (await session.scalars(select(IdempotencyKey.body))).all()
    assert all(created.json()["secret"].encode() not in (body or b"") for body in stored)
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
