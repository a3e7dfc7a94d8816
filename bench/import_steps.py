"""Where a consent import's time goes: ``import_consents`` in this process, each step timed around its calls.

The same generated file as ``bench/consent_import.py`` (its ``write_file``), imported by calling the import directly
(no CLI, so no start-up), then again (records nothing). Prints lines/s of both and the seconds spent in each step
(the ledger's batch statements, the per-line preparation, the chaining). Timing wraps functions, so the figures
include a little overhead of their own; they say where the time goes, not a rate to compare.

    uv run python bench/import_steps.py                 # 50,000 lines, embedded PostgreSQL in ./.bench-steps
    uv run python bench/import_steps.py --lines 100000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.domain.model import ActorType
from app.imports import consents
from app.ledger import repository, service
from app.ledger.service import Actor
from app.lib.ids import uuid7
from app.lib.keys import Keys
from bench.common import SECRET_HEX, new_database, server
from bench.consent_import import write_file

SPENT: collections.Counter[str] = collections.Counter()
STATEMENTS = (
    "lock_consent_rows",
    "insert_events",
    "update_projections",
    "insert_contacts",
    "insert_points",
    "points_by_values",
    "contacts_by_refs",
    "suppressions_with_keys",
    "mark_verified_many",
    "lock_head",
)


def _timed_async(module: Any, name: str) -> None:
    original: Callable[..., Awaitable[Any]] = getattr(module, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started

    setattr(module, name, timed)


def _timed(module: Any, name: str) -> None:
    original: Callable[..., Any] = getattr(module, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started

    setattr(module, name, timed)


async def run(args: argparse.Namespace) -> None:
    for name in STATEMENTS:
        _timed_async(repository, name)
    _timed_async(consents, "_prepare")
    _timed(service, "_chain")
    _timed(consents, "_plan_lines")
    async with server(args.database_url, args.data_dir) as admin:
        dsn, workspace_id = await new_database(admin, "import_steps")
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "INSERT INTO purposes (id, workspace_id, key, name, kind) VALUES ($1, $2, 'newsletter', 'News', 'marketing')",
            uuid7(),
            workspace_id,
        )
        await conn.close()
        engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "consents.ndjson"
            write_file(path, args.lines, seed=7)

            async def chunks() -> AsyncIterator[bytes]:
                yield path.read_bytes()

            for attempt in ("first", "again"):
                SPENT.clear()
                started = time.perf_counter()
                async with sessions() as session:
                    report = await consents.import_consents(
                        session,
                        Keys(bytes.fromhex(SECRET_HEX)),
                        workspace_id,
                        consents.ndjson_lines(chunks()),
                        actor=Actor(ActorType.SYSTEM, "bench"),
                    )
                took = time.perf_counter() - started
                print(
                    f"{attempt}: {report.lines:,} lines in {took:.1f} s ({report.lines / took:,.0f} lines/s), "
                    f"{report.recorded:,} recorded"
                )
                for name, seconds in SPENT.most_common():
                    print(f"  {name:24s} {seconds:6.2f} s  {seconds / took:4.0%}")
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--database-url", help="a server to create the benchmark database on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-steps")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
