"""Every error is RFC 9457 problem+json with a stable code; bad input is never a 500."""

from __future__ import annotations

import pytest

from app.lib.auth import Scope


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{bad", 400, "malformed_json"),
        (b"", 400, "body_required"),
        (b"[]", 422, "validation_failed"),
        (b'{"key": "news", "name": "N", "kind": "marketing", "colour": "red"}', 422, "validation_failed"),
        (b'{"key": 5, "name": "N", "kind": "marketing"}', 422, "validation_failed"),
        (b'{"key": "news", "name": "N", "kind": "spam"}', 422, "validation_failed"),
        (b'{"key": "news", "name": "N"}', 422, "validation_failed"),
        ('{"key": "news", "name": "\u00e9", "kind": "marketing"'.encode(), 400, "malformed_json"),
    ],
)
async def test_bad_bodies_get_a_clear_4xx_problem(client, admin, body, status, code):
    response = await client.post("/v1/purposes", content=body, headers={**admin, "content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]


async def test_validation_problem_names_the_field(client, admin):
    response = await client.post(
        "/v1/purposes", json={"key": "news", "name": "N", "kind": "marketing", "colour": 1}, headers=admin
    )
    problem = response.json()
    assert "colour" in problem["detail"]
    response = await client.post("/v1/purposes", json={"key": "news", "name": "", "kind": "marketing"}, headers=admin)
    assert response.json()["errors"] == [{"field": "name", "message": "Expected `str` of length >= 1"}]


async def test_a_value_outside_an_enum_is_answered_with_the_values_it_takes(client, admin, tenant):
    """A newcomer's finding: "Invalid enum value 'spam'" sent them to the schema to find what is allowed."""
    response = await client.post("/v1/purposes", json={"key": "news", "name": "N", "kind": "spam"}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "kind: Invalid enum value 'spam' (one of: marketing, transactional)"
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    nested = await client.post(
        "/v1/objections",
        json={"contact": "x", "kind": "sticker", "scope": "everything"},
        headers=writer,
    )
    assert nested.status_code == 422, nested.text
    assert "(one of: " in nested.json()["detail"], nested.text


async def test_bad_path_parameter_is_a_400_not_a_500(client, admin):
    response = await client.delete("/v1/api-keys/not-a-uuid", headers=admin)
    assert response.status_code in {400, 404}
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_route_and_wrong_method_are_problems(client, admin):
    response = await client.get("/v1/nothing-here", headers=admin)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    response = await client.put("/v1/purposes", headers=admin, json={})
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_request_id_is_taken_from_the_caller_when_sane(client):
    response = await client.get("/health", headers={"X-Request-ID": "trace-1234-abcd"})
    assert response.headers["x-request-id"] == "trace-1234-abcd"
    response = await client.get("/health", headers={"X-Request-ID": "<script>"})
    assert response.headers["x-request-id"] != "<script>"
    assert len(response.headers["x-request-id"]) == 32
