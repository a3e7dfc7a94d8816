"""Chain throughput: three-step chains with zero delays against plain single-step messages, side by side.

One embedded PostgreSQL, one Twilio stand-in (its own process), one ``consent worker`` (dispatcher and chain runner
in one process) at a time. First ``--runs`` plain SMS messages are queued and sent (messages/s, measured from the
first sent one); then ``--runs`` runs of a chain of three SMS steps with ``after: PT0S`` and no conditions are
written (as ``POST /v1/chains/{id}/runs`` writes them: the run, its three steps, the first due now) and the same
worker decides every step (the send gate at the due time, a message per step) and sends the 3 x ``--runs``
messages. The chains' rate is their messages sent per second; issue 20 asks for at least 70 % of the plain rate.

Then runs are started through the API: the service (``bench/server.py``: the app plus a baseline route) and wrk
posting ``POST /v1/chains/{id}/runs`` (each with an ``Idempotency-Key`` of its own, over the loaded contacts) for
``--api-seconds``; runs/s is wrk's rate, checked against the runs the database holds afterwards. Baseline in the
same server: ``GET /v1/chains/{id}`` (authenticated, one ORM read: the cheapest request of the same app and API key)
and, with one process, ``GET /bench/baseline/{contact_id}`` (one raw asyncpg primary-key read, no auth, no ORM).
``--workers 2`` serves with ``consent serve --workers 2`` instead (no raw baseline route there). Issue 20 asks for at
least 2,000 runs/s.

``--batch-sizes 100,1000`` measures ``POST /v1/chains/{id}/runs/batch`` too, in the same server: ``--rounds`` rounds,
each of the authenticated read, the single call (wrk ``-c --api-connections``) and one batch size after another (wrk
``-c --batch-connections``, each batch with an ``Idempotency-Key`` of its own and no item keys, the contacts in turn),
the order reversed every other round. Runs/s: wrk's answered requests per second times the batch size, beside the
runs the database holds afterwards (every item starts a run; requests still in flight at wrk's end finish before
the next measurement starts).

    uv run python bench/chains.py                       # embedded PostgreSQL in ./.bench-chains, 100,000 runs
    uv run python bench/chains.py --runs 10000 --concurrency 64
    uv run python bench/chains.py --runs 5000 --api-only  # only the runs started through the API
    uv run python bench/chains.py --runs 2000 --api-only --workers 2  # served by ``consent serve --workers 2``
    uv run python bench/chains.py --runs 2000 --api-only --batch-sizes 100,1000 --rounds 3  # the batch endpoint
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.chains import service as chains
from app.chains.schemas import ChainIn
from app.lib.auth import Scope
from app.lib.db import Database
from app.lib.ids import uuid7
from app.workspaces.service import create_api_key
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


async def measure(
    conn: asyncpg.Connection,
    env: dict[str, str],
    concurrency: int,
    target: int,
    *,
    poll: float = 0.2,
    limit: float | None = None,
    label: str = "",
) -> tuple[float, int]:
    """Start a worker, wait until ``target`` deliveries are sent; messages/s from the first one sent in this phase,
    and how many were sent (fewer than ``target`` if the phase was stopped ``limit`` seconds after the first one).

    The sent deliveries are counted every ``poll`` seconds (a scan of the table: at hundreds of thousands of rows
    a count costs PostgreSQL tens to hundreds of milliseconds, so large runs poll less often; the end is then
    seen up to ``poll`` late). Each tenth of ``target`` prints its own rate, so a rate falling as the tables grow
    shows.
    """
    before = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
    worker = subprocess.Popen([CONSENT, "worker", "--concurrency", str(concurrency)], env=env)
    try:
        first: tuple[float, int] | None = None  # start-up is not throughput
        until: float | None = None
        mark = first
        while True:
            sent = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") - before
            now = time.perf_counter()
            if first is None and sent:
                first = mark = (now, sent)
                until = now + limit if limit else None
            if mark is not None and (sent - mark[1] >= target / 10 or sent >= target):
                print(
                    f"{label} {datetime.now(UTC):%H:%M:%S} sent {sent:,} of {target:,}: "
                    f"{(sent - mark[1]) / max(now - mark[0], 1e-9):,.0f} msg/s since the last line, "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                mark = (now, sent)
            if sent >= target:
                break
            if first is not None and until is not None and now > until:
                print(f"{label}: stopped at the time limit ({limit:,.0f} s), {sent:,} of {target:,} sent", flush=True)
                break
            if worker.poll() is not None:
                raise RuntimeError("the worker stopped")
            await asyncio.sleep(poll)
        assert first is not None
        rate = (sent - first[1]) / max(now - first[0], 1e-9)
        print(f"{label}: {sent - first[1]:,} sent in {now - first[0]:,.1f} s after the first one: {rate:,.0f} msg/s")
        return rate, sent
    finally:
        worker.terminate()
        worker.wait(timeout=60)


async def api_key(dsn: str, workspace: uuid.UUID) -> str:
    """An API key with the scope ``POST /v1/chains/{id}/runs`` needs."""
    database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=1)
    try:
        async with database.sessionmaker() as session, session.begin():
            _, secret = await create_api_key(session, workspace, "bench", [Scope.MESSAGES_SEND])
            return secret
    finally:
        await database.dispose()


def get_script(paths: list[str]) -> Path:
    """A wrk script cycling through ``paths`` (GET)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    items = ",\n".join(json.dumps(p) for p in paths)
    script.write_text(
        f"local paths = {{\n{items}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n  return wrk.format('GET', paths[i % #paths + 1])\nend\n"
    )
    return script


def wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk: requests/s, how many, p50 and p99 (ms), non-2xx answers."""
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rate, out
    assert total, out
    return {
        "rps": float(rate.group(1)),
        "requests": float(total.group(1)),
        "p50": ms("50%"),
        "p99": ms("99%"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


async def measure_api(dsn: str, conn: asyncpg.Connection, args: argparse.Namespace) -> tuple[dict[str, float], ...]:
    """Runs started through the API (wrk), and the baseline read in the same server; the runs the database holds."""
    workspace = await conn.fetchval("SELECT id FROM workspaces LIMIT 1")
    chain = await conn.fetchval("SELECT id FROM chains WHERE key = 'bench'") or await define(dsn, workspace)
    secret = await api_key(dsn, workspace)
    contacts = [str(r["id"]) for r in await conn.fetch("SELECT id FROM contacts LIMIT 5000")]
    root = Path(__file__).resolve().parents[1]
    if args.workers > 1:
        command = [CONSENT, "serve", "--host", "127.0.0.1", "--port", str(args.port), "--workers", str(args.workers)]
        env = {
            **os.environ,
            "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "CONSENT_SECRET_KEY": SECRET.hex(),
            "CONSENT_DISPATCHER": "off",
            "CONSENT_LOG_LEVEL": "warning",
            "CONSENT_DATA_DIR": str(Path(args.data_dir).resolve() / "serve"),
        }
    else:
        command = [sys.executable, __file__, "--serve", dsn, "--port", str(args.port)]
        env = {**os.environ, "PYTHONPATH": str(root)}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        script = _runs_script(f"/v1/chains/{chain}/runs", auth, contacts)
        wrk(base, script, 2, args.api_connections)  # warm-up (its runs are not counted)
        if args.batch_sizes:
            return await _measure_batches(base, conn, args, chain=chain, auth=auth, contacts=contacts, server=server)
        # the baseline first: after the runs, the server's database is busy with what they wrote (autovacuum)
        postmaster = _postmaster(args.data_dir)
        read = _with_cpu(
            server.pid, postmaster, lambda: wrk(base, _get_script(f"/v1/chains/{chain}", auth), 5, args.api_connections)
        )
        before = await conn.fetchval("SELECT count(*) FROM chain_runs")
        runs = _with_cpu(
            server.pid,
            postmaster,
            lambda: wrk(
                base, _runs_script(f"/v1/chains/{chain}/runs", auth, contacts), args.api_seconds, args.api_connections
            ),
        )
        written = await conn.fetchval("SELECT count(*) FROM chain_runs") - before
        raw = (
            wrk(base, get_script([f"/bench/baseline/{c}" for c in contacts]), 5, args.api_connections)
            if args.workers == 1
            else None
        )
        return runs, read, raw, {"written": float(written)}
    finally:
        server.terminate()
        server.wait(timeout=30)


async def _measure_batches(
    base: str,
    conn: asyncpg.Connection,
    args: argparse.Namespace,
    *,
    chain: uuid.UUID,
    auth: dict[str, str],
    contacts: list[str],
    server: subprocess.Popen[bytes],
) -> tuple[dict[str, float], ...]:
    """Rounds of the authenticated read, the single call and each batch size, alternated; one row per measurement.

    Each row: what it is, the round, wrk's figures, the CPU per request, and the runs the database holds afterwards.
    """
    postmaster = _postmaster(args.data_dir)
    single_path = f"/v1/chains/{chain}/runs"
    batch_path = f"/v1/chains/{chain}/runs/batch"
    for size in args.batch_sizes:  # warm-up of the batch path (its runs are not counted)
        wrk(base, _batch_script(batch_path, auth, contacts, size), 2, args.batch_connections)
    if args.analyze:
        # as autovacuum would within its first minute (naptime 60 s, then 50 rows + 10 %): the chain tables were
        # analysed empty (load's ANALYZE), and the plans the server's connections cached for the foreign-key checks
        # of the new rows (a scan of chain_runs per step) hold until statistics change. Without this, every figure
        # of a fresh database falls as chain_runs grows (docs/benchmarks.md, "runs started in batches").
        await conn.execute("ANALYZE")
    kinds: list[tuple[str, int]] = [("read", 0), ("single", 1), *(("batch", size) for size in args.batch_sizes)]
    rows: list[dict[str, float]] = []
    for number in range(1, args.rounds + 1):
        for kind, size in kinds if number % 2 else kinds[::-1]:
            if kind == "read":
                script, connections = _get_script(f"/v1/chains/{chain}", auth), args.api_connections
            elif kind == "single":
                script, connections = _runs_script(single_path, auth, contacts), args.api_connections
            else:
                script, connections = _batch_script(batch_path, auth, contacts, size), args.batch_connections
            before = await _settled(conn)  # the requests still in flight from the last wrk run done first
            measured = _with_cpu(
                server.pid, postmaster, lambda s=script, c=connections: wrk(base, s, args.api_seconds, c)
            )
            written = await conn.fetchval("SELECT count(*) FROM chain_runs") - before
            rows.append(
                {
                    **measured,
                    "round": float(number),
                    "size": float(size),
                    "connections": float(connections),
                    "written": float(written),
                    "load": os.getloadavg()[0],
                }
            )
            print(
                f"round {number} {kind} {size}: {measured['rps']:,.1f} req/s, {written:,} runs written, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    return tuple(rows)


async def _settled(conn: asyncpg.Connection) -> int:
    """The runs the database holds once no request is still writing any.

    No other session of the database inside a transaction (a batch of 1,000 writes for most of a second before
    its count changes), and the count unchanged for 0.3 s.
    """
    count = await conn.fetchval("SELECT count(*) FROM chain_runs")
    while True:
        await asyncio.sleep(0.3)
        busy = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend' AND state IN ('active', 'idle in transaction')"
        )
        now = await conn.fetchval("SELECT count(*) FROM chain_runs")
        if now == count and not busy:
            return int(now)
        count = now


def _print_batches(rows: tuple[dict[str, float], ...], args: argparse.Namespace) -> None:
    """The batch rounds as a Markdown table: runs/s (from the database's count), against the read of the round."""
    print()
    print(
        f"runs started through the API: wrk -t2 -d{args.api_seconds}s, single and read -c{args.api_connections}, "
        f"batches -c{args.batch_connections}, {args.workers} server process(es), "
        f"{'ANALYZE after the warm-up' if args.analyze else 'no ANALYZE (tables analysed empty)'}"
    )
    print()
    print(
        "| round | request | connections | req/s | runs/s | runs written / answered | p50 / p99 | non-2xx "
        "| runs / read's req/s | CPU per run: server + PostgreSQL | load |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    reads = {row["round"]: row["rps"] for row in rows if row["size"] == 0}
    for row in rows:
        size = int(row["size"])
        name = "GET /v1/chains/{id}" if size == 0 else "POST …/runs" if size == 1 else f"POST …/runs/batch ({size:,})"
        per_run = max(size, 1)
        runs = row["rps"] * size  # answered runs per second (wrk's); the database's count is checked beside it
        written = f"{row['written']:,.0f} / {row['requests'] * size:,.0f}" if size else "-"
        ratio = f"{runs / reads[row['round']]:.0%}" if size else "-"
        print(
            f"| {row['round']:.0f} | {name} | {row['connections']:.0f} | {row['rps']:,.1f} "
            f"| {f'{runs:,.0f}' if size else '-'} | {written} | {row['p50']:.1f} / {row['p99']:.1f} ms "
            f"| {row['non_2xx']:.0f} "
            f"| {ratio} "
            f"| {row['server_ms'] / per_run:.3f} + {row['database_ms'] / per_run:.3f} ms | {row['load']:.1f} |"
        )


def _batch_script(path: str, headers: dict[str, str], contacts: list[str], size: int) -> Path:
    """POSTs of batches of ``size`` runs for the contacts in turn, each with an ``Idempotency-Key`` of its own.

    The bodies are built once, when the script loads (a body per ``size`` contacts, cycling), so wrk's threads only
    pick one per request.
    """
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    header_items = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    bodies = []
    for start in range(0, max(len(contacts), size), size):
        chosen = [contacts[(start + n) % len(contacts)] for n in range(size)]
        bodies.append(json.dumps({"runs": [{"contact": c} for c in chosen]}, separators=(",", ":")))
    items = ",\n".join(json.dumps(b) for b in bodies)
    script.write_text(
        "local counter = 0\n"
        "function setup(thread)\n  counter = counter + 1\n  thread:set('tid', counter)\nend\n"
        f"local bodies = {{\n{items}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        f"  local headers = {{{header_items}}}\n"
        f"  headers['Idempotency-Key'] = '{uuid.uuid4().hex[:8]}-' .. tid .. '-' .. i\n"
        f"  return wrk.format('POST', {json.dumps(path)}, headers, bodies[i % #bodies + 1])\n"
        "end\n"
    )
    return script


def _postmaster(data_dir: str) -> int | None:
    """The process id of the bench's own embedded PostgreSQL (the first line of its ``postmaster.pid``)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((Path(data_dir) / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    return None


def _with_cpu(server: int, postmaster: int | None, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``measure`` (a wrk run), with the CPU time per request of the server's processes and of PostgreSQL's.

    PostgreSQL's: the bench's own server (``postmaster`` and its children), not other PostgreSQL servers on a shared
    machine (without ``postmaster``: every process named postgres). Processes that start or end during the run are
    not counted (the warm-up opened the pools' connections).
    """

    def times() -> tuple[dict[int, float], dict[int, float]]:
        parent = psutil.Process(server)
        served, database = {}, {}
        for process in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                served[process.pid] = sum(process.cpu_times()[:2])
        if postmaster is not None:
            own = psutil.Process(postmaster)
            databases = [own, *own.children()]
        else:
            databases = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]
        for process in databases:
            with contextlib.suppress(psutil.NoSuchProcess):
                database[process.pid] = sum(process.cpu_times()[:2])
        return served, database

    def spent(first: dict[int, float], then: dict[int, float]) -> float:
        return sum(then[pid] - first[pid] for pid in first if pid in then)

    first = times()
    result = measure()
    then = times()
    count = max(result["requests"], 1)
    return {
        **result,
        "server_ms": 1000 * spent(first[0], then[0]) / count,
        "database_ms": 1000 * spent(first[1], then[1]) / count,
    }


def _get_script(path: str, headers: dict[str, str]) -> Path:
    """GETs of ``path`` with ``headers`` (the authenticated baseline)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    header_items = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items() if k != "Content-Type")
    script.write_text(
        f"local headers = {{{header_items}}}\n"
        f"request = function()\n  return wrk.format('GET', {json.dumps(path)}, headers)\nend\n"
    )
    return script


def _runs_script(path: str, headers: dict[str, str], contacts: list[str]) -> Path:
    """POSTs starting runs for the contacts in turn, each with an ``Idempotency-Key`` of its own (in every script)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    header_items = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    items = ",\n".join(json.dumps(c) for c in contacts)
    script.write_text(
        "local counter = 0\n"
        "function setup(thread)\n  counter = counter + 1\n  thread:set('tid', counter)\nend\n"
        f"local contacts = {{\n{items}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        f"  local headers = {{{header_items}}}\n"
        f"  headers['Idempotency-Key'] = '{uuid.uuid4().hex[:8]}-' .. tid .. '-' .. i\n"
        "  local body = '{\"contact\": \"' .. contacts[i % #contacts + 1] .. '\"}'\n"
        f"  return wrk.format('POST', {json.dumps(path)}, headers, body)\n"
        "end\n"
    )
    return script


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
            if not args.api_only:
                plain, plain_sent = await measure(
                    conn, env, args.concurrency, args.runs, poll=args.poll, limit=args.time_limit, label="plain"
                )
                workspace = await conn.fetchval("SELECT id FROM workspaces LIMIT 1")
                chain = await define(dsn, workspace)
                started = time.perf_counter()
                await start_runs(dsn, workspace, chain)
                written = time.perf_counter() - started
                chained, chained_sent = await measure(
                    conn, env, args.concurrency, 3 * args.runs, poll=args.poll, limit=args.time_limit, label="chains"
                )
                decided = await conn.fetchval("SELECT count(*) FROM chain_steps WHERE status = 'sent'")
                completed = await conn.fetchval("SELECT count(*) FROM chain_runs WHERE status = 'completed'")
            api = await measure_api(dsn, conn, args) if args.api_seconds else None
        finally:
            await conn.close()
        print()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        if not args.api_only:
            print(f"runs written by COPY in {written:.1f} s; steps sent {decided:,}, runs completed {completed:,}")
            print()
            print("| runs | concurrency | plain single-step messages | three-step chains (messages) | chains / plain |")
            print("|---:|---:|---:|---:|---:|")
            print(
                f"| {args.runs:,} | {args.concurrency} | {plain:,.0f} msg/s | {chained:,.0f} msg/s "
                f"| {chained / plain:.0%} |"
            )
            if plain_sent < args.runs or chained_sent < 3 * args.runs:
                print(f"(stopped at the time limit: {plain_sent:,} plain and {chained_sent:,} chain messages sent)")
        if api is not None and args.batch_sizes:
            _print_batches(api, args)
        elif api is not None:
            runs, read, raw, counted = api
            raw_text = f"{raw['rps']:,.0f} req/s" if raw else "-"
            print()
            print(
                f"runs started through the API: wrk -t2 -c{args.api_connections} -d{args.api_seconds}s, "
                f"{args.workers} server process(es)"
            )
            print()
            print(
                "| POST /v1/chains/{id}/runs | p50 / p99 | non-2xx | runs written | authenticated read GET /v1/chains/{id}"
                " (p99) | runs / read | raw read (no auth) | CPU per run: server + PostgreSQL | per read |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            print(
                f"| {runs['rps']:,.0f} runs/s | {runs['p50']:.1f} / {runs['p99']:.1f} ms | {runs['non_2xx']:.0f} "
                f"| {counted['written']:,.0f} of {runs['requests']:,.0f} | {read['rps']:,.0f} req/s "
                f"({read['p99']:.1f} ms) | {runs['rps'] / read['rps']:.0%} "
                f"| {raw_text} | {runs['server_ms']:.2f} + {runs['database_ms']:.2f} ms "
                f"| {read['server_ms']:.2f} + {read['database_ms']:.2f} ms |"
            )
    finally:
        stand_in.terminate()
        await embedded.stop()


def serve(dsn: str, port: int) -> None:
    """The service as ``bench/server.py`` runs it (with its baseline route), but without the in-process dispatcher
    and chain runner: the runs' steps wait, so only their creation is measured, not their sending."""
    import uvicorn  # noqa: PLC0415

    from app.main import create_app  # noqa: PLC0415
    from app.settings import DatabaseSettings, Settings  # noqa: PLC0415
    from bench.server import BENCH_SECRET, baseline  # noqa: PLC0415

    settings = Settings(
        secret_key=BENCH_SECRET,
        log_level="warning",
        log_format="json",
        dispatcher=False,
        database=DatabaseSettings(url=dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=10),
    )
    app = create_app(settings)

    async def open_pool(application: Any) -> None:
        application.state.bench_pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)

    async def close_pool(application: Any) -> None:
        await application.state.bench_pool.close()

    app.on_startup.append(open_pool)
    app.on_shutdown.append(close_pool)
    app.register(baseline)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, loop="uvloop", http="httptools")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--data-dir", default=".bench-chains")
    parser.add_argument("--api-seconds", type=int, default=10, help="wrk's duration for the runs (0: not measured)")
    parser.add_argument("--api-connections", type=int, default=32)
    parser.add_argument("--api-only", action="store_true", help="only the runs started through the API")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument(
        "--time-limit", type=float, help="stop a sending phase this long after its first message (rate: what was sent)"
    )
    parser.add_argument(
        "--poll", type=float, default=0.2, help="seconds between counts of the sent messages (a table scan each)"
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes (consent serve --workers N)")
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[],
        help="also POST /v1/chains/{id}/runs/batch with these batch sizes (e.g. 100,1000), in --rounds rounds",
    )
    parser.add_argument("--batch-connections", type=int, default=4, help="wrk's connections for the batches")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of the batch measurement")
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="with --batch-sizes: measure on the warm-up's statistics (the chain tables analysed empty), as before",
    )
    parser.add_argument("--serve", metavar="DSN", help=argparse.SUPPRESS)  # the server of the API phase
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
