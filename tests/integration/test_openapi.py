"""The committed OpenAPI document is the one the code generates."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
from prometheus_client import CONTENT_TYPE_LATEST

from app.cli import OPENAPI_PATH, render_openapi
from app.main import create_app
from tests.conftest import running


def test_openapi_json_matches_the_code():
    assert OPENAPI_PATH.exists(), "run 'uv run consent openapi'"
    assert OPENAPI_PATH.read_text() == render_openapi(), "openapi/openapi.json is stale: run 'uv run consent openapi'"


def test_every_operation_has_an_id_tags_and_declared_errors():
    document = json.loads(render_openapi())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), (method, path)
            assert operation.get("tags"), (method, path)
            public = {} in operation.get("security", [])  # declared public, e.g. the VAPID public key
            if path.startswith("/v1/") and not public:
                assert "401" in operation["responses"], (method, path)
                assert operation["responses"]["401"]["content"].keys() == {"application/problem+json"}


async def test_served_schema_is_the_committed_one(client):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert response.json()["paths"].keys() == json.loads(OPENAPI_PATH.read_text())["paths"].keys()


def _declared(document: dict[str, Any], method: str, path: str, status: int) -> set[str]:
    """The content types ``openapi.json`` declares for ``status`` of ``method path`` (KeyError: not declared)."""
    response = document["paths"][path][method.lower()]["responses"][str(status)]
    return set(response.get("content", {}))


def test_app_wide_answers_are_declared_on_every_operation():
    document = json.loads(render_openapi())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            # a NUL character anywhere is refused before any handler (app.lib.inputs.refuse_nul)
            assert responses["422"]["content"].keys() == {"application/problem+json"}, (method, path)
            if path.startswith(("/v1/", "/c/", "/u/", "/webhooks/")):
                # the database or the secret key can be missing: 503 database_unavailable, secret_key_missing
                assert "503" in responses, (method, path)
            streamed = path.startswith("/v1/imports/")  # bodies streamed in constant memory, read elsewhere
            if method in {"post", "put", "delete"} and not streamed:
                assert "413" in responses, (method, path)  # Litestar's request_max_body_size
            if path.startswith("/v1/") and method == "post" and not streamed and path != "/v1/eligibility/batch":
                assert "409" in responses, (method, path)  # Idempotency-Key reused or in progress


async def test_answers_of_the_hosted_pages_are_declared_as_html(client):
    document = json.loads(OPENAPI_PATH.read_text())
    for method, path, template in [
        ("GET", "/c/unknown-token", "/c/{token}"),
        ("POST", "/c/unknown-token", "/c/{token}"),
        ("POST", "/c/unknown-token/renew", "/c/{token}/renew"),
        ("GET", "/u/unknown-token", "/u/{token}"),
        ("POST", "/u/unknown-token", "/u/{token}"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"].startswith("text/html")
        assert _declared(document, method, template, 404) == {"text/html"}, (method, path)
        assert _declared(document, method, template, 200) == {"text/html"}, (method, path)
    for template in ("/c/{token}", "/c/{token}/renew"):  # expired, replaced or already used links
        assert _declared(document, "POST", template, 410) == {"text/html"}
    assert _declared(document, "POST", "/c/{token}/renew", 429) == {"text/html"}
    assert _declared(document, "POST", "/c/{token}/renew", 503) == {"text/html"}
    assert _declared(document, "POST", "/u/{token}/one-click", 200) == {"text/plain"}


async def test_a_repeated_notice_answers_a_declared_200(client, admin, ledger):
    document = json.loads(OPENAPI_PATH.read_text())
    await ledger.purpose("newsletter")
    notice = {"purpose": "newsletter", "channels": ["email"], "locale": "en", "text": "Weekly news."}
    first = await client.post("/v1/notices", json=notice, headers=admin)
    again = await client.post("/v1/notices", json=notice, headers=admin)
    assert (first.status_code, again.status_code) == (201, 200)
    assert _declared(document, "POST", "/v1/notices", 201) == {"application/json"}
    assert _declared(document, "POST", "/v1/notices", 200) == {"application/json"}


async def test_too_large_and_nul_answers_are_declared(client, admin):
    document = json.loads(OPENAPI_PATH.read_text())
    too_large = await client.post(
        "/v1/purposes", content=b" " * (10 * 1024 * 1024 + 1), headers={**admin, "Content-Type": "application/json"}
    )
    assert too_large.status_code == 413
    assert _declared(document, "POST", "/v1/purposes", 413) == {"application/problem+json"}
    nul = await client.get("/v1/purposes", params={"x": "\0"}, headers=admin)
    assert nul.status_code == 422
    assert _declared(document, "GET", "/v1/purposes", 422) == {"application/problem+json"}


async def test_metrics_content_type_names_its_charset_once(settings, database):
    app = create_app(msgspec.structs.replace(settings, metrics_token="s3cret"), database=database)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200
    assert response.headers["content-type"].count("charset") == 1, response.headers["content-type"]
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
