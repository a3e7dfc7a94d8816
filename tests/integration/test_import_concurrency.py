"""Imports against other writers on real connections: no deadlock, nothing lost (hostile review of issue 21)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.domain.identifiers import normalise_postal
from app.domain.model import ActorType, Trigger, VerifiedVia
from app.imports import consents
from app.imports.robinson import import_robinson
from app.ledger import repository
from app.ledger.actions import postal_details, print_value
from app.ledger.audit import verify_chain
from app.ledger.merge import merge
from app.ledger.models import ContactPoint
from app.ledger.service import Actor, Change, apply_changes
from app.lib.db import Database
from app.lib.keys import Keys
from app.purposes.service import create_purpose
from app.workspaces.operator import delete_workspace
from app.workspaces.service import create_workspace
from tests.conftest import TEST_SECRET

ACTOR = Actor(ActorType.SYSTEM, "test:import")
TEXT = "Ja, ich möchte den Newsletter erhalten."


def lines(numbers) -> bytes:
    return "\n".join(
        json.dumps(
            {
                "contact": f"crm-{n:05d}",
                "channel": "email",
                "address": f"p{n:05d}@example.com",
                "purpose": "newsletter",
                "state": "opted_in",
                "captured_at": "2024-03-01T10:00:00Z",
                "source": "old-esp",
                "notice_text": TEXT,
            }
        )
        for n in numbers
    ).encode()


async def read(body: bytes):
    async def chunks():
        yield body

    async for item in consents.ndjson_lines(chunks()):
        yield item


@pytest.fixture
async def maker(engine):
    """Sessions that commit (several connections at once); what they leave is deleted after the test.

    Other tests read tables across workspaces (the shared test database), so committed workspaces go with their test.
    """
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    made: list[uuid.UUID] = []
    sessions.made = made  # type: ignore[attr-defined]  # the workspaces to delete
    yield sessions
    for workspace_id in made:
        await delete_workspace(
            Database(engine, sessions), workspace_id, keep_suppressions=False, force=True, operator_key_id=None
        )


async def workspace_with_purpose(maker):
    async with maker() as session, session.begin():
        workspace = await create_workspace(session, "Imports")
        await create_purpose(session, workspace.id, "newsletter", "News", "marketing")
    maker.made.append(workspace.id)
    return workspace.id


async def test_two_imports_naming_the_same_new_contacts_in_opposite_orders_both_finish(maker, monkeypatch):
    workspace_id = await workspace_with_purpose(maker)
    both_there = asyncio.Barrier(2)
    insert_contacts = repository.insert_contacts

    async def together(*args, **kwargs):  # both batches insert at the same moment: the orders meet in the middle
        await both_there.wait()
        return await insert_contacts(*args, **kwargs)

    numbers = list(range(1_500))
    async with maker() as session:  # the notice version both files name exists (its creation would serialise them)
        await consents.import_consents(session, Keys(TEST_SECRET), workspace_id, read(lines([99_999])), actor=ACTOR)
    monkeypatch.setattr(repository, "insert_contacts", together)

    async def run(body: bytes):
        async with maker() as session:
            return await consents.import_consents(session, Keys(TEST_SECRET), workspace_id, read(body), actor=ACTOR)

    forward, backward = await asyncio.wait_for(
        asyncio.gather(run(lines(numbers)), run(lines(reversed(numbers)))), timeout=120
    )

    assert forward.recorded + backward.recorded == 1_500, "each opt-in recorded once, by whichever came first"
    assert forward.contacts_created + backward.contacts_created == 1_500
    async with maker() as session:
        count = await session.scalar(text("SELECT count(*) FROM contacts WHERE workspace_id = :w"), {"w": workspace_id})
        assert count == 1_501, "one contact per external id"
        assert (await verify_chain(session, workspace_id)).valid


async def test_a_merge_committed_while_a_batch_runs_sends_its_lines_to_the_survivor(maker, monkeypatch):
    workspace_id = await workspace_with_purpose(maker)
    async with maker() as session:
        await consents.import_consents(
            session, Keys(TEST_SECRET), workspace_id, read(lines([1, 2])), actor=ACTOR
        )  # crm-00001 and crm-00002, each with an address
    record_batch = consents.record_batch
    merged = []

    async def merge_first(*args, **kwargs):
        if not merged:  # the batch has read crm-00002 as it was; now a merge commits
            async with maker() as other, other.begin():
                merged.append(
                    await merge(
                        other,
                        workspace_id,
                        survivor_ref="crm-00001",
                        duplicate_ref="crm-00002",
                        evidence={"note": "test"},
                        actor=ACTOR,
                    )
                )
        return await record_batch(*args, **kwargs)

    monkeypatch.setattr(consents, "record_batch", merge_first)
    later = json.loads(lines([2]))
    later |= {"state": "opted_out", "captured_at": "2024-04-01T10:00:00Z"}
    later.pop("notice_text")
    async with maker() as session:
        report = await consents.import_consents(
            session, Keys(TEST_SECRET), workspace_id, read(json.dumps(later).encode()), actor=ACTOR
        )

    assert merged, "the merge ran while the batch did"
    assert (report.recorded, report.rejected) == (1, 0), report.problems
    async with maker() as session:
        rows = await session.execute(
            text(
                "SELECT c.external_id, s.state FROM consents s JOIN contacts c ON c.id = s.contact_id "
                "JOIN contact_points p ON p.id = s.contact_point_id "
                "WHERE s.workspace_id = :w AND p.value = 'p00002@example.com' AND s.purpose_id IS NOT NULL"
            ),
            {"w": workspace_id},
        )
        assert rows.all() == [("crm-00001", "opted_out")], "the line went to the survivor"
        assert (await verify_chain(session, workspace_id)).valid


def another_writer_takes(maker, workspace_id, address: str, monkeypatch) -> list[str]:
    """Stage the race: between the batch's read and its insert of addresses, another contact's ``address`` commits."""
    insert_points = repository.insert_points
    done: list[str] = []

    async def after_another_writer(*args, **kwargs):
        if not done:
            async with maker() as other, other.begin():
                ids = await repository.insert_contacts(
                    other, workspace_id, [repository.NewContact(uuid.uuid4(), "someone-else", None, None)]
                )
                point = repository.NewPoint(uuid.uuid4(), ids["someone-else"], "email", address, "{}", [])
                await insert_points(other, workspace_id, [point], verified=VerifiedVia.API)
            done.append(address)
        return await insert_points(*args, **kwargs)

    monkeypatch.setattr(repository, "insert_points", after_another_writer)
    return done


async def contacts_named(maker, workspace_id) -> list[str]:
    async with maker() as session:
        rows = await session.scalars(
            text("SELECT external_id FROM contacts WHERE workspace_id = :w ORDER BY external_id"), {"w": workspace_id}
        )
        return list(rows)


async def test_a_line_whose_new_address_another_writer_took_leaves_no_contact_behind(maker, monkeypatch):
    """Hostile review of issue 21: the line was rejected, but the contact the batch made for it stayed and counted."""
    workspace_id = await workspace_with_purpose(maker)
    raced = another_writer_takes(maker, workspace_id, "p00001@example.com", monkeypatch)
    async with maker() as session:
        report = await consents.import_consents(session, Keys(TEST_SECRET), workspace_id, read(lines([1])), actor=ACTOR)

    assert raced, "the other writer's address committed between the batch's read and its insert"
    assert [(p.line, p.code) for p in report.problems] == [(1, "address_of_another_contact")]
    assert (report.recorded, report.rejected, report.contacts_created) == (0, 1, 0)
    assert await contacts_named(maker, workspace_id) == ["someone-else"], "no contact without its address"


async def test_a_new_contact_keeps_the_lines_that_were_not_raced(maker, monkeypatch):
    workspace_id = await workspace_with_purpose(maker)
    body = lines([1, 2]).replace(b'"crm-00002"', b'"crm-00001"')  # one new contact, two new addresses
    raced = another_writer_takes(maker, workspace_id, "p00001@example.com", monkeypatch)
    async with maker() as session:
        report = await consents.import_consents(session, Keys(TEST_SECRET), workspace_id, read(body), actor=ACTOR)

    assert raced
    assert [(p.line, p.code) for p in report.problems] == [(1, "address_of_another_contact")]
    assert (report.recorded, report.rejected, report.contacts_created) == (1, 1, 1)
    assert await contacts_named(maker, workspace_id) == ["crm-00001", "someone-else"]


async def test_objections_while_a_robinson_list_matches_thousands_of_addresses_neither_deadlock(maker):
    """The matches go in batches within one transaction: their consents are locked before the chain head."""
    workspace_id = await workspace_with_purpose(maker)
    keys = Keys(TEST_SECRET)
    count = 5_000
    values, details, point_keys, listed = [], [], [], ["Name;Straße;Hausnummer;PLZ;Ort"]
    for n in range(count):
        address = normalise_postal(street=f"Teststraße {n + 1}", postcode="10115", city="Berlin", name=f"Anna Nr{n}")
        value, detail = print_value(address), postal_details(address)
        values.append(value)
        details.append(json.dumps(detail))
        point_keys.append(",".join(key.hex() for key in keys.point_keys("print", value, detail)))
        listed.append(f"Anna Nr{n};Teststraße;{n + 1};10115;Berlin")
    async with maker() as session, session.begin():
        await session.execute(
            text(
                """
                WITH c AS (
                    INSERT INTO contacts (id, workspace_id, external_id)
                    SELECT gen_random_uuid(), :w, 'p-' || n FROM generate_series(1, :count) n
                    RETURNING id, substr(external_id, 3)::int AS n
                )
                INSERT INTO contact_points (id, workspace_id, contact_id, channel, value, details, suppression_keys)
                SELECT gen_random_uuid(), :w, c.id, 'print', (CAST(:vals AS text[]))[c.n],
                       (CAST(:details AS text[]))[c.n]::jsonb,
                       ARRAY(SELECT decode(k, 'hex') FROM unnest(string_to_array((CAST(:keys AS text[]))[c.n], ',')) k)
                  FROM c
                """
            ),
            {"w": workspace_id, "count": count, "vals": values, "details": details, "keys": point_keys},
        )
        late = (
            await session.scalars(  # the addresses the list's last match batch takes (it goes in id order)
                select(ContactPoint)
                .where(ContactPoint.workspace_id == workspace_id)
                .order_by(ContactPoint.id.desc())
                .limit(100)
            )
        ).all()
    body = ("\n".join(listed) + "\n").encode()

    async def robinson():
        async def chunks():
            yield body

        async with maker() as session, session.begin():
            return await import_robinson(session, keys, workspace_id, chunks(), actor=ACTOR, source="test")

    async def objections():
        for point in late:
            await asyncio.sleep(0.005)
            async with maker() as session, session.begin():
                await apply_changes(
                    session, workspace_id, [Change(point, None, Trigger.OBJECTION, {})], ACTOR, skip_not_allowed=True
                )

    report, _ = await asyncio.wait_for(asyncio.gather(robinson(), objections()), timeout=120)

    assert report.accepted == count
    async with maker() as session:
        objected = await session.scalar(
            text("SELECT count(*) FROM consents WHERE workspace_id = :w AND state = 'objected'"), {"w": workspace_id}
        )
        assert objected == count, "every address objected: by the list, or by the person first"
        assert (await verify_chain(session, workspace_id)).valid
