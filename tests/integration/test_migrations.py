"""Migrations: upgrade, downgrade and upgrade again on an empty database; no drift from the models."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.domain.identifiers import normalise_postal
from app.domain.model import ActorType, ObjectionKind
from app.ledger.actions import object_to_marketing
from app.ledger.partitions import include_name
from app.ledger.service import Actor
from app.lib.db import downgrade, head_revision, migrate
from app.lib.keys import Keys
from app.models import metadata
from app.workspaces.service import create_workspace
from tests.conftest import TEST_SECRET


async def test_upgrade_downgrade_upgrade_on_an_empty_database(pg_server):
    url = await pg_server.create_database("consent_migrations")
    engine = create_async_engine(url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert {"workspaces", "api_keys", "purposes"} <= tables
        assert version == head_revision()

        await downgrade(engine, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert tables <= {"alembic_version"}

        await migrate(engine)
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert version == head_revision()
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def test_models_and_migrations_do_not_drift(engine):
    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True, "include_name": include_name})
        return compare_metadata(context, metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models differ from migrations; generate a migration: {changes}"


async def _workspace_with_rows_at(engine, revision: str, rows: str):
    """The database migrated to ``revision``, a workspace made in it and ``rows`` (SQL naming ``:ws``) inserted."""
    await migrate(engine, revision)
    async with engine.begin() as conn:
        ws = (
            await conn.execute(text("INSERT INTO workspaces (id, name) VALUES (gen_random_uuid(), 'W') RETURNING id"))
        ).scalar_one()
        await conn.execute(text(rows), {"ws": ws})
    return ws


async def test_0042_moves_the_robinson_suppressions_into_robinson_keys_and_back(pg_server):
    """A list imported before 0042 stays listed (and an import of it again adds nothing); other rows stay put."""
    url = await pg_server.create_database("consent_migration_0042")
    engine = create_async_engine(url)
    rows = """
        INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason, until)
        VALUES (gen_random_uuid(), :ws, '\\x01', 1, 'print', 'all_marketing', NULL, 'robinson', NULL),
               (gen_random_uuid(), :ws, '\\x02', 1, 'print', 'all_marketing', NULL, 'objection_art21', NULL),
               (gen_random_uuid(), :ws, '\\x03', 1, 'email', 'all', NULL, 'erasure', NULL)
    """
    kept = "SELECT encode(key, 'hex'), reason FROM suppressions ORDER BY key"
    try:
        ws = await _workspace_with_rows_at(engine, "0041", rows)
        await migrate(engine, "0042")
        async with engine.connect() as conn:
            listed = (await conn.execute(text("SELECT workspace_id, encode(key, 'hex') FROM robinson_keys"))).all()
            left = (await conn.execute(text(kept))).all()
        assert listed == [(ws, "01")]
        assert left == [("02", "objection_art21"), ("03", "erasure")]
        await downgrade(engine, "0041")
        async with engine.connect() as conn:
            back = (await conn.execute(text(kept))).all()
        assert back == [("01", "robinson"), ("02", "objection_art21"), ("03", "erasure")]
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def test_0042_back_keeps_a_listing_beside_a_pause_for_good_and_drops_keys_of_deleted_workspaces(pg_server):
    """Hostile review: a pause of a listed key (a race of a pause with an import leaves both) must not turn the
    listing into the pause on the way back; keys of a workspace row deleted by hand (no foreign key) must not
    stop the downgrade."""
    url = await pg_server.create_database("consent_migration_0042_back")
    engine = create_async_engine(url)
    try:
        await migrate(engine, "0042")
        async with engine.begin() as conn:
            new_workspace = text("INSERT INTO workspaces (id, name) VALUES (gen_random_uuid(), 'W') RETURNING id")
            ws = (await conn.execute(new_workspace)).scalar_one()
            gone = (await conn.execute(new_workspace)).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO robinson_keys (workspace_id, key, key_version)"
                    " VALUES (:ws, '\\x01', 1), (:gone, '\\x02', 1)"
                ),
                {"ws": ws, "gone": gone},
            )
            await conn.execute(
                text(
                    "INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason,"
                    " until) VALUES (gen_random_uuid(), :ws, '\\x01', 1, 'print', 'all_marketing', NULL, 'paused',"
                    " now() + interval '7 days')"
                ),
                {"ws": ws},
            )
            await conn.execute(text("DELETE FROM workspaces WHERE id = :gone"), {"gone": gone})
        await downgrade(engine, "0041")
        async with engine.connect() as conn:
            back = (
                await conn.execute(text("SELECT workspace_id, encode(key, 'hex'), reason, until FROM suppressions"))
            ).all()
        assert back == [(ws, "01", "robinson", None)]
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def test_0046_labels_stickers_found_in_the_ledger_and_maps_them_back_on_downgrade(pg_server):
    """Rows a sticker wrote before 0046 (labelled ``objection_art21``) become ``objection_sticker``: found through the
    sticker objections in the ledger; an Art. 21 objection's row keeps its label. Downgrade maps them back."""
    url = await pg_server.create_database("consent_migration_0046")
    engine = create_async_engine(url)
    reasons = "SELECT reason, count(*) FROM suppressions GROUP BY reason ORDER BY reason"
    try:
        await migrate(engine)
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            workspace = await create_workspace(session, "W")
            for kind, street in ((ObjectionKind.STICKER, "Hauptstr. 1"), (ObjectionKind.ART21, "Lindenallee 3")):
                await object_to_marketing(
                    session,
                    Keys(TEST_SECRET),
                    workspace.id,
                    contact_ref=None,
                    address=normalise_postal(street=street, postcode="10115", city="Berlin", name="Erika Muster"),
                    scope="print",
                    kind=kind,
                    evidence={"note": "seen"},
                    actor=Actor(ActorType.API_KEY, "test"),
                )
        async with engine.connect() as conn:
            assert (await conn.execute(text(reasons))).all() == [("objection_art21", 1), ("objection_sticker", 2)]

        await downgrade(engine, "0045")
        async with engine.connect() as conn:
            assert (await conn.execute(text(reasons))).all() == [("objection_art21", 3)], "as 0045's code wrote them"

        await migrate(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(text(reasons))).all() == [("objection_art21", 1), ("objection_sticker", 2)]
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def test_0047_marks_existing_suppressions_unrecorded_and_goes_back(pg_server):
    """A row older than 0047 may have had other writers: it gets ``unrecorded`` beside its label, so lifting one
    reason never lifts it; a pause's own row had no other source. Downgrade drops the columns, the rows stay."""
    url = await pg_server.create_database("consent_migration_0047")
    engine = create_async_engine(url)
    rows = """
        INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason, until)
        VALUES (gen_random_uuid(), :ws, '\\x01', 1, 'print', 'all_marketing', NULL, 'objection_art21', NULL),
               (gen_random_uuid(), :ws, '\\x02', 1, 'email', 'all', NULL, 'erasure', NULL),
               (gen_random_uuid(), :ws, '\\x03', 1, 'email', 'all_marketing', NULL, 'paused', now() + interval '1 day')
    """
    kept = "SELECT encode(key, 'hex'), reason FROM suppressions ORDER BY key"
    try:
        ws = await _workspace_with_rows_at(engine, "0046", rows)
        await migrate(engine, "0047")
        async with engine.connect() as conn:
            marked = (
                await conn.execute(
                    text("SELECT encode(key, 'hex'), reasons, paused_until FROM suppressions ORDER BY key")
                )
            ).all()
        assert marked == [
            ("01", ["objection_art21", "unrecorded"], None),
            ("02", ["erasure", "unrecorded"], None),
            ("03", ["paused"], None),
        ]
        async with engine.begin() as conn:  # a writer that does not name its source
            await conn.execute(
                text(
                    "INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason) "
                    "VALUES (gen_random_uuid(), :ws, '\\x04', 1, 'sms', 'all_marketing', NULL, 'unsubscribe')"
                ),
                {"ws": ws},
            )
            assert (await conn.execute(text("SELECT reasons FROM suppressions WHERE key = '\\x04'"))).scalar_one() == [
                "unrecorded"
            ], "a row no withdrawal lifts"
            await conn.execute(text("DELETE FROM suppressions WHERE key = '\\x04'"))
        with pytest.raises(IntegrityError, match="ck_suppressions_reasons_known"):
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE suppressions SET reasons = '{objection_art21,whatever}'"))

        await downgrade(engine, "0046")
        async with engine.connect() as conn:
            columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("suppressions")})
            back = (await conn.execute(text(kept))).all()
        assert not {"reasons", "paused_until"} & columns
        assert back == [("01", "objection_art21"), ("02", "erasure"), ("03", "paused")]
        await migrate(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM suppressions"))).scalar_one() == 3
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def test_0047_gives_up_behind_a_long_reader_instead_of_queueing_every_read_of_suppressions(pg_server):
    """Hostile review: 0047's ALTER TABLE waited without end for the ACCESS EXCLUSIVE lock behind a long open read of
    ``suppressions`` (an export), and every send gate's and eligibility read queued behind it. With 0045's
    ``lock_timeout`` it fails after 5 s with that error (not one of the advisory unlock in the aborted transaction),
    having changed nothing; the reads go on, and it runs once the reader is done."""
    url = await pg_server.create_database("consent_migration_0047_lock")
    engine = create_async_engine(url)
    try:
        await migrate(engine, "0046")
        reader = await engine.connect()
        await reader.execute(text("BEGIN"))
        await reader.execute(text("SELECT count(*) FROM suppressions"))  # holds ACCESS SHARE to its end
        started = asyncio.get_running_loop().time()
        with pytest.raises(DBAPIError, match="lock timeout"):
            await asyncio.wait_for(migrate(engine, "0047"), timeout=30)
        assert asyncio.get_running_loop().time() - started < 15
        async with engine.connect() as gate:
            await gate.execute(text("SET statement_timeout = '2s'"))
            await gate.execute(text("SELECT 1 FROM suppressions WHERE key = '\\x01'"))  # not queued
            assert (await gate.execute(text("SELECT version_num FROM alembic_version"))).scalar_one() == "0046"
        await reader.rollback()
        await reader.close()
        await migrate(engine, "0047")
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one() == "0047"
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)


async def test_0049_merges_a_row_per_latency_into_one_histogram_per_key_and_splits_it_back(pg_server):
    """The rows of one key (its latencies, and a ``sent`` without one) become one row whose ``n`` counts them all and
    whose ``latencies`` count the timed ones; other keys and outcomes keep their rows; downgrade gives the rows back."""
    url = await pg_server.create_database("consent_migration_0049")
    engine = create_async_engine(url)
    columns = "workspace_id, {at}, channel, provider, purpose_id, outcome, latency_ms, campaign, n"
    values = """
            (:ws, '2026-11-02 00:00+00', 'sms', 'twilio', NULL, 'sent', 120, 'spring', 3),
            (:ws, '2026-11-02 00:00+00', 'sms', 'twilio', NULL, 'sent', 4500, 'spring', 1),
            (:ws, '2026-11-02 00:00+00', 'sms', 'twilio', NULL, 'sent', NULL, 'spring', 2),
            (:ws, '2026-11-02 00:00+00', 'sms', 'twilio', NULL, 'sent', 120, NULL, 5),
            (:ws, '2026-11-02 00:00+00', 'sms', 'twilio', NULL, 'delivered', NULL, 'spring', 4),
            (:ws, '2026-11-03 00:00+00', 'email', NULL, NULL, 'opt_out', NULL, 'spring', 1)
    """
    rows = (
        f"WITH hourly AS (INSERT INTO report_message_counts ({columns.format(at='hour')}) VALUES {values})"  # noqa: S608
        f" INSERT INTO report_message_daily ({columns.format(at='day')}) VALUES {values}"
    )
    before = [
        ("2026-11-02", "sms", "delivered", None, "spring", 4),
        ("2026-11-02", "sms", "sent", 120, None, 5),
        ("2026-11-02", "sms", "sent", 120, "spring", 3),
        ("2026-11-02", "sms", "sent", 4500, "spring", 1),
        ("2026-11-02", "sms", "sent", None, "spring", 2),
        ("2026-11-03", "email", "opt_out", None, "spring", 1),
    ]
    try:
        await _workspace_with_rows_at(engine, "0048", rows)
        await migrate(engine, "0049")
        for table, at in (("report_message_counts", "hour"), ("report_message_daily", "day")):
            async with engine.connect() as conn:
                merged = (
                    await conn.execute(
                        text(
                            f"SELECT to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD'), channel, outcome, campaign, n,"  # noqa: S608
                            f" latencies FROM {table} ORDER BY 1, 2, 3, 4"
                        )
                    )
                ).all()
            assert merged == [
                ("2026-11-02", "sms", "delivered", "spring", 4, None),
                ("2026-11-02", "sms", "sent", "spring", 6, {"120": 3, "4500": 1}),
                ("2026-11-02", "sms", "sent", None, 5, {"120": 5}),
                ("2026-11-03", "email", "opt_out", "spring", 1, None),
            ], table
        await downgrade(engine, "0048")
        for table, at in (("report_message_counts", "hour"), ("report_message_daily", "day")):
            async with engine.connect() as conn:
                back = (
                    await conn.execute(
                        text(
                            f"SELECT to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD'), channel, outcome, latency_ms,"  # noqa: S608
                            f" campaign, n FROM {table} ORDER BY 1, 2, 3, 4, 5"
                        )
                    )
                ).all()
            assert sorted(back, key=repr) == sorted(before, key=repr), table
        await migrate(engine)
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)
