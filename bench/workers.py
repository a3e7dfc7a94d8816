"""Single eligibility checks against ``consent serve --workers 1`` and ``--workers 2``, side by side (issue 21).

One database (``--contacts`` generated contacts), then the real ``consent serve`` with one server process and
with two, alternating (1, 2, 1, 2), each loaded by ``wrk`` with the same script of single eligibility checks
(the dispatcher switched off, so only requests use the CPU). Reported: requests/s and p99 of each run, and the
ratio of two processes to one, measured in the same run.

    uv run python bench/workers.py                        # embedded PostgreSQL in ./.bench-workers
    uv run python bench/workers.py --contacts 20000 --duration 10

Needs ``wrk`` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.lib.db import migrate
from app.lib.embedded_pg import EmbeddedPostgres
from bench.common import serve_until_ready
from bench.generate import generate
from bench.run import fresh_database, lua, wrk

CONSENT = str(Path(sys.executable).parent / "consent")
SECRET_HEX = "ab" * 32


def serve(dsn: str, port: int, workers: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """``consent serve`` on ``dsn`` with ``workers`` processes; returns once it answers."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "CONSENT_SECRET_KEY": SECRET_HEX,
        "CONSENT_DISPATCHER": "off",
        "CONSENT_LOG_LEVEL": "warning",
        "CONSENT_DATA_DIR": str(data_dir),
    }
    return serve_until_ready([CONSENT, "serve", "--port", str(port), "--workers", str(workers)], env, port, workers)


async def run(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")
    data_dir = Path(args.data_dir)
    embedded = EmbeddedPostgres(data_dir / "pg", database="postgres")
    await embedded.start()
    try:
        dsn = await fresh_database(embedded.dsn("postgres"))
        engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
        await migrate(engine)
        await engine.dispose()
        info = await generate(dsn, args.contacts, seed=7)
        conn = await asyncpg.connect(dsn)
        refs = [r[0] for r in await conn.fetch("SELECT external_id FROM contacts ORDER BY random() LIMIT 2000")]
        await conn.close()
        script = lua(
            [f"/v1/eligibility?contact={r}&channel=email&purpose=newsletter" for r in refs],
            {"Authorization": f"Bearer {info['api_key']}"},
        )
        results: list[tuple[int, dict[str, float]]] = []
        for workers in (1, 2, 1, 2):
            process = serve(dsn, args.port, workers, data_dir / "service")
            try:
                base = f"http://127.0.0.1:{args.port}"
                wrk(base, script, 3, args.connections)  # warm every process's caches
                results.append((workers, wrk(base, script, args.duration, args.connections)))
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    finally:
        await embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.contacts:,} contacts; "
          f"wrk -t2 -c{args.connections} -d{args.duration}s per run (wrk and PostgreSQL share the machine)")  # fmt: skip
    print()
    print("| run | server processes | requests/s | p99 | non-2xx |")
    print("|---:|---:|---:|---:|---:|")
    for n, (workers, figures) in enumerate(results, 1):
        print(f"| {n} | {workers} | {figures['rps']:,.0f} | {figures['p99']:.1f} ms | {figures['non_2xx']:.0f} |")
    one = statistics.median(f["rps"] for w, f in results if w == 1)
    two = statistics.median(f["rps"] for w, f in results if w == 2)
    print(f"\ntwo processes / one: {two / one:.2f} (median of two runs each: {two:,.0f} / {one:,.0f} requests/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--data-dir", default=".bench-workers")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
