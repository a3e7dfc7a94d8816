"""Reports benchmark: report latency for a 90-day range, rebuild events/s, and ledger writes with the aggregator.

A fresh database gets one workspace with ``--events`` synthetic ledger events (seq 1..N, spread over 180 days, six
channels, three purposes, the triggers and transitions of the state machine's common paths) and ``--messages``
messages with their history (queued, sent, a tenth delivered, a twentieth failed), written by SQL in bulk: the
rollups read only the columns they count, so the events need no valid hash chain for this.

Then, in order:
1. ``rebuild`` of the workspace (delete the rollups, count everything again): events/s;
2. reports for the last 90 days (consents by day; by day x channel x purpose with the standing total and the
   cohorts; by week x trigger; messages by day x channel), each with its catch-up, median of ``--repeats``;
3. ledger write throughput through the real ``apply_changes`` (one signup per transaction, ``--writers``
   concurrent writers for ``--seconds``) without, then with, an aggregator catching up every 0.5 s.

    uv run python bench/reports.py                          # embedded PostgreSQL in ./.bench-reports
    uv run python bench/reports.py --events 10000000 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.domain.model import ActorType, Trigger
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Change, apply_changes
from app.lib.db import Database
from app.lib.orm import utcnow
from app.reports import service
from bench.common import new_database, server

#: (channel, trigger, from, to, weight): the common paths of the state machine
PATHS = [
    ("email", "signup", "none", "pending", 30),
    ("email", "confirm", "pending", "opted_in", 22),
    ("email", "lapse", "pending", "expired", 5),
    ("email", "unsubscribe", "opted_in", "opted_out", 6),
    ("email", "complaint", "opted_in", "opted_out", 1),
    ("sms", "signup", "none", "pending", 6),
    ("sms", "start_word", "pending", "opted_in", 5),
    ("sms", "stop_word", "opted_in", "opted_out", 2),
    ("whatsapp", "start_word", "none", "opted_in", 3),
    ("app_push", "permission_granted", "none", "opted_in", 8),
    ("app_push", "uninstalled", "opted_in", "opted_out", 2),
    ("web_push", "permission_granted", "none", "opted_in", 4),
    ("web_push", "permission_denied", "none", "declined", 2),
    ("print", "objection", "none", "objected", 3),
    ("print", "robinson_match", "none", "objected", 1),
]


async def seed(dsn: str, workspace_id: uuid.UUID, events: int, messages: int) -> None:
    """``events`` ledger events and ``messages`` messages with their history, by SQL in bulk."""
    conn = await asyncpg.connect(dsn)
    try:
        purposes = [uuid.uuid4() for _ in range(3)]
        for n, purpose in enumerate(purposes):
            await conn.execute(
                "INSERT INTO purposes (id, workspace_id, key, name, kind) VALUES ($1, $2, $3, $3, 'marketing')",
                purpose,
                workspace_id,
                f"purpose{n}",
            )
        paths = [p for p in PATHS for _ in range(p[4])]
        await conn.execute(
            "CREATE TEMP TABLE paths (n int, channel text, trigger text, from_state text, to_state text)"
        )
        await conn.executemany(
            "INSERT INTO paths VALUES ($1, $2, $3, $4, $5)", [(i, *p[:4]) for i, p in enumerate(paths)]
        )
        await conn.execute(
            """
            INSERT INTO consent_events (id, workspace_id, seq, contact_id, contact_point_id, purpose_id, channel,
                   trigger, from_state, to_state, legal_basis, actor_type, actor_id, personal, personal_digest,
                   occurred_at, recorded_at, prev_hash, hash)
            SELECT gen_random_uuid(), $1, g, NULL, gen_random_uuid(), ($2::uuid[])[1 + g % 3], p.channel, p.trigger,
                   p.from_state, p.to_state, NULL, 'api_key', 'key' || (g % 4), NULL, '\\x00',
                   now() - interval '180 days' * (1 - g::float8 / $3), now(),
                   sha256(int8send(g - 1)), sha256(int8send(g))
              FROM generate_series(1, $3) g JOIN paths p ON p.n = g % $4
            """,
            workspace_id,
            purposes,
            events,
            len(paths),
        )
        await conn.execute(
            "INSERT INTO ledger_heads (workspace_id, last_seq, last_hash) VALUES ($1, $2, sha256(int8send($2::int8)))",
            workspace_id,
            events,
        )
        contact, point = uuid.uuid4(), uuid.uuid4()
        await conn.execute("INSERT INTO contacts (id, workspace_id) VALUES ($1, $2)", contact, workspace_id)
        await conn.execute(
            "INSERT INTO contact_points (id, workspace_id, contact_id, channel, value)"
            " VALUES ($1, $2, $3, 'email', 'bench@example.com')",
            point,
            workspace_id,
            contact,
        )
        await conn.execute(
            """
            WITH m AS (
                INSERT INTO messages (id, workspace_id, contact_id, purpose_id, strategy, route, content, decision,
                                      status, created_at)
                SELECT gen_random_uuid(), $1, $2, ($4::uuid[])[1 + g % 3], 'first_eligible', '{email}', '{}', '{}',
                       'queued', now() - interval '180 days' * (1 - g::float8 / $5)
                  FROM generate_series(1, $5) g
                RETURNING id, created_at
            ), d AS (
                INSERT INTO deliveries (id, workspace_id, message_id, channel, contact_point_id, status,
                                        next_attempt_at, updated_at)
                SELECT gen_random_uuid(), $1, m.id, 'email', $3, 'sent', m.created_at, m.created_at FROM m
                RETURNING id, message_id, next_attempt_at AS at
            )
            INSERT INTO message_events (id, message_id, delivery_id, channel, status, detail, at)
            SELECT gen_random_uuid(), d.message_id, d.id, 'email', s.status, s.detail,
                   d.at + s.after * (1 + (hashtext(d.id::text) & 1023))
              FROM d CROSS JOIN LATERAL (VALUES
                    ('queued', jsonb_build_object('not_before', d.at), interval '0'),
                    ('sent', NULL, interval '1 millisecond'),
                    (CASE WHEN hashtext(d.id::text) % 10 = 0 THEN 'delivered'
                          WHEN hashtext(d.id::text) % 20 = 1 THEN 'failed' END, NULL, interval '1 second')
              ) s(status, detail, after)
             WHERE s.status IS NOT NULL
            """,
            workspace_id,
            contact,
            point,
            purposes,
            messages,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def timed_reports(database: Database, workspace_id: uuid.UUID, repeats: int) -> list[tuple[str, float, int]]:
    """Median seconds (and rows answered) of each report for the last 90 days, catch-up included."""
    hour = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    midnight = hour.replace(hour=0) + timedelta(days=1)  # whole UTC days: the daily rollup is read
    cases = [
        ("consents, day", service.consent_report, "day", None, service.CONSENT_GROUPS, midnight),
        ("consents, day x channel x purpose", service.consent_report, "day", "channel,purpose",
         service.CONSENT_GROUPS, midnight),
        ("consents, week x trigger", service.consent_report, "week", "trigger", service.CONSENT_GROUPS, midnight),
        ("consents, day, range not on midnight (hourly rollup)", service.consent_report, "day", None,
         service.CONSENT_GROUPS, hour),
        ("consents, day x channel x purpose, not on midnight (hourly)", service.consent_report, "day",
         "channel,purpose", service.CONSENT_GROUPS, hour),
        ("messages, day x channel", service.message_report, "day", "channel", service.MESSAGE_GROUPS, midnight),
    ]  # fmt: skip
    results = []
    for name, build, granularity, group_by, groups, end in cases:
        query = service.parse_query(
            start=end - timedelta(days=90), end=end, granularity=granularity, group_by=group_by, channels=(),
            purposes=(), allowed_groups=groups, now=utcnow(),
        )  # fmt: skip
        times, rows = [], 0
        for _ in range(repeats):
            started = time.perf_counter()
            async with database.sessionmaker() as session, session.begin():
                rows = len(await build(session, workspace_id, query))
            times.append(time.perf_counter() - started)
        results.append((name, statistics.median(times), rows))
    return results


async def write_throughput(
    database: Database,
    dsn: str,
    workspace_id: uuid.UUID,
    writers: int,
    seconds: float,
    *,
    aggregator: bool,
    points: int = 20_000,
) -> tuple[float, int]:
    """Signups per second through ``apply_changes`` (one per transaction), with or without an aggregator."""
    conn = await asyncpg.connect(dsn)
    try:
        purpose_id = await conn.fetchval("SELECT id FROM purposes WHERE workspace_id = $1 LIMIT 1", workspace_id)
        tag = uuid.uuid4().hex[:6]
        ids = await conn.fetch(
            """
            WITH c AS (INSERT INTO contacts (id, workspace_id) SELECT gen_random_uuid(), $1 FROM generate_series(1, $2)
                       RETURNING id)
            INSERT INTO contact_points (id, workspace_id, contact_id, channel, value)
            SELECT gen_random_uuid(), $1, c.id, 'email', $3 || row_number() OVER () || '@example.com' FROM c
            RETURNING id
            """,
            workspace_id,
            points,
            tag,
        )
    finally:
        await conn.close()
    queue = [row["id"] for row in ids]
    done = 0
    stop = asyncio.Event()
    actor = Actor(ActorType.API_KEY, "bench")

    async def writer() -> None:
        nonlocal done
        while not stop.is_set() and queue:
            point_id = queue.pop()
            async with database.sessionmaker() as session, session.begin():
                point = await session.get(ContactPoint, point_id)
                assert point is not None
                change = Change(point, purpose_id, Trigger.SIGNUP, {"form_id": "bench"})
                await apply_changes(session, workspace_id, [change], actor)
            done += 1

    # the aggregator runs as a process of its own, as `consent reports catch-up` or another server process would;
    # the clock starts once it has started and caught up
    agg = None
    if aggregator:
        agg = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--aggregate", dsn, str(workspace_id), stdout=asyncio.subprocess.PIPE
        )
        assert agg.stdout is not None
        await agg.stdout.readline()
    started = time.perf_counter()
    tasks = [asyncio.create_task(writer()) for _ in range(writers)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    counted = 0
    if agg is not None:
        agg.terminate()
        out, _ = await agg.communicate()
        counted = int(out.decode().split()[-1]) if out.strip() else 0
    return done / elapsed, counted


async def aggregate_forever(dsn: str, workspace_id: uuid.UUID) -> None:
    """Catch the workspace up every 0.5 s until terminated; prints the running count after each round."""
    import signal  # noqa: PLC0415

    database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=1)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counted, started = 0, False
    try:
        while not stop.is_set():
            async with database.sessionmaker() as session, session.begin():
                counted += (await service.catch_up(session, workspace_id)).ledger_events
            if not started:
                started = True
                print("ready", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await database.dispose()
        print(counted, flush=True)


def stage(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> None:
    async with server(args.database_url, args.data_dir) as admin:
        stage("server up")
        dsn, workspace_id = await new_database(admin, "consent_reports")
        stage(f"database made ({dsn}), seeding")
        started = time.perf_counter()
        await seed(dsn, workspace_id, args.events, args.messages)
        seeded = time.perf_counter() - started
        stage("seeded, rebuilding")
        database = Database.from_url(
            dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=args.writers + 2
        )
        try:
            started = time.perf_counter()
            async with database.sessionmaker() as session, session.begin():
                counted = await service.rebuild(session, workspace_id)
            rebuild_s = time.perf_counter() - started
            stage("rebuilt, reports")
            reports = await timed_reports(database, workspace_id, args.repeats)
            stage("writes without the aggregator")
            first, _ = await write_throughput(database, dsn, workspace_id, args.writers, args.seconds, aggregator=False)
            stage("writes with the aggregator")
            with_agg, agg_counted = await write_throughput(
                database, dsn, workspace_id, args.writers, args.seconds, aggregator=True
            )
            stage("writes without the aggregator, again")
            second, _ = await write_throughput(
                database, dsn, workspace_id, args.writers, args.seconds, aggregator=False
            )
            without = (first + second) / 2
            after = await timed_reports(database, workspace_id, args.repeats)
        finally:
            await database.dispose()
    total = counted.ledger_events + counted.message_events
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"seeded {args.events:,} ledger events and {args.messages:,} messages ({counted.message_events:,} message "
          f"events) in {seeded:.1f} s")  # fmt: skip
    print()
    print(f"rebuild: {total:,} events in {rebuild_s:.2f} s = {total / rebuild_s:,.0f} events/s "
          f"(ledger {counted.ledger_events:,}, messages {counted.message_events:,})")  # fmt: skip
    print()
    print("| report (last 90 days, catch-up included) | median | rows | after the write test |")
    print("|---|---:|---:|---:|")
    for (name, seconds, rows), (_, later, _) in zip(reports, after, strict=True):
        print(f"| {name} | {seconds * 1000:.0f} ms | {rows:,} | {later * 1000:.0f} ms |")
    print()
    print(f"ledger writes ({args.writers} writers, {args.seconds:.0f} s each, one signup per transaction):")
    print(
        f"  without aggregator: {without:,.0f} events/s (mean of a run before and one after: {first:,.0f}, {second:,.0f})"
    )
    print(
        f"  with an aggregator process catching up every 0.5 s: {with_agg:,.0f} events/s ({agg_counted:,} events counted meanwhile)"
    )
    print(f"  ratio: {with_agg / without:.3f} ({(1 - with_agg / without) * 100:+.1f} % cost)")


def main() -> None:
    if sys.argv[1:2] == ["--aggregate"]:
        asyncio.run(aggregate_forever(sys.argv[2], uuid.UUID(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--database-url", help="a server to create the benchmark database on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-reports")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
