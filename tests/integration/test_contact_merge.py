"""Identity merge (issue 19) on real PostgreSQL: addresses, consents, messages and the external id move to the
survivor; a contact-wide no of either covers the other's addresses (the most restrictive state wins); both
histories stay, each address gets a `merged` event, the projection stays a replay of the ledger and the chain
verifies; the duplicate's id answers 409 naming the survivor."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain.model import Channel, State, Trigger
from app.domain.transitions import RESTRICTIVENESS, TransitionNotAllowed, decide, decide_import, decide_merge
from app.ledger.audit import verify_chain
from app.ledger.models import Consent, ConsentEvent, Contact
from app.lib.auth import Scope
from app.workspaces import service as workspace_service
from tests.conftest import Ledger, Tenant


async def merge(client, headers, survivor, duplicate, **extra):
    return await client.post(f"/v1/contacts/{survivor}/merge", json={"duplicate": duplicate, **extra}, headers=headers)


async def states(client, headers, contact) -> dict[tuple[str, str | None], str]:
    body = (await client.get(f"/v1/contacts/{contact}", headers=headers)).json()
    return {(p["address"], c["purpose"]): c["state"] for p in body["contact_points"] for c in p["consents"]}


async def replay_matches_projection(session, workspace_id) -> None:
    """Every consent equals a replay of its events, `merged` ones included; every event is allowed."""
    events = (
        await session.scalars(
            select(ConsentEvent).where(ConsentEvent.workspace_id == workspace_id).order_by(ConsentEvent.seq)
        )
    ).all()
    replayed: dict[tuple[uuid.UUID, uuid.UUID | None], State] = {}
    for event in events:
        key = (event.contact_point_id, event.purpose_id)
        state, channel = replayed.get(key, State.NONE), Channel(event.channel)
        assert event.from_state == state, "every event starts where the previous one ended"
        trigger = Trigger(event.trigger)
        if trigger is Trigger.MERGED:
            rule = decide_merge(channel, state, State(event.to_state))
        elif trigger is Trigger.IMPORT:
            rule = decide_import(channel, State(event.to_state))
        else:
            rule = decide(channel, state, trigger)
        assert rule.target == event.to_state
        replayed[key] = State(event.to_state)
    for consent in (await session.scalars(select(Consent).where(Consent.workspace_id == workspace_id))).all():
        await session.refresh(consent)
        assert consent.state == replayed.get((consent.contact_point_id, consent.purpose_id), State.NONE)


async def test_addresses_consents_messages_and_external_id_move_and_the_duplicate_answers_409(
    client, tenant, ledger, database
):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    news = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "jane@example.com", external_id="crm-1")
    sms = await ledger.point("sms", "+4915123456789")  # the same person, known without a CRM id
    await ledger.apply(mail, news.id, "signup", "confirm")
    await ledger.apply(sms, news.id, "signup", "start_word")
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO messages (id, workspace_id, contact_id, purpose_id, strategy, route, content, decision,"
                " status) VALUES (gen_random_uuid(), :ws, :c, :p, 'first_eligible', '{sms}', '{}', '{}', 'queued')"
            ),
            {"ws": tenant.id, "c": sms.contact_id, "p": news.id},
        )

    response = await merge(client, key, sms.contact_id, "crm-1", evidence={"note": "same person, support ticket"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["contact_id"] == str(sms.contact_id)
    assert body["merged_contact_id"] == str(mail.contact_id)
    assert body["moved"]["contact_points"] == 1
    assert body["moved"]["consents"] >= 1
    assert {c["contact_point_id"] for c in body["changes"]} == {str(mail.id), str(sms.id)}
    assert all(c["from_state"] == c["state"] for c in body["changes"]), "nothing contact-wide: nothing tightened"

    survivor = (await client.get(f"/v1/contacts/{sms.contact_id}", headers=key)).json()
    assert survivor["external_id"] == "crm-1", "the survivor had none: the duplicate's moved"
    assert {p["address"] for p in survivor["contact_points"]} == {"jane@example.com", "+4915123456789"}
    assert (await states(client, key, sms.contact_id))["jane@example.com", "newsletter"] == "opted_in"
    for ref in (str(mail.contact_id),):
        gone = await client.get(f"/v1/contacts/{ref}", headers=key)
        assert gone.status_code == 409
        assert gone.headers["content-type"].startswith("application/problem+json")
        assert gone.json()["code"] == "contact_merged"
        assert gone.json()["merged_into"] == str(sms.contact_id)
    assert (await client.get("/v1/contacts/crm-1", headers=key)).json()["id"] == str(sms.contact_id)

    events = (await client.get(f"/v1/contacts/{sms.contact_id}/events", headers=key)).json()
    triggers = [e["trigger"] for e in events]
    assert triggers.count("confirm") == 1, "the duplicate's history is the survivor's now"
    assert triggers.count("merged") == 2, "one merged event on each address"
    async with database.sessionmaker() as session:
        moved = await session.scalar(
            select(func.count()).select_from(text("messages")).where(text(f"contact_id = '{sms.contact_id}'"))
        )
        assert moved == 1
        await replay_matches_projection(session, tenant.id)
        assert (await verify_chain(session, tenant.id)).valid


async def test_a_withdrawal_on_every_channel_covers_the_other_contacts_addresses(client, tenant, ledger):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    news = await ledger.purpose("newsletter")
    offers = await ledger.purpose("offers")
    old = await ledger.point("email", "old@example.com", external_id="old")
    new = await ledger.point("email", "new@example.com", external_id="new")
    await ledger.apply(old, news.id, "signup", "confirm")
    await ledger.apply(new, news.id, "signup", "confirm")  # later, and opted in: the older no still wins
    await ledger.apply(new, offers.id, "signup", "confirm")
    withdrawn = await client.post(
        "/v1/withdrawals", json={"contact": "old", "channel": "all", "purpose": "newsletter"}, headers=key
    )
    assert withdrawn.status_code == 200, withdrawn.text

    response = await merge(client, key, "new", "old")
    assert response.status_code == 200, response.text
    after = await states(client, key, "new")
    assert after["new@example.com", "newsletter"] == "opted_out", "the most restrictive state wins"
    assert after["new@example.com", "offers"] == "opted_in", "the statement named one purpose"
    [tightened] = [c for c in response.json()["changes"] if c["from_state"] != c["state"]]
    assert (tightened["purpose"], tightened["state"]) == ("newsletter", "opted_out")


async def test_a_withdrawal_on_one_address_does_not_spread(client, tenant, ledger):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    news = await ledger.purpose("newsletter")
    old = await ledger.point("email", "old@example.com", external_id="old")
    new = await ledger.point("sms", "+4915123456789", external_id="new")
    await ledger.apply(old, news.id, "signup", "confirm", "unsubscribe")
    await ledger.apply(new, news.id, "signup", "start_word")
    assert (await merge(client, key, "new", "old")).status_code == 200
    after = await states(client, key, "new")
    assert after["+4915123456789", "newsletter"] == "opted_in", "an unsubscribe of one address speaks for it only"
    assert after["old@example.com", "newsletter"] == "opted_out"


async def test_an_objection_to_all_marketing_covers_every_channel_and_a_print_objection_the_letters(
    client, tenant, ledger
):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    news = await ledger.purpose("newsletter")
    objecting = await ledger.point("sms", "+4915123456789", external_id="a")
    await ledger.apply(objecting, news.id, "signup", "start_word")
    other = await ledger.point("email", "b@example.com", external_id="b")
    await ledger.apply(other, news.id, "signup", "confirm")
    added = await client.post(
        "/v1/contacts/b/postal-addresses",
        json={"street": "Hauptstr. 1", "postcode": "10115", "city": "Berlin", "country": "DE"},
        headers=key,
    )
    assert added.status_code == 201, added.text
    objected = await client.post(
        "/v1/objections", json={"contact": "a", "scope": "all_marketing", "kind": "art21"}, headers=key
    )
    assert objected.status_code == 201, objected.text

    assert (await merge(client, key, "b", "a")).status_code == 200
    after = await states(client, key, "b")
    assert after["b@example.com", "newsletter"] == "opted_out"
    assert after["b@example.com", None] == "opted_out"
    [letters] = [state for (address, purpose), state in after.items() if "Hauptstr" in address or "10115" in address]
    assert letters == "objected"


async def test_a_later_opt_in_of_the_same_contact_ends_its_contact_wide_no(client, tenant, ledger):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    news = await ledger.purpose("newsletter")
    a = await ledger.point("email", "a@example.com", external_id="a")
    b = await ledger.point("email", "b@example.com", external_id="b")
    await ledger.apply(a, news.id, "signup", "confirm")
    await ledger.apply(b, news.id, "signup", "confirm")
    await client.post("/v1/withdrawals", json={"contact": "a", "channel": "all", "purpose": "newsletter"}, headers=key)
    await ledger.apply(a, news.id, "signup", "confirm")  # the person asked for it again, on a's own address
    assert (await merge(client, key, "b", "a")).status_code == 200
    assert (await states(client, key, "b"))["b@example.com", "newsletter"] == "opted_in"


async def test_bad_merges_are_refused(client, tenant, other_tenant, ledger):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    reader = await tenant.key(Scope.AUDIT_READ)
    a = await ledger.point("email", "a@example.com", external_id="a")
    await ledger.point("email", "b@example.com", external_id="b")
    stranger = await Ledger(ledger.database, other_tenant.id).point("email", "x@example.com", external_id="x")
    assert (await merge(client, key, "a", "a")).json()["code"] == "merge_into_itself"
    assert (await merge(client, key, "a", str(stranger.contact_id))).json()["code"] == "duplicate_not_found"
    assert (await merge(client, key, "nobody", "a")).status_code == 404
    assert (await merge(client, reader, "a", "b")).status_code == 403
    assert (await merge(client, key, "a", "b")).status_code == 200
    again = await merge(client, key, "a", "b")
    assert (again.status_code, again.json()["code"]) == (409, "already_merged")
    into_stub = await merge(client, key, "b", "a")
    assert (into_stub.status_code, into_stub.json()["code"]) == (409, "contact_merged")
    assert (await client.get(f"/v1/contacts/{a.contact_id}", headers=key)).status_code == 200


async def test_a_merge_of_a_merged_contact_keeps_every_stub_pointing_at_the_last_survivor(client, tenant, ledger):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    for name in ("a", "b", "c"):
        await ledger.point("email", f"{name}@example.com", external_id=name)
    assert (await merge(client, key, "b", "a")).status_code == 200
    c = (await client.get("/v1/contacts/c", headers=key)).json()["id"]
    assert (await merge(client, key, "c", "b")).status_code == 200
    for ref in ("a", "b"):
        gone = await client.get(f"/v1/contacts/{ref}", headers=key)
        assert gone.json()["merged_into"] == c
    assert len((await client.get("/v1/contacts/c", headers=key)).json()["contact_points"]) == 3


async def test_a_signup_naming_the_duplicates_external_id_lands_on_the_survivor(client, tenant, ledger, database):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    await ledger.point("email", "a@example.com", external_id="a")
    survivor = await ledger.point("email", "b@example.com", external_id="b")
    assert (await merge(client, key, "b", "a")).status_code == 200
    later = await ledger.point("sms", "+4915123456789", external_id="a")
    assert later.contact_id == survivor.contact_id


async def test_erasing_the_survivor_erases_the_duplicates_history_too(client, tenant, ledger, database):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    admin = await tenant.key(Scope.ADMIN)
    news = await ledger.purpose("newsletter")
    a = await ledger.point("email", "a@example.com", external_id="a")
    await ledger.apply(a, news.id, "signup", "confirm", evidence={"ip": "198.51.100.7"})
    await ledger.point("email", "b@example.com", external_id="b")
    assert (await merge(client, key, "b", "a")).status_code == 200
    refused = await client.delete(f"/v1/contacts/{a.contact_id}", headers=admin)
    assert refused.status_code == 409, "the duplicate is not the person any more: erase the survivor"
    assert refused.json()["code"] == "contact_merged"
    erased = await client.delete("/v1/contacts/b", headers=admin)
    assert erased.status_code == 200, erased.text
    async with database.sessionmaker() as session:
        assert (
            await session.scalar(select(func.count()).select_from(Contact).where(Contact.workspace_id == tenant.id))
            == 0
        )
        left = await session.scalar(
            select(func.count())
            .select_from(ConsentEvent)
            .where(ConsentEvent.contact_id == a.contact_id, ConsentEvent.personal.is_not(None))
        )
        assert left == 0, "the duplicate's evidence went with the person"


async def test_a_webhook_subscription_hears_of_the_merge(client, tenant, ledger, database):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    async with database.sessionmaker() as session, session.begin():  # the API checks the URL resolves: not here
        await session.execute(
            text(
                "INSERT INTO webhook_subscriptions (id, workspace_id, url, events, secret_sealed)"
                " VALUES (gen_random_uuid(), :ws, 'https://hooks.example.com/consent', '{contact.merged}', 'x')"
            ),
            {"ws": tenant.id},
        )
    await ledger.point("email", "a@example.com", external_id="a")
    await ledger.point("email", "b@example.com", external_id="b")
    assert (await merge(client, key, "b", "a")).status_code == 200
    async with database.sessionmaker() as session:
        payloads = (
            (await session.execute(text("SELECT payload FROM webhook_deliveries WHERE event_type = 'contact.merged'")))
            .scalars()
            .all()
        )
    [payload] = payloads
    assert payload["type"] == "contact.merged"
    assert payload["data"]["external_id"] == "b"


#: Random histories of two contacts: (contact 0/1, address 0/1 of it, step)
STEPS = ("signup", "confirm", "unsubscribe", "withdraw_all_channels", "object_all", "object_print", "resubscribe")
histories = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.sampled_from(STEPS)), max_size=12)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories)
async def test_random_pairs_merge_to_the_most_restrictive_and_stay_a_replay_of_the_ledger(client, database, history):
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspace_service.create_workspace(session, "Random")
    tenant, ledger = Tenant(workspace.id, database), Ledger(database, workspace.id)
    key = await tenant.key(Scope.CONSENTS_WRITE)
    news = await ledger.purpose("newsletter")
    points = {}
    for who in (0, 1):
        points[who, 0] = await ledger.point("email", f"c{who}@example.com", external_id=f"c{who}")
        points[who, 1] = await ledger.point("sms", f"+491511234500{who}", contact_id=points[who, 0].contact_id)
    for who, which, step in history:
        point, ref = points[who, which], f"c{who}"
        if step == "withdraw_all_channels":
            await client.post(
                "/v1/withdrawals", json={"contact": ref, "channel": "all", "purpose": "newsletter"}, headers=key
            )
        elif step in ("object_all", "object_print"):
            await client.post(
                "/v1/objections",
                json={
                    "contact": ref,
                    "scope": "all_marketing" if step == "object_all" else "print",
                    "kind": "personal",
                    "postal_address": {"street": f"Weg {who}", "postcode": "10115", "city": "Berlin", "country": "DE"},
                },
                headers=key,
            )
        else:
            trigger = {
                "signup": "signup",
                "confirm": "confirm" if point.channel == "email" else "start_word",
                "unsubscribe": "unsubscribe",
                "resubscribe": "confirm" if point.channel == "email" else "start_word",
            }[step]
            with contextlib.suppress(TransitionNotAllowed):  # refused by the state machine: nothing written
                await ledger.apply(point, news.id, trigger)
    before = {who: await states(client, key, f"c{who}") for who in (0, 1)}
    response = await merge(client, key, "c0", "c1")
    assert response.status_code == 200, response.text
    after = await states(client, key, "c0")
    for who in (0, 1):
        for consent, state in before[who].items():
            if consent in after:
                rank = RESTRICTIVENESS.index
                assert rank(State(after[consent])) <= rank(State(state)), "a merge never loosens a consent"
    async with database.sessionmaker() as session:
        await replay_matches_projection(session, workspace.id)
        assert (await verify_chain(session, workspace.id)).valid
        stubs = await session.scalar(
            select(func.count())
            .select_from(Contact)
            .where(Contact.workspace_id == workspace.id, Contact.merged_into.is_not(None))
        )
        assert stubs == 1


async def test_an_import_line_naming_the_duplicate_lands_on_the_survivor(client, tenant, ledger):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    await ledger.purpose("newsletter")
    await ledger.point("email", "a@example.com", external_id="a")
    await ledger.point("email", "b@example.com", external_id="b")
    assert (await merge(client, key, "b", "a")).status_code == 200
    body = (
        "contact;channel;address;purpose;state;captured_at;source;notice_text\n"
        "a;sms;+4915123456789;newsletter;opted_in;2026-11-01T10:00:00Z;shop;Ja, SMS-News.\n"
    )
    response = await client.post("/v1/imports/consents", content=body, headers={**key, "Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1, response.text
    survivor = (await client.get("/v1/contacts/b", headers=key)).json()
    assert "+4915123456789" in {p["address"] for p in survivor["contact_points"]}


async def test_a_pending_erasure_request_of_the_duplicate_follows_the_person(client, tenant, ledger, database):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    a = await ledger.point("email", "a@example.com", external_id="a")
    b = await ledger.point("email", "b@example.com", external_id="b")
    async with database.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO erasure_requests (id, workspace_id, contact_id, requested_at, due_at, source, status)"
                " VALUES (gen_random_uuid(), :ws, :c, now(), now() + interval '1 month', 'preference_centre',"
                " 'pending')"
            ),
            {"ws": tenant.id, "c": a.contact_id},
        )
    response = await merge(client, key, "b", "a")
    assert response.json()["moved"]["erasure_requests"] == 1
    async with database.sessionmaker() as session:
        owner = await session.scalar(text("SELECT contact_id FROM erasure_requests"))
    assert owner == b.contact_id


async def test_an_opted_in_survivor_stays_eligible_and_keeps_its_consents_since(client, tenant, ledger, database):
    """The merge's note on an address must not look newer than the consent it leaves alone (newcomer review)."""
    key = await tenant.key(Scope.CONSENTS_WRITE)
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    news = await ledger.purpose("newsletter")
    eva = await ledger.point("email", "eva@example.com", external_id="crm-60")
    await ledger.apply(eva, news.id, "signup", "confirm")
    await ledger.point("sms", "+4915123456789", external_id="crm-61")
    query = {"contact": "crm-60", "channel": "email", "purpose": "newsletter"}
    before = (await client.get("/v1/eligibility", params=query, headers=reader)).json()
    assert before["eligible"] is True
    async with database.sessionmaker() as session:
        since = await session.scalar(select(Consent.since).where(Consent.contact_point_id == eva.id))
    assert (await merge(client, key, "crm-60", "crm-61")).status_code == 200
    after = (await client.get("/v1/eligibility", params=query, headers=reader)).json()
    assert after["eligible"] is True, after
    async with database.sessionmaker() as session:
        rows = (await session.scalars(select(Consent).where(Consent.contact_point_id == eva.id))).all()
    assert [row.since for row in rows if row.purpose_id == news.id] == [since]
    assert all(row.purpose_id is not None for row in rows), "a note creates no channel-level row"


@pytest.fixture
async def race_engine(pg_server):
    """A database of its own for the races, whose rows must commit (the shared one is rolled back per test)."""
    url = await pg_server.create_database("consent_merge_races", migrated=True)
    engine = create_async_engine(url, pool_size=4)
    try:
        yield engine
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def _race_world(engine, name):
    from sqlalchemy.ext.asyncio import async_sessionmaker  # noqa: PLC0415

    from app.lib.db import Database  # noqa: PLC0415

    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as session, session.begin():
        workspace_id = (await workspace_service.create_workspace(session, name)).id
    return maker, Ledger(Database(engine, maker), workspace_id)


async def test_an_erasure_of_the_duplicate_waiting_on_a_merge_is_refused_not_lost(race_engine):
    """Hostile review: the erasure read the duplicate before the merge committed and 'erased' the empty stub."""
    import asyncio  # noqa: PLC0415

    import pytest  # noqa: PLC0415

    from app.domain.model import ActorType  # noqa: PLC0415
    from app.ledger import merge as merging  # noqa: PLC0415
    from app.ledger.service import Actor  # noqa: PLC0415
    from app.lib.errors import Conflict  # noqa: PLC0415
    from app.lib.keys import Keys  # noqa: PLC0415
    from app.privacy import erasure  # noqa: PLC0415
    from tests.conftest import TEST_SECRET  # noqa: PLC0415

    maker, ledger = await _race_world(race_engine, "Race")
    news = await ledger.purpose("newsletter")
    dup = await ledger.point("email", f"dup-{uuid.uuid4().hex[:6]}@example.com", external_id=uuid.uuid4().hex)
    survivor = await ledger.point("sms", "+4915123456780", external_id=uuid.uuid4().hex)
    await ledger.apply(dup, news.id, "signup", "confirm")
    actor = Actor(ActorType.API_KEY, "test")
    merging_session = maker()
    await merging_session.begin()
    await merging.merge(
        merging_session,
        ledger.workspace_id,
        survivor_ref=str(survivor.contact_id),
        duplicate_ref=str(dup.contact_id),
        evidence={},
        actor=actor,
    )

    async def erase_the_duplicate():
        async with maker() as session, session.begin():
            return await erasure.erase(
                session, Keys(TEST_SECRET), ledger.workspace_id, str(dup.contact_id),
                request_ref=None, received_via=None, actor=actor,
            )  # fmt: skip

    waiting = asyncio.create_task(erase_the_duplicate())
    await asyncio.sleep(0.5)  # the erasure waits for the merge's lock on the duplicate
    await merging_session.commit()
    await merging_session.close()
    with pytest.raises(Conflict) as refused:
        await waiting
    assert refused.value.code == "contact_merged"
    async with maker() as session:
        left = await session.scalar(
            text("SELECT count(*) FROM contact_points WHERE contact_id = :c"), {"c": survivor.contact_id}
        )
    assert left == 2, "nothing was erased behind the caller's back"


async def test_an_address_for_the_duplicate_waiting_on_a_merge_is_refused(race_engine):
    """Hostile review: an address added while the merge ran landed on the stub, invisible on the survivor."""
    import asyncio  # noqa: PLC0415

    import pytest  # noqa: PLC0415
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from app.domain.model import ActorType  # noqa: PLC0415
    from app.ledger import actions  # noqa: PLC0415
    from app.ledger import merge as merging  # noqa: PLC0415
    from app.ledger.schemas import PostalAddressIn  # noqa: PLC0415
    from app.ledger.service import Actor, require_contact  # noqa: PLC0415
    from app.lib.keys import Keys  # noqa: PLC0415
    from tests.conftest import TEST_SECRET  # noqa: PLC0415

    maker, ledger = await _race_world(race_engine, "Race2")
    dup_ref, survivor_ref = uuid.uuid4().hex, uuid.uuid4().hex
    await ledger.point("email", f"{dup_ref}@example.com", external_id=dup_ref)
    await ledger.point("email", f"{survivor_ref}@example.com", external_id=survivor_ref)
    merging_session = maker()
    await merging_session.begin()
    await merging.merge(
        merging_session, ledger.workspace_id, survivor_ref=survivor_ref, duplicate_ref=dup_ref, evidence={},
        actor=Actor(ActorType.API_KEY, "test"),
    )  # fmt: skip

    async def add_a_postal_address():
        async with maker() as session, session.begin():
            found = await require_contact(session, ledger.workspace_id, dup_ref)  # read before the merge commits
            address = PostalAddressIn(street="Hauptstr. 1", postcode="10115", city="Berlin", name="Jane Doe")
            return await actions.add_postal_address(
                session, Keys(TEST_SECRET), ledger.workspace_id, found, address.normalised()
            )

    waiting = asyncio.create_task(add_a_postal_address())
    await asyncio.sleep(0.5)
    await merging_session.commit()
    await merging_session.close()
    with pytest.raises(DBAPIError) as refused:
        await waiting
    assert "CM001" in str(refused.value.orig.sqlstate if hasattr(refused.value.orig, "sqlstate") else refused.value)


async def test_a_pending_signup_by_anyone_does_not_end_a_no_to_everything(client, tenant, ledger):
    """Hostile review: a form signup (never confirmed) for the person's address undid their "nothing at all"."""
    key = await tenant.key(Scope.CONSENTS_WRITE)
    news = await ledger.purpose("newsletter")
    offers = await ledger.purpose("offers")
    a = await ledger.point("email", "a@example.com", external_id="a")
    await ledger.apply(a, news.id, "signup", "confirm")
    b = await ledger.point("sms", "+4915123456789", external_id="b")
    await ledger.apply(b, news.id, "signup", "start_word")
    await ledger.apply(b, offers.id, "signup", "start_word")
    everything = {"contact": "a", "channel": "all", "purpose": "all"}
    assert (await client.post("/v1/withdrawals", json=everything, headers=key)).status_code == 200
    await ledger.apply(a, offers.id, "signup")  # pending: whoever typed the address in, it proves nothing
    assert (await merge(client, key, "b", "a")).status_code == 200
    after = await states(client, key, "b")
    assert after["+4915123456789", "offers"] == "opted_out"
    assert after["+4915123456789", "newsletter"] == "opted_out"
    assert after["+4915123456789", None] == "opted_out"


async def test_an_opt_in_after_a_no_to_everything_keeps_that_purpose_only(client, tenant, ledger):
    key = await tenant.key(Scope.CONSENTS_WRITE)
    news = await ledger.purpose("newsletter")
    offers = await ledger.purpose("offers")
    a = await ledger.point("email", "a@example.com", external_id="a")
    await ledger.apply(a, news.id, "signup", "confirm")
    b = await ledger.point("sms", "+4915123456789", external_id="b")
    await ledger.apply(b, news.id, "signup", "start_word")
    await ledger.apply(b, offers.id, "signup", "start_word")
    everything = {"contact": "a", "channel": "all", "purpose": "all"}
    assert (await client.post("/v1/withdrawals", json=everything, headers=key)).status_code == 200
    await ledger.apply(a, offers.id, "signup", "confirm")  # the person asked for offers again, with proof
    assert (await merge(client, key, "b", "a")).status_code == 200
    after = await states(client, key, "b")
    assert after["+4915123456789", "offers"] == "opted_in", "the purpose said yes to again"
    assert after["+4915123456789", "newsletter"] == "opted_out", "the no still stands for the rest"


async def test_erasing_the_survivor_forgets_what_names_the_duplicate(client, tenant, ledger, database):
    """Hostile review: the duplicate's stored idempotent answer (name, postal address) outlived the erasure."""
    key = await tenant.key(Scope.CONSENTS_WRITE)
    admin = await tenant.key(Scope.ADMIN)
    created = await client.post(
        "/v1/contacts",
        json={
            "external_id": "dup-crm-1",
            "postal_address": {"name": "Jane Doe", "street": "Hauptstr. 1", "postcode": "10115", "city": "Berlin"},
        },
        headers={**key, "Idempotency-Key": "create-dup-1"},
    )
    assert created.status_code == 201, created.text
    duplicate_id = created.json()["id"]
    await ledger.point("email", "jane@example.com", external_id="survivor")
    assert (await merge(client, key, "survivor", "dup-crm-1")).status_code == 200
    assert (await client.delete("/v1/contacts/survivor", headers=admin)).status_code == 200
    async with database.sessionmaker() as session:
        bodies = (await session.execute(text("SELECT body FROM idempotency_keys"))).scalars().all()
    assert not [b for b in bodies if b and duplicate_id.encode() in b]
    assert not [b for b in bodies if b and b"hauptstr" in b.lower()]


async def test_eligibility_for_the_duplicates_id_answers_that_it_was_merged(client, tenant, ledger):
    """Newcomer review of 2026-12-05: eligibility answered the duplicate's id with no_contact_point, so a CRM still
    using it was never told of the merge; the single check answers 409 as every other route, the batch per entry."""
    key = await tenant.key(Scope.CONSENTS_WRITE)
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    news = await ledger.purpose("newsletter")
    survivor = await ledger.point("email", "keep@example.com", external_id="crm-keep")
    duplicate = await ledger.point("email", "dup@example.com", external_id="crm-dup")
    await ledger.apply(duplicate, news.id, "signup", "confirm")
    assert (await merge(client, key, survivor.contact_id, "crm-dup")).status_code == 200

    for ref in (str(duplicate.contact_id),):
        for via in ({}, {"via": "route"}):
            answer = await client.get(
                "/v1/eligibility",
                params={"contact": ref, "channel": "email", "purpose": "newsletter", **via},
                headers=reader,
            )
            assert answer.status_code == 409, (via, answer.text)
            assert answer.json()["code"] == "contact_merged"
            assert answer.json()["merged_into"] == str(survivor.contact_id)
    batch = await client.post(
        "/v1/eligibility/batch",
        json={"contacts": [str(duplicate.contact_id), "crm-keep"], "channels": ["email"], "purpose": "newsletter"},
        headers=reader,
    )
    assert batch.status_code == 200
    first, second = batch.json()["decisions"]
    assert (first["reason"], first["merged_into"], first["eligible"]) == (
        "contact_merged",
        str(survivor.contact_id),
        False,
    )
    assert (second["reason"], second["eligible"]) == ("opted_in", True), "the survivor holds the consent now"
