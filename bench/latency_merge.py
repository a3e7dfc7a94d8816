"""A catch-up's upsert into a message counter row with a large latency histogram (issue 18, migration 0049).

A catch-up adds a batch's histogram to the stored row of the same key in its ``ON CONFLICT`` clause
(``app.reports.repository._adding``). This script times ``--upserts`` upserts of a three-latency batch into one
``sent`` row of ``report_message_counts`` that holds ``--latencies`` distinct latencies, through the service's clause
and, as the baseline in the same run, the first form of it (both histograms unnested and grouped), alternating in
rounds; each round checks that both rows ended the same.

    uv run python bench/latency_merge.py                                   # embedded PostgreSQL in ./.bench-merge
    uv run python bench/latency_merge.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.reports import repository
from bench.common import new_database, server

_TABLE = "report_message_counts"

#: The first form of the clause (2026-12-06, session 9), kept here as the baseline.
_UNNESTED = f"""ON CONFLICT ON CONSTRAINT uq_{_TABLE}_key DO UPDATE SET n = {_TABLE}.n + excluded.n,
    latencies = CASE WHEN {_TABLE}.latencies IS NULL THEN excluded.latencies
                     WHEN excluded.latencies IS NULL THEN {_TABLE}.latencies
                     ELSE (SELECT jsonb_object_agg(ms, c)
                             FROM (SELECT ms, sum(c::bigint) AS c
                                     FROM (SELECT * FROM jsonb_each_text({_TABLE}.latencies)
                                           UNION ALL SELECT * FROM jsonb_each_text(excluded.latencies)) b (ms, c)
                                    GROUP BY ms) s) END"""  # noqa: S608  # constant names

_INSERT = f"""
    INSERT INTO {_TABLE} (workspace_id, hour, channel, provider, purpose_id, outcome, campaign, n, latencies)
    VALUES ($1, '2026-12-01 10:00+00', 'sms', 'twilio', NULL, 'sent', $2, $3, $4::jsonb)
"""  # noqa: S608  # constant names


async def _upserts(conn: asyncpg.Connection, workspace_id: uuid.UUID, campaign: str, clause: str, count: int) -> float:
    statement = await conn.prepare(_INSERT + clause)
    batch = '{"120": 1, "4500": 1, "2100": 1}'
    started = time.perf_counter()
    for _ in range(count):
        async with conn.transaction():
            await statement.fetch(workspace_id, campaign, 3, batch)
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    async with server(args.database_url, args.data_dir) as admin:
        dsn, workspace_id = await new_database(admin, "consent_merge")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET jit = off")
            latencies = [round(10 ** (i * 7 / args.latencies)) for i in range(args.latencies)]
            histogram = "{" + ", ".join(f'"{ms}": 100' for ms in sorted(set(latencies))) + "}"
            for campaign in ("baseline", "service"):
                await conn.execute(_INSERT, workspace_id, campaign, 100 * len(set(latencies)), histogram)
            service = repository._adding(_TABLE)  # noqa: SLF001  # the service's own clause, measured
            times: dict[str, list[float]] = {"baseline": [], "service": []}
            for _ in range(args.rounds):
                for campaign, clause in (("baseline", _UNNESTED), ("service", service)):
                    times[campaign].append(await _upserts(conn, workspace_id, campaign, clause, args.upserts))
                rows = await conn.fetch(f"SELECT campaign, n, latencies FROM {_TABLE} ORDER BY campaign")  # noqa: S608
                assert rows[0]["n"] == rows[1]["n"], rows
                assert _same(rows), "the two clauses disagree"
        finally:
            await conn.close()
    base, ours = statistics.median(times["baseline"]), statistics.median(times["service"])
    print(f"{args.upserts:,} upserts of 3 latencies into a row of {len(set(latencies))} latencies, medians of "
          f"{args.rounds} alternating rounds:")  # fmt: skip
    print(f"  baseline (both unnested and grouped): {base * 1e6 / args.upserts:,.0f} µs per upsert"
          f" ({', '.join(f'{t:.2f}' for t in times['baseline'])} s)")  # fmt: skip
    print(f"  the service's clause:                 {ours * 1e6 / args.upserts:,.0f} µs per upsert"
          f" ({', '.join(f'{t:.2f}' for t in times['service'])} s); ratio {ours / base:.2f}")  # fmt: skip


def _same(rows: list[asyncpg.Record]) -> bool:
    import json  # noqa: PLC0415

    first, second = (json.loads(row["latencies"]) for row in rows)
    return {k: int(v) for k, v in first.items()} == {k: int(v) for k, v in second.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upserts", type=int, default=2000)
    parser.add_argument("--latencies", type=int, default=550, help="distinct latencies in the stored row")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--database-url", help="a server to create the benchmark database on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-merge")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
