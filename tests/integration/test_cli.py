"""The ``consent`` admin commands against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONSENT = str(Path(sys.executable).parent / "consent")


def run(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url.replace("+asyncpg", ""), "CONSENT_LOG_FORMAT": "json"}
    return subprocess.run([CONSENT, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


async def test_workspace_and_apikey_commands_print_json_once(pg_server):
    url = await pg_server.create_database("consent_cli")
    try:
        assert run("migrate", database_url=url).returncode == 0
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
