"""Reports benchmark: report latency for a 90-day range, rebuild events/s, and ledger writes with the aggregator.

A fresh database gets one workspace with ``--events`` synthetic ledger events (seq 1..N, spread over 180 days, six
channels, three purposes, the triggers and transitions of the state machine's common paths) and ``--messages``
messages with their history (queued, sent, a tenth delivered, a twentieth failed), written by SQL in bulk: the
rollups read only the columns they count, so the events need no valid hash chain for this.

Then, in order:
1. ``rebuild`` of the workspace (count everything again) after a raw grouped scan of the same events (the baseline):
   once over emptied rollups (deleted untimed before: lost rollups, everything to write) and once over the rollups
   that left (intact: nothing to write), in alternating rounds; events/s;
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
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.models  # noqa: F401  # every model mapped, so the ORM resolves the foreign keys of the rows it writes
from app.domain.model import ActorType, Trigger
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Change, apply_changes
from app.lib.db import Database
from app.lib.orm import utcnow
from app.reports import repository, service
from bench.common import new_database, server

#: The stories of the seeded addresses: (weight, channel, three steps of (trigger, from, to, evidence kind)), the
#: common paths of the state machine. The evidence kind decides what the event's evidence holds (as the service
#: writes it): a signup form's id, a confirmation's scanner signals, an unsubscribe's method and the campaign and
#: purpose of the message it came from, a STOP's attribution, an objection's kind.
STORIES = [
    (10, "email", [("signup", "none", "pending", "form"), ("confirm", "pending", "opted_in", "confirm"),
                   ("unsubscribe", "opted_in", "opted_out", "unsubscribe")]),
    (1, "email", [("signup", "none", "pending", "form"), ("confirm", "pending", "opted_in", "confirm"),
                  ("complaint", "opted_in", "opted_out", "complaint")]),
    (3, "email", [("signup", "none", "pending", "form"), ("lapse", "pending", "expired", "none"),
                  ("signup", "expired", "pending", "form")]),
    (3, "sms", [("signup", "none", "pending", "form"), ("start_word", "pending", "opted_in", "sms"),
                ("stop_word", "opted_in", "opted_out", "stop")]),
    (2, "whatsapp", [("start_word", "none", "opted_in", "sms"), ("stop_word", "opted_in", "opted_out", "stop"),
                     ("start_word", "opted_out", "opted_in", "sms")]),
    (3, "app_push", [("permission_granted", "none", "opted_in", "device"),
                     ("uninstalled", "opted_in", "opted_out", "device"),
                     ("permission_granted", "opted_out", "opted_in", "device")]),
    (2, "web_push", [("permission_denied", "none", "declined", "device"),
                     ("permission_granted", "declined", "opted_in", "device"),
                     ("permission_revoked", "opted_in", "opted_out", "device")]),
    (1, "print", [("objection", "none", "objected", "objection"),
                  ("objection_withdrawn", "objected", "none", "objection"),
                  ("robinson_match", "none", "objected", "robinson")]),
]  # fmt: skip

#: The evidence of each kind, in SQL over the address number ``k``, the event number ``g`` and the purpose ``pu``:
#: what the service stores (an IP address and a user agent for the person's own actions, and the kind's fields).
EVIDENCE = """
    jsonb_build_object('salt', md5(g::text), 'evidence',
      CASE WHEN s.kind IN ('form', 'confirm', 'unsubscribe')
           THEN jsonb_build_object('ip', '203.0.113.' || (g % 250), 'user_agent',
                                   'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/' || (g % 40))
           ELSE '{}'::jsonb END
      || CASE s.kind
           WHEN 'form' THEN jsonb_build_object('form_id', 'form-' || (k % 5), 'notice_version', 3)
           WHEN 'confirm' THEN jsonb_build_object('method', 'link', 'token_id', md5(k::text),
                'signals', CASE WHEN k % 10 = 0 THEN '["fast_click"]' ELSE '[]' END::jsonb)
           WHEN 'unsubscribe' THEN jsonb_build_object('method',
                CASE WHEN k % 2 = 0 THEN 'rfc8058_one_click' ELSE 'unsubscribe_page' END,
                'campaign', 'campaign-' || (k % 12), 'attributed_purpose_id', pu,
                'attributed_message_id', md5('m' || k)::uuid)
           WHEN 'stop' THEN jsonb_build_object('body', 'STOP', 'message_sid', 'SM' || md5(g::text),
                'campaign', 'campaign-' || (k % 12), 'attributed_purpose_id', pu)
           WHEN 'sms' THEN jsonb_build_object('body', 'START', 'message_sid', 'SM' || md5(g::text))
           WHEN 'objection' THEN jsonb_build_object('kind', CASE WHEN k % 2 = 0 THEN 'sticker' ELSE 'personal' END,
                'scope', 'print')
           WHEN 'robinson' THEN jsonb_build_object('kind', 'robinson', 'scope', 'print', 'source', 'list-2026')
           WHEN 'complaint' THEN jsonb_build_object('feedback_type', 'abuse')
           ELSE '{}'::jsonb END)
"""


#: The time of event ``g`` of ``$3`` (SQL): spread evenly over the last 180 days.
AT = "now() - interval '180 days' * (1 - ({g})::float8 / $3)"


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
        stories = [story for story in STORIES for _ in range(story[0])]
        await conn.execute(
            "CREATE TEMP TABLE steps (story int, pos int, channel text, trigger text, from_state text,"
            " to_state text, kind text)"
        )
        await conn.executemany(
            "INSERT INTO steps VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (n, pos, channel, *step)
                for n, (_, channel, steps) in enumerate(stories)
                for pos, step in enumerate(steps)
            ],
        )
        # event g (seq) is step (g - 1) % 3 of address k = (g - 1) / 3: an address's three events follow each other
        # (a confirmation finds its signup, as the DOI cohorts need); the person's own actions carry their
        # evidence; a form signup is recorded by the form's key. A confirmation carries the time of the newest
        # earlier step of its story that started a pending state (``doi_started_at``, as the ledger's trigger
        # pairs it: the same contact, address and purpose), computed here with the ledger's triggers off for this
        # insert: the trigger's lookup, planned on the empty ledger, scanned it for every confirmation (the seeding
        # of a million events took over six minutes instead of a minute). Checked against the trigger's own
        # lookup after the insert.
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            f"""
            INSERT INTO consent_events (id, workspace_id, seq, contact_id, contact_point_id, purpose_id, channel,
                   trigger, from_state, to_state, legal_basis, actor_type, actor_id, personal, personal_digest,
                   occurred_at, recorded_at, prev_hash, hash, doi_started_at)
            SELECT gen_random_uuid(), $1, g, md5('c' || k)::uuid, md5('p' || k)::uuid, pu, s.channel, s.trigger,
                   s.from_state, s.to_state, NULL, CASE WHEN s.kind = 'form' THEN 'api_key' ELSE 'subject' END,
                   CASE WHEN s.kind = 'form' THEN 'key' || (k % 4) END, {EVIDENCE}, '\\x00',
                   {AT.format(g="g")}, now(), sha256(int8send(g - 1)), sha256(int8send(g)),
                   CASE WHEN s.trigger = 'confirm' OR (s.trigger = 'start_word' AND s.from_state = 'pending'
                                                      AND s.to_state = 'opted_in')
                        THEN {AT.format(g="g - s.pos + st.pos")} END
              FROM (SELECT g, (g - 1) / 3 AS k, ($2::uuid[])[1 + ((g - 1) / 3) % 3] AS pu
                      FROM generate_series(1, $3) g) e
              JOIN steps s ON s.story = e.k % $4 AND s.pos = (e.g - 1) % 3
              LEFT JOIN LATERAL (
                    SELECT max(p.pos) AS pos FROM steps p
                     WHERE p.story = s.story AND p.pos < s.pos
                       AND p.trigger = 'signup' AND p.from_state <> 'pending' AND p.to_state = 'pending') st ON true
            """,  # noqa: S608  # a constant
            workspace_id,
            purposes,
            events,
            len(stories),
        )
        await conn.execute("RESET session_replication_role")
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
            INSERT INTO message_events (id, workspace_id, message_id, delivery_id, channel, status, detail, at)
            SELECT gen_random_uuid(), $1, d.message_id, d.id, 'email', s.status, s.detail,
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
        wrong = await conn.fetchval(
            """
            SELECT count(*) FROM consent_events e
             WHERE e.workspace_id = $1 AND CASE
                   WHEN e.trigger = 'confirm'
                        OR (e.trigger = 'start_word' AND e.from_state = 'pending' AND e.to_state = 'opted_in')
                   THEN e.doi_started_at IS DISTINCT FROM (
                   SELECT s.occurred_at FROM consent_events s
                    WHERE s.contact_id = e.contact_id AND s.seq < e.seq AND s.workspace_id = e.workspace_id
                      AND s.contact_point_id = e.contact_point_id AND s.purpose_id IS NOT DISTINCT FROM e.purpose_id
                      AND s.trigger = 'signup' AND s.from_state <> 'pending' AND s.to_state = 'pending'
                    ORDER BY s.seq DESC LIMIT 1)
                   ELSE e.doi_started_at IS NOT NULL END
            """,
            workspace_id,
        )
        assert wrong == 0, f"{wrong} events whose doi_started_at the ledger's trigger would not give"
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
        ("messages, day x channel, not on midnight (hourly)", service.message_report, "day", "channel",
         service.MESSAGE_GROUPS, hour),
        ("messages, week x channel x provider x campaign", service.message_report, "week", "channel,provider,campaign",
         service.MESSAGE_GROUPS, midnight),
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


async def raw_scan(dsn: str, workspace_id: uuid.UUID) -> float:
    """Seconds a plain grouped read of every ledger and message event of the workspace takes: the baseline.

    It reads the same rows a rebuild counts (one column of each, grouped), without any of the rollups' work.
    """
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.fetch(
            "SELECT channel, trigger, count(*) FROM consent_events WHERE workspace_id = $1 GROUP BY 1, 2", workspace_id
        )
        await conn.fetch(
            "SELECT e.status, count(*) FROM messages m JOIN message_events e ON e.message_id = m.id"
            " WHERE m.workspace_id = $1 GROUP BY 1",
            workspace_id,
        )
        return time.perf_counter() - started
    finally:
        await conn.close()


async def emptied(database: Database, workspace_id: uuid.UUID) -> None:
    """Delete the workspace's rollups and vacuum them (untimed): what a rebuild of lost rollups starts from."""
    async with database.sessionmaker() as session, session.begin():
        for table in repository.ROLLUPS[:-1]:  # (the queue is the rebuild's to empty)
            await session.execute(text(f"DELETE FROM {table} WHERE workspace_id = :ws"), {"ws": workspace_id})  # noqa: S608
    await vacuumed(database)


async def vacuumed(database: Database) -> None:
    """The vacuum of the rollups that ``consent reports rebuild`` runs after its rebuilds."""
    assert database.engine is not None
    async with database.engine.connect() as connection:
        await repository.vacuum_rollups(await connection.execution_options(isolation_level="AUTOCOMMIT"))


async def timed_rebuilds(
    database: Database, dsn: str, workspace_id: uuid.UUID, rounds: int
) -> tuple[service.Counted, list[float], list[float], list[float]]:
    """``rounds`` rounds of a raw scan, a rebuild of emptied rollups and a rebuild of the rollups it left (intact).

    Answers what was counted and the times of each. Each rebuild is followed (untimed) by the vacuum of the rollups
    that ``consent reports rebuild`` runs after it.
    """
    from_empty, intact, scans = [], [], []
    counted = service.Counted(0, 0)
    for _ in range(rounds):
        scans.append(await raw_scan(dsn, workspace_id))
        for times, empty in ((from_empty, True), (intact, False)):
            if empty:
                await emptied(database, workspace_id)
            started = time.perf_counter()
            async with database.sessionmaker() as session, session.begin():
                counted = await service.rebuild(session, workspace_id)
            times.append(time.perf_counter() - started)
            await vacuumed(database)
    return counted, from_empty, intact, scans


async def timed_message_catch_ups(database: Database, workspace_id: uuid.UUID, events: int, rounds: int) -> list[float]:
    """Seconds of catch-ups of the newest ``events`` message events queued again (untimed), one per round.

    They land on counters that already hold them (the newest hours' rows), as a live catch-up's do: each key's row
    gains its counts (and a ``sent`` row its latencies). A rebuild afterwards (untimed) puts the rollups right again.
    """
    queue = text(
        "INSERT INTO report_message_queue (workspace_id, event_id) SELECT workspace_id, id FROM message_events"
        " WHERE workspace_id = :ws AND status <> 'sending' ORDER BY at DESC LIMIT :n"
    )
    times = []
    for _ in range(rounds):
        async with database.sessionmaker() as session, session.begin():
            await session.execute(queue, {"ws": workspace_id, "n": events})
        started = time.perf_counter()
        async with database.sessionmaker() as session, session.begin():
            counted = await service.catch_up(session, workspace_id)
        times.append(time.perf_counter() - started)
        assert counted.message_events == events, counted
    async with database.sessionmaker() as session, session.begin():
        await service.rebuild(session, workspace_id)
    await vacuumed(database)
    return times


async def run(args: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        seeded = 0.0
        if args.seeded:
            dsn, workspace_id = args.seeded, uuid.UUID(args.workspace)
        else:
            admin = await stack.enter_async_context(server(args.database_url, args.data_dir))
            stage("server up")
            dsn, workspace_id = await new_database(admin, "consent_reports")
            stage(f"database made ({dsn}, workspace {workspace_id}), seeding")
            started = time.perf_counter()
            await seed(dsn, workspace_id, args.events, args.messages)
            seeded = time.perf_counter() - started
        stage("seeded, rebuilding")
        database = Database.from_url(
            dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=args.writers + 2
        )
        stack.push_async_callback(database.dispose)
        counted, from_empty, intact, scans = await timed_rebuilds(database, dsn, workspace_id, args.rebuilds)
        catch_ups = []
        if args.message_catch_up:
            stage("message catch-ups")
            catch_ups = await timed_message_catch_ups(database, workspace_id, args.message_catch_up, args.rebuilds)
        stage("rebuilt, reports")
        reports = await timed_reports(database, workspace_id, args.repeats)
        ratios: list[tuple[float, float]] = []
        for n in range(args.write_rounds):
            stage(f"writes without and with the aggregator, round {n + 1}")
            without, _ = await write_throughput(
                database, dsn, workspace_id, args.writers, args.seconds, aggregator=False
            )
            with_agg, _ = await write_throughput(
                database, dsn, workspace_id, args.writers, args.seconds, aggregator=True
            )
            ratios.append((without, with_agg))
        after = await timed_reports(database, workspace_id, args.repeats) if ratios else reports
    total = counted.ledger_events + counted.message_events
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{counted.ledger_events:,} ledger events and {counted.message_events:,} message events"
          + (f", seeded in {seeded:.1f} s" if seeded else ""))  # fmt: skip
    print()
    scan_s = statistics.median(scans)
    print(f"raw grouped scan of the same events (median of {', '.join(f'{r:.2f}' for r in scans)} s): {scan_s:.2f} s"
          f" = {total / scan_s:,.0f} events/s")  # fmt: skip
    for name, times in (("rebuild of emptied rollups", from_empty), ("rebuild of intact rollups", intact)):
        rebuild_s = statistics.median(times)
        print(f"{name} (median of {', '.join(f'{r:.2f}' for r in times)} s): {rebuild_s:.2f} s = "
              f"{total / rebuild_s:,.0f} events/s; rebuild / scan: {rebuild_s / scan_s:.2f}x")  # fmt: skip
    if catch_ups:
        median = statistics.median(catch_ups)
        print(f"catch-up of the newest {args.message_catch_up:,} message events queued again (median of "
              f"{', '.join(f'{r:.2f}' for r in catch_ups)} s): {median:.2f} s = {args.message_catch_up / median:,.0f}"
              " events/s")  # fmt: skip
    print()
    print("| report (last 90 days, catch-up included) | median | rows | after the write test |")
    print("|---|---:|---:|---:|")
    for (name, seconds, rows), (_, later, _) in zip(reports, after, strict=True):
        print(f"| {name} | {seconds * 1000:.0f} ms | {rows:,} | {later * 1000:.0f} ms |")
    if ratios:
        print()
        print(f"ledger writes ({args.writers} writers, {args.seconds:.0f} s each, one signup per transaction), "
              "without / with an aggregator process catching up every 0.5 s, alternating:")  # fmt: skip
        for without, with_agg in ratios:
            print(f"  {without:,.0f} / {with_agg:,.0f} events/s: ratio {with_agg / without:.3f}")
        median = statistics.median(w / o for o, w in ratios)
        print(f"  median ratio {median:.3f} ({(1 - median) * 100:+.1f} % cost)")


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
    parser.add_argument(
        "--rebuilds", type=int, default=3, help="rounds of a raw scan, a rebuild of emptied and one of intact rollups"
    )
    parser.add_argument("--write-rounds", type=int, default=3, help="pairs of write runs without/with the aggregator")
    parser.add_argument(
        "--message-catch-up", type=int, default=0, metavar="N",
        help="time catch-ups of the newest N message events queued again (one per --rebuilds round)",
    )  # fmt: skip
    parser.add_argument("--seeded", metavar="DSN", help="a database seeded by an earlier run (with --workspace)")
    parser.add_argument("--workspace", help="the workspace id of --seeded")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
