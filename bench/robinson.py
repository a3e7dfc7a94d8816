"""Robinson list import benchmark: rows/s and peak memory of ``consent import robinson`` for a generated list.

The baseline, measured in the same run on the same file: ``COPY … FROM STDIN (FORMAT csv)`` of the raw rows
into a plain table (what the database alone needs to take the file in). The import does more per row
(normalise the address, HMAC it, match it), so the ratio says what that work costs.

Memory: the CLI's peak RSS for a list of ``--rows`` and for one a tenth of that size; constant memory means
the two peaks are close.

    uv run python bench/robinson.py                  # embedded PostgreSQL in ./.bench-robinson, 1,000,000 rows
    uv run python bench/robinson.py --rows 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.domain.identifiers import normalise_postal
from app.ledger.actions import print_value
from app.lib.db import migrate
from app.lib.embedded_pg import EmbeddedPostgres
from app.lib.ids import uuid7
from app.lib.keys import Keys

SECRET_HEX = "cd" * 32
CONSENT = str(Path(sys.executable).parent / "consent")
FIRST = ["Hans", "Erika", "Jürgen", "Anna", "Lukas", "Sophie", "Mehmet", "Olga", "Peter", "Marie", "Jörg", "Ute"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weiß", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann"]
STREETS = ["Hauptstraße", "Schulstr.", "Bahnhofstraße", "Sankt-Georg-Platz", "Lindenallee", "Gartenweg", "Am Markt"]
CITIES = ["Berlin", "Hamburg", "München", "Köln", "Frankfurt am Main", "Leipzig", "Düsseldorf"]


def row(rng: random.Random) -> tuple[str, str, str, str, str]:
    number = f"{rng.randint(1, 250)}{rng.choice(['', '', '', 'a', ' b'])}"
    return (
        f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        rng.choice(STREETS),
        number,
        f"{rng.randint(1067, 99998):05d}",
        rng.choice(CITIES),
    )


def write_list(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("name;street;house_number;postcode;city\n")
        for _ in range(rows):
            fh.write(";".join(row(rng)) + "\n")


async def known_addresses(dsn: str, workspace_id: uuid.UUID, count: int, seed: int) -> None:
    """``count`` print contact points; the list (same seed) contains every one of them."""
    keys = Keys(bytes.fromhex(SECRET_HEX))
    rng = random.Random(seed)
    contacts, points = [], []
    for index in range(count):
        name, street, number, postcode, city = row(rng)
        address = normalise_postal(street=street, house_number=number, postcode=postcode, city=city, name=name)
        value = print_value(address)
        details = {"address_key": address.key, "name_key": address.name_key}
        contact_id = uuid7()
        contacts.append((contact_id, workspace_id, f"known-{index}"))
        points.append(
            (
                uuid7(),
                workspace_id,
                contact_id,
                "print",
                value,
                json.dumps(details),
                keys.point_keys("print", value, details),
            )
        )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("contacts", records=contacts, columns=["id", "workspace_id", "external_id"])
        await conn.copy_records_to_table(
            "contact_points",
            records=points,
            columns=["id", "workspace_id", "contact_id", "channel", "value", "details", "suppression_keys"],
        )
    finally:
        await conn.close()


async def copy_baseline(dsn: str, path: Path) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS robinson_raw (name text, street text, house_number text, postcode text, city text)"
        )
        await conn.execute("TRUNCATE robinson_raw")
        started = time.perf_counter()
        with path.open("rb") as fh:
            await conn.copy_to_table("robinson_raw", source=fh, format="csv", delimiter=";", header=True)
        return time.perf_counter() - started
    finally:
        await conn.execute("DROP TABLE robinson_raw")
        await conn.close()


def cli_import(dsn: str, workspace_id: uuid.UUID, path: Path) -> tuple[float, int, dict[str, object]]:
    """Wall time, peak RSS in kB (of the CLI process) and the report."""
    env = {**os.environ, "DATABASE_URL": dsn, "CONSENT_SECRET_KEY": SECRET_HEX, "CONSENT_LOG_LEVEL": "warning"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [CONSENT, "import", "robinson", "--workspace", str(workspace_id), str(path), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # reaped here, so its own peak RSS is known
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"import failed ({process.returncode})")
    return elapsed, usage.ru_maxrss, json.loads(stdout.decode().strip().splitlines()[-1])


async def run(args: argparse.Namespace) -> None:
    embedded: EmbeddedPostgres | None = None
    if args.database_url:
        admin = args.database_url
    else:
        embedded = EmbeddedPostgres(Path(args.data_dir) / "pg", database="postgres")
        await embedded.start()
        admin = embedded.dsn("postgres")
    try:
        results = []
        for rows in (max(args.rows // 10, 1), args.rows):
            name = f"consent_robinson_{uuid.uuid4().hex[:8]}"
            conn = await asyncpg.connect(admin)
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()
            base, _, query = admin.partition("?")
            dsn = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
            engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
            await migrate(engine)
            await engine.dispose()
            conn = await asyncpg.connect(dsn)
            workspace_id = uuid7()
            await conn.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'Bench')", workspace_id)
            await conn.close()
            known = min(20_000, rows)
            await known_addresses(dsn, workspace_id, known, seed=11)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "robinson.csv"
                write_list(path, rows, seed=11)
                size = path.stat().st_size
                baseline = await copy_baseline(dsn, path)
                elapsed, peak_kb, report = cli_import(dsn, workspace_id, path)
            results.append((rows, size, baseline, elapsed, peak_kb, report, known))
            print(
                f"{rows} rows: COPY {baseline:.1f} s, import {elapsed:.1f} s, peak {peak_kb / 1024:.0f} MB, {report['matched']} matched"
            )
        print()
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        )
        print()
        print(
            "| rows | file | raw COPY (baseline) | import | rows/s | import / COPY | peak RSS of the CLI | known addresses matched |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rows, size, baseline, elapsed, peak_kb, report, known in results:
            print(
                f"| {rows:,} | {size / 1e6:.0f} MB | {baseline:.1f} s | {elapsed:.1f} s | {rows / elapsed:,.0f} | "
                f"{elapsed / baseline:.1f}x | {peak_kb / 1024:.0f} MB | {report['matched']:,} of {known:,} |"
            )
    finally:
        if embedded is not None:
            await embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", help="a server to create the benchmark databases on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-robinson")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
