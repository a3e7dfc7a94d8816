"""Health, readiness and metrics."""

from __future__ import annotations

import httpx
import msgspec
from sqlalchemy import text

from app.main import create_app
from tests.conftest import running


async def test_health_answers_without_a_key(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_says_ready_and_names_no_migration(client):
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_ready_is_503_when_migrations_are_pending(client, connection):
    await connection.execute(text("UPDATE alembic_version SET version_num = '0000_old'"))
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["code"] == "not_ready"
    assert "0000_old" not in response.text, "the revisions go to the log, not to anonymous callers"


async def test_metrics_count_requests_by_route_template_and_status(settings, database, admin, tenant):
    app = create_app(msgspec.structs.replace(settings, metrics_token="s3cret"), database=database)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.get("/v1/purposes")
        await client.get("/v1/purposes", headers=admin)
        await client.delete("/v1/api-keys/0193a7e0-0000-7000-8000-000000000000", headers=admin)
        body = (await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})).text
    assert 'consent_http_requests_total{method="GET",route="/v1/purposes",status="401"} 1.0' in body
    assert 'consent_http_requests_total{method="GET",route="/v1/purposes",status="200"} 1.0' in body
    # the template, not the id: no unbounded label values and no identifiers in metrics
    assert 'route="/v1/api-keys/{key_id}",status="404"' in body
    assert "0193a7e0" not in body
    bucket = 'consent_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/v1/purposes",status="200"}'
    assert bucket in body


async def test_metrics_are_not_served_without_a_metrics_token(client):
    response = await client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["code"] == "metrics_disabled"
    assert "consent_http_requests_total" not in response.text


async def test_metrics_token_protects_metrics_when_set(settings, database):
    app = create_app(msgspec.structs.replace(settings, metrics_token="s3cret"), database=database)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})).status_code == 200
