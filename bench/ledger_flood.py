"""Ledger writes under a flood (issue 21): many clients each withdrawing one address at once, in one workspace.

A campaign's STOP wave, a bulk withdrawal, one-click unsubscribes from many mail clients: each is one consent
change, acknowledged only after its transaction committed. Every change here goes through the real path of a STOP
webhook: find the address by its value, ``withdraw_point`` (lock the consent rows, plan the transition, the event,
the projection), commit. Two ways, each on half of a round's numbers: the event chained in the request, under the
workspace's chain head (the way before migration 0043, still the way of a process that runs no sealer), and the event
inserted unsealed and chained after commit by a running sealer (every server and worker process); the time from
the last commit until every event is sealed is printed too, and the chain is verified at the end. A third flood of
as many numbers takes the whole way of Twilio's inbound webhook past its signature check (``handle_inbound``: claim
the MessageSid, find the number, its attribution, ``withdraw_point``, the TwiML reply stored), sealed after commit.

Baseline in the same run, against the same server and at the same concurrency: one raw asyncpg
``INSERT … ; COMMIT`` per change into a plain table (a row the size of an event), the floor a durable
acknowledgement costs. Both are run twice, alternating, and the figures of each round are printed.

    uv run python bench/ledger_flood.py                       # embedded PostgreSQL in ./.bench-flood
    uv run python bench/ledger_flood.py --changes 4000 --clients 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.domain.model import ActorType, Channel, Trigger
from app.ledger import repository as ledger
from app.ledger.actions import withdraw_point
from app.ledger.audit import verify_chain
from app.ledger.sealer import Sealer
from app.ledger.service import Actor
from app.lib.db import Database
from app.lib.keys import Keys
from app.twilio import service as twilio
from app.workspaces.settings import WorkspaceSettings
from bench.common import new_database, server

SUBJECT = Actor(ActorType.SUBJECT)


def stage(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def seed(dsn: str, workspace_id: uuid.UUID, count: int, tag: str) -> list[str]:
    """``count`` SMS numbers opted in to one marketing purpose (projection rows written by SQL): their values."""
    conn = await asyncpg.connect(dsn)
    try:
        purpose_id = await conn.fetchval(
            """
            INSERT INTO purposes (id, workspace_id, key, name, kind) VALUES (gen_random_uuid(), $1, $2, 'News',
                   'marketing')
            ON CONFLICT DO NOTHING RETURNING id
            """,
            workspace_id,
            f"news_{tag}",
        )
        rows = await conn.fetch(
            """
            WITH c AS (INSERT INTO contacts (id, workspace_id) SELECT gen_random_uuid(), $1 FROM generate_series(1, $2)
                       RETURNING id),
                 p AS (INSERT INTO contact_points (id, workspace_id, contact_id, channel, value)
                       SELECT gen_random_uuid(), $1, c.id, 'sms', '+49151' || $4 || lpad((row_number() OVER ())::text, 7, '0')
                         FROM c RETURNING id, contact_id, value),
                 s AS (INSERT INTO consents (id, workspace_id, contact_id, contact_point_id, purpose_id, channel, state,
                                             legal_basis, since)
                       SELECT gen_random_uuid(), $1, p.contact_id, p.id, $3, 'sms', 'opted_in', 'consent', now() FROM p)
            SELECT value FROM p
            """,
            workspace_id,
            count,
            purpose_id,
            tag,
        )
        await conn.execute("ANALYZE contact_points; ANALYZE consents")
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def flood(database: Database, workspace_id: uuid.UUID, numbers: list[str], clients: int) -> list[float]:
    """Each client takes numbers and texts STOP for each (one transaction each); latencies in seconds."""
    queue = list(numbers)
    latencies: list[float] = []

    async def client() -> None:
        while queue:
            number = queue.pop()
            started = time.perf_counter()
            async with database.sessionmaker() as session, session.begin():
                point = await ledger.find_contact_point(session, workspace_id, Channel.SMS, number)
                assert point is not None
                applied = await withdraw_point(
                    session,
                    workspace_id,
                    point,
                    trigger=Trigger.STOP_WORD,
                    evidence={"provider": "twilio", "message_sid": f"SM{uuid.uuid4().hex}", "keyword": "STOP"},
                    actor=SUBJECT,
                )
                assert any(a.event_id for a in applied)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def webhook_flood(database: Database, workspace_id: uuid.UUID, numbers: list[str], clients: int) -> list[float]:
    """Each client posts Twilio's inbound STOP for each number (``handle_inbound``, one transaction each)."""
    queue = list(numbers)
    latencies: list[float] = []
    keys = Keys(b"b" * 32)
    settings = WorkspaceSettings()

    async def client() -> None:
        while queue:
            number = queue.pop()
            sid = f"SM{uuid.uuid4().hex}"
            params = {"MessageSid": [sid], "From": [number], "To": ["+4930555000"], "Body": ["STOP"]}
            message = twilio.Inbound(message_sid=sid, sender=number, recipient="+4930555000", body="STOP", raw=params)
            started = time.perf_counter()
            async with database.sessionmaker() as session, session.begin():
                reply = await twilio.handle_inbound(session, keys, workspace_id, settings, message)
                assert "<Message>" in reply, reply  # the STOP was recorded (its confirmation is sent back)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def baseline(dsn: str, count: int, clients: int) -> list[float]:
    """One raw ``INSERT`` per change, each its own transaction (autocommit), ``clients`` at once."""
    pool = await asyncpg.create_pool(dsn, min_size=clients, max_size=clients)
    try:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS bench_flood (id uuid PRIMARY KEY, workspace_id uuid, seq bigserial,"
            " personal jsonb, hash bytea, at timestamptz DEFAULT now())"
        )
        latencies: list[float] = []
        remaining = count
        workspace_id = uuid.uuid4()

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                await pool.execute(
                    "INSERT INTO bench_flood (id, workspace_id, personal, hash) VALUES ($1, $2, $3, $4)",
                    uuid.uuid4(),
                    workspace_id,
                    '{"evidence": {"provider": "twilio", "keyword": "STOP"}}',
                    os.urandom(32),
                )
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies
    finally:
        await pool.close()


async def all_sealed(database: Database, workspace_id: uuid.UUID) -> float:
    """``perf_counter()`` when the workspace has no unsealed event left."""
    while True:
        async with database.sessionmaker() as session:
            if not await ledger.has_unsealed(session, workspace_id):
                return time.perf_counter()
        await asyncio.sleep(0.005)


def rate(latencies: list[float], elapsed: float) -> tuple[float, float, float]:
    """Changes/s, p50 and p99 latency in ms."""
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return len(latencies) / elapsed, statistics.median(ordered) * 1000, p99 * 1000


async def run(args: argparse.Namespace) -> None:
    levels = [int(n) for n in args.clients.split(",")]
    async with server(args.database_url, args.data_dir) as admin:
        dsn, workspace_id = await new_database(admin, "consent_flood")
        stage(f"database made ({dsn})")
        database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=max(levels))
        results: list[tuple[int, int, str, float, float, float]] = []
        lags: list[tuple[int, int, float]] = []
        try:
            for round_ in (1, 2):
                for clients in levels:
                    numbers = await seed(dsn, workspace_id, args.changes, f"{round_}{clients:03d}")
                    stage(f"round {round_}, {clients} clients: baseline")
                    started = time.perf_counter()
                    raw = await baseline(dsn, args.changes, clients)
                    results.append((round_, clients, "raw INSERT; COMMIT", *rate(raw, time.perf_counter() - started)))
                    half = len(numbers) // 2
                    stage(f"round {round_}, {clients} clients: STOP flood, chained under the head")
                    started = time.perf_counter()
                    stops = await flood(database, workspace_id, numbers[:half], clients)
                    results.append(
                        (round_, clients, "STOP, chained in the request", *rate(stops, time.perf_counter() - started))
                    )
                    stage(f"round {round_}, {clients} clients: STOP flood, sealed after commit")
                    stop = asyncio.Event()
                    running = asyncio.create_task(Sealer(database).run(stop))
                    await asyncio.sleep(0)
                    started = time.perf_counter()
                    stops = await flood(database, workspace_id, numbers[half:], clients)
                    elapsed = time.perf_counter() - started
                    lag = await all_sealed(database, workspace_id) - started - elapsed
                    stop.set()
                    await running
                    results.append((round_, clients, "STOP, sealed after commit", *rate(stops, elapsed)))
                    lags.append((round_, clients, lag))
                    if args.webhook:
                        # valid German mobile numbers (the webhook normalises what it is sent): +49151, a digit, 7 digits
                        tag = str(len(lags))
                        numbers = await seed(dsn, workspace_id, half, tag)
                        stage(f"round {round_}, {clients} clients: Twilio inbound STOP webhooks, sealed after commit")
                        stop = asyncio.Event()
                        running = asyncio.create_task(Sealer(database).run(stop))
                        await asyncio.sleep(0)
                        started = time.perf_counter()
                        stops = await webhook_flood(database, workspace_id, numbers, clients)
                        elapsed = time.perf_counter() - started
                        await all_sealed(database, workspace_id)
                        stop.set()
                        await running
                        results.append(
                            (round_, clients, "STOP webhook (handle_inbound), sealed", *rate(stops, elapsed))
                        )
            async with database.sessionmaker() as session:
                verified = await verify_chain(session, workspace_id)
            assert verified.valid, verified
            stage(f"chain verified: {verified.events_checked:,} events")
        finally:
            await database.dispose()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{args.changes:,} changes per run, one workspace\n")
    print("| round | clients | path | changes/s | p50 | p99 | ratio to raw |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    raw_rates = {(r, c): per_s for r, c, path, per_s, _, _ in results if path.startswith("raw")}
    for round_, clients, path, per_s, p50, p99 in results:
        ratio = per_s / raw_rates[round_, clients]
        print(f"| {round_} | {clients} | {path} | {per_s:,.0f} | {p50:.1f} ms | {p99:.1f} ms | {ratio:.2f} |")
    print("\nLast change committed → every change sealed (the sealer's lag at the end of the flood):")
    for round_, clients, lag in lags:
        print(f"- round {round_}, {clients} clients: {max(lag, 0) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=3000, help="consent changes per run")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--database-url", help="a server to create the benchmark database on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-flood")
    parser.add_argument(
        "--no-webhook", dest="webhook", action="store_false", help="leave out the flood of inbound STOP webhooks"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
