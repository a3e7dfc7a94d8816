"""A workspace's purposes are capped (hostile review of 2026-12-05, "Snapshot cost").

Every purpose costs an audience count in each of the workspace's report snapshots (every 15 minutes, in a loop of
their own): without a cap, one tenant's thousands of purposes were that many counts.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.cli import render_openapi
from app.lib.db import Database
from app.lib.errors import Conflict
from app.purposes.models import Purpose
from app.purposes.service import create_purpose
from app.settings import DEFAULT_PURPOSES_MAX, Settings, SettingsError
from app.workspaces.operator import delete_workspace
from app.workspaces.service import create_workspace
from tests.conftest import TEST_SECRET

CAP = 3


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        public_base_url="https://consent.example.com",
        purposes_max=CAP,
    )


def purpose(key: str) -> dict[str, str]:
    return {"key": key, "name": key.title(), "kind": "marketing"}


async def test_one_purpose_beyond_the_cap_is_a_409_naming_the_limit_and_nothing_is_created(
    client, admin, session, tenant
):
    for key in ("news", "offers", "events"):
        assert (await client.post("/v1/purposes", json=purpose(key), headers=admin)).status_code == 201
    refused = await client.post("/v1/purposes", json=purpose("surveys"), headers=admin)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert (problem["code"], problem["limit"]) == ("too_many_purposes", CAP)
    assert "CONSENT_PURPOSES_MAX" in problem["detail"]
    again = await client.post("/v1/purposes", json=purpose("news"), headers=admin)
    assert again.json()["code"] == "purpose_exists", "a key taken is still said so"
    count = select(func.count()).select_from(Purpose).where(Purpose.workspace_id == tenant.id)
    assert await session.scalar(count) == CAP


async def test_the_cap_is_per_workspace(client, admin, other_tenant):
    for key in ("news", "offers", "events"):
        assert (await client.post("/v1/purposes", json=purpose(key), headers=admin)).status_code == 201
    other = await other_tenant.key()
    assert (await client.post("/v1/purposes", json=purpose("news"), headers=other)).status_code == 201


async def test_creations_at_once_do_not_pass_the_cap_together(engine):
    """On connections of their own (the HTTP client shares the test's): the count and the insert are one step."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        workspace = await create_workspace(session, "Capped")
    try:

        async def create(key: str) -> str:
            async with sessions() as session, session.begin():
                try:
                    await create_purpose(session, workspace.id, key, key, "marketing", limit=CAP)
                except Conflict as exc:
                    return exc.code
                await asyncio.sleep(0.05)  # hold the transaction open while the others try
                return "created"

        outcomes = await asyncio.wait_for(asyncio.gather(*(create(f"p{n}") for n in range(6))), timeout=60)
        assert sorted(outcomes) == ["created"] * CAP + ["too_many_purposes"] * (6 - CAP)
        async with sessions() as session:
            count = select(func.count()).select_from(Purpose).where(Purpose.workspace_id == workspace.id)
            assert await session.scalar(count) == CAP
    finally:
        await delete_workspace(
            Database(engine, sessions), workspace.id, keep_suppressions=False, force=True, operator_key_id=None
        )


def test_the_cap_is_documented_and_configurable():
    operation = json.loads(render_openapi())["paths"]["/v1/purposes"]["post"]
    assert "409" in operation["responses"]
    assert Settings.from_env({"CONSENT_PURPOSES_MAX": "250"}).purposes_max == 250
    assert Settings.from_env({}).purposes_max == DEFAULT_PURPOSES_MAX == 100
    with pytest.raises(SettingsError):
        Settings.from_env({"CONSENT_PURPOSES_MAX": "0"})
