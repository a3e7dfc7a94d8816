"""An in-flight mark is written only while the send gate's facts are those its decision was made on.

The dispatcher gates a batch when it loads it, then marks each call in flight: the first ``concurrency`` calls in
prepare's transaction, the later ones (waiting for a slot) through the journal. A STOP, a pause or a suppression
committed between the gate's read and a mark was sent anyway (the first calls' marks checked nothing; the later ones
looked for ledger events stamped since two seconds before the gate, so a suppression without an event, a pause, or
a STOP whose transaction took longer than two seconds slipped through: hostile reviews of 2026-12-06). The marks
now recompute a digest of the gate's facts in their own statement and mark only where it is unchanged; a delivery
whose facts changed is decided again at once: no longer eligible, it is settled as the gate would (no attempt
burnt, no release to the next claim); still eligible (a transactional SMS after a marketing STOP), it is sent once.

Each change is committed on a connection of its own between the gate's read and the mark: after ``_facts`` (the
first calls) or while the first call of a one-slot batch is under way (the later calls). Own database.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

import app.messages.dispatcher as dispatcher_module
from app.domain.model import ActorType, State, SuppressionReason, Trigger
from app.ledger import repository as ledger
from app.ledger.actions import identifier_suppression_rows, suppression_rows, withdraw_point
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.messages import service as messages
from app.messages.dispatcher import DispatchConfig, Dispatcher
from app.messages.schemas import MessageIn
from app.purposes import service as purposes
from app.workspaces import repository as workspace_repository
from app.workspaces import service as workspaces
from channel_providers.base import Outcome, SendResult
from tests.conftest import TEST_SECRET
from tests.dispatch_world import dispatchers, sms_world, twilio_stand_in

SYSTEM = Actor(ActorType.SYSTEM)


@pytest.fixture
async def stand_in():
    async with twilio_stand_in() as handler:
        yield handler


@pytest.fixture
async def world(pg_server):
    """A database of its own: a workspace sending SMS, Jane's number opted in to 'news' (marketing); 'orders'."""
    async with sms_world(pg_server, "consent_gate_facts", pool_size=6) as found:
        yield found


@pytest.fixture
async def make(world, stand_in, tmp_path):
    async with dispatchers(world, stand_in, tmp_path / "data") as build:
        yield build


def between_gate_and_mark(monkeypatch, wave, change):
    """Run ``change`` once between the gate's read and the marks of the ``wave`` ("first" or "later" calls)."""
    done = []

    async def once():
        if not done:
            done.append(True)
            await change()

    if wave == "first":
        facts = Dispatcher._facts

        async def facts_then_change(self, *args):
            read = await facts(self, *args)
            await once()
            return read

        monkeypatch.setattr(Dispatcher, "_facts", facts_then_change)
    else:
        send = Dispatcher._send

        async def change_then_send(self, item):  # during the first call; the other waits for the one slot
            await once()
            return await send(self, item)

        monkeypatch.setattr(Dispatcher, "_send", change_then_send)


def config_for(wave):
    """Both deliveries marked in prepare ("first"), or one call at a time ("later": the second waits for a slot)."""
    return DispatchConfig(batch=10, concurrency=4 if wave == "first" else 1, deadline=5.0)


def stop(world):
    return world["withdraw"]


def suppression_without_event(world):
    """A complaint about the number where no contact holds it (as the email feedback writes one): keys, no event."""

    async def write():
        rows = identifier_suppression_rows(
            Keys(TEST_SECRET), world["workspace_id"], "sms", "+4915123456789", SuppressionReason.COMPLAINT
        )
        async with world["database"].sessionmaker() as session, session.begin():
            await ledger.add_suppressions(session, rows)

    return write


def pause(world):
    """A pause of the number's marketing for a week (the preference page's suppression rows with an end)."""

    async def write():
        rows = suppression_rows(Keys(TEST_SECRET), world["workspace_id"], [world["point"]], SuppressionReason.PAUSED)
        async with world["database"].sessionmaker() as session, session.begin():
            await ledger.pause_keys(session, rows, utcnow() + timedelta(weeks=1))

    return write


def channel_stop(world):
    """STOP for the whole number (channel level: every marketing purpose, as Twilio's STOP handling records it)."""

    async def write():
        async with world["database"].sessionmaker() as session, session.begin():
            await withdraw_point(
                session, world["workspace_id"], world["point"], trigger=Trigger.STOP_WORD, evidence={}, actor=SYSTEM
            )

    return write


@pytest.mark.parametrize("wave", ["first", "later"])
@pytest.mark.parametrize("change", [stop, suppression_without_event, pause])
async def test_a_change_committed_between_the_gate_and_the_mark_stops_the_send(
    world, stand_in, make, monkeypatch, wave, change
):
    await world["enqueue"](["offer-1", "offer-2"])
    between_gate_and_mark(monkeypatch, wave, change(world))
    dispatcher = make(config_for(wave))
    with structlog.testing.capture_logs() as logs:
        assert await dispatcher.run_once() == 2
    final = await world["by_text"]()
    sent = 1 if wave == "later" else 0  # the later wave's first call began before the change
    assert len(stand_in.bodies) == sent, f"sent after the change: {stand_in.bodies}; {final}"
    blocked = {text: row for text, row in final.items() if text not in stand_in.bodies}
    assert len(blocked) == 2 - sent
    reason = "opted_out" if change is stop else ("paused" if change is pause else "suppressed")
    for row in blocked.values():  # settled by this round, as the gate would, the claim's attempt not counted again
        assert row == ("blocked_at_send", 1, None), final
    assert all(row[0] == "sent" for text, row in final.items() if text in stand_in.bodies), final
    assert any(e["event"] == "delivery_gated_again" for e in logs), "decided again on the facts of the mark"
    assert await _last_errors(world) >= {reason}


async def _last_errors(world):
    async with world["database"].sessionmaker() as session:
        rows = await session.execute(text("SELECT last_error FROM deliveries WHERE status = 'blocked_at_send'"))
        return {row[0] for row in rows}


@pytest.mark.parametrize("wave", ["first", "later"])
async def test_a_stop_whose_transaction_outlasts_the_old_two_second_margin_is_seen(
    world, stand_in, make, monkeypatch, wave
):
    """The STOP's event is stamped when its transaction writes it, 2.5 s before the commit; the gate reads before the
    commit, the mark after. The margin the later calls' re-check allowed for was two seconds."""
    written, commit = asyncio.Event(), asyncio.Event()

    async def slow_stop():
        async with world["database"].sessionmaker() as session, session.begin():
            await apply_changes(
                session,
                world["workspace_id"],
                [Change(world["point"], world["purposes"]["news"], Trigger.STOP_WORD)],
                SYSTEM,
            )
            written.set()
            await commit.wait()

    await world["enqueue"](["offer-1", "offer-2"])
    stopping = asyncio.create_task(slow_stop())
    await written.wait()
    await asyncio.sleep(2.5)

    async def commit_now():
        commit.set()
        await stopping

    between_gate_and_mark(monkeypatch, wave, commit_now)
    assert await make(config_for(wave)).run_once() == 2
    await stopping
    final = await world["by_text"]()
    assert len(stand_in.bodies) == (1 if wave == "later" else 0), f"sent after the STOP: {stand_in.bodies}; {final}"
    assert sorted(row for text, row in final.items() if text not in stand_in.bodies) == [
        ("blocked_at_send", 1, None)
    ] * (2 - len(stand_in.bodies)), final


@pytest.mark.parametrize("wave", ["first", "later"])
async def test_a_transactional_sms_after_a_marketing_stop_between_gate_and_mark_is_sent_once(
    world, stand_in, make, monkeypatch, wave
):
    """The STOP changes the number's channel-level consent, which an order SMS's decision never reads: it is marked and
    sent at once, once, its attempt the claim's (the withdrawn fix released it to the next claim, again and again: an
    order SMS reached 33 attempts of 8), and not even decided again (a transactional digest holds only what its
    decision reads: hostile review 2026-12-06, R4)."""
    await world["enqueue"](["order-1", "order-2"], purpose="orders")
    between_gate_and_mark(monkeypatch, wave, channel_stop(world))
    with structlog.testing.capture_logs() as logs:
        assert await make(config_for(wave)).run_once() == 2
    assert Counter(stand_in.bodies) == Counter({"order-1": 1, "order-2": 1})
    assert await world["by_text"]() == {"order-1": ("sent", 1, None), "order-2": ("sent", 1, None)}
    assert [e for e in logs if e["event"] == "delivery_gated_again"] == [], "nothing it reads changed"


@pytest.mark.parametrize("wave", ["first", "later"])
async def test_an_order_sms_to_a_number_found_undeliverable_between_gate_and_mark_is_not_sent(
    world, stand_in, make, monkeypatch, wave
):
    """What a transactional decision reads (here the number's reachability) is still compared at the mark."""

    async def undeliverable():
        async with world["database"].sessionmaker() as session, session.begin():
            await session.execute(
                text("UPDATE contact_points SET reachability = 'undeliverable' WHERE id = :p"), {"p": world["point"].id}
            )

    await world["enqueue"](["order-1", "order-2"], purpose="orders")
    between_gate_and_mark(monkeypatch, wave, undeliverable)
    assert await make(config_for(wave)).run_once() == 2
    sent = 1 if wave == "later" else 0  # the later wave's first call began before the change
    assert len(stand_in.bodies) == sent
    final = await world["by_text"]()
    assert sorted(row for text, row in final.items() if text not in stand_in.bodies) == [
        ("blocked_at_send", 1, None)
    ] * (2 - sent), final
    assert await _last_errors(world) == {"undeliverable"}


@pytest.mark.parametrize("wave", ["first", "later"])
async def test_a_change_that_leaves_the_decision_as_it_was_does_not_stop_the_send(
    world, stand_in, make, monkeypatch, wave
):
    """A consent on another address of Jane's (her email) leaves the number's facts alone; a channel-level opt-in of
    the number changes them, but the offer is still permitted: sent once each, nothing held back."""

    async def email_opt_in():
        async with world["database"].sessionmaker() as session, session.begin():
            email = await add_point(
                session,
                Keys(TEST_SECRET),
                world["workspace_id"],
                contact_id=world["contact_id"],
                channel="email",
                value="jane@example.com",
            )
            for trigger in (Trigger.SIGNUP, Trigger.CONFIRM):  # a confirmed opt-in
                change = Change(email, world["purposes"]["news"], trigger, {"ip": "198.51.100.4"})
                await apply_changes(session, world["workspace_id"], [change], SYSTEM)

    async def number_opt_in():
        async with world["database"].sessionmaker() as session, session.begin():
            await apply_changes(
                session, world["workspace_id"], [Change(world["point"], None, Trigger.START_WORD)], SYSTEM
            )

    async def both():
        await email_opt_in()
        await number_opt_in()

    await world["enqueue"](["offer-1", "offer-2"])
    between_gate_and_mark(monkeypatch, wave, both)
    assert await make(config_for(wave)).run_once() == 2
    assert Counter(stand_in.bodies) == Counter({"offer-1": 1, "offer-2": 1})
    assert await world["by_text"]() == {"offer-1": ("sent", 1, None), "offer-2": ("sent", 1, None)}


async def test_an_unchanged_address_is_marked_without_being_decided_again(world, stand_in, make, monkeypatch):
    """Nothing changed: no delivery is decided again (the digests of the gate and of the marks agree)."""
    await world["enqueue"](["offer-1", "offer-2", "offer-3"])
    await world["enqueue"](["order-1"], purpose="orders")
    with structlog.testing.capture_logs() as logs:
        assert await make(DispatchConfig(batch=10, concurrency=2, deadline=5.0)).run_once() == 4
    assert sorted(stand_in.bodies) == ["offer-1", "offer-2", "offer-3", "order-1"]
    assert [e for e in logs if e["event"] == "delivery_gated_again"] == []


async def test_facts_that_change_before_every_mark_are_retried_later_not_looped(world, stand_in, make, monkeypatch):
    """The facts of an offer's address change after every read (Jane's time zone: Berlin, Paris, Berlin, ...; the
    decision stays the same): it is decided again a bounded number of times, then retried later like a transient
    failure (one attempt), never sent meanwhile."""
    flips = []

    async def flip():
        zone = "Europe/Paris" if len(flips) % 2 == 0 else "Europe/Berlin"
        flips.append(zone)
        async with world["database"].sessionmaker() as session, session.begin():
            await session.execute(
                text("UPDATE contacts SET timezone = :z WHERE id = :c"), {"z": zone, "c": world["contact_id"]}
            )

    facts = Dispatcher._facts

    async def facts_then_flip(self, *args):
        read = await facts(self, *args)
        await flip()
        return read

    monkeypatch.setattr(Dispatcher, "_facts", facts_then_flip)
    await world["enqueue"](["offer-1"])
    assert await make(config_for("first")).run_once() == 1
    assert stand_in.bodies == []
    assert len(flips) == 4, "the gate's read and three more, one per try"
    assert (await world["by_text"]())["offer-1"] == ("queued", 1, None)


# -- hostile review 2026-12-06 (R1, R2, R3) ------------------------------------------------------------------------


async def _expire_leases(world):
    async with world["database"].sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE deliveries SET lease_until = now() - interval '1 second'"))


async def test_a_failing_re_decision_leaves_the_calls_already_marked_to_be_made(world, stand_in, make, monkeypatch):
    """R1: the first calls' marks commit with prepare; a database error while the changed deliveries are decided
    again ended the round before any call, and the next claim settled the marked offer ``unknown`` (never sent). The
    marked calls are made; the changed delivery keeps its lease, is not marked, and is decided when claimed again."""
    async with world["database"].sessionmaker() as session, session.begin():
        deals = await purposes.create_purpose(session, world["workspace_id"], "deals", "Deals", "marketing")
        change = Change(world["point"], deals.id, Trigger.START_WORD)
        await apply_changes(session, world["workspace_id"], [change], SYSTEM)
    await world["enqueue"](["offer-1"])  # unchanged: marked with prepare
    await world["enqueue"](["deal-1"], purpose="deals")  # STOP between the gate and the mark: decided again

    async def stop_deals():
        async with world["database"].sessionmaker() as session, session.begin():
            change = Change(world["point"], deals.id, Trigger.STOP_WORD)
            await apply_changes(session, world["workspace_id"], [change], SYSTEM)

    between_gate_and_mark(monkeypatch, "first", stop_deals)
    decide = Dispatcher._decide
    calls = []

    async def the_re_decision_fails(self, *args):
        calls.append(1)
        if len(calls) == 2:  # the re-decision's read: a transient database error
            raise OperationalError("SELECT", {}, Exception("connection reset (simulated)"))
        return await decide(self, *args)

    monkeypatch.setattr(Dispatcher, "_decide", the_re_decision_fails)
    with structlog.testing.capture_logs() as logs:
        assert await make(config_for("first")).run_once() == 2
    assert stand_in.bodies == ["offer-1"]
    after = await world["by_text"]()
    assert after["offer-1"] == ("sent", 1, None)
    assert after["deal-1"] == ("sending", 1, None), "not marked: it keeps its lease"
    assert any(e["event"] == "delivery_regate_failed" for e in logs)
    monkeypatch.setattr(Dispatcher, "_decide", decide)
    await _expire_leases(world)
    assert await make(config_for("first")).run_once() == 1
    assert stand_in.bodies == ["offer-1"]
    assert (await world["by_text"]())["deal-1"] == ("blocked_at_send", 2, None)


async def test_a_re_decided_mark_is_not_checked_again_when_its_shared_write_is_repeated(
    world, stand_in, make, monkeypatch
):
    """R1 in the journal: a later call's mark found its facts changed (the contact's time zone: the decision stands),
    was decided again and marked; then the write of another outcome in the same group failed, and the journal
    repeated each entry alone: the mark, checked against its first digest, was found changed, decided again, found in
    flight and settled ``unknown`` (marketing, never sent). The mark written stands and the call is made."""
    await world["enqueue"](["first-1", "offer-2"])
    sends = []
    send = Dispatcher._send

    async def first_fails_after_a_change(self, item):
        sends.append(1)
        if len(sends) == 1:  # while the first call is under way, the other waits for the one slot
            async with world["database"].sessionmaker() as session, session.begin():
                await session.execute(
                    text("UPDATE contacts SET timezone = 'Europe/Paris' WHERE id = :c"), {"c": world["contact_id"]}
                )
            return SendResult(Outcome.TRANSIENT, detail="busy")
        return await send(self, item)

    apply_outcome = Dispatcher._apply
    applied = []

    async def the_outcome_write_fails_once(self, *args, **kwargs):
        applied.append(1)
        if len(applied) == 1:
            raise OperationalError("UPDATE", {}, Exception("deadlock detected (simulated)"))
        return await apply_outcome(self, *args, **kwargs)

    monkeypatch.setattr(Dispatcher, "_send", first_fails_after_a_change)
    monkeypatch.setattr(Dispatcher, "_apply", the_outcome_write_fails_once)
    with structlog.testing.capture_logs() as logs:
        assert await make(config_for("later")).run_once() == 2
    final = await world["by_text"]()
    assert stand_in.bodies == ["offer-2"], final
    assert final["offer-2"] == ("sent", 1, None)
    assert final["first-1"][0] == "queued", "its retry is scheduled"
    assert len(applied) >= 2, "the shared write failed and was repeated"
    assert [e for e in logs if e["event"] == "delivery_gated_again"], "decided again once"


async def test_a_consent_that_ends_while_a_call_waits_for_its_slot_is_not_sent(world, stand_in, make):
    """R3: the facts do not change when a consent reaches its end, so the digest matched and the offer waiting behind
    a slow call went out after the consent had ended. Its decision held until that end: the mark is refused, the offer
    decided again and blocked (``expired``), its attempt the claim's."""
    async with world["database"].sessionmaker() as session, session.begin():
        daily = await purposes.create_purpose(
            session, world["workspace_id"], "daily", "Daily", "marketing", validity="P1D"
        )
    ends = utcnow() + timedelta(seconds=3)  # after the gate (well before, on a loaded machine too)
    async with world["database"].sessionmaker() as session, session.begin():
        change = Change(
            world["point"],
            daily.id,
            Trigger.IMPORT,
            {"source": "crm"},
            occurred_at=ends - timedelta(days=1),
            target=State.OPTED_IN,
        )
        await apply_changes(session, world["workspace_id"], [change], Actor(ActorType.API_KEY))
    await world["enqueue"](["slow-1", "offer-2"], purpose="daily")
    stand_in.slow = 4.5  # (within the deadline) the offer waits for the one slot until well after the consent's end
    assert await make(config_for("later")).run_once() == 2
    final = await world["by_text"]()
    assert stand_in.bodies == ["slow-1"], f"sent after the consent ended: {final}"
    assert final == {"slow-1": ("sent", 1, None), "offer-2": ("blocked_at_send", 1, None)}
    assert await _last_errors(world) == {"expired"}


async def _other_workspace_with_an_offer(world):
    """Another workspace, Otto's number opted in to its 'promo' (with a validity: its end is counted in the
    workspace's time zone), one offer queued; answers the workspace's id."""
    async with world["database"].sessionmaker() as session, session.begin():
        other = await workspaces.create_workspace(session, "Other")
        await workspace_repository.save_settings(
            session, other.id, {"phone": {"sms_from": "+4930123456780"}, "send_windows": {}}
        )
        promo = await purposes.create_purpose(session, other.id, "promo", "Promo", "marketing", validity="P24M")
        contact = await ledger.add_contact(session, other.id, "otto", "de", "Europe/Berlin")
        point = await add_point(
            session, Keys(TEST_SECRET), other.id, contact_id=contact.id, channel="sms", value="+4915199999999"
        )
        await apply_changes(session, other.id, [Change(point, promo.id, Trigger.START_WORD)], SYSTEM)
        body = {"contact": "otto", "purpose": "promo", "route": ["sms"], "content": {"sms": {"text": "theirs-1"}}}
        await messages.create_message(session, other.id, msgspec.convert(body, MessageIn))
    return other.id


def refused_time_zone(world, workspace_id):
    async def write():
        async with world["database"].sessionmaker() as session, session.begin():
            await session.execute(
                text('UPDATE workspaces SET settings = settings || \'{"timezone": "localtime"}\' WHERE id = :w'),
                {"w": workspace_id},
            )

    return write


async def test_a_later_calls_refused_mark_holds_back_only_that_call(world, stand_in, make, monkeypatch):
    """R2 for a call that waited for its slot: the other workspace's time zone turns bad while our first call is under
    way; its offer's own mark is refused (alone, after its shared write failed): that call is not made and keeps its
    lease, and the round no longer fails for it; ours after it goes out."""
    await world["enqueue"](["mine-1"])
    other = await _other_workspace_with_an_offer(world)
    await world["enqueue"](["mine-2"])
    between_gate_and_mark(monkeypatch, "later", refused_time_zone(world, other))
    with structlog.testing.capture_logs() as logs:
        assert await make(config_for("later")).run_once() == 3
    final = await world["by_text"]()
    assert stand_in.bodies == ["mine-1", "mine-2"], final
    assert final == {"mine-1": ("sent", 1, None), "mine-2": ("sent", 1, None), "theirs-1": ("sending", 1, None)}
    assert any(e["event"] == "delivery_mark_failed" for e in logs)


@pytest.mark.parametrize("concurrency", [4, 1])
async def test_one_workspaces_refused_time_zone_holds_back_only_its_own_marks(
    world, stand_in, make, monkeypatch, concurrency
):
    """R2: a time zone PostgreSQL refuses, stored for another workspace between the gate's read and the marks, failed
    the one mark statement for every workspace: prepare rolled back and nobody's call was made. Marked per workspace
    on such a failure: the other workspace's deliveries wait for their lease, ours go out."""
    other = await _other_workspace_with_an_offer(world)
    await world["enqueue"](["mine-1", "mine-2"])
    between_gate_and_mark(monkeypatch, "first", refused_time_zone(world, other))
    with structlog.testing.capture_logs() as logs:
        assert await make(DispatchConfig(batch=10, concurrency=concurrency, deadline=5.0)).run_once() == 3
    final = await world["by_text"]()
    assert sorted(stand_in.bodies) == ["mine-1", "mine-2"], final
    assert final == {
        "mine-1": ("sent", 1, None),
        "mine-2": ("sent", 1, None),
        "theirs-1": ("sending", 1, None),  # not marked: claimed again when its lease runs out
    }
    assert any(e["event"] == "delivery_marks_failed" for e in logs)


# --- one clock: the decision's and the mark's (second hostile review) ------------------------------------------------


async def _window_closed_a_moment_ago(world) -> datetime:
    """The workspace's SMS window set to one that closed 2 to 62 seconds ago (Berlin wall clock); its close in UTC."""
    berlin = datetime.now(UTC).astimezone(ZoneInfo("Europe/Berlin"))
    end = berlin.replace(second=0, microsecond=0)
    if (berlin - end).total_seconds() < 2:
        end -= timedelta(minutes=1)
    windows = {"sms": {"start": (end - timedelta(hours=2)).strftime("%H:%M"), "end": end.strftime("%H:%M")}}
    async with world["database"].sessionmaker() as session, session.begin():
        await workspace_repository.save_settings(
            session, world["workspace_id"], {"phone": {"sms_from": "+4930123456789"}, "send_windows": windows}
        )
    return end.astimezone(UTC)


@pytest.mark.parametrize("attempts_before", [0, 7])
async def test_an_application_clock_behind_the_databases_burns_no_attempt_at_a_windows_close(
    world, stand_in, make, monkeypatch, attempts_before
):
    """The decision took the application's clock and the mark compared its ``holds_until`` with the database's: 70 s
    behind, the application saw the window open, every mark was refused, three re-decisions said "open" again and
    the delivery failed, an attempt burnt each round (on its last attempt: failed for good). One clock now."""
    await world["enqueue"](["offer-1"])
    close = await _window_closed_a_moment_ago(world)
    assert utcnow() >= close
    monkeypatch.setattr(dispatcher_module, "utcnow", lambda: utcnow() - timedelta(seconds=70))
    async with world["database"].sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE deliveries SET attempts = :a"), {"a": attempts_before})
    dispatcher = make(DispatchConfig(batch=10, concurrency=4, deadline=5.0))
    for _ in range(3):
        await dispatcher.run_once()
    async with world["database"].sessionmaker() as session:
        row = (await session.execute(text("SELECT status, attempts FROM deliveries"))).one()
    assert stand_in.bodies == []
    assert (row.status, row.attempts) == ("queued", attempts_before)  # waits for the next opening
