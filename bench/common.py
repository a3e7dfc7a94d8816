"""Helpers the import benchmarks share: a fresh migrated database with a workspace, and a timed CLI run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from app.lib.db import migrate
from app.lib.embedded_pg import EmbeddedPostgres
from app.lib.ids import uuid7

SECRET_HEX = "cd" * 32
CONSENT = str(Path(sys.executable).parent / "consent")


async def new_database(admin: str, prefix: str) -> tuple[str, uuid.UUID]:
    """A new database on the server of ``admin`` (a DSN), migrated, with one workspace: its DSN and the id."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = admin.partition("?")
    dsn = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    await migrate(engine)
    await engine.dispose()
    conn = await asyncpg.connect(dsn)
    workspace_id = uuid7()
    await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'Bench')", workspace_id)
    await conn.close()
    return dsn, workspace_id


def cli_run(dsn: str, *args: str) -> tuple[float, int, dict[str, object]]:
    """Run ``consent *args`` (ending in ``--json``): wall time, peak RSS in kB of the CLI process, and the report."""
    elapsed, usage, report = cli_usage(dsn, *args)
    return elapsed, usage.ru_maxrss, report


def cli_usage(dsn: str, *args: str) -> tuple[float, Any, dict[str, object]]:
    """:func:`cli_run` answering the CLI process's whole resource usage (CPU seconds, peak RSS) instead of its peak."""
    env = {**os.environ, "DATABASE_URL": dsn, "CONSENT_SECRET_KEY": SECRET_HEX, "CONSENT_LOG_LEVEL": "warning"}
    started = time.perf_counter()
    process = subprocess.Popen([CONSENT, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # reaped here, so its own usage is known
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed ({process.returncode})")
    return elapsed, usage, json.loads(stdout.decode().strip().splitlines()[-1])


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time (user + system) of process ``pid`` so far; ``children``: with its live and ended children's."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(one: int, *, ended: bool) -> float:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return 0.0
        used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if ended else 0)
        return used / ticks

    total = own(pid, ended=children)
    if children:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += own(int(child), ended=False)
    return total


@contextlib.asynccontextmanager
async def server(database_url: str | None, data_dir: str) -> AsyncIterator[str]:
    """The DSN to create benchmark databases from: ``database_url``, or an embedded server's (stopped after)."""
    if database_url:
        yield database_url
        return
    embedded = EmbeddedPostgres(Path(data_dir) / "pg", database="postgres")
    await embedded.start()
    try:
        yield embedded.dsn("postgres")
    finally:
        await embedded.stop()


async def copy_baseline(dsn: str, path: Path, columns: str, **options: Any) -> float:
    """Seconds a raw ``COPY … FROM STDIN`` of ``path`` takes into a plain table of ``columns``: the baseline."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE UNLOGGED TABLE bench_raw ({columns})")
        started = time.perf_counter()
        with path.open("rb") as fh:
            await conn.copy_to_table("bench_raw", source=fh, format="csv", **options)
        return time.perf_counter() - started
    finally:
        await conn.execute("DROP TABLE IF EXISTS bench_raw")
        await conn.close()


def serve_until_ready(command: list[str], env: dict[str, str], port: int, workers: int) -> subprocess.Popen[bytes]:
    """Start ``command`` (a ``consent serve`` on ``port``) with ``env``; returns once it answers ``/ready``.

    With several worker processes, two more seconds for every one of them to finish its start-up.
    """
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                time.sleep(2 if workers > 1 else 0)  # let every worker finish its start-up
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the service did not start")
