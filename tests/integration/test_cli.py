"""The ``consent`` admin commands against a real database.

The first test starts the installed ``consent`` script (the process boundary: entry point, exit status, the
streams); the others call the same click entry point in this process (``tests.conftest.consent_cli``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import consent_cli

pytestmark = pytest.mark.slow

CONSENT = str(Path(sys.executable).parent / "consent")


def run(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url.replace("+asyncpg", ""), "CONSENT_LOG_FORMAT": "json"}
    return subprocess.run([CONSENT, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


async def test_workspace_and_apikey_commands_print_json_once(pg_server):
    url = await pg_server.create_database("consent_cli")
    try:
        migrated = run("migrate", database_url=url)
        assert migrated.returncode == 0, migrated.stderr
        events = [json.loads(line)["event"] for line in migrated.stderr.splitlines() if line.startswith("{")]
        assert events.count("database_migrated") == 1, events
        assert not [e for e in events if "setup plugin" in e or "Running upgrade" in e], "alembic's steps: one line"
        created = run("workspace", "create", "Acme GmbH", "--json", database_url=url)
        assert created.returncode == 0, created.stderr
        workspace = json.loads(created.stdout.strip().splitlines()[-1])
        key = run(
            "apikey",
            "create",
            "--workspace",
            workspace["id"],
            "--scopes",
            "admin,eligibility:read",
            "--json",
            database_url=url,
        )
        assert key.returncode == 0, key.stderr
        secret = json.loads(key.stdout.strip().splitlines()[-1])
        assert secret["secret"].startswith("csk_")
        assert secret["secret"] not in key.stderr, "the secret must never reach the logs"

        bad = run("apikey", "create", "--workspace", workspace["id"], "--scopes", "root", database_url=url)
        assert bad.returncode != 0
        assert "known scopes" in bad.stderr
        assert "operator" not in bad.stderr.split("known scopes")[1], "a workspace key cannot carry it"
        missing = run(
            "apikey",
            "create",
            "--workspace",
            "0193a7e0-0000-7000-8000-000000000000",
            "--scopes",
            "admin",
            database_url=url,
        )
        assert missing.returncode != 0
        assert "does not exist" in missing.stderr
    finally:
        await pg_server.drop_database(url)


async def test_audit_verify_command_reports_valid_and_broken_chains(pg_server):
    import asyncpg  # noqa: PLC0415
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    url = await pg_server.create_database("consent_cli_audit", migrated=True)
    cli = consent_cli(url)
    try:
        assert cli("migrate").returncode == 0
        workspace = json.loads(cli("workspace", "create", "Acme", "--json").stdout.strip().splitlines()[-1])
        # two events through the real service, committed
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine  # noqa: PLC0415

        from app.domain.model import ActorType, Trigger  # noqa: PLC0415
        from app.ledger import repository  # noqa: PLC0415
        from app.ledger.service import Actor, Change, apply_changes  # noqa: PLC0415

        engine = create_async_engine(url)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        async with maker() as session, session.begin():
            workspace_id = uuid.UUID(workspace["id"])
            contact = await repository.add_contact(session, workspace_id, None, None, None)
            point = await repository.add_contact_point(
                session,
                workspace_id,
                contact_id=contact.id,
                channel="sms",
                value="+4915100000009",
                details={},
                suppression_keys=[],
            )
            for trigger in (Trigger.STOP_WORD, Trigger.START_WORD):
                await apply_changes(session, workspace_id, [Change(point, None, trigger)], Actor(ActorType.SYSTEM))
        await engine.dispose()

        ok = cli("audit", "verify", "--json")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout.strip().splitlines()[-1])["events_checked"] == 2

        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE consent_events SET to_state = 'pending' WHERE seq = 1")
        await conn.close()
        broken = cli("audit", "verify")
        assert broken.returncode == 1
        assert "BROKEN" in broken.stdout
        assert "seq 1" in broken.stdout
    finally:
        await pg_server.drop_database(url)


async def test_makemigration_writes_nothing_when_the_models_and_migrations_agree(pg_server):
    """Alembic alone would write an empty migration file (which would then fail the lint of CI)."""
    url = await pg_server.create_database("consent_cli_makemigration")
    versions = Path(__file__).parents[2] / "migrations" / "versions"
    before = sorted(p.name for p in versions.glob("*.py"))
    try:
        result = consent_cli(url)("makemigration", "nothing changed")
        assert result.returncode == 0, result.stderr
        assert "no changes" in result.stdout
        assert sorted(p.name for p in versions.glob("*.py")) == before
    finally:
        await pg_server.drop_database(url)
