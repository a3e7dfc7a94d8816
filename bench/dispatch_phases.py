"""Where one dispatcher's CPU goes per message, phase by phase (a companion to ``bench/dispatch.py``).

cProfile of the running worker cannot say which phase a cost belongs to: SQLAlchemy's async bridge switches
greenlets, and the profiler then charges one task's work to another. Here each phase of the dispatcher runs on its
own, one after the other, in this process, on the same data as ``bench/dispatch.py`` (queued SMS, the Twilio
stand-in in its own process), and the CPU time of this process and of PostgreSQL's is read around each:

- claim: ``Dispatcher._claim`` (the ``SKIP LOCKED`` claim with its lease), batches of ``2 * concurrency``;
- prepare: ``Dispatcher._prepare`` (every table read, the send gate, composition, the in-flight marks);
- send: every prepared delivery through the Twilio adapter, ``concurrency`` at once; and, for comparison, the same
  number of requests through plain aiohttp (the raw client of ``bench/dispatch.py``'s baseline);
- record: ``Dispatcher._write`` of the acceptances, in groups of ``--group``.

    uv run python bench/dispatch_phases.py --messages 5000
    uv run python bench/dispatch_phases.py --messages 5000 --profile /tmp/prepare.prof   # cProfile of prepare alone

Prepare runs alone (no other task of this process runs meanwhile), so its profile is not mixed with other phases'.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.channels.adapters import Adapters
from app.lib.db import Database
from app.lib.embedded_pg import EmbeddedPostgres
from app.lib.keys import Keys
from app.main import mail_sender
from app.messages.dispatcher import DispatchConfig, Dispatcher, _Entry
from app.settings import Settings, TwilioDefaults
from bench.dispatch import ACCOUNT, SECRET, TOKEN, cpu_seconds, load, run_stand_in_process


class _Profile:
    """cProfile (CPU time) around each prepare, written to ``path``; nothing without a path."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.profiler = cProfile.Profile(time.process_time) if path else None

    def __enter__(self) -> None:
        if self.profiler is not None:
            self.profiler.enable()

    def __exit__(self, *_: object) -> None:
        if self.profiler is not None:
            self.profiler.disable()

    def dump(self) -> None:
        if self.profiler is not None and self.path:
            self.profiler.dump_stats(self.path)


async def raw_sends(url: str, count: int, concurrency: int) -> None:
    auth = aiohttp.helpers.BasicAuth(ACCOUNT, TOKEN).encode()
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> None:
            async with limit:
                data = {"To": "+4915100000000", "From": "+4930123456789", "Body": f"m{index}"}
                async with session.post(
                    f"{url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json", data=data, headers={"Authorization": auth}
                ) as response:
                    await response.read()

        await asyncio.gather(*(one(i) for i in range(count)))


async def run(args: argparse.Namespace) -> None:
    embedded = EmbeddedPostgres(Path(args.data_dir) / "pg", database="postgres")
    await embedded.start()
    admin = embedded.dsn("postgres")
    name = f"consent_phases_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = admin.partition("?")
    dsn = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    port_file = Path(args.data_dir) / "stand-in-url"
    port_file.unlink(missing_ok=True)
    stand_in = run_stand_in_process(port_file)
    try:
        await load(dsn, args.messages)
        while not (port_file.exists() and port_file.read_text()):
            await asyncio.sleep(0.1)
        url = port_file.read_text()
        database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=4)
        settings = Settings(
            data_dir=Path(args.data_dir) / "data",
            secret_key=SECRET,
            twilio=TwilioDefaults(account_sid=ACCOUNT, auth_token=TOKEN, api_base_url=url),
        )
        keys = Keys(SECRET)
        adapters = Adapters(settings, keys, mail_sender(settings))
        config = DispatchConfig(batch=2 * args.concurrency, concurrency=args.concurrency)
        dispatcher = Dispatcher(database, keys, settings, adapters, config=config)
        postmaster = int((Path(args.data_dir) / "pg" / "data" / "postmaster.pid").read_text().split()[0])
        phases = ("claim", "prepare", "send", "record", "raw client")
        used = dict.fromkeys(phases, 0.0)
        database_used = dict.fromkeys(phases, 0.0)

        def clocks() -> tuple[float, float]:
            return time.process_time(), cpu_seconds(postmaster, children=True)

        def count(phase: str, started: tuple[float, float]) -> None:
            now = clocks()
            used[phase] += now[0] - started[0]
            database_used[phase] += now[1] - started[1]

        sent = 0
        limit = asyncio.Semaphore(args.concurrency)

        async def send(item):  # noqa: ANN001, ANN202
            async with limit:
                return _Entry(item, await dispatcher._send(item))  # noqa: SLF001

        profiler = _Profile(args.profile)
        while True:
            started = clocks()
            claimed = await dispatcher._claim()  # noqa: SLF001
            count("claim", started)
            if not claimed:
                break
            started = clocks()
            with profiler:
                prepared, _ = await dispatcher._prepare(claimed, room=len(claimed))  # noqa: SLF001
            count("prepare", started)
            started = clocks()
            entries = await asyncio.gather(*(send(item) for item in prepared))
            count("send", started)
            started = clocks()
            for at in range(0, len(entries), args.group):
                await dispatcher._write(entries[at : at + args.group])  # noqa: SLF001
            count("record", started)
            sent += len(entries)
        started = clocks()
        await raw_sends(url, sent, args.concurrency)
        count("raw client", started)
        profiler.dump()
        await adapters.aclose()
        await database.dispose()
        print(f"\n{sent:,} messages, batches of {2 * args.concurrency}, records in groups of {args.group}\n")
        print("| phase | this process, CPU per message | PostgreSQL, CPU per message |")
        print("|---|---:|---:|")
        for phase in phases:
            print(f"| {phase} | {1000 * used[phase] / sent:.3f} ms | {1000 * database_used[phase] / sent:.3f} ms |")
    finally:
        stand_in.terminate()
        await embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--group", type=int, default=16, help="acceptances written together")
    parser.add_argument("--data-dir", default=".bench-dispatch-phases")
    parser.add_argument("--profile", help="write a cProfile (CPU time) of the prepare phase to this file")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
