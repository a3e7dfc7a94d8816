"""Eligibility benchmark: single checks under load (wrk), a 10,000-contact batch, a full audience export.

Each figure is reported with a baseline measured in the same run on the same machine:
- single eligibility vs a bare endpoint in the same server doing one raw asyncpg primary-key read;
- audience export vs ``COPY (the same SELECT) TO STDOUT``.

    uv run python bench/run.py                        # embedded PostgreSQL in ./.bench, 1,000,000 contacts
    uv run python bench/run.py --contacts 200000 --duration 10
    uv run python bench/run.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Needs ``wrk`` (Debian: apt-get install wrk). Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import psutil
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.domain.model import Channel, PurposeKind
from app.eligibility.repository import AUDIENCE_WORK_MEM, audience_sql
from app.lib.db import migrate
from app.lib.embedded_pg import EmbeddedPostgres
from bench.generate import generate

HERE = Path(__file__).resolve().parent
AUDIENCE_CHANNELS = [Channel.EMAIL, Channel.SMS, Channel.PRINT]


async def fresh_database(admin_dsn: str) -> str:
    """A new database on the server; returns its DSN."""
    name = f"consent_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = admin_dsn.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def existing_database(admin_dsn: str) -> tuple[str, dict[str, str]] | None:
    """The newest benchmark database on the server, with a new admin key for its workspace."""
    from sqlalchemy.ext.asyncio import async_sessionmaker  # noqa: PLC0415

    from app.lib.auth import Scope  # noqa: PLC0415
    from app.workspaces.service import create_api_key  # noqa: PLC0415

    conn = await asyncpg.connect(admin_dsn)
    name = await conn.fetchval(
        "SELECT datname FROM pg_database WHERE datname LIKE 'consent_bench_%' ORDER BY oid DESC LIMIT 1"
    )
    await conn.close()
    if name is None:
        return None
    base, _, query = admin_dsn.partition("?")
    dsn = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    conn = await asyncpg.connect(dsn)
    workspace_id = await conn.fetchval("SELECT id FROM workspaces WHERE name = 'Benchmark'")
    contacts = await conn.fetchval("SELECT count(*) FROM contacts")
    await conn.close()
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    async with async_sessionmaker(engine)() as session, session.begin():
        _, secret = await create_api_key(session, workspace_id, "bench", [Scope.ADMIN])
    await engine.dispose()
    return dsn, {"workspace_id": str(workspace_id), "api_key": secret, "contacts": str(contacts)}


def wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, float]:
    """Run wrk; requests/s and latency percentiles (ms)."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "non_2xx": float(errors.group(1)) if errors else 0.0}


def lua(paths: list[str], headers: dict[str, str], delay_ms: int | None = None) -> Path:
    """A wrk script cycling through ``paths`` with ``headers``; ``delay_ms`` paces each connection (think time)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    items = ",\n".join(json.dumps(p) for p in paths)
    pacing = f"delay = function()\n  return {delay_ms}\nend\n" if delay_ms else ""
    script.write_text(
        f"{header_lines}\nlocal paths = {{\n{items}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n" + pacing
    )
    return script


async def copy_baseline(dsn: str, workspace_id: str, purpose_id: uuid.UUID) -> tuple[float, int]:
    """COPY (the audience SELECT) TO STDOUT into a counting sink: seconds and bytes."""
    conn = await asyncpg.connect(dsn)
    size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    query = audience_sql(PurposeKind.MARKETING, AUDIENCE_CHANNELS)
    query = query.replace("$1", f"'{workspace_id}'::uuid").replace("$2", f"'{purpose_id}'::uuid")
    async with conn.transaction():
        await conn.execute(f"SET LOCAL work_mem = '{AUDIENCE_WORK_MEM}'")  # what the service's export uses
        started = time.perf_counter()
        await conn.copy_from_query(query, output=sink)
        elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed, size


def export(base: str, headers: dict[str, str], server: psutil.Process) -> dict[str, float]:
    """Stream the audience; seconds, rows, and the server's peak RSS growth (MB) sampled during the export.

    The client is curl into ``wc -l``: a Python client parsing 300 MB would take a core from the PostgreSQL
    workers on this 2-core machine (the COPY baseline's client only counts bytes).
    """
    rss_start = server.memory_info().rss
    peak = rss_start
    query = "&".join(["purpose=newsletter", *(f"channel={c.value}" for c in AUDIENCE_CHANNELS)])
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    started = time.perf_counter()
    curl = subprocess.Popen(
        ["curl", "-sS", "--fail", *header_args, f"{base}/v1/audiences?{query}"], stdout=subprocess.PIPE
    )
    count = subprocess.Popen(["wc", "-l"], stdin=curl.stdout, stdout=subprocess.PIPE, text=True)
    assert curl.stdout is not None
    curl.stdout.close()  # wc holds the pipe now
    while curl.poll() is None:
        peak = max(peak, server.memory_info().rss)
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    rows = int(count.communicate()[0])
    assert curl.returncode == 0, f"curl exited with {curl.returncode}"
    return {"seconds": seconds, "rows": rows, "rss_growth_mb": (peak - rss_start) / 2**20}


def measure_single(
    base: str, auth: dict[str, str], sample_ids: list[str], sample_refs: list[str], args: argparse.Namespace
) -> list[str]:
    """Single checks against the bare baseline endpoint: saturated, then paced below saturation."""
    paths = [f"/v1/eligibility?contact={r}&channel=email&purpose=newsletter" for r in sample_refs]
    baseline_paths = [f"/bench/baseline/{i}" for i in sample_ids]
    baseline_script, single_script = lua(baseline_paths, {}), lua(paths, auth)
    # warm both paths, then measure alternately: baseline, eligibility, baseline, eligibility
    wrk(base, baseline_script, 3, args.connections)
    wrk(base, single_script, 3, args.connections)
    rounds = [
        (
            wrk(base, baseline_script, args.duration, args.connections),
            wrk(base, single_script, args.duration, args.connections),
        )
        for _ in range(2)
    ]
    base_rps = statistics.median(r[0]["rps"] for r in rounds)
    single_rps = statistics.median(r[1]["rps"] for r in rounds)
    single_p99 = statistics.median(r[1]["p99"] for r in rounds)
    base_p99 = statistics.median(r[0]["p99"] for r in rounds)
    errors = sum(r[1]["non_2xx"] + r[0]["non_2xx"] for r in rounds)
    # latency below saturation: each connection waits between requests so that the offered load is at most
    # 80 % of the throughput measured above (closed loop with think time; wrk's latencies exclude the wait)
    delay_ms = max(1, round(1000 * args.connections / (0.8 * single_rps)))
    paced = wrk(base, lua(paths, auth, delay_ms), args.duration, args.connections)
    paced_base = wrk(base, lua(baseline_paths, {}, delay_ms), args.duration, args.connections)
    errors += paced["non_2xx"] + paced_base["non_2xx"]
    return [
        (
            f"| single eligibility, requests/s | {single_rps:,.0f} | raw asyncpg PK read endpoint {base_rps:,.0f} | "
            f"{single_rps / base_rps:.0%} | >= 80 % |"
        ),
        (
            f"| single eligibility, p99 latency at that load | {single_p99:.1f} ms | baseline p99 {base_p99:.1f} ms | "
            f"{single_p99 / base_p99:.1f}x | < 20 ms |"
        ),
        (
            f"| single eligibility, p99 below saturation ({paced['rps']:,.0f} req/s offered by {args.connections} "
            f"connections pausing {delay_ms} ms) | {paced['p99']:.1f} ms | baseline p99 {paced_base['p99']:.1f} ms "
            f"at {paced_base['rps']:,.0f} req/s | {paced['p99'] / paced_base['p99']:.1f}x | < 20 ms |"
        ),
        f"| non-2xx answers during load | {errors:.0f} | | | 0 |",
    ]


def measure_batch(base: str, auth: dict[str, str], contacts: int, workspace_id: str) -> list[str]:
    """POST /v1/eligibility/batch with 10,000 contacts against the same body resolved by one raw read; medians of 5."""
    body = {"contacts": [f"c{i}" for i in range(min(10_000, contacts))], "channels": ["email"], "purpose": "newsletter"}
    times: dict[str, list[float]] = {"/v1/eligibility/batch": [], f"/bench/baseline/batch/{workspace_id}": []}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
        for _ in range(5):
            for path, seconds in times.items():  # alternately
                started = time.perf_counter()
                response = client.post(path, json=body)
                seconds.append(time.perf_counter() - started)
                response.raise_for_status()
    batch, floor = (statistics.median(t) for t in times.values())
    return [
        (
            f"| batch of {len(body['contacts']):,} contacts, median of 5 | {batch:.3f} s | "
            f"raw asyncpg read of the same contacts {floor:.3f} s | {batch / floor:.1f}x | < 0.5 s |"
        )
    ]


async def measure_export(
    base: str, auth: dict[str, str], server: psutil.Process, dsn: str, workspace_id: str, purpose_id: uuid.UUID
) -> list[str]:
    """The audience export against COPY of the same SELECT, best of 2 each, alternating."""
    copies, exports = [], []
    for _ in range(2):
        copies.append(await copy_baseline(dsn, workspace_id, purpose_id))
        exports.append(export(base, auth, server))
    copy_seconds, copy_bytes = min(copies)
    best = min(exports, key=lambda e: e["seconds"])
    return [
        (
            f"| audience export ({best['rows']:,.0f} eligible points, email+sms+print) | {best['seconds']:.2f} s | "
            f"COPY of the same SELECT {copy_seconds:.2f} s ({copy_bytes / 2**20:.0f} MiB) | "
            f"{best['seconds'] / copy_seconds:.1f}x | < 5 s, <= 2x |"
        ),
        f"| server RSS growth during export | {best['rss_growth_mb']:.0f} MiB | | | flat |",
    ]


async def run(args: argparse.Namespace) -> None:
    embedded: EmbeddedPostgres | None = None
    if args.database_url:
        admin = args.database_url
    else:
        embedded = EmbeddedPostgres(Path(args.data_dir) / "pg", database="postgres")
        await embedded.start()
        admin = embedded.dsn("postgres")
    server: subprocess.Popen[bytes] | None = None
    try:
        reused = await existing_database(admin) if args.reuse else None
        if reused is not None:
            dsn, info = reused
            print(f"reusing {dsn.split('?')[0].rsplit('/', 1)[-1]} ({info['contacts']} contacts)")
        else:
            dsn = await fresh_database(admin)
            engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
            await migrate(engine)
            await engine.dispose()
            started = time.perf_counter()
            info = await generate(dsn, args.contacts, seed=7)
            print(f"generated in {time.perf_counter() - started:.0f} s")
        conn = await asyncpg.connect(dsn)
        purpose_id = await conn.fetchval("SELECT id FROM purposes WHERE key = 'newsletter'")
        sample_ids = [str(r["id"]) for r in await conn.fetch("SELECT id FROM contacts ORDER BY random() LIMIT 2000")]
        sample_refs = [
            r["external_id"] for r in await conn.fetch("SELECT external_id FROM contacts ORDER BY random() LIMIT 2000")
        ]
        await conn.close()

        port = args.port
        server = subprocess.Popen(
            [sys.executable, str(HERE / "server.py"), "--database-url", dsn, "--port", str(port), "--pool-size", "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {info['api_key']}"}
        process = psutil.Process(server.pid)

        rows: list[str] = []
        if not args.export_only:
            rows += measure_single(base, auth, sample_ids, sample_refs, args)
            rows += measure_batch(base, auth, int(info["contacts"]), info["workspace_id"])
        rows += await measure_export(base, auth, process, dsn, info["workspace_id"], purpose_id)

        print()
        print(
            f"machine: {platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
            f"{int(info['contacts']):,} contacts; wrk -t2 -c{args.connections} -d{args.duration}s, 2 rounds, median"
        )
        print()
        print("| measurement | result | baseline (same run) | ratio | target |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        if embedded is not None:
            await embedded.stop()
            if not args.keep:
                shutil.rmtree(Path(args.data_dir), ignore_errors=True)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--database-url", help="a server to create the benchmark database on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench", help="embedded PostgreSQL folder")
    parser.add_argument("--keep", action="store_true", help="keep the embedded data folder")
    parser.add_argument("--export-only", action="store_true", help="measure the audience export alone")
    parser.add_argument("--reuse", action="store_true", help="measure the newest benchmark database already loaded")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
