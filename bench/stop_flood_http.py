"""A STOP flood over HTTP (issue 21, item 3): signed Twilio inbound webhooks against the real ``consent serve``.

One database, one workspace; ``--changes`` numbers per flood, each opted in to one marketing purpose. The real
server is started through the CLI as a subprocess (``consent serve --workers 1``, then ``--workers 2``, against
the same database; its sealer runs in every process), and ``--clients`` concurrent aiohttp clients each post
Twilio's inbound ``STOP`` for their own numbers, signed with the twilio library's ``RequestValidator`` as Twilio
signs them (the bodies and signatures are made before the clock starts). A change counts when its ``200`` with
the STOP confirmation came back (the server answers after its commit).

Baseline in the same run, against the same PostgreSQL and at the same concurrency, alternating with the floods:
one raw asyncpg ``INSERT … ; COMMIT`` per change into a plain table (``bench/ledger_flood.py``'s). Reported per
flood: changes/s, p50 and p99, the ratio to the baseline, and the CPU per change of the server's processes, of
PostgreSQL (embedded server only) and of this client. At the end: every STOP recorded (an ``opt_out`` inbound
message and two events, the channel and the purpose, per number), every event sealed, and the chain verified.

    uv run python bench/stop_flood_http.py                                   # embedded PostgreSQL, ./.bench-stop
    uv run python bench/stop_flood_http.py --changes 2000 --clients 8,32 --workers 1,2
    uv run python bench/stop_flood_http.py --consent ../wt-main/.venv/bin/consent   # another tree's server
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import httpx
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.ledger.audit import verify_chain
from app.lib.auth import Scope
from app.lib.db import Database
from app.lib.embedded_pg import EmbeddedPostgres
from app.workspaces.service import create_api_key
from bench.common import cpu_seconds, new_database, serve_until_ready
from bench.ledger_flood import baseline, rate

SECRET_HEX = "ef" * 32
TOKEN = "7" * 32
OURS = "+4930555000"


async def seed(dsn: str, workspace_id: uuid.UUID, count: int, offset: int) -> list[str]:
    """``count`` SMS numbers after the first ``offset``, each opted in to one marketing purpose: their values."""
    conn = await asyncpg.connect(dsn)
    try:
        purpose_id = await conn.fetchval(
            "INSERT INTO purposes (id, workspace_id, key, name, kind) VALUES (gen_random_uuid(), $1, 'news', 'News',"
            " 'marketing') ON CONFLICT DO NOTHING RETURNING id",
            workspace_id,
        ) or await conn.fetchval("SELECT id FROM purposes WHERE workspace_id = $1 AND key = 'news'", workspace_id)
        rows = await conn.fetch(
            """
            WITH c AS (INSERT INTO contacts (id, workspace_id) SELECT gen_random_uuid(), $1 FROM generate_series(1, $2)
                       RETURNING id),
                 p AS (INSERT INTO contact_points (id, workspace_id, contact_id, channel, value)
                       SELECT gen_random_uuid(), $1, c.id, 'sms', '+49151' || lpad(($4 + row_number() OVER ())::text, 8, '0')
                         FROM c RETURNING id, contact_id, value),
                 s AS (INSERT INTO consents (id, workspace_id, contact_id, contact_point_id, purpose_id, channel, state,
                                             legal_basis, since)
                       SELECT gen_random_uuid(), $1, p.contact_id, p.id, $3, 'sms', 'opted_in', 'consent', now() FROM p)
            SELECT value FROM p
            """,
            workspace_id,
            count,
            purpose_id,
            offset,
        )
        await conn.execute("ANALYZE contact_points; ANALYZE consents")
    finally:
        await conn.close()
    return [row[0] for row in rows]


def stage(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def serve(consent: str, dsn: str, port: int, workers: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """``consent serve`` on ``dsn`` with ``workers`` processes; returns once every process has started."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "CONSENT_SECRET_KEY": SECRET_HEX,
        "CONSENT_DISPATCHER": "off",
        "CONSENT_LOG_LEVEL": "warning",
        "CONSENT_DATA_DIR": str(data_dir),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_AUTH_TOKEN": TOKEN,
    }
    env.pop("TWILIO_ACCOUNT_SID", None)
    return serve_until_ready([consent, "serve", "--port", str(port), "--workers", str(workers)], env, port, workers)


def signed(url: str, numbers: list[str], tag: str) -> list[tuple[bytes, str]]:
    """Each number's inbound STOP as Twilio posts it: the form body and its ``X-Twilio-Signature``."""
    validator = RequestValidator(TOKEN)
    posts = []
    for n, number in enumerate(numbers):
        params = {
            "MessageSid": f"SM{tag}{n:030d}",
            "AccountSid": "AC" + "0" * 32,
            "From": number,
            "To": OURS,
            "Body": "STOP",
            "NumMedia": "0",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        posts.append((urllib.parse.urlencode(params).encode(), validator.compute_signature(url, params)))
    return posts


async def flood(url: str, posts: list[tuple[bytes, str]], clients: int) -> list[float]:
    """``clients`` connections, each posting its share of the STOPs one after another; latencies in seconds."""
    queue = list(posts)
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            while queue:
                body, signature = queue.pop()
                started = time.perf_counter()
                headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
                async with http.post(url, data=body, headers=headers) as response:
                    text = await response.text()
                if response.status != 200 or "<Message>" not in text:
                    raise SystemExit(f"a STOP was not confirmed: {response.status} {text[:200]}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def sealed(dsn: str, workspace_id: uuid.UUID) -> None:
    """Until the workspace has no unsealed event left (the server's sealers chain after commit)."""
    conn = await asyncpg.connect(dsn)
    try:
        while await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM consent_events WHERE workspace_id = $1 AND seq IS NULL)", workspace_id
        ):
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def postgres_cpu(pgdata: Path | None) -> float:
    """CPU seconds of the embedded PostgreSQL (postmaster, its live and ended backends); 0 for an external one."""
    if pgdata is None:
        return 0.0
    return cpu_seconds(int((pgdata / "postmaster.pid").read_text().split()[0]), children=True)


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> None:  # noqa: PLR0912  # one benchmark, in order
    levels = [int(n) for n in args.clients.split(",")]
    workers_levels = [int(n) for n in args.workers.split(",")]
    data_dir = Path(args.data_dir)
    embedded = None
    if args.database_url:
        admin, pgdata = args.database_url, None
    else:
        embedded = EmbeddedPostgres(data_dir / "pg", database="postgres")
        await embedded.start()
        admin, pgdata = embedded.dsn("postgres"), embedded.pgdata
    results: list[tuple[str, str, int, int, float, float, float, str]] = []
    try:
        dsn, workspace_id = await new_database(admin, "consent_stop_http")
        database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=2)
        async with database.sessionmaker() as session, session.begin():
            _, api_key = await create_api_key(session, workspace_id, "bench", [Scope.ADMIN])
        expected = 0
        servers = args.consent.split(",")
        seeded = 0
        for round_ in (1, 2):
            for which, workers in itertools.product(range(len(servers)), workers_levels):
                process = serve(servers[which], dsn, args.port, workers, data_dir / "service")
                try:
                    base = f"http://127.0.0.1:{args.port}"
                    if expected == 0:  # the workspace's number, as its settings claim it
                        response = httpx.put(
                            f"{base}/v1/workspace/settings",
                            json={"phone": {"sms_from": OURS}},
                            headers={"Authorization": f"Bearer {api_key}"},
                        )
                        response.raise_for_status()
                    url = f"{base}/webhooks/twilio/{workspace_id}/inbound"
                    for clients in levels:
                        numbers = await seed(dsn, workspace_id, args.changes, seeded)
                        posts = signed(url, numbers, str(seeded))
                        seeded += args.changes
                        warm = max(50, 4 * clients)  # untimed: every process's caches and connections warm
                        await flood(url, posts[:warm], clients)
                        posts = posts[warm:]
                        expected += warm
                        load = os.getloadavg()[0]
                        stage(f"round {round_}, {workers} server process(es), {clients} clients: baseline")
                        started = time.perf_counter()
                        raw = await baseline(dsn, args.changes, clients)
                        raw_rate = rate(raw, time.perf_counter() - started)
                        stage(f"round {round_}, {workers} server process(es), {clients} clients: STOP flood")
                        cpu = (cpu_seconds(process.pid, children=True), postgres_cpu(pgdata), client_cpu())
                        started = time.perf_counter()
                        stops = await flood(url, posts, clients)
                        elapsed = time.perf_counter() - started
                        after = (cpu_seconds(process.pid, children=True), postgres_cpu(pgdata), client_cpu())
                        expected += len(stops)
                        per = [(b - a) / len(stops) * 1000 for a, b in zip(cpu, after, strict=True)]
                        split = " / ".join(f"{x:.2f}" if pgdata or n != 1 else "n/a" for n, x in enumerate(per))
                        label = f"{round_} {chr(ord('A') + which)}"
                        results.append((f"{load:.1f}", label, workers, clients, *rate(stops, elapsed), split))
                        results.append((f"{load:.1f}", label, workers, clients, *raw_rate, "raw"))
                    await sealed(dsn, workspace_id)
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=60)
        conn = await asyncpg.connect(dsn)
        try:
            recorded = await conn.fetchval(
                "SELECT count(*) FROM inbound_messages WHERE workspace_id = $1 AND intent = 'opt_out'", workspace_id
            )
            events = await conn.fetchval(
                "SELECT count(*) FROM consent_events WHERE workspace_id = $1 AND trigger = 'stop_word'", workspace_id
            )
            unsealed = await conn.fetchval(
                "SELECT count(*) FROM consent_events WHERE workspace_id = $1 AND seq IS NULL", workspace_id
            )
        finally:
            await conn.close()
        async with database.sessionmaker() as session:
            verified = await verify_chain(session, workspace_id)
        await database.dispose()
    finally:
        if embedded is not None:
            await embedded.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for n, consent in enumerate(args.consent.split(",")):
        print(f"server {chr(ord('A') + n)}: {consent}")
    print(f"{args.changes:,} STOPs per flood, one workspace, signed webhooks over HTTP (aiohttp, keep-alive)\n")
    print("| load | round, server | server processes | clients | changes/s | p50 | p99 | raw INSERT; COMMIT /s | ratio | CPU/change: server / PostgreSQL / client |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for (load, round_, workers, clients, per_s, p50, p99, split), raw in zip(results[::2], results[1::2], strict=True):
        print(
            f"| {load} | {round_} | {workers} | {clients} | {per_s:,.0f} | {p50:.1f} ms | {p99:.1f} ms "
            f"| {raw[4]:,.0f} | {per_s / raw[4]:.2f} | {split} ms |"
        )
    print(f"\nSTOPs sent {expected:,}; recorded as opt_out {recorded:,}; stop_word events {events:,} "
          f"(2 per number); unsealed {unsealed}; chain: {'verified' if verified.valid else 'BROKEN'}, "
          f"{verified.events_checked:,} events")  # fmt: skip
    if recorded != expected or events != 2 * expected or unsealed or not verified.valid:
        raise SystemExit("a STOP is missing or the chain does not verify")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=2000, help="STOPs per flood")
    parser.add_argument("--clients", default="8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--workers", default="1,2", help="server processes, comma-separated (each in turn)")
    parser.add_argument(
        "--consent",
        default=str(Path(sys.executable).parent / "consent"),
        help="the CLI to serve with (another worktree's, to compare; same database schema)",
    )
    parser.add_argument("--database-url", help="a server to create the benchmark database on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-stop")
    parser.add_argument("--port", type=int, default=8793)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
