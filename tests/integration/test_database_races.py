"""A request's transaction aborted by PostgreSQL because of a concurrent writer answers a clear 4xx/503, never a 500.

A deadlock PostgreSQL broke (40P01), a serialization failure (40001) and a lock wait that ran out of
``lock_timeout`` (55P03) answer 503 ``database_busy`` with ``Retry-After: 1``: sent again, the request runs on what
the other writer left. A foreign key failing because the row it names was deleted by a transaction committed
meanwhile (23503, an erasure) answers 409 ``deleted_meanwhile``. Every error here is PostgreSQL's own, raised on the
request's real session through the real stack (docs/security.md, "Races with a merge").
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.lib.auth import Scope
from app.lib.db import Database
from app.purchases import repository as purchases_repository
from app.purposes import service as purposes_service
from app.workspaces import operator as workspaces_operator
from tests.conftest import own_database

BODY = {"key": "offers", "name": "Offers", "kind": "marketing"}


def raising(sqlstate: str) -> str:
    """A statement PostgreSQL fails with ``sqlstate`` (its own error, through the driver and SQLAlchemy)."""
    return f"DO $$ BEGIN RAISE EXCEPTION 'raced' USING ERRCODE = '{sqlstate}'; END $$"


def aborted_after_writing(monkeypatch, sqlstate: str) -> list[str]:
    """``POST /v1/purposes`` writes its purpose, then its transaction fails with ``sqlstate`` (once)."""
    real = purposes_service.create_purpose
    calls: list[str] = []

    async def create_then_abort(session, *args, **kwargs):
        purpose = await real(session, *args, **kwargs)
        calls.append(purpose.key)
        if len(calls) == 1:
            await session.execute(text(raising(sqlstate)))
        return purpose

    monkeypatch.setattr(purposes_service, "create_purpose", create_then_abort)
    return calls


async def purpose_keys(client, admin) -> list[str]:
    listed = await client.get("/v1/purposes", headers=admin)
    assert listed.status_code == 200, listed.text
    return [p["key"] for p in listed.json()]


@pytest.mark.parametrize(
    "sqlstate",
    [
        pytest.param("40P01", id="deadlock_detected"),
        pytest.param("40001", id="serialization_failure"),
        pytest.param("55P03", id="lock_not_available"),
    ],
)
async def test_a_transaction_aborted_by_a_concurrent_write_answers_503_database_busy(
    client, admin, monkeypatch, sqlstate
):
    calls = aborted_after_writing(monkeypatch, sqlstate)
    with structlog.testing.capture_logs() as logs:
        response = await client.post("/v1/purposes", json=BODY, headers={**admin, "Idempotency-Key": "busy-1"})
    assert calls == ["offers"], "the purpose was written before the transaction failed"
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    problem = response.json()
    assert problem["code"] == "database_busy"
    assert "concurrent write" in problem["detail"]
    assert "rolled back" in problem["detail"]
    assert "Send it again" in problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "offers" not in await purpose_keys(client, admin), "nothing of the aborted transaction was kept"
    [logged] = [e for e in logs if e["event"] == "transaction_aborted_by_a_concurrent_write"]
    assert logged["log_level"] == "warning"
    assert logged["sqlstate"] == sqlstate
    assert not [e for e in logs if e["log_level"] == "error"], "a race is not logged as a fault"

    again = await client.post("/v1/purposes", json=BODY, headers={**admin, "Idempotency-Key": "busy-1"})
    assert again.status_code == 201, again.text  # the refused request freed its key: sending it again works
    assert "idempotent-replayed" not in again.headers
    assert (await purpose_keys(client, admin)).count("offers") == 1


async def test_a_foreign_key_raised_by_a_race_answers_409_deleted_meanwhile(client, admin, monkeypatch):
    """The erasure that commits between the purchase finding the address and recording the sale, as the request's
    transaction then sees it: the address is gone, the purchase's real foreign key to it fails (23503)."""
    writer = admin
    made = await client.post("/v1/contacts", json={"external_id": "jane"}, headers=writer)
    assert made.status_code == 201, made.text
    real_insert = purchases_repository.insert_purchase

    async def erased_meanwhile(session, workspace_id, *, contact_point_id, **kwargs):
        await session.execute(text("DELETE FROM contact_points WHERE id = :id"), {"id": contact_point_id})
        return await real_insert(session, workspace_id, contact_point_id=contact_point_id, **kwargs)

    monkeypatch.setattr(purchases_repository, "insert_purchase", erased_meanwhile)
    sale = {
        "reference": "A-1",
        "purchased_at": "2026-11-20T10:15:00+01:00",
        "category": "coffee",
        "email": "jane@example.com",
        "objection_notice_shown": True,
    }
    with structlog.testing.capture_logs() as logs:
        response = await client.post("/v1/contacts/jane/purchases", json=sale, headers=writer)
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "deleted_meanwhile"
    assert "deleted by another request" in problem["detail"]
    assert "Look the record up again" in problem["detail"]
    [logged] = [e for e in logs if e["event"] == "referenced_row_deleted_meanwhile"]
    assert logged["log_level"] == "warning"
    assert logged["constraint"] == "fk_purchases_contact_point_id_contact_points"
    assert "jane" not in str(logged)

    monkeypatch.undo()
    contact = (await client.get("/v1/contacts/jane", headers=writer)).json()
    assert contact["contact_points"] == [], "neither the address nor the sale's ledger event was kept"
    events = (await client.get("/v1/contacts/jane/events", headers=writer)).json()
    assert not [e for e in events if e.get("trigger") == "purchase"]
    assert (await client.get("/v1/contacts/jane/purchases", headers=writer)).json() == []


async def test_a_foreign_key_failing_on_the_driver_path_answers_409_too(client, admin, monkeypatch):
    """The SQLSTATE is read from SQLAlchemy's error and the driver's alike (``.orig``, ``__cause__``)."""
    real = purposes_service.create_purpose

    async def create_then_fail(session, *args, **kwargs):
        purpose = await real(session, *args, **kwargs)
        connection = await session.connection()
        driver = (await connection.get_raw_connection()).driver_connection
        await driver.execute(raising("23503"))  # asyncpg's own error, not wrapped by SQLAlchemy
        return purpose

    monkeypatch.setattr(purposes_service, "create_purpose", create_then_fail)
    response = await client.post("/v1/purposes", json=BODY, headers=admin)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "deleted_meanwhile"
    monkeypatch.undo()
    assert "offers" not in await purpose_keys(client, admin)


async def test_a_workspace_deletion_meeting_a_late_writers_row_takes_it_in_the_next_round(
    client, database, tenant, ledger, monkeypatch
):
    """A row a writer committed after its table's sweep names a purpose the deletion then deletes: the purpose's
    RESTRICT key refuses (23001). Not a 500, not 409 ``deleted_meanwhile`` (nothing this deletion refers to went
    away): the next round sweeps the late row first, then the purpose, and the deletion finishes in one call."""
    purpose = await ledger.purpose("newsletter")
    async with database.sessionmaker() as db_session, db_session.begin():
        _, secret = await workspaces_operator.create_operator_key(db_session, "ops")
    operator = {"Authorization": f"Bearer {secret}"}
    real_sweep = workspaces_operator._Deletion.sweep
    late: list[str] = []

    async def sweep_after_a_late_writer(self, table, session):
        if table == "purposes" and not late:
            late.append(table)
            async with database.sessionmaker() as writer, writer.begin():  # committed after the notices' sweep
                await writer.execute(
                    text(
                        "INSERT INTO notices (id, workspace_id, purpose_id, channels, locale, version, text, sha256)"
                        " VALUES (:id, :ws, :purpose, ARRAY['email'], 'de', 7, 'late', repeat('a', 64))"
                    ),
                    {"id": uuid.uuid4(), "ws": tenant.id, "purpose": purpose.id},
                )
        return await real_sweep(self, table, session)

    monkeypatch.setattr(workspaces_operator._Deletion, "sweep", sweep_after_a_late_writer)
    done = await client.delete(f"/v1/workspaces/{tenant.id}?force=true", headers=operator)
    assert late == ["purposes"]
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "deleted"
    assert done.json()["deleted"]["notices"] == 1, "the late writer's notice, swept in the next round"
    async with database.sessionmaker() as db_session:
        left = await db_session.scalar(
            text("SELECT count(*) FROM purposes WHERE workspace_id = :ws"), {"ws": tenant.id}
        )
    assert left == 0


class TestARealDeadlock:
    """Two real transactions on a database of the class's own, locking two rows in opposite order."""

    @pytest.fixture
    async def own_engine(self, pg_server):
        async with own_database(pg_server) as own:
            yield own

    @pytest.fixture
    def database(self, own_engine):
        return Database(own_engine, async_sessionmaker(own_engine, expire_on_commit=False))

    async def test_a_request_chosen_as_a_deadlocks_victim_answers_503_and_writes_nothing(
        self, client, database, tenant, ledger, monkeypatch
    ):
        """The request locks purpose A then wants B; another transaction holds B and then wants A. PostgreSQL
        breaks the cycle by aborting one of them after ``deadlock_timeout``; the other one's is made the longer,
        so the request is the victim: 503 ``database_busy``, its purpose not created, the other one commits."""
        admin = await tenant.key(Scope.ADMIN)
        first = await ledger.purpose("first")
        second = await ledger.purpose("second")
        real = purposes_service.create_purpose
        request_holds_first = asyncio.Event()
        other_holds_second = asyncio.Event()
        lock = "SELECT 1 FROM purposes WHERE id = :id FOR UPDATE"

        async def other_writer():
            async with database.sessionmaker() as other, other.begin():
                await other.execute(text("SET LOCAL deadlock_timeout = '5s'"))  # the request detects it first
                await other.execute(text(lock), {"id": second.id})
                other_holds_second.set()
                await request_holds_first.wait()
                await other.execute(text(lock), {"id": first.id})  # waits for the request's transaction

        async def create_in_a_deadlock(session, *args, **kwargs):
            purpose = await real(session, *args, **kwargs)
            await session.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
            await session.execute(text(lock), {"id": first.id})
            request_holds_first.set()
            await other_holds_second.wait()
            await asyncio.sleep(0.2)  # the other transaction is waiting for the first purpose by now
            await session.execute(text(lock), {"id": second.id})  # closes the cycle
            return purpose

        monkeypatch.setattr(purposes_service, "create_purpose", create_in_a_deadlock)
        other = asyncio.create_task(other_writer())
        await other_holds_second.wait()
        response = await asyncio.wait_for(client.post("/v1/purposes", json=BODY, headers=admin), timeout=10)
        await asyncio.wait_for(other, timeout=10)  # the survivor committed
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["code"] == "database_busy"
        monkeypatch.undo()
        assert "offers" not in await purpose_keys(client, admin)


async def test_no_foreign_key_can_fail_from_the_deleting_side_as_23503(session):
    """``deleted_meanwhile`` reads every 23503 as a row naming one deleted meanwhile. A NO ACTION key would raise
    23503 from the other side too, on the DELETE of a row still named (RESTRICT raises 23001, CASCADE never): then
    that answer would be wrong. Every key of the schema is CASCADE or RESTRICT."""
    no_action = (
        await session.execute(
            text(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint"
                " WHERE contype = 'f' AND confdeltype NOT IN ('c', 'r') ORDER BY 1, 2"
            )
        )
    ).all()
    assert no_action == []
