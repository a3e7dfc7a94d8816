"""What a purpose's lifecycle costs an eligibility batch: the same 10,000 contacts with and without ends.

Each consent's end is computed by the database in the facts statement (``span_end_sql``). The baseline is the
same batch for the purpose without ``validity``/``inactivity``, measured in the same run, rounds interleaved
(the machines are shared: a ratio in one run means more than seconds across runs).

    uv run python bench/validity_batch.py                       # 20,000 contacts, batches of 10,000, 7 rounds
    uv run python bench/validity_batch.py --database-url postgresql://127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.domain.model import Channel
from app.eligibility import service
from app.lib.db import Database
from bench.common import new_database, server
from bench.generate import generate

#: (label, validity, inactivity) of the purpose for each configuration; the first is the baseline.
CONFIGURATIONS = (("no lifecycle", None, None), ("P24M", "P24M", None), ("P24M + P18M", "P24M", "P18M"))


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        async with server(args.database_url, data_dir) as admin:
            dsn, _ = await new_database(admin, "bench_validity")
            info = await generate(dsn, args.contacts, seed=7)
            conn = await asyncpg.connect(dsn)
            workspace_id = uuid.UUID(info["workspace_id"])
            database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=2)
            await database.open_driver_pool(2)
            refs = [f"c{i}" for i in range(args.batch)]
            times: dict[str, list[float]] = {label: [] for label, _, _ in CONFIGURATIONS}
            ends = {}
            try:
                for _ in range(args.rounds):
                    for label, validity, inactivity in CONFIGURATIONS:
                        await conn.execute(
                            "UPDATE purposes SET validity = $1, inactivity = $2 WHERE workspace_id = $3"
                            " AND key = 'newsletter'",
                            validity,
                            inactivity,
                            workspace_id,
                        )
                        started = time.perf_counter()
                        _, _, decisions = await service.batch(
                            database,
                            workspace_id,
                            refs=refs,
                            channels=[Channel.EMAIL],
                            purpose_key="newsletter",
                            push_services=None,
                        )
                        times[label].append(time.perf_counter() - started)
                        ends[label] = sum(1 for d in decisions if d.expires_at is not None)
            finally:
                await conn.close()
                await database.dispose()
    base = min(times[CONFIGURATIONS[0][0]])
    print(f"{args.batch:,} contacts a batch, {args.contacts:,} in the workspace, best and median of {args.rounds}")
    for label, _, _ in CONFIGURATIONS:
        best, median = min(times[label]), statistics.median(times[label])
        print(
            f"{label:>14}: best {best * 1000:7.1f} ms, median {median * 1000:7.1f} ms, "
            f"{best / base:4.2f}x the baseline, {ends[label]:,} answers with an end"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a PostgreSQL server to create the database on (default: embedded)")
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
