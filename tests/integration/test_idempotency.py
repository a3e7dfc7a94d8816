"""The Idempotency-Key convention of API.md on POSTs that create or send."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update

from app.lib.auth import Scope
from app.lib.keys import Keys
from app.lib.models import IdempotencyKey
from app.lib.orm import utcnow
from app.purposes.models import Purpose
from app.settings import Settings
from tests.conftest import TEST_SECRET

PURPOSE = {"key": "newsletter", "name": "Newsletter", "kind": "marketing"}


@pytest.fixture
def settings(tmp_path):
    """As the suite's, with webhook receivers on the loopback allowed (one test subscribes one)."""
    return Settings(
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        public_base_url="https://consent.example.com",
        webhooks_allow_http=True,
        webhooks_allow_private=True,
    )


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


async def test_a_refusal_frees_the_key_for_the_corrected_request(client, admin, session):
    # a refused request changed nothing: its key is not used up, and nothing of it is stored
    headers = {**admin, "Idempotency-Key": "bad-1"}
    first = await client.post("/v1/purposes", json={"key": "x"}, headers=headers)
    assert first.status_code == 422
    again = await client.post("/v1/purposes", json={"key": "x"}, headers=headers)
    assert again.status_code == 422
    assert "idempotent-replayed" not in again.headers
    corrected = await client.post("/v1/purposes", json=PURPOSE, headers=headers)
    assert corrected.status_code == 201, corrected.text
    assert (await client.post("/v1/purposes", json=PURPOSE, headers=headers)).headers["idempotent-replayed"] == "true"
    assert await purposes(session) == 1


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
    body = b'{"key":"newsletter","name":"Newsletter","kind":"marketing"}'
    fingerprint = Keys(TEST_SECRET).request_fingerprint(b"/v1/purposes", b"", body)
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
    assert stored == [None], "the claim is done, its answer not kept"
    again = await client.post("/v1/api-keys", json={"name": "ci", "scopes": ["audit:read"]}, headers=headers)
    assert again.status_code == 409
    assert again.json()["code"] == "idempotency_answer_not_kept"
    assert "csk_" not in again.text
    listed = (await client.get("/v1/api-keys", headers=admin)).json()
    assert [k["name"] for k in listed].count("ci") == 1, "a repeat creates no second key"


async def test_a_webhook_subscriptions_secret_is_never_kept_for_replays(client, admin, session):
    headers = {**admin, "Idempotency-Key": "hook-1"}
    body = {"url": "http://127.0.0.1:9/consent", "events": ["consent.changed"]}  # allowed by the settings above
    created = await client.post("/v1/webhook-subscriptions", json=body, headers=headers)
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert all(secret.encode() not in (b or b"") for b in (await session.scalars(select(IdempotencyKey.body))).all())
    again = await client.post("/v1/webhook-subscriptions", json=body, headers=headers)
    assert (again.status_code, again.json()["code"]) == (409, "idempotency_answer_not_kept")
    assert secret not in again.text


async def test_a_stored_answer_is_not_replayed_to_a_key_without_the_routes_scope(client, admin, tenant, session):
    created = await client.post("/v1/purposes", json=PURPOSE, headers={**admin, "Idempotency-Key": "p-1"})
    assert created.status_code == 201
    reader = {**(await tenant.key(Scope.ELIGIBILITY_READ)), "Idempotency-Key": "p-1"}
    replay = await client.post("/v1/purposes", json=PURPOSE, headers=reader)
    assert replay.status_code == 403, "the scope is checked before any stored answer is looked at"
    assert replay.json()["code"] == "insufficient_scope"
    assert "idempotent-replayed" not in replay.headers


async def test_a_body_beyond_the_routes_limit_is_refused_before_it_is_buffered(client, admin, session):
    huge = b'{"key": "' + b"x" * 11_000_000 + b'"}'
    response = await client.post(
        "/v1/purposes", content=huge, headers={**admin, "Idempotency-Key": "big-1", "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


async def test_the_stored_fingerprint_is_keyed_not_a_plain_hash_of_the_body(client, admin, session):
    body = b'{"key": "newsletter", "name": "Newsletter", "kind": "marketing"}'
    headers = {**admin, "Idempotency-Key": "fp-1", "Content-Type": "application/json"}
    assert (await client.post("/v1/purposes", content=body, headers=headers)).status_code == 201
    [stored] = (await session.scalars(select(IdempotencyKey.fingerprint))).all()
    plain = hashlib.sha256(b"\0".join([b"/v1/purposes", b"", body])).digest()
    assert bytes(stored) != plain, "a guessed body must not be confirmed by its hash"
    canonical = b'{"key":"newsletter","kind":"marketing","name":"Newsletter"}'
    assert bytes(stored) == Keys(TEST_SECRET).request_fingerprint(b"/v1/purposes", b"", canonical)


async def test_the_same_json_spelt_otherwise_is_the_same_request(client, admin, session):
    """API.md's "the same body" is the same JSON value: fields in another order, other whitespace, escapes."""
    headers = {**admin, "Idempotency-Key": "spelt-1", "Content-Type": "application/json"}
    first = await client.post(
        "/v1/purposes", content=b'{"key": "newsletter", "name": "Newsletter", "kind": "marketing"}', headers=headers
    )
    assert first.status_code == 201, first.text
    for spelt in (
        b'{"kind":"marketing","name":"Newsletter","key":"newsletter"}',
        b'\n  {\n  "name" : "Newsletter",\n  "key": "newsletter",\n  "kind": "marketing"\n}\n',
        b'{"key": "newsletter", "name": "\\u004eewsletter", "kind": "marketing"}',
    ):
        again = await client.post("/v1/purposes", content=spelt, headers=headers)
        assert again.status_code == 201, (spelt, again.text)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
    for other in (
        b'{"key": "newsletter", "name": "Newsletter ", "kind": "marketing"}',
        b'{"key": "newsletter", "name": "Newsletter", "kind": "marketing", "extra": null}',
        b'[{"key": "newsletter", "name": "Newsletter", "kind": "marketing"}]',
    ):
        refused = await client.post("/v1/purposes", content=other, headers=headers)
        assert refused.status_code == 409, (other, refused.text)
        assert refused.json()["code"] == "idempotency_key_reused"
    assert await purposes(session) == 1


async def test_a_key_kept_with_the_raw_body_before_canonical_json_still_replays(client, admin, tenant, session):
    """Keys stored before the fingerprint took the JSON value (2026-12-06) were kept with the body's bytes: a
    retry after an upgrade, within the key's 24 hours, still gets its first answer."""
    body = b'{"key": "newsletter", "name": "Newsletter", "kind": "marketing"}'
    headers = {**admin, "Idempotency-Key": "before-upgrade", "Content-Type": "application/json"}
    first = await client.post("/v1/purposes", content=body, headers=headers)
    assert first.status_code == 201
    raw = Keys(TEST_SECRET).request_fingerprint(b"/v1/purposes", b"", body)
    await session.execute(update(IdempotencyKey).values(fingerprint=raw))
    await session.commit()
    again = await client.post("/v1/purposes", content=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    reordered = await client.post(
        "/v1/purposes", content=b'{"name": "Newsletter", "key": "newsletter", "kind": "marketing"}', headers=headers
    )
    assert reordered.status_code == 409, "an old key recognises only the bytes it was kept with"
    assert await purposes(session) == 1
