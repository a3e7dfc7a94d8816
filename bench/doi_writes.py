"""The write cost of ``consent_events.doi_started_at`` (migration 0045): double opt-in signups and confirmations.

Each client takes email addresses and records, for each, a ``signup`` (to ``pending``) and then its ``confirm``
(to ``opted_in``), each in a transaction of its own through the ledger's real path (``apply_changes``: the consent
rows locked, the event inserted unsealed, the projection moved; a running sealer chains them after commit). The
same run alternates rounds **with** the trigger that sets the column on each confirmation and **without** it (the
trigger dropped for that round, nothing else changed), on fresh addresses each round, and prints both rates.

    uv run python bench/doi_writes.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    uv run python bench/doi_writes.py --addresses 2000 --clients 1,8 --rounds 3     # embedded PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.domain.model import ActorType, Trigger
from app.ledger.sealer import Sealer
from app.ledger.service import Actor, Change, apply_changes
from app.lib.db import Database
from bench.common import new_database, server

SUBJECT = Actor(ActorType.SUBJECT)

_TRIGGER = (
    "CREATE TRIGGER consent_events_doi_start BEFORE INSERT ON consent_events FOR EACH ROW "
    "WHEN (NEW.trigger IN ('confirm', 'start_word')) EXECUTE FUNCTION consent_events_doi_start()"
)


@dataclass(frozen=True, slots=True)
class Point:
    id: uuid.UUID
    contact_id: uuid.UUID
    channel: str = "email"


def stage(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def seed(dsn: str, workspace_id: uuid.UUID, count: int, tag: str) -> list[Point]:
    """``count`` email addresses of contacts of their own, without consent rows (written by SQL)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            WITH c AS (INSERT INTO contacts (id, workspace_id) SELECT gen_random_uuid(), $1 FROM generate_series(1, $2)
                       RETURNING id)
            INSERT INTO contact_points (id, workspace_id, contact_id, channel, value)
            SELECT gen_random_uuid(), $1, c.id, 'email', $3 || (row_number() OVER ())::text || '@example.com' FROM c
            RETURNING id, contact_id
            """,
            workspace_id,
            count,
            tag,
        )
        # consent_events too: a fresh database's empty ledger gave the trigger's lookup (planned once per session) a
        # sequential scan that grew with the ledger (1.3 ms per confirmation by the third round); a server's ledger
        # has statistics
        await conn.execute("ANALYZE contact_points; ANALYZE consents; ANALYZE consent_events")
    finally:
        await conn.close()
    return [Point(row[0], row[1]) for row in rows]


async def signups_and_confirmations(
    database: Database, workspace_id: uuid.UUID, purpose_id: uuid.UUID, points: list[Point], clients: int
) -> list[float]:
    """Each client signs an address up and confirms it (two transactions); seconds per pair."""
    queue = list(points)
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            point = queue.pop()
            started = time.perf_counter()
            for trigger in (Trigger.SIGNUP, Trigger.CONFIRM):
                async with database.sessionmaker() as session, session.begin():
                    await apply_changes(session, workspace_id, [Change(point, purpose_id, trigger)], SUBJECT)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def run(args: argparse.Namespace) -> None:
    levels = [int(n) for n in args.clients.split(",")]
    async with server(args.database_url, args.data_dir) as admin:
        dsn, workspace_id = await new_database(admin, "consent_doiw")
        stage(f"database made ({dsn})")
        conn = await asyncpg.connect(dsn)
        # the trigger function's own time per call (pg_stat_user_functions), in the sessions opened after this
        await conn.execute(f"ALTER DATABASE \"{dsn.rsplit('/', 1)[1].split('?')[0]}\" SET track_functions = 'pl'")
        purpose_id = await conn.fetchval(
            "INSERT INTO purposes (id, workspace_id, key, name, kind) VALUES (gen_random_uuid(), $1, 'news', 'News',"
            " 'marketing') RETURNING id",
            workspace_id,
        )
        database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=max(levels))
        stop = asyncio.Event()
        sealing = asyncio.create_task(Sealer(database).run(stop))  # every server process runs one
        await asyncio.sleep(0)
        results: list[tuple[int, int, str, float, float, float]] = []
        try:
            for round_ in range(1, args.rounds + 1):
                for clients in levels:
                    for way in ("without", "with") if round_ % 2 else ("with", "without"):
                        await conn.execute("DROP TRIGGER IF EXISTS consent_events_doi_start ON consent_events")
                        if way == "with":
                            await conn.execute(_TRIGGER)
                        points = await seed(dsn, workspace_id, args.addresses, f"r{round_}c{clients}{way}")
                        stage(f"round {round_}, {clients} clients, {way} the trigger")
                        started = time.perf_counter()
                        latencies = await signups_and_confirmations(database, workspace_id, purpose_id, points, clients)
                        elapsed = time.perf_counter() - started
                        ordered = sorted(latencies)
                        results.append(
                            (
                                round_,
                                clients,
                                way,
                                len(points) / elapsed,
                                statistics.median(ordered) * 1000,
                                ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
                            )
                        )
            confirmed = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE doi_started_at IS NOT NULL), count(*) FROM consent_events"
                " WHERE workspace_id = $1 AND trigger = 'confirm'",
                workspace_id,
            )
        finally:
            stop.set()
            await sealing
            await database.dispose()  # the sessions' function statistics are reported as they close
            await asyncio.sleep(1)
            function = await conn.fetchrow(
                "SELECT calls, total_time FROM pg_stat_user_functions WHERE funcname = 'consent_events_doi_start'"
            )
            await conn.close()
    print(f"\n{args.addresses} addresses per run, each a signup and its confirmation (two transactions)\n")
    print("| round | clients | trigger | signup+confirm pairs/s | p50 per pair | p99 per pair |")
    print("|---:|---:|---|---:|---:|---:|")
    for round_, clients, way, per_s, p50, p99 in results:
        print(f"| {round_} | {clients} | {way} | {per_s:,.0f} | {p50:.1f} ms | {p99:.1f} ms |")
    for clients in levels:
        for way in ("without", "with"):
            rates = [r[3] for r in results if r[1] == clients and r[2] == way]
            print(f"- {clients} clients, {way}: median {statistics.median(rates):,.0f} pairs/s")
    print(f"- confirmations carrying doi_started_at: {confirmed[0]} of {confirmed[1]}")
    if function is not None and function["calls"]:
        per_call = function["total_time"] / function["calls"] * 1000
        print(
            f"- the trigger function: {function['calls']} calls, {function['total_time']:.1f} ms, {per_call:.1f} µs per call"
        )
    else:
        print("- the trigger function: no statistics (track_functions needs a superuser)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, default=2000, help="addresses per run (a signup and a confirm each)")
    parser.add_argument("--clients", default="1,8", help="concurrent clients, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", help="a server to create the benchmark database on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-doi-writes")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
