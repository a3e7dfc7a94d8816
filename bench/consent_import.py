"""Consent import benchmark: lines/s and peak memory of ``consent import consents`` for a generated NDJSON file.

The file: one contact per line group, an email opt-in with its notice text and evidence for every contact, an SMS
opt-in for 35 %, an email opt-out captured later for 10 % and a print objection for 5 %. Each size is imported
twice: the first run records everything, the second (the same file again) must record nothing.

The baseline, measured in the same run on the same file: ``COPY … FROM STDIN`` of the raw lines into a plain
table (what the database alone needs to take the file in). Memory: the CLI's peak RSS for ``--lines`` and for a
file a tenth of that size; constant memory means the two peaks are close.

    uv run python bench/consent_import.py                  # embedded PostgreSQL in ./.bench-import, 100,000 lines
    uv run python bench/consent_import.py --lines 20000

Times include the CLI's start-up; the start-up alone (the same command on an empty file, same run) is shown and
taken off for lines/s and the ratio to COPY. Also printed per size: the CPU seconds of the CLI (with its start-up)
and of the embedded PostgreSQL (server and backends) during the first import, and the load average before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.lib.ids import uuid7
from bench.common import cli_run, cli_usage, copy_baseline, cpu_seconds, new_database, server

NOTICES = [
    "Ja, ich möchte den Newsletter per E-Mail erhalten. Abmeldung jederzeit über den Link in jeder Mail.",
    "Ja, ich möchte Angebote per SMS erhalten. Abmeldung jederzeit mit STOP.",
]


def _letters(number: int) -> str:
    """A distinct surname per number (normalised names keep letters only)."""
    word = ""
    while number:
        number, digit = divmod(number, 26)
        word += "abcdefghijklmnopqrstuvwxyz"[digit]
    return word.capitalize()


def write_file(path: Path, lines: int, seed: int) -> None:
    """About ``lines`` NDJSON lines (groups of one contact's lines)."""
    rng = random.Random(seed)  # test data
    written, contact = 0, 0
    with path.open("w") as fh:
        while written < lines:
            contact += 1
            ref = f"crm-{contact}"
            captured = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
            group = [
                {
                    "contact": ref,
                    "channel": "email",
                    "address": f"person{contact}@example.com",
                    "purpose": "newsletter",
                    "state": "opted_in",
                    "captured_at": captured,
                    "source": "old-esp",
                    "notice_text": NOTICES[0],
                    "locale": "de",
                    "evidence": {"ip": f"198.51.{contact % 250}.{contact % 200}", "user_agent": "Mozilla/5.0"},
                }
            ]
            if rng.random() < 0.35:
                group.append(
                    {
                        "contact": ref,
                        "channel": "sms",
                        "address": f"+49151{contact:08d}",
                        "purpose": "newsletter",
                        "state": "opted_in",
                        "captured_at": captured,
                        "source": "old-sms-tool",
                        "notice_text": NOTICES[1],
                        "locale": "de",
                    }
                )
            if rng.random() < 0.10:
                group.append({**group[0], "state": "opted_out", "captured_at": "2025-06-01T00:00:00Z"})
                del group[-1]["notice_text"]
            if rng.random() < 0.05:
                group.append(
                    {
                        "contact": ref,
                        "channel": "print",
                        "postal_address": {
                            "name": f"Anna {_letters(contact)}",  # names are compared without digits
                            "street": "Hauptstraße",
                            "house_number": str(contact % 200 + 1),
                            "postcode": f"{10115 + contact % 800:05d}",
                            "city": "Berlin",
                        },
                        "state": "objected",
                        "captured_at": captured,
                        "source": "letter",
                    }
                )
            for line in group:
                fh.write(json.dumps(line) + "\n")
            written += len(group)


async def run(args: argparse.Namespace) -> None:
    async with server(args.database_url, args.data_dir) as admin:
        results = []
        for lines in (max(args.lines // 10, 1), args.lines):
            dsn, workspace_id = await new_database(admin, "consent_import")
            conn = await asyncpg.connect(dsn)
            await conn.execute(
                "INSERT INTO purposes (id, workspace_id, key, name, kind) VALUES ($1, $2, 'newsletter', 'News', 'marketing')",
                uuid7(),
                workspace_id,
            )
            await conn.close()
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "consents.ndjson"
                write_file(path, lines, seed=7)
                size = path.stat().st_size
                written = sum(1 for _ in path.open())
                # one column, with a quote and a delimiter that JSON never holds raw
                baseline = await copy_baseline(dsn, path, "line text", quote="\x01", delimiter="\x02")
                command = ("import", "consents", "--workspace", str(workspace_id), str(path), "--json")
                empty = Path(folder) / "empty.ndjson"
                empty.write_bytes(b"")
                # the CLI's fixed cost (interpreter, the service's modules, the database), best of three: taken off
                empties = [
                    cli_usage(dsn, "import", "consents", "--workspace", str(workspace_id), str(empty), "--json")
                    for _ in range(3)
                ]
                start_up = min(elapsed for elapsed, _, _ in empties)
                start_up_cpu = min(usage.ru_utime + usage.ru_stime for _, usage, _ in empties)
                load = os.getloadavg()[0]
                server_before = _server_cpu(args)
                first, usage, report = cli_usage(dsn, *command)
                server_cpu = _server_cpu(args) - server_before
                peak_kb, cli_cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
                again, _, repeat = cli_run(dsn, *command)
            results.append((written, size, baseline, start_up, first, again, peak_kb, report, repeat))
            print(
                f"{written} lines: COPY {baseline:.2f} s, start-up {start_up:.1f} s, import {first:.1f} s "
                f"({report['recorded']} recorded), again {again:.1f} s ({repeat['recorded']} recorded), "
                f"peak {peak_kb / 1024:.0f} MB; CPU of the import: CLI {cli_cpu:.1f} s (start-up alone {start_up_cpu:.1f} s: "
                f"{1e6 * (cli_cpu - start_up_cpu) / written:.0f} µs a line), PostgreSQL {server_cpu:.1f} s "
                f"({1e6 * server_cpu / written:.0f} µs a line); load before it {load:.1f}"
            )
        print()
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print()
        print(
            "| lines | file | raw COPY (baseline) | CLI start-up | import (wall) | lines/s without start-up "
            "| import / COPY | recorded | the same file again | recorded again | peak RSS of the CLI |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for written, size, baseline, start_up, first, again, peak_kb, report, repeat in results:
            work = first - start_up
            # a file the CLI takes in no longer than it needs to start says nothing about the rate
            rate, ratio = (f"{written / work:,.0f}", f"{work / baseline:.0f}x") if work > 0.5 else ("—", "—")
            print(
                f"| {written:,} | {size / 1e6:.0f} MB | {baseline:.2f} s | {start_up:.1f} s | {first:.1f} s | "
                f"{rate} | {ratio} | {report['recorded']:,} | {again:.1f} s | "
                f"{repeat['recorded']:,} | {peak_kb / 1024:.0f} MB |"
            )


def _server_cpu(args: argparse.Namespace) -> float:
    """CPU seconds of the embedded server and its backends so far (nan for a server given by ``--database-url``)."""
    if args.database_url:
        return float("nan")
    postmaster = int((Path(args.data_dir) / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    return cpu_seconds(postmaster, children=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--database-url", help="a server to create the benchmark databases on (default: embedded)")
    parser.add_argument("--data-dir", default=".bench-import")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
