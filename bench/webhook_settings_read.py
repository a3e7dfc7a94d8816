"""The Twilio webhook's first statement (issue 21, item 3): the workspace's settings and sender ownership.

Every inbound message and status callback begins its transaction with
:func:`app.workspaces.repository.name_settings_and_sender`. In a STOP flood's profile (py-spy on ``consent serve``)
its earlier form, an ORM ``select`` built per call, was a sixth of the server's CPU. This script measures the CPU
of this process per transaction (a session, BEGIN, the statement, COMMIT) for the service's statement and, as the
baseline in the same run, that ORM form, alternating in rounds.

    uv run python bench/webhook_settings_read.py                 # embedded PostgreSQL in ./.bench-settings
    uv run python bench/webhook_settings_read.py --calls 4000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.lib.db import Database
from app.lib.embedded_pg import EmbeddedPostgres
from app.workspaces import repository
from app.workspaces.models import SenderIdentity, Workspace
from bench.common import new_database

Read = Callable[[AsyncSession, uuid.UUID, set[str]], Awaitable[Any]]


async def orm_form(session: AsyncSession, workspace_id: uuid.UUID, identities: set[str]) -> Any:
    """The statement as an ORM ``select`` (the service's form before 2026-12-06, kept here as the baseline)."""
    owned = (
        select(SenderIdentity.identity)
        .where(SenderIdentity.workspace_id == workspace_id, SenderIdentity.identity.in_(sorted(identities)))
        .exists()
    )
    row = (
        await session.execute(select(Workspace.name, Workspace.settings, owned).where(Workspace.id == workspace_id))
    ).first()
    return (row[0], row[1], bool(row[2])) if row is not None else None


async def cpu_per_call(database: Database, read: Read, workspace_id: uuid.UUID, calls: int) -> float:
    identities = {"+4930555000", "MG0123456789abcdef0123456789abcdef"}
    started = time.process_time()
    for _ in range(calls):
        async with database.sessionmaker() as session, session.begin():
            await read(session, workspace_id, identities)
    return (time.process_time() - started) / calls * 1e6


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir)
    embedded = EmbeddedPostgres(data_dir / "pg", database="postgres")
    await embedded.start()
    try:
        dsn, workspace_id = await new_database(embedded.dsn("postgres"), "consent_settings_read")
        database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=2)
        service: Read = repository.name_settings_and_sender
        assert await checked(database, orm_form, workspace_id) == await checked(database, service, workspace_id)
        for read in (orm_form, service):  # warm: statement caches, prepared statements
            await cpu_per_call(database, read, workspace_id, 300)
        print("| round | load | ORM select (baseline) | the service's statement | ratio |\n|---:|---:|---:|---:|---:|")
        ratios = []
        for round_ in range(1, args.rounds + 1):
            load = os.getloadavg()[0]
            base = await cpu_per_call(database, orm_form, workspace_id, args.calls)
            ours = await cpu_per_call(database, service, workspace_id, args.calls)
            ratios.append(ours / base)
            print(f"| {round_} | {load:.1f} | {base:.0f} µs | {ours:.0f} µs | {ours / base:.2f} |")
        print(
            f"\nmedian ratio {statistics.median(ratios):.2f} (CPU of this process per transaction, {args.calls:,} calls)"
        )
        await database.dispose()
    finally:
        await embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def checked(database: Database, read: Read, workspace_id: uuid.UUID) -> Any:
    async with database.sessionmaker() as session, session.begin():
        return await read(session, workspace_id, {"+4930555000"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="transactions per form and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=".bench-settings")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
