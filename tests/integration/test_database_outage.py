"""A database that cannot be reached answers 503 with Retry-After, never 500 (issue 16, finding 10)."""

from __future__ import annotations

import httpx
import pytest

from app.lib.db import Database
from app.main import create_app
from tests.conftest import running


@pytest.fixture
async def unreachable_client(settings):
    # nothing listens on port 1: every connection attempt is refused, as while the database restarts
    database = Database.from_url("postgresql+asyncpg://consent@127.0.0.1:1/consent", pool_size=1)
    application = create_app(settings, database=database)
    try:
        async with running(application):
            transport = httpx.ASGITransport(app=application, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
                yield http
    finally:
        assert database.engine is not None
        await database.engine.dispose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/eligibility?contact=crm-1&channel=email&purpose=newsletter", None),
        ("POST", "/v1/contacts", {"external_id": "crm-1"}),
        ("GET", "/v1/push/web/vapid-public-key?workspace=01900000-0000-7000-8000-000000000001", None),
    ],
)
async def test_an_unreachable_database_answers_503_with_retry_after(unreachable_client, method, path, body):
    response = await unreachable_client.request(
        method, path, json=body, headers={"Authorization": "Bearer csk_" + "x" * 43}
    )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "database_unavailable"
