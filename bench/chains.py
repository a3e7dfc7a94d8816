"""Chain throughput: three-step chains with zero delays against plain single-step messages, side by side.

One embedded PostgreSQL, one Twilio stand-in (its own process), one ``consent worker`` (dispatcher and chain runner
in one process) at a time. First ``--runs`` plain SMS messages are queued and sent (messages/s, measured from the
first sent one); then ``--runs`` runs of a chain of three SMS steps with ``after: PT0S`` and no conditions are
written (as ``POST /v1/chains/{id}/runs`` writes them: the run, its three steps, the first due now) and the same
worker decides every step (the send gate at the due time, a message per step) and sends the 3 x ``--runs``
messages. The chains' rate is their messages sent per second; issue 20 asks for at least 70 % of the plain rate.

    uv run python bench/chains.py                       # embedded PostgreSQL in ./.bench-chains, 100,000 runs
    uv run python bench/chains.py --runs 10000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.chains import service as chains
from app.chains.schemas import ChainIn
from app.lib.db import Database
from app.lib.ids import uuid7
from bench.dispatch import ACCOUNT, CONSENT, SECRET, TOKEN, load, run_stand_in_process

STEPS = [
    {"key": key, "route": ["sms"], "content": {"sms": {"text": f"Schritt {key}"}}, "after": "PT0S"}
    for key in ("first", "second", "third")
]


async def define(dsn: str, workspace: uuid.UUID) -> uuid.UUID:
    """The chain, defined through the service as ``POST /v1/chains`` does; answers its id."""
    database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=2)
    try:
        async with database.sessionmaker() as session, session.begin():
            data = msgspec.convert({"key": "bench", "purpose": "news", "steps": STEPS}, ChainIn)
            chain, _ = await chains.define_chain(session, workspace, data)
            return chain.id
    finally:
        await database.dispose()


async def start_runs(dsn: str, workspace: uuid.UUID, chain: uuid.UUID) -> int:
    """A run for every contact, with its three steps, the first due now (COPY); answers how many."""
    conn = await asyncpg.connect(dsn)
    try:
        contacts = [r["id"] for r in await conn.fetch("SELECT id FROM contacts WHERE workspace_id = $1", workspace)]
        now = datetime.now(UTC)
        runs, steps = [], []
        for contact in contacts:
            run = uuid7()
            runs.append((run, workspace, chain, contact, "active", now))
            steps += [
                (uuid7(), workspace, run, position, s["key"], "pending", now if position == 0 else None, 0)
                for position, s in enumerate(STEPS)
            ]
        await conn.copy_records_to_table(
            "chain_runs", records=runs, columns=["id", "workspace_id", "chain_id", "contact_id", "status", "started_at"]
        )
        await conn.copy_records_to_table(
            "chain_steps",
            records=steps,
            columns=["id", "workspace_id", "run_id", "position", "key", "status", "due_at", "attempts"],
        )
        await conn.execute("ANALYZE")
        return len(runs)
    finally:
        await conn.close()


async def measure(conn: asyncpg.Connection, env: dict[str, str], concurrency: int, target: int) -> float:
    """Start a worker, wait until ``target`` deliveries are sent; messages/s from the first one sent in this phase."""
    before = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
    worker = subprocess.Popen([CONSENT, "worker", "--concurrency", str(concurrency)], env=env)
    try:
        first: tuple[float, int] | None = None  # start-up is not throughput
        while True:
            sent = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") - before
            if first is None and sent:
                first = (time.perf_counter(), sent)
            if sent >= target:
                break
            if worker.poll() is not None:
                raise RuntimeError("the worker stopped")
            await asyncio.sleep(0.2)
        assert first is not None
        return (target - first[1]) / (time.perf_counter() - first[0])
    finally:
        worker.terminate()
        worker.wait(timeout=60)


async def run(args: argparse.Namespace) -> None:
    from app.lib.embedded_pg import EmbeddedPostgres  # noqa: PLC0415

    embedded = EmbeddedPostgres(Path(args.data_dir) / "pg", database="postgres")
    await embedded.start()
    admin = embedded.dsn("postgres")
    name = f"consent_chains_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = admin.partition("?")
    dsn = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    port_file = Path(args.data_dir) / "stand-in-url"
    port_file.unlink(missing_ok=True)
    stand_in = run_stand_in_process(port_file)
    try:
        await load(dsn, args.runs)  # contacts with opted-in numbers and one queued plain SMS each
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            await asyncio.sleep(0.1)
        url = port_file.read_text()
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "CONSENT_SECRET_KEY": SECRET.hex(),
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_API_BASE_URL": url,
            "CONSENT_LOG_LEVEL": "warning",
        }
        conn = await asyncpg.connect(dsn)
        try:
            plain = await measure(conn, env, args.concurrency, args.runs)
            workspace = await conn.fetchval("SELECT id FROM workspaces LIMIT 1")
            chain = await define(dsn, workspace)
            started = time.perf_counter()
            await start_runs(dsn, workspace, chain)
            written = time.perf_counter() - started
            chained = await measure(conn, env, args.concurrency, 3 * args.runs)
            decided = await conn.fetchval("SELECT count(*) FROM chain_steps WHERE status = 'sent'")
            completed = await conn.fetchval("SELECT count(*) FROM chain_runs WHERE status = 'completed'")
        finally:
            await conn.close()
        print()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"runs written by COPY in {written:.1f} s; steps sent {decided:,}, runs completed {completed:,}")
        print()
        print("| runs | concurrency | plain single-step messages | three-step chains (messages) | chains / plain |")
        print("|---:|---:|---:|---:|---:|")
        print(
            f"| {args.runs:,} | {args.concurrency} | {plain:,.0f} msg/s | {chained:,.0f} msg/s "
            f"| {chained / plain:.0%} |"
        )
    finally:
        stand_in.terminate()
        await embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--data-dir", default=".bench-chains")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
