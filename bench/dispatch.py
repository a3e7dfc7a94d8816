"""Dispatch throughput: messages/s of one ``consent worker`` process against a local Twilio stand-in.

Baseline, measured in the same run against the same stand-in: one process posting the same number of
Messages API requests with plain aiohttp at the same concurrency (what the stand-in and the HTTP stack allow
without the service's work: claiming, the send-time gate, recording the outcome).

    uv run python bench/dispatch.py                     # embedded PostgreSQL in ./.bench-dispatch, 20,000 messages
    uv run python bench/dispatch.py --messages 5000 --concurrency 64
    uv run python bench/dispatch.py --messages 5000 --profile /tmp/worker.prof   # cProfile of the worker
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

import aiohttp
import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.lib.db import Database, migrate
from app.lib.embedded_pg import EmbeddedPostgres
from app.lib.ids import uuid7
from app.lib.keys import Keys

CONSENT = str(Path(sys.executable).parent / "consent")
SECRET = b"b" * 32
ACCOUNT = "AC" + "ef" * 16
TOKEN = "z" * 32


#: Runs ``argv[2:]`` (the ``consent`` script and its arguments) under cProfile counting CPU time, not wall time
#: (on a shared machine, wall time counts the waits for a core), and writes the stats to ``argv[1]``.
PROFILED = """
import cProfile, runpy, sys, time
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


class StandIn:
    def __init__(self) -> None:
        self.count = 0

    async def create(self, request: web.Request) -> web.Response:
        await request.post()
        self.count += 1
        return web.json_response({"sid": f"SM{self.count:032x}", "status": "queued"}, status=201)


async def serve_stand_in() -> tuple[web.AppRunner, StandIn, str]:
    handler = StandIn()
    application = web.Application()
    application.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", handler.create)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, handler, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001


def run_stand_in_process(port_file: Path) -> subprocess.Popen[bytes]:
    """The stand-in in its own process, so it does not share a core's event loop with the measured client."""
    code = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from bench.dispatch import serve_stand_in\n"
        "async def main():\n"
        "    runner, handler, url = await serve_stand_in()\n"
        f"    open({str(port_file)!r}, 'w').write(url)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time (user + system) of process ``pid`` so far; ``children``: with its live and ended children's."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(one: int, *, ended: bool) -> float:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return 0.0
        used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if ended else 0)
        return used / ticks

    total = own(pid, ended=children)
    if children:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += own(int(child), ended=False)
    return total


async def baseline(url: str, count: int, concurrency: int) -> float:
    auth = aiohttp.BasicAuth(ACCOUNT, TOKEN).encode()
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> None:
            async with limit:
                data = {"To": "+4915100000000", "From": "+4930123456789", "Body": f"m{index}"}
                async with session.post(
                    f"{url}/2010-04-01/Accounts/{ACCOUNT}/Messages.json", data=data, headers={"Authorization": auth}
                ) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started


async def load(dsn: str, count: int) -> None:
    """A workspace, ``count`` opted-in numbers and one queued SMS delivery each, with its ``queued`` step (COPY).

    The history step is what the API writes with each delivery (``app.messages.service``; its trigger queues it for
    the reports too). Without it ``message_events`` starts empty and is analyzed so: the worker's connections then
    plan the report queue's foreign-key check on it as a sequential scan, keep that plan for the whole run (no
    autoanalyze comes within it) and pay a scan of the grown table for every message sent.
    """
    database = Database.from_url(dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=2)
    assert database.engine is not None
    await migrate(database.engine)
    await database.dispose()
    keys = Keys(SECRET)
    conn = await asyncpg.connect(dsn)
    try:
        workspace = uuid7()
        purpose = uuid7()
        await conn.execute(
            "INSERT INTO workspaces (id, name, settings) VALUES ($1, 'Bench', $2)",
            workspace,
            '{"phone": {"sms_from": "+4930123456789"}, "send_windows": {}}',
        )
        await conn.execute(
            "INSERT INTO purposes (id, workspace_id, key, name, kind) VALUES ($1, $2, 'news', 'News', 'marketing')",
            purpose,
            workspace,
        )
        contacts, points, consents, messages, deliveries, events = [], [], [], [], [], []
        now = datetime.now(UTC)
        for index in range(count):
            contact, point, message = uuid7(), uuid7(), uuid7()
            number = f"+49151{index:08d}"
            contacts.append((contact, workspace))
            points.append((point, workspace, contact, "sms", number, keys.point_keys("sms", number, {})))
            consents.append((uuid7(), workspace, contact, point, purpose, "sms", "opted_in", "consent", uuid7()))
            messages.append(
                (
                    message,
                    workspace,
                    contact,
                    purpose,
                    "first_eligible",
                    ["sms"],
                    '{"sms": {"text": "Hallo"}}',
                    "{}",
                    "queued",
                )
            )
            delivery = uuid7()
            deliveries.append((delivery, workspace, message, "sms", point, "queued", 0, now, now))
            events.append(
                (uuid7(), workspace, message, delivery, "sms", "queued", f'{{"not_before": "{now.isoformat()}"}}', now)
            )
        await conn.copy_records_to_table("contacts", records=contacts, columns=["id", "workspace_id"])
        await conn.copy_records_to_table(
            "contact_points",
            records=points,
            columns=["id", "workspace_id", "contact_id", "channel", "value", "suppression_keys"],
        )
        await conn.copy_records_to_table(
            "consents",
            records=consents,
            columns=[
                "id",
                "workspace_id",
                "contact_id",
                "contact_point_id",
                "purpose_id",
                "channel",
                "state",
                "legal_basis",
                "last_event_id",
            ],
        )
        await conn.execute("UPDATE consents SET since = now()")
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda v: b"\x01" + v.encode(),
            decoder=lambda v: v[1:].decode(),
            schema="pg_catalog",
            format="binary",
        )
        await conn.copy_records_to_table(
            "messages",
            records=messages,
            columns=[
                "id",
                "workspace_id",
                "contact_id",
                "purpose_id",
                "strategy",
                "route",
                "content",
                "decision",
                "status",
            ],
        )
        await conn.copy_records_to_table(
            "deliveries",
            records=deliveries,
            columns=[
                "id",
                "workspace_id",
                "message_id",
                "channel",
                "contact_point_id",
                "status",
                "attempts",
                "next_attempt_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "message_events",
            records=events,
            columns=["id", "workspace_id", "message_id", "delivery_id", "channel", "status", "detail", "at"],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    embedded = EmbeddedPostgres(Path(args.data_dir) / "pg", database="postgres")
    await embedded.start()
    admin = embedded.dsn("postgres")
    name = f"consent_dispatch_{uuid.uuid4().hex[:8]}"
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
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            await asyncio.sleep(0.1)
        url = port_file.read_text()
        stand_in_cpu, client_cpu = cpu_seconds(stand_in.pid), time.process_time()
        base_seconds = await baseline(url, args.messages, args.concurrency)
        base_cpu = (time.process_time() - client_cpu, cpu_seconds(stand_in.pid) - stand_in_cpu)
        postmaster = int((Path(args.data_dir) / "pg" / "data" / "postmaster.pid").read_text().split()[0])
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
        # this connection's own backend counts the sent deliveries every 0.1 s, a scan of a table that grows with
        # the run: its CPU is PostgreSQL's but not the dispatcher's, and is taken out of PostgreSQL's figure
        poller = await conn.fetchval("SELECT pg_backend_pid()")
        command = [CONSENT, "worker", "--concurrency", str(args.concurrency)]
        if args.profile:  # CPU-time cProfile of the worker, written when it stops (SIGTERM stops it cleanly)
            command = [sys.executable, "-c", PROFILED, args.profile, *command]
        worker = subprocess.Popen(command, env=env)
        first: tuple[float, int] | None = None  # measured from the first sent message: start-up is not throughput
        while True:
            sent = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'")
            if first is None and sent:
                first = (time.perf_counter(), sent)
                cpu = (
                    cpu_seconds(worker.pid),
                    cpu_seconds(postmaster, children=True),
                    cpu_seconds(stand_in.pid),
                    cpu_seconds(poller),
                )
            if sent == args.messages:
                break
            await asyncio.sleep(0.1)
        assert first is not None
        elapsed = time.perf_counter() - first[0]
        measured = args.messages - first[1]
        polling = cpu_seconds(poller) - cpu[3]
        used = (
            cpu_seconds(worker.pid) - cpu[0],
            cpu_seconds(postmaster, children=True) - cpu[1] - polling,
            cpu_seconds(stand_in.pid) - cpu[2],
        )
        worker.terminate()
        worker.wait(timeout=30)
        await conn.close()
        rate, base_rate = measured / elapsed, args.messages / base_seconds
        print()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print()
        print(
            "| messages | concurrency | raw aiohttp to the stand-in (baseline) | one consent worker | worker / baseline |"
        )
        print("|---:|---:|---:|---:|---:|")
        print(
            f"| {args.messages:,} | {args.concurrency} | {base_rate:,.0f} msg/s | {rate:,.0f} msg/s "
            f"| {rate / base_rate:.0%} |"
        )
        print()
        shares = (*(1000 * part / args.messages for part in base_cpu), *(1000 * part / measured for part in used))
        load_average = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(
            "CPU per message: baseline client {:.3f} ms, stand-in {:.3f} ms; worker {:.3f} ms, PostgreSQL {:.3f} ms, "
            "stand-in {:.3f} ms; load average {}".format(*shares, load_average)
        )
        print(
            f"(the benchmark's own polling, not counted above: PostgreSQL {1000 * polling / measured:.3f} ms per message)"
        )
    finally:
        stand_in.terminate()
        await embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--data-dir", default=".bench-dispatch")
    parser.add_argument("--profile", help="write a cProfile of the worker process to this file")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
