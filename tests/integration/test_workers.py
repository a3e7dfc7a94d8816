"""Real ``consent worker`` processes: two never send the same delivery; a SIGKILLed worker's delivery is taken over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from sqlalchemy import select

from app.lib.db import Database
from app.lib.keys import Keys
from app.messages import service as messages
from app.messages.models import Delivery
from app.messages.schemas import MessageIn
from app.workspaces import service as workspaces
from tests.conftest import TEST_SECRET, local_http

pytestmark = pytest.mark.slow

CONSENT = str(Path(sys.executable).parent / "consent")
ACCOUNT = "AC" + "cd" * 16
TOKEN = "k" * 32


class StandIn:
    """Twilio's Messages API; a body containing 'hang' is never answered, every other one after ``delay`` s."""

    def __init__(self):
        self.bodies: list[str] = []
        self.delay = 0.0

    async def create(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.bodies.append(form["Body"])
        if "hang" in form["Body"] and self.bodies.count(form["Body"]) == 1:
            await asyncio.sleep(60)
        await asyncio.sleep(self.delay)
        return web.json_response({"sid": f"SM{len(self.bodies):032x}", "status": "queued"}, status=201)


@pytest.fixture
async def stand_in():
    handler = StandIn()
    application = web.Application()
    application.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", handler.create)
    async with local_http(application) as url:
        handler.url = url
        yield handler


@pytest.fixture
async def queued(pg_server):
    """A database of its own (workers need real, committed rows) with a workspace and an opted-in number."""
    url = await pg_server.create_database("consent_workers", migrated=True)
    database = Database.from_url(url, pool_size=2)
    engine = database.engine
    from app.domain.model import ActorType, Trigger  # noqa: PLC0415
    from app.ledger import repository  # noqa: PLC0415
    from app.ledger.service import Actor, Change, add_point, apply_changes  # noqa: PLC0415
    from app.purposes import service as purposes  # noqa: PLC0415
    from app.workspaces import repository as workspace_repository  # noqa: PLC0415

    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme")
        await workspace_repository.save_settings(
            session, workspace.id, {"phone": {"sms_from": "+4930123456789"}, "send_windows": {}}
        )
        purpose = await purposes.create_purpose(session, workspace.id, "news", "News", "marketing")
        contact = await repository.add_contact(session, workspace.id, "jane", "de", "Europe/Berlin")
        point = await add_point(
            session, Keys(TEST_SECRET), workspace.id, contact_id=contact.id, channel="sms", value="+4915123456789"
        )
        await apply_changes(
            session, workspace.id, [Change(point, purpose.id, Trigger.START_WORD)], Actor(ActorType.SYSTEM)
        )

    async def enqueue(texts):
        async with database.sessionmaker() as session, session.begin():
            for text in texts:
                await messages.create_message(
                    session,
                    workspace.id,
                    msgspec.convert(
                        {"contact": "jane", "purpose": "news", "route": ["sms"], "content": {"sms": {"text": text}}},
                        MessageIn,
                    ),
                )

    async def deliveries():
        async with database.sessionmaker() as session:
            return (await session.scalars(select(Delivery))).all()

    try:
        yield {"url": url, "enqueue": enqueue, "deliveries": deliveries}
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


def start_worker(url, stand_in, *args, log=None):
    env = {
        **os.environ,
        "DATABASE_URL": url.replace("+asyncpg", ""),
        "CONSENT_SECRET_KEY": TEST_SECRET.hex(),
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE_URL": stand_in.url,
        "CONSENT_LOG_FORMAT": "json",
    }
    command = [CONSENT, "worker", *args]
    if log is None:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # logs go to a file: a pipe nobody reads would fill up and block the worker (the child keeps its own handle)
    with log.open("ab") as sink:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)


async def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_two_workers_never_send_the_same_delivery(queued, stand_in, tmp_path):
    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    workers = [start_worker(queued["url"], stand_in, "--concurrency", "8", log=log) for log in logs]
    try:

        async def both_started():  # signal handlers set, polling: both take part, and both stop on SIGTERM
            return all(log.exists() and b"worker_started" in log.read_bytes() for log in logs)

        # a worker still starting when the work is done would miss it, and SIGTERM would kill it (-15)
        await wait_for(both_started)
        # the provider answers in 0.1 s: 150 sends take one worker about 2 s, past the other's 0.5 s poll (with
        # instant answers, a fast worker sent them all before the other looked, and only one took part)
        stand_in.delay = 0.1
        await queued["enqueue"]([f"msg-{i}" for i in range(150)])

        async def all_sent():
            return all(d.status == "sent" for d in await queued["deliveries"]())

        await wait_for(all_sent, timeout=60)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=20) == 0
    assert sorted(stand_in.bodies) == sorted(f"msg-{i}" for i in range(150)), "each exactly once"
    leased_by = {d.leased_by for d in await queued["deliveries"]()}
    assert len(leased_by) == 2, "both workers took part"


async def test_a_killed_workers_delivery_is_taken_over(queued, stand_in):
    await queued["enqueue"](["hang-1"])
    first = start_worker(queued["url"], stand_in, "--lease-seconds", "3", "--deadline", "2.5")
    try:

        async def mid_send():
            return stand_in.bodies == ["hang-1"]

        await wait_for(mid_send)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    [delivery] = await queued["deliveries"]()
    assert delivery.status == "sending", "killed mid-send: the row is still leased"
    assert delivery.in_flight_at is not None, "and marked in flight"
    second = start_worker(queued["url"], stand_in, "--lease-seconds", "3")
    try:

        async def settled():
            [row] = await queued["deliveries"]()
            return row.status not in {"queued", "sending"}

        await wait_for(settled)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
    [delivery] = await queued["deliveries"]()
    assert delivery.attempts == 2, "taken over"
    assert delivery.status == "unknown", "marketing in flight at the kill: at most once (app/messages/policy.py)"
    assert stand_in.bodies == ["hang-1"], "the provider may have accepted the first call: never sent again"


async def test_the_worker_runs_on_uvloop_and_stops_on_sigterm(queued, stand_in, tmp_path):
    """``consent worker`` runs on uvloop's event loop, as ``consent serve`` does (uvicorn's auto): the asyncio loop's
    own overhead was a large share of the worker's CPU per message (issue 21 item 4; docs/benchmarks.md)."""
    log = tmp_path / "worker.log"
    worker = start_worker(queued["url"], stand_in, "--concurrency", "4", log=log)
    try:

        async def started():
            return log.exists() and b"worker_started" in log.read_bytes()

        await wait_for(started)
        await queued["enqueue"](["on-uvloop"])

        async def sent():
            return [d.status for d in await queued["deliveries"]()] == ["sent"]

        await wait_for(sent)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0, "the worker did not stop cleanly on SIGTERM"
    [line] = [json.loads(line) for line in log.read_text().splitlines() if "worker_started" in line]
    assert line["loop"] == "uvloop.Loop", line
    assert stand_in.bodies == ["on-uvloop"]
