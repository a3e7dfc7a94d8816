"""Migration 0047 (suppressions record their sources) on a table of N suppressions: how long it holds its lock.

    uv run python -m bench.migration_0047 --rows 200000 --rounds 3

A fresh database migrated to 0046 gets ``--rows`` suppressions (one workspace; one in ten a running pause, the
rest permanent, the reasons mixed) and ``ANALYZE``. Each round, alternating: the baseline (one ``UPDATE`` of every
row that changes nothing but writes a new version of each, ``SET reason = reason``: the least an upgrade touching
every row costs), then ``0046 → 0047`` (timed: the whole Alembic upgrade, one transaction under the
``ACCESS EXCLUSIVE`` lock of its ``ALTER TABLE``), then ``0047 → 0046`` (timed too). ``VACUUM`` after each step, so
that every round starts from the same table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from app.lib.db import downgrade, migrate
from bench.common import new_database, server

_FILL = """
    INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason, until)
    SELECT gen_random_uuid(), $1, sha256(n::text::bytea), 1,
           (ARRAY['email', 'sms', 'print'])[1 + n % 3], 'all_marketing', NULL,
           CASE WHEN n % 10 = 0 THEN 'paused'
                ELSE (ARRAY['unsubscribe', 'objection_art21', 'complaint', 'erasure', 'objection_sticker'])[1 + n % 5]
           END,
           CASE WHEN n % 10 = 0 THEN now() + interval '4 weeks' END
      FROM generate_series(1, $2) n
"""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="a server to use (default: an embedded one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        async with server(args.database_url, data_dir) as admin:
            dsn, workspace_id = await new_database(admin, "consent_migration_0047")
            engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
            await downgrade(engine, "0046")
            conn = await asyncpg.connect(dsn)
            await conn.execute(_FILL, workspace_id, args.rows)
            await conn.execute("VACUUM ANALYZE suppressions")
            baseline, up, down = [], [], []
            for _ in range(args.rounds):
                started = time.perf_counter()
                await conn.execute("UPDATE suppressions SET reason = reason")
                baseline.append(time.perf_counter() - started)
                await conn.execute("VACUUM suppressions")
                started = time.perf_counter()
                await migrate(engine, "0047")
                up.append(time.perf_counter() - started)
                await conn.execute("VACUUM suppressions")
                started = time.perf_counter()
                await downgrade(engine, "0046")
                down.append(time.perf_counter() - started)
                await conn.execute("VACUUM suppressions")
            await conn.close()
            await engine.dispose()
    base, upgrade = statistics.median(baseline), statistics.median(up)
    print(f"rows={args.rows} rounds={args.rounds}")
    print("baseline UPDATE s:", " ".join(f"{t:.2f}" for t in baseline))
    print("upgrade 0046->0047 s:", " ".join(f"{t:.2f}" for t in up))
    print("downgrade 0047->0046 s:", " ".join(f"{t:.2f}" for t in down))
    print(f"median upgrade {upgrade:.2f} s = {upgrade / base:.2f}x the baseline ({base:.2f} s)")


if __name__ == "__main__":
    asyncio.run(main())
