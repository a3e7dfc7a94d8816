"""Twilio's inbound STOP on the driver connection against the session's statements (issue 21, item 3).

Where a sealer runs, ``handle_inbound`` takes a STOP in four statements on the asyncpg connection of the caller's
transaction: the MessageSid claimed with the number, its contact's locale and the message the STOP answers read in
one, the withdrawal's two, the reply stored. Random sequences of inbound messages (hypothesis: STOP words, start
words, HELP, other text, from known, blocked, unknown and unreadable numbers, on SMS and WhatsApp, replays of a
MessageSid) go into two fresh workspaces alike, one that way, one through the session's statements (the way
before, :func:`app.ledger.service.on_session`). Both must answer the same and leave the same rows field for field
(ids and times aside): the inbound messages with their replies, the ledger once sealed (both chains verify), the
projections, the addresses and their reachability, the contacts.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text, update

from app.domain.model import ActorType, Reachability, Trigger
from app.ledger import repository, sealer, service
from app.ledger.audit import verify_chain
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.ids import uuid7
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.messages.models import Delivery, Message, MessageEvent
from app.purposes import service as purposes
from app.twilio import service as twilio
from app.workspaces import service as workspace_service
from app.workspaces.models import SenderIdentity, Workspace
from app.workspaces.settings import WorkspaceSettings

KEYS = Keys(b"k" * 32)
OURS = "+4930123456789"
KNOWN = "+4915100008001"  # contact in German, a campaign's SMS sent to it yesterday
BLOCKED = "+4915100008002"  # no locale, Twilio blocks it (21610)
GONE = "+4915100008003"  # a number that could not receive (30005): any text from it makes it reachable again
SENDERS = [KNOWN, BLOCKED, GONE, "+4915100008009", f"whatsapp:{KNOWN}", "not a number"]
BODIES = ["STOP", "stop please", "STOPALL", "Stop", "START", "NEWS", "HELP", "Hallo"]
SETTINGS = msgspec.structs.replace(
    WorkspaceSettings(),
    brand="Acme",
    locale="en",  # a contact's German is then seen in the reply
    phone=msgspec.structs.replace(WorkspaceSettings().phone, start_words={"NEWS": "news"}),
)

messages = st.lists(
    st.tuples(st.sampled_from(SENDERS), st.sampled_from(BODIES), st.booleans(), st.booleans()), min_size=1, max_size=10
)


async def world(database) -> uuid.UUID:
    """A fresh workspace: two marketing purposes, three known numbers opted in, a campaign's SMS to one."""
    async with database.sessionmaker() as db, db.begin():
        workspace_id = (await workspace_service.create_workspace(db, "Flood")).id
        news = await purposes.create_purpose(db, workspace_id, "news", "News", "marketing")
        await purposes.create_purpose(db, workspace_id, "offers", "Offers", "marketing")
        points = []
        for number, locale in ((KNOWN, "de-DE"), (BLOCKED, None), (GONE, "de")):
            contact = await repository.add_contact(db, workspace_id, f"crm-{number[-1]}", locale, None)
            points.append(await add_point(db, KEYS, workspace_id, contact_id=contact.id, channel="sms", value=number))
        changes = [Change(point, news.id, Trigger.SIGNUP, {"form": "footer"}) for point in points]
        await apply_changes(db, workspace_id, changes, Actor(ActorType.SYSTEM))
        await repository.set_reachability(db, points[1].id, Reachability.PROVIDER_BLOCKED.value, utcnow())
        await repository.set_reachability(db, points[2].id, Reachability.UNDELIVERABLE.value, utcnow())
        sent = utcnow() - timedelta(days=1)
        message = Message(
            id=uuid7(),
            workspace_id=workspace_id,
            contact_id=points[0].contact_id,
            purpose_id=news.id,
            strategy="channel",
            route=["sms"],
            content={},
            decision={},
            status="queued",
            campaign="Spring",
        )
        db.add(message)
        await db.flush()
        delivery = Delivery(
            id=uuid7(),
            workspace_id=workspace_id,
            message_id=message.id,
            channel="sms",
            contact_point_id=points[0].id,
            status="sent",
            next_attempt_at=sent,
            updated_at=sent,
        )
        db.add(delivery)
        await db.flush()
        db.add(
            MessageEvent(
                id=uuid7(),
                workspace_id=workspace_id,
                message_id=message.id,
                delivery_id=delivery.id,
                channel="sms",
                status="sent",
                at=sent,
            )
        )
    return workspace_id


async def run(database, workspace_id: uuid.UUID, script: list[tuple[str, str, bool, bool]]) -> list[str]:
    """The messages, one transaction each (as the webhook's); the replies."""
    replies: list[str] = []
    sids: list[str] = []
    for n, (sender, body, replay, settings_read) in enumerate(script):
        sid = sids[n // 2] if replay and sids else f"SM{n:032x}"
        sids.append(sid)
        params = {"MessageSid": [sid], "From": [sender], "To": [OURS], "Body": [body], "NumMedia": ["0"]}
        message = twilio.Inbound(message_sid=sid, sender=sender, recipient=OURS, body=body, raw=params)
        async with database.sessionmaker() as db, db.begin():
            if settings_read:  # as the controller reads the workspace first: the transaction is begun
                await db.execute(text("SELECT 1"))
            replies.append(await twilio.handle_inbound(db, KEYS, workspace_id, SETTINGS, message))
    return replies


ROWS = {
    "inbound": """
        SELECT i.provider, i.message_sid, i.channel, cp.value, i.intent, i.reply, i.received_at IS NOT NULL
          FROM inbound_messages i LEFT JOIN contact_points cp ON cp.id = i.contact_point_id
         WHERE i.workspace_id = :ws ORDER BY i.message_sid""",
    "events": """
        SELECT e.seq, c.external_id, c.locale, e.channel, cp.value, p.key, e.trigger, e.from_state, e.to_state,
               e.legal_basis, e.notice_id IS NOT NULL, e.actor_type, e.actor_id,
               (e.personal -> 'evidence') - 'attributed_message_id' - 'attributed_purpose_id',
               m.campaign, ap.key, length(e.hash)
          FROM consent_events e
          JOIN contacts c ON c.id = e.contact_id
          JOIN contact_points cp ON cp.id = e.contact_point_id
          LEFT JOIN purposes p ON p.id = e.purpose_id
          LEFT JOIN messages m ON m.id = (e.personal -> 'evidence' ->> 'attributed_message_id')::uuid
          LEFT JOIN purposes ap ON ap.id = (e.personal -> 'evidence' ->> 'attributed_purpose_id')::uuid
         WHERE e.workspace_id = :ws ORDER BY e.seq""",
    "projections": """
        SELECT cp.value, s.channel, p.key, s.state, s.legal_basis, s.notice_id IS NOT NULL, s.since IS NOT NULL,
               s.version, e.seq
          FROM consents s
          JOIN contact_points cp ON cp.id = s.contact_point_id
          LEFT JOIN purposes p ON p.id = s.purpose_id
          LEFT JOIN consent_events e ON e.id = s.last_event_id
         WHERE s.workspace_id = :ws ORDER BY 1, 2, 3 NULLS FIRST""",
    "points": """
        SELECT cp.channel, cp.value, c.external_id, c.locale, cp.reachability, cp.reachability_changed_at IS NULL,
               cp.verified_via, cp.details, cardinality(cp.suppression_keys)
          FROM contact_points cp JOIN contacts c ON c.id = cp.contact_id
         WHERE cp.workspace_id = :ws ORDER BY 1, 2""",
    "contacts": "SELECT count(*) FROM contacts WHERE workspace_id = :ws",
}


async def rows_of(database, workspace_id: uuid.UUID) -> dict[str, Any]:
    async with database.sessionmaker() as db:
        async with db.begin():
            await sealer.seal(db, workspace_id)
        verified = await verify_chain(db, workspace_id)
        assert verified.valid, verified
        return {
            name: [tuple(row) for row in await db.execute(text(sql), {"ws": workspace_id})]
            for name, sql in ROWS.items()
        }


@pytest.fixture
def deferred(database, monkeypatch):
    """This process runs a sealer (not started: the test seals where it compares)."""
    monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=messages)
async def test_a_stop_on_the_driver_writes_what_the_sessions_statements_wrote(deferred, database, script):
    fast_ws = await world(database)
    slow_ws = await world(database)
    fast = await run(database, fast_ws, script)
    with service.on_session():
        slow = await run(database, slow_ws, script)
    assert fast == slow
    assert await rows_of(database, fast_ws) == await rows_of(database, slow_ws)


async def test_a_known_numbers_stop_takes_four_statements_on_the_driver(deferred, database):
    """Claim and reads, lock, write, the reply stored: nothing through the session but BEGIN and COMMIT."""
    workspace_id = await world(database)
    params = {"MessageSid": ["SM1"], "From": [KNOWN], "To": [OURS], "Body": ["STOP"]}
    message = twilio.Inbound(message_sid="SM1", sender=KNOWN, recipient=OURS, body="STOP", raw=params)
    sent: list[str] = []
    on_session: list[str] = []
    async with database.sessionmaker() as db, db.begin():
        await db.execute(text("SELECT 1"))
        driver = await repository.transaction_driver(db)
        assert driver is not None
        driver.add_query_logger(lambda record: sent.append(record.query))
        conn = await db.connection()

        def count(*args: Any) -> None:
            on_session.append(args[2])

        event.listen(conn.sync_connection, "before_cursor_execute", count)
        try:
            reply = await twilio.handle_inbound(db, KEYS, workspace_id, SETTINGS, message)
        finally:
            event.remove(conn.sync_connection, "before_cursor_execute", count)
    assert "<Message>" in reply
    assert len(sent) == 4, sent
    assert on_session == [], "no statement through the session"
    evidence = (await rows_of(database, workspace_id))["events"][-1][13]
    assert evidence["keyword"] == "stop"
    assert (await rows_of(database, workspace_id))["events"][-1][14] == "Spring"


async def test_the_webhooks_one_read_of_settings_and_sender_answers_as_the_two_reads(database):
    """The settings and the sender check in one statement: the same answers as ``owns_sender`` after
    ``name_and_settings``, a sender in national format read in the workspace's own region (here Austria's)."""
    async with database.sessionmaker() as db, db.begin():
        workspace_id = (await workspace_service.create_workspace(db, "Wien")).id
        await db.execute(
            update(Workspace).where(Workspace.id == workspace_id).values(settings={"default_region": "AT"})
        )
        db.add(SenderIdentity(identity="+436641234567", workspace_id=workspace_id))
        db.add(SenderIdentity(identity="MG" + "a" * 32, workspace_id=workspace_id))
    cases = [
        (["06641234567"], True),
        (["+436641234567"], True),
        (["whatsapp:+43 664 1234567"], True),
        (["+496641234567"], False),
        (["06641234568", "MG" + "A" * 32], True),
        ([None], False),
        ([], False),
    ]
    async with database.sessionmaker() as db:
        name, stored = await workspace_service.name_and_settings(db, workspace_id)
        for senders, owned in cases:
            assert await workspace_service.owns_sender(db, workspace_id, senders, stored.default_region) is owned
            assert await workspace_service.settings_and_sender(db, workspace_id, senders) == (name, stored, owned)
