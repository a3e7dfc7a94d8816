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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.domain.identifiers import normalise_postal
from app.ledger.actions import print_value
from app.lib.ids import uuid7
from app.lib.keys import Keys
from bench.common import CONSENT, SECRET_HEX, copy_baseline, new_database, server

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


def import_run(
    consent: str, dsn: str, workspace_id: uuid.UUID, path: Path, workers: int | None
) -> tuple[float, int, dict, dict]:
    """``consent import robinson`` as its own process: wall time, peak RSS (kB), the report, its phases' seconds.

    The phases are those the import logs (``robinson_import``: reading, suppressing, matching), read from its log;
    ``phases["cpu"]``: the CPU seconds of the CLI and its worker processes (user + system; not the database's),
    which other load on the machine changes far less than the wall time.
    """
    env = {**os.environ, "DATABASE_URL": dsn, "CONSENT_SECRET_KEY": SECRET_HEX, "CONSENT_LOG_LEVEL": "info"}
    env["CONSENT_LOG_FORMAT"] = "json"
    args = [consent, "import", "robinson", "--workspace", str(workspace_id), str(path), "--json"]
    if workers is not None:
        args[3:3] = ["--workers", str(workers)]
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=log)
        assert process.stdout is not None
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)  # reaped here, so its own peak RSS is known
        elapsed = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status):
            raise SystemExit("import robinson failed")
        log.seek(0)
        phases: dict = {"cpu": usage.ru_utime + usage.ru_stime}
        for line in log.read().decode(errors="replace").splitlines():
            if "robinson_import" in line and line.startswith("{"):
                phases.update(json.loads(line))
    return elapsed, usage.ru_maxrss, json.loads(stdout.decode().strip().splitlines()[-1]), phases


async def run(args: argparse.Namespace) -> None:
    async with server(args.database_url, args.data_dir) as admin:
        results = []
        for rows in (max(args.rows // 10, 1), args.rows):
            dsn, workspace_id = await new_database(admin, "consent_robinson")
            known = min(20_000, rows)
            await known_addresses(dsn, workspace_id, known, seed=11)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "robinson.csv"
                write_list(path, rows, seed=11)
                size = path.stat().st_size
                baseline = await copy_baseline(
                    dsn,
                    path,
                    "name text, street text, house_number text, postcode text, city text",
                    delimiter=";",
                    header=True,
                )
                load = os.getloadavg()[0]
                elapsed, peak_kb, report, phases = import_run(args.consent, dsn, workspace_id, path, args.workers)
            results.append((rows, size, baseline, elapsed, peak_kb, report, known, phases))
            print(
                f"{rows} rows: COPY {baseline:.1f} s, import {elapsed:.1f} s, peak {peak_kb / 1024:.0f} MB, "
                f"{report['matched']} matched, CPU of the CLI and its workers {phases['cpu']:.1f} s, "
                f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
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
        for rows, size, baseline, elapsed, peak_kb, report, known, _ in results:
            print(
                f"| {rows:,} | {size / 1e6:.0f} MB | {baseline:.1f} s | {elapsed:.1f} s | {rows / elapsed:,.0f} | "
                f"{elapsed / baseline:.1f}x | {peak_kb / 1024:.0f} MB | {report['matched']:,} of {known:,} |"
            )
        print()
        print("| rows | reading | suppressing | matching | the rest (start-up, commit) |")
        print("|---:|---:|---:|---:|---:|")
        for rows, _, _, elapsed, _, _, _, phases in results:
            names = ("seconds_reading", "seconds_suppressing", "seconds_matching")
            spent = [float(phases.get(name, float("nan"))) for name in names]
            print(f"| {rows:,} | " + " | ".join(f"{x:.1f} s" for x in spent) + f" | {elapsed - sum(spent):.1f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", help="a server to create the benchmark databases on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-robinson")
    parser.add_argument("--workers", type=int, help="the import's --workers (the CLI's default when not given)")
    parser.add_argument("--consent", default=CONSENT, help="the CLI to run (another checkout's, for a before/after)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
