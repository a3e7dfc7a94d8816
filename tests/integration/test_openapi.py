"""The committed OpenAPI document is the one the code generates."""

from __future__ import annotations

import json

from app.cli import OPENAPI_PATH, render_openapi


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
