"""A workspace sending SMS through a local Twilio stand-in, in a database of its own: the dispatcher's fault tests.

Shared by ``tests/integration/test_dispatch_crash.py`` and ``test_dispatch_leases.py`` (workers and concurrent checks
need real, committed rows and a pool). Context managers, not fixtures: each test module wraps them in its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from aiohttp import web
from sqlalchemy import select

from app.channels.adapters import Adapters
from app.domain.model import ActorType, Trigger
from app.ledger import repository
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.db import Database
from app.lib.keys import Keys
from app.main import mail_sender
from app.messages import service as messages
from app.messages.dispatcher import Dispatcher
from app.messages.models import Delivery, Message
from app.messages.schemas import MessageIn
from app.purposes import service as purposes
from app.settings import Settings, TwilioDefaults
from app.workspaces import repository as workspace_repository
from app.workspaces import service as workspaces
from tests.conftest import TEST_SECRET, local_http

ACCOUNT = "AC" + "fe" * 16
TOKEN = "q" * 32


class StandIn:
    """Twilio's Messages API: answers at once, except a body containing 'hang' the first time (after ``hang`` s)
    and one containing 'slow' every time (after ``slow`` s)."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.hang = 60.0
        self.slow = 0.9
        self.url = ""

    async def create(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        body = str(form["Body"])
        self.bodies.append(body)
        if "hang" in body and self.bodies.count(body) == 1:
            await asyncio.sleep(self.hang)
        if "slow" in body:
            await asyncio.sleep(self.slow)
        return web.json_response({"sid": f"SM{len(self.bodies):032x}", "status": "queued"}, status=201)


@asynccontextmanager
async def twilio_stand_in() -> AsyncIterator[StandIn]:
    """The stand-in, served on a local port (its ``url``)."""
    handler = StandIn()
    application = web.Application()
    application.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", handler.create)
    async with local_http(application) as url:
        handler.url = url
        yield handler


@asynccontextmanager
async def sms_world(pg_server: Any, name: str, *, pool_size: int) -> AsyncIterator[dict[str, Any]]:
    """A database ``name`` of its own: a workspace sending SMS, Jane's number opted in to 'news' (marketing);
    'orders' (transactional). Yields the database and ``enqueue(texts, purpose)``, ``withdraw()`` (Jane's STOP) and
    ``by_text()`` (every delivery by its message's text: status, attempts, in_flight_at); also the ``workspace_id``,
    Jane's ``contact_id`` and ``point``, and the ``purposes`` by key."""
    url = await pg_server.create_database(name, migrated=True)
    database = Database.from_url(url, pool_size=pool_size)
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme")
        await workspace_repository.save_settings(
            session, workspace.id, {"phone": {"sms_from": "+4930123456789"}, "send_windows": {}}
        )
        news = await purposes.create_purpose(session, workspace.id, "news", "News", "marketing")
        orders = await purposes.create_purpose(session, workspace.id, "orders", "Orders", "transactional")
        contact = await repository.add_contact(session, workspace.id, "jane", "de", "Europe/Berlin")
        point = await add_point(
            session, Keys(TEST_SECRET), workspace.id, contact_id=contact.id, channel="sms", value="+4915123456789"
        )
        await apply_changes(
            session, workspace.id, [Change(point, news.id, Trigger.START_WORD)], Actor(ActorType.SYSTEM)
        )

    async def enqueue(texts: list[str], purpose: str = "news") -> None:
        async with database.sessionmaker() as session, session.begin():
            for text in texts:
                body = {"contact": "jane", "purpose": purpose, "route": ["sms"], "content": {"sms": {"text": text}}}
                await messages.create_message(session, workspace.id, msgspec.convert(body, MessageIn))

    async def withdraw() -> None:
        async with database.sessionmaker() as session, session.begin():
            await apply_changes(
                session, workspace.id, [Change(point, news.id, Trigger.STOP_WORD)], Actor(ActorType.SYSTEM)
            )

    async def by_text() -> dict[str, tuple[Any, ...]]:
        async with database.sessionmaker() as session:
            rows = await session.execute(
                select(Message.content, Delivery.status, Delivery.attempts, Delivery.in_flight_at).join(
                    Message, Message.id == Delivery.message_id
                )
            )
            return {content["sms"]["text"]: (status, attempts, mark) for content, status, attempts, mark in rows}

    try:
        yield {
            "url": url,
            "database": database,
            "enqueue": enqueue,
            "by_text": by_text,
            "withdraw": withdraw,
            "workspace_id": workspace.id,
            "contact_id": contact.id,
            "point": point,
            "purposes": {"news": news.id, "orders": orders.id},
        }
    finally:
        await database.dispose()
        await pg_server.drop_database(url)


@asynccontextmanager
async def dispatchers(world: dict[str, Any], stand_in: StandIn, data_dir: Any) -> AsyncIterator[Callable[..., Any]]:
    """``build(config, worker_id=None)``: dispatchers of ``world``'s database sending SMS to ``stand_in``."""
    settings = Settings(
        data_dir=data_dir,
        secret_key=TEST_SECRET,
        twilio=TwilioDefaults(account_sid=ACCOUNT, auth_token=TOKEN, api_base_url=stand_in.url),
    )
    keys = Keys(TEST_SECRET)
    adapters = Adapters(settings, keys, mail_sender(settings))

    def build(config: Any, worker_id: str | None = None) -> Dispatcher:
        return Dispatcher(world["database"], keys, settings, adapters, config=config, worker_id=worker_id)

    try:
        yield build
    finally:
        await adapters.aclose()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> bool:
    """True once ``predicate`` answers True, False when ``timeout`` seconds passed first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.02)
    return False
