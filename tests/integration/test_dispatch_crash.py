"""A worker dying while one provider call is slow: nothing the provider answered is sent again (issue 16, no. 11).

Against a database of its own (workers and concurrent checks need real, committed rows and a pool) and a local
server speaking Twilio's Messages API, where a body containing ``hang`` is answered only after a long pause the
first time. The fault test kills a real ``consent worker`` with SIGKILL while such a call is under way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from app.channels.adapters import Adapters
from app.lib.keys import Keys
from app.main import mail_sender
from app.messages.dispatcher import DispatchConfig, Dispatcher
from app.messages.models import Delivery
from app.settings import Settings, TwilioDefaults
from tests.conftest import TEST_SECRET
from tests.dispatch_world import ACCOUNT, TOKEN, sms_world, twilio_stand_in, wait_for

pytestmark = pytest.mark.slow

CONSENT = str(Path(sys.executable).parent / "consent")


@pytest.fixture
async def stand_in():
    async with twilio_stand_in() as handler:
        yield handler


@pytest.fixture
async def world(pg_server):
    """A database of its own: a workspace sending SMS, Jane's number opted in to 'news' (marketing); 'orders'."""
    async with sms_world(pg_server, "consent_dispatch_crash", pool_size=4) as found:
        yield found


def start_worker(url, stand_in, *args):
    env = {
        **os.environ,
        "DATABASE_URL": url.replace("+asyncpg", ""),
        "CONSENT_SECRET_KEY": TEST_SECRET.hex(),
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE_URL": stand_in.url,
        "CONSENT_LOG_FORMAT": "json",
    }
    return subprocess.Popen([CONSENT, "worker", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
async def dispatcher(world, stand_in, tmp_path):
    """A dispatcher in this process (what ``consent worker`` runs), sending through the stand-in."""
    settings = Settings(
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        twilio=TwilioDefaults(account_sid=ACCOUNT, auth_token=TOKEN, api_base_url=stand_in.url),
    )
    keys = Keys(TEST_SECRET)
    adapters = Adapters(settings, keys, mail_sender(settings))
    config = DispatchConfig(concurrency=4, deadline=10.0)
    yield Dispatcher(world["database"], keys, settings, adapters, config=config)
    await adapters.aclose()


async def test_each_outcome_is_written_as_its_call_returns_not_after_a_slow_sibling(world, stand_in, dispatcher):
    stand_in.hang = 4.0
    await world["enqueue"](["hang-1", "quick-1", "quick-2"])
    batch = asyncio.create_task(dispatcher.run_once())
    try:

        async def quick_ones_sent():
            shown = await world["by_text"]()
            return shown["quick-1"][0] == shown["quick-2"][0] == "sent"

        assert await wait_for(quick_ones_sent, timeout=3.0), "answered deliveries wait for their slow sibling"
        assert not batch.done(), "the slow call is still under way"
        assert (await world["by_text"]())["hang-1"][0] == "sending"
    finally:
        assert await batch == 3
    assert {text: status for text, (status, _, _) in (await world["by_text"]()).items()} == {
        "hang-1": "sent",
        "quick-1": "sent",
        "quick-2": "sent",
    }


async def test_a_worker_sigkilled_during_a_slow_call_sends_nothing_answered_again(world, stand_in, dispatcher):
    quick = [f"msg-{n}" for n in range(20)]
    await world["enqueue"](quick)
    await world["enqueue"](["hang-news"])
    await world["enqueue"](["hang-order"], purpose="orders")
    # one batch (twice the concurrency) holds all 22; the two slow calls outlast the kill (deadline 4 s)
    worker = start_worker(world["url"], stand_in, "--concurrency", "16", "--lease-seconds", "5", "--deadline", "4")
    try:

        async def all_called():
            return len(stand_in.bodies) == 22

        assert await wait_for(all_called), stand_in.bodies

        async def answered_recorded():
            shown = await world["by_text"]()
            return all(shown[text][0] == "sent" for text in quick)

        await wait_for(answered_recorded, timeout=1.5)  # not asserted here: what counts is what is sent again
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    killed = await world["by_text"]()
    assert killed["hang-news"][0] == killed["hang-order"][0] == "sending"
    assert killed["hang-news"][2] is not None, "the call in flight left its mark"

    # the killed worker's leases run out (shortened here); any worker then takes its deliveries over
    async with world["database"].sessionmaker() as session, session.begin():
        await session.execute(update(Delivery).values(lease_until=func.now() - timedelta(seconds=1)))

    async def settled():
        await dispatcher.run_once()
        return all(status not in {"queued", "sending"} for status, _, _ in (await world["by_text"]()).values())

    assert await wait_for(settled), await world["by_text"]()
    calls = Counter(stand_in.bodies)
    resent = sorted(text for text in quick if calls[text] > 1)
    assert resent == [], f"{len(resent)} answered deliveries were sent again"
    assert calls["hang-news"] == 1, "marketing: at most once"
    assert calls["hang-order"] == 2, "transactional: at least once, sent again once"
    final = await world["by_text"]()
    assert final["hang-news"][:2] == ("unknown", 2)
    assert final["hang-order"][:2] == ("sent", 2)
    assert all(final[text][:2] == ("sent", 1) for text in quick)
    assert all(mark is None for _, _, mark in final.values()), "every mark cleared with its outcome"


async def test_no_answer_in_time_is_a_crash_s_uncertainty_marketing_is_not_sent_again(world, stand_in, dispatcher):
    """Hostile review: the provider took the message but answered after the deadline, and it was sent again.

    No answer in time is the same uncertainty as a worker dying mid-call; the same policy decides: marketing
    becomes ``unknown`` (at most once), transactional is sent again (at least once).
    """
    dispatcher.config = DispatchConfig(concurrency=4, deadline=0.5)
    stand_in.hang = 1.5
    await world["enqueue"](["hang-offer"])
    await world["enqueue"](["hang-receipt"], purpose="orders")
    await dispatcher.run_once()
    async with world["database"].sessionmaker() as session, session.begin():  # the back-off has passed
        await session.execute(update(Delivery).values(next_attempt_at=func.now() - timedelta(seconds=1)))
    await dispatcher.run_once()
    calls = Counter(stand_in.bodies)
    assert calls["hang-offer"] == 1, "marketing: at most once"
    assert calls["hang-receipt"] == 2, "transactional: at least once"
    final = await world["by_text"]()
    assert final["hang-offer"][0] == "unknown"
    assert final["hang-receipt"][0] == "sent"


async def test_an_acceptance_written_in_one_statement_is_what_the_orm_path_writes(world, dispatcher):
    from app.messages.dispatcher import _Entry  # noqa: PLC0415
    from app.messages.models import MessageEvent  # noqa: PLC0415
    from app.messages.repository import lock_held  # noqa: PLC0415
    from channel_providers.base import Outcome, SendResult  # noqa: PLC0415

    await world["enqueue"](["fast", "orm"])
    claimed = await dispatcher._claim()
    prepared, marked = await dispatcher._prepare(claimed, room=2)
    assert {item.delivery_id for item in prepared} == marked == {c.id for c in claimed}
    by_text = {item.outbound.content["text"]: item for item in prepared}
    answer = SendResult(Outcome.ACCEPTED, provider_message_id="SM" + "1" * 32)
    fast = by_text["fast"]
    assert await dispatcher._write([_Entry(fast, answer)]) == {fast.delivery_id}  # one statement, no ORM
    orm = by_text["orm"]
    async with world["database"].sessionmaker() as session, session.begin():  # what the ORM path writes
        [delivery] = await lock_held(session, [orm.workspace_id], [orm.delivery_id], dispatcher.worker_id)
        await dispatcher._apply(session, delivery, answer, orm.kind, "twilio")

    async with world["database"].sessionmaker() as session:
        deliveries = {
            d.id: d for d in (await session.scalars(select(Delivery).where(Delivery.id.in_(list(marked))))).all()
        }
        events = {
            e.delivery_id: e
            for e in (
                await session.scalars(select(MessageEvent).where(MessageEvent.delivery_id.in_(list(marked))))
            ).all()
            if e.status == "sent"
        }
        detail_types = dict(
            (
                await session.execute(
                    select(MessageEvent.delivery_id, func.jsonb_typeof(MessageEvent.detail)).where(
                        MessageEvent.delivery_id.in_(list(marked)), MessageEvent.status == "sent"
                    )
                )
            ).all()
        )

    def row(delivery_id):
        d, e = deliveries[delivery_id], events[delivery_id]
        return (
            (d.status, d.attempts, d.lease_until, d.leased_by, d.provider_message_id, d.last_error, d.in_flight_at),
            (e.workspace_id, e.channel, e.status, e.provider_message_id, e.error, e.detail),
            detail_types[delivery_id],
        )

    assert row(fast.delivery_id) == row(orm.delivery_id)
    assert row(fast.delivery_id)[0][:2] == ("sent", 1)
    assert row(fast.delivery_id)[1][-1] == {"provider": "twilio"}


async def test_a_cancelled_dispatcher_cancels_its_calls_under_way(world, stand_in, dispatcher):
    stand_in.hang = 30.0
    await world["enqueue"](["hang-1", "quick-1"])
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))

    async def called():
        return len(stand_in.bodies) == 2

    assert await wait_for(called)
    running.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert time.monotonic() - started < 2.0, "the cancelled dispatcher waited for its slow call"
    shown = await world["by_text"]()
    assert shown["hang-1"][0] == "sending"
    assert shown["hang-1"][2] is not None, "its call began: the mark says so to the next worker"
