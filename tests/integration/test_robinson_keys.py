"""The Robinson list's keys in a table of their own (migration 0042): every reader of suppressions reads them too.

A key only in ``robinson_keys`` must stop print marketing wherever a suppression does: the single and batch
eligibility answers, the audience export, the facts the dispatcher and the message service decide on; only in its
own workspace; kept by an erasure and by a workspace deletion that keeps suppressions, gone with a full deletion.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from app.domain.gate import decide_point
from app.domain.model import PurposeKind, SuppressionScope
from app.eligibility import repository as facts_repository
from app.ledger import repository as ledger_repository
from app.ledger.models import RobinsonKey, Suppression
from app.lib.auth import Scope
from app.workspaces import operator as workspaces_operator
from tests.integration.test_robinson import LIST, print_point, upload


@pytest.fixture
async def letters(ledger):
    return await ledger.purpose("letters")


@pytest.fixture
async def anna(ledger):
    return await print_point(ledger, "Anna Korn", "Lindenweg 3", "10115", "Berlin", "crm-anna")


async def list_key(database, workspace_id, point) -> None:
    """Put the print address's person key on the workspace's Robinson list, and nowhere else."""
    async with database.sessionmaker() as db_session, db_session.begin():
        db_session.add(RobinsonKey(workspace_id=workspace_id, key=bytes(point.suppression_keys[0]), key_version=1))


async def single(client, reader, point):
    params = {"contact": str(point.contact_id), "channel": "print", "purpose": "letters"}
    return (await client.get("/v1/eligibility", params=params, headers=reader)).json()


async def batch(client, reader, point):
    body = {"contacts": [str(point.contact_id)], "channels": ["print"], "purpose": "letters"}
    response = await client.post("/v1/eligibility/batch", json=body, headers=reader)
    assert response.status_code == 200, response.text
    [decision] = response.json()["decisions"]
    return decision


async def audience(client, reader):
    response = await client.get("/v1/audiences", params={"purpose": "letters", "channel": "print"}, headers=reader)
    assert response.status_code == 200, response.text
    return {json.loads(line)["external_id"] for line in response.text.splitlines()}


async def send_time_facts(database, workspace_id, point, purpose_id):
    """The facts the dispatcher's gate (and the message service) decide a print delivery on."""
    async with database.sessionmaker() as db_session, db_session.begin():
        rows = await facts_repository.point_facts(db_session, workspace_id, [point.contact_id], ["print"], purpose_id)
    [(_, facts)] = rows
    return facts


async def test_a_key_only_in_robinson_keys_blocks_print_everywhere_the_gate_reads(
    client, tenant, ledger, database, letters, anna
):
    other = await print_point(ledger, "Bert Blau", "Lindenweg 5", "10115", "Berlin", "crm-bert")
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    assert (await single(client, reader, anna))["eligible"] is True
    assert await audience(client, reader) == {"crm-anna", "crm-bert"}

    await list_key(database, tenant.id, anna)

    decision = await single(client, reader, anna)
    assert (decision["eligible"], decision["reason"]) == (False, "suppressed")
    decision = await batch(client, reader, anna)
    assert (decision["eligible"], decision["reason"]) == (False, "suppressed")
    assert await audience(client, reader) == {"crm-bert"}
    facts = await send_time_facts(database, tenant.id, anna, letters.id)
    assert facts.suppression_scopes == {SuppressionScope.ALL_MARKETING}
    decided = decide_point(facts, PurposeKind.MARKETING, now=datetime.now(UTC), window=None, default_timezone="UTC")
    assert not decided.eligible
    assert (await single(client, reader, other))["eligible"] is True, "a neighbour is not on the list"


async def test_a_robinson_key_stops_marketing_only(client, tenant, ledger, database, anna):
    await ledger.purpose("invoices", kind="transactional")
    await list_key(database, tenant.id, anna)
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    params = {"contact": str(anna.contact_id), "channel": "print", "purpose": "invoices"}
    assert (await client.get("/v1/eligibility", params=params, headers=reader)).json()["eligible"] is True
    response = await client.get("/v1/audiences", params={"purpose": "invoices", "channel": "print"}, headers=reader)
    assert {json.loads(line)["external_id"] for line in response.text.splitlines()} == {"crm-anna"}


async def test_another_workspaces_list_blocks_nothing_here(
    client, tenant, other_tenant, ledger, database, letters, anna
):
    await list_key(database, other_tenant.id, anna)  # the same key, on the other workspace's list
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    assert (await single(client, reader, anna))["eligible"] is True
    assert (await batch(client, reader, anna))["eligible"] is True
    assert await audience(client, reader) == {"crm-anna"}
    facts = await send_time_facts(database, tenant.id, anna, letters.id)
    assert facts.suppression_scopes == frozenset()


async def test_an_import_writes_robinson_keys_of_its_own_workspace_only(client, tenant, other_tenant, session):
    await upload(client, tenant, LIST)
    listed = await session.execute(select(RobinsonKey.workspace_id, func.count()).group_by(RobinsonKey.workspace_id))
    assert dict(listed.all()) == {tenant.id: 3}
    assert await session.scalar(select(func.count()).select_from(Suppression)) == 0


async def test_importing_again_is_idempotent_and_rows_left_out_stay_listed(client, tenant, ledger, session, letters):
    first = (await upload(client, tenant, LIST)).json()
    assert first["new_entries"] == 3
    again = (await upload(client, tenant, LIST)).json()
    assert (again["new_entries"], again["matched"]) == (0, 0)
    # a later list without Hans and Jürgen: their entries stay (an import adds, it never removes)
    shorter = "\n".join(line for line in LIST.splitlines() if "Hans" not in line and "Jürgen" not in line) + "\n"
    third = (await upload(client, tenant, shorter)).json()
    assert third["new_entries"] == 0
    count = select(func.count()).select_from(RobinsonKey).where(RobinsonKey.workspace_id == tenant.id)
    assert await session.scalar(count) == 3
    hans = await print_point(ledger, "Hans Müller", "Hauptstraße 12a", "10115", "Berlin", "crm-hans-later")
    assert (await single(client, await tenant.key(Scope.ELIGIBILITY_READ), hans))["reason"] == "suppressed"


async def test_a_key_already_suppressed_for_good_is_not_new_and_a_pause_becomes_the_listing(
    client, tenant, ledger, database, session, anna
):
    """As when the entries were rows of ``suppressions``: an equal permanent row is kept, a pause is replaced."""
    erika = await print_point(ledger, "Erika Musterfrau", "Hauptstraße 12a", "10115", "Berlin", "crm-erika")
    hans = await print_point(ledger, "Hans Müller", "Hauptstraße 12a", "10115", "Berlin", "crm-hans")
    rows = [
        {
            "workspace_id": tenant.id,
            "key": bytes(point.suppression_keys[0]),
            "key_version": 1,
            "channel": "print",
            "scope": "all_marketing",
            "purpose_id": None,
            "reason": reason,
        }
        for point, reason in ((erika, "objection_art21"), (hans, "paused"))
    ]
    async with database.sessionmaker() as db_session, db_session.begin():
        await ledger_repository.add_suppressions(db_session, rows[:1])
        await ledger_repository.pause_keys(db_session, rows[1:], until=_far())
    report = (await upload(client, tenant, LIST)).json()
    assert report["new_entries"] == 2, "Hans (paused) and Jürgen; Erika was suppressed for good already"
    reasons = await session.execute(
        select(Suppression.reason, Suppression.until).where(Suppression.workspace_id == tenant.id)
    )
    assert reasons.all() == [("objection_art21", None)], "the pause is gone, the objection stays"
    # and a pause asked for a listed key adds nothing: the listing already stops it for good
    async with database.sessionmaker() as db_session, db_session.begin():
        await ledger_repository.pause_keys(db_session, rows[1:], until=_far())
        await ledger_repository.add_suppressions(db_session, [{**rows[1], "reason": "objection_personal"}])
    assert (
        await session.scalar(select(func.count()).select_from(Suppression).where(Suppression.workspace_id == tenant.id))
        == 1
    )
    _ = anna


def _far():
    return datetime.now(UTC) + timedelta(days=30)


async def test_erasure_keeps_the_robinson_keys_and_counts_them_as_suppressions(client, tenant, database, session, anna):
    await list_key(database, tenant.id, anna)
    admin = await tenant.key(Scope.ADMIN)
    response = await client.delete(f"/v1/contacts/{anna.contact_id}", headers=admin)
    assert response.status_code == 200, response.text
    kept = {k["what"]: k["count"] for k in response.json()["kept"]}
    # the person key is listed (one row, as when it was a row of suppressions); the household key is erased
    assert kept["suppression_keys"] == 1
    assert await session.scalar(select(func.count()).select_from(RobinsonKey)) == 1


async def test_the_access_export_shows_the_listing(client, tenant, database, anna):
    await list_key(database, tenant.id, anna)
    auditor = await tenant.key(Scope.AUDIT_READ)
    response = await client.get(f"/v1/contacts/{anna.contact_id}/export", headers=auditor)
    assert response.status_code == 200, response.text
    [point] = [p for p in response.json()["contact_points"] if p["channel"] == "print"]
    assert [(s["covers"], s["scope"], s["reason"]) for s in point["suppressions"]] == [
        ("address", "all_marketing", "robinson")
    ]


@pytest.mark.parametrize("keep", [True, False], ids=["keep_suppressions", "everything"])
async def test_a_workspace_deletion_treats_robinson_keys_as_suppressions(client, database, tenant, anna, session, keep):
    await list_key(database, tenant.id, anna)
    async with database.sessionmaker() as db_session, db_session.begin():
        _, secret = await workspaces_operator.create_operator_key(db_session, "ops")
    operator = {"Authorization": f"Bearer {secret}"}
    response = await client.delete(
        f"/v1/workspaces/{tenant.id}",
        params={"keep_suppressions": str(keep).lower(), "force": "true"},
        headers=operator,
    )
    assert response.status_code == 200, response.text
    left = await session.scalar(text("SELECT count(*) FROM robinson_keys WHERE workspace_id = :ws"), {"ws": tenant.id})
    if keep:
        assert response.json()["kept"]["suppressions"] == 1
        assert left == 1
        again = await client.delete(
            f"/v1/workspaces/{tenant.id}", params={"keep_suppressions": "true"}, headers=operator
        )
        assert again.json()["state"] == "tombstone", "nothing beyond the suppressions left: a repeat answers it"
    else:
        assert response.json()["deleted"]["robinson_keys"] == 1
        assert left == 0


async def test_reports_count_robinson_keys_as_print_suppressions(database, tenant, anna):
    from app.reports import repository as reports  # noqa: PLC0415

    await list_key(database, tenant.id, anna)
    now = datetime.now(UTC)
    async with database.sessionmaker() as db_session:
        rows = await reports.suppressions_in_force(db_session, tenant.id, day=now.replace(hour=0, minute=0), now=now)
    assert [(r.channel, r.purpose_id, r.total, r.added) for r in rows] == [("print", None, 1, 1)]


# --- a file read in shares by worker processes -------------------------------------------------------------------

PLAIN = (
    "\ufeffName;Straße;Hausnummer;PLZ;Ort\r\n"  # a BOM, and CRLF line ends
    + "".join(f"Person Nr{n};Weg;{n};10115;Berlin\r\n" for n in range(1, 30))
    + "Otto Normal;Lindenallee;3;1234;Köln\r\n"  # 31: a four-digit postcode is not German
    + "\r\n"  # 32: blank
    + ";Ringstraße;4;50667;Köln\r\n"  # 33: no name
    + '"Weiß; Jürgen";"Sankt-Georg-Platz";7;20099;Hamburg\r\n'  # quoted, on one line
    + "".join(f"Person Nr{n};Weg;{n};10115;Berlin\n" for n in range(30, 60))
    + "Nul\x00 Person;Weg;2;10115;Berlin\n"  # 65
    + "Max Lang;"
    + "Weg" * 100_000  # 66: beyond the line limit
    + ";4;10115;Berlin\n"
    + "Eva Extra;Weg;5;10115;Berlin;DE;more\n"  # 67: more fields than the header
    + "".join(f"Person Nr{n};Weg;{n};10115;Berlin\n" for n in range(60, 90))
    + "Jo Letzt;Weg;6;10115;Berlin"  # 98: no line break at the end
)


@pytest.fixture
def small_shares(monkeypatch):
    """Shares of a few hundred bytes; records whether each import read its file in shares (or fell back)."""
    from app.imports import robinson_split  # noqa: PLC0415

    monkeypatch.setattr(robinson_split, "MIN_SHARE_BYTES", 300)
    outcomes = []
    read_shares = robinson_split.read_shares

    async def recorded(*args, **kwargs):
        try:
            shares = await read_shares(*args, **kwargs)
        except Exception:
            outcomes.append("refused")
            raise
        outcomes.append("shares" if shares is not None else "one process")
        return shares

    monkeypatch.setattr(robinson_split, "read_shares", recorded)
    return outcomes


async def import_file(database, workspace_id, path, workers):
    from app.imports import robinson  # noqa: PLC0415
    from app.lib.keys import Keys  # noqa: PLC0415
    from tests.conftest import TEST_SECRET  # noqa: PLC0415

    async with database.sessionmaker() as db_session, db_session.begin():
        report = await robinson.import_robinson(
            db_session,
            Keys(TEST_SECRET),
            workspace_id,
            path,
            actor=robinson.SYSTEM_IMPORT,
            source="test",
            workers=workers,
        )
        stored = await db_session.scalars(
            select(RobinsonKey.key).where(RobinsonKey.workspace_id == workspace_id).order_by(RobinsonKey.key)
        )
        return report, list(stored)


@pytest.mark.parametrize("workers", [2, 3, 7])
async def test_shares_read_by_workers_give_the_keys_and_report_of_one_process(
    database, tenant, other_tenant, small_shares, tmp_path, workers
):
    path = tmp_path / "list.csv"
    path.write_bytes(PLAIN.encode())
    alone, alone_keys = await import_file(database, tenant.id, path, 1)
    shared, shared_keys = await import_file(database, other_tenant.id, path, workers)
    assert small_shares == ["one process", "shares"]
    assert (alone.rows, alone.accepted, alone.rejected, alone.new_entries) == (96, 91, 5, 91)
    assert [(e.line, e.code) for e in alone.errors] == [
        (31, "invalid_postcode"),
        (33, "name_missing"),
        (65, "nul_character"),
        (66, "line_too_long"),
        (67, "too_many_fields"),
    ]
    assert (shared.rows, shared.accepted, shared.rejected, shared.new_entries) == (96, 91, 5, 91)
    assert shared.errors == alone.errors
    assert shared_keys == alone_keys


async def test_a_quoted_line_break_across_a_share_boundary_is_read_by_one_process(
    database, tenant, other_tenant, small_shares, tmp_path
):
    rows = "".join(f"Person Nr{n};Weg;{n};10115;Berlin\n" for n in range(1, 40))
    body = "Name;Straße;Hausnummer;PLZ;Ort\n" + rows + '"Anna' + " " * 400 + '\nKorn";Weg;1;10115;Berlin\n' + rows
    path = tmp_path / "list.csv"
    path.write_bytes(body.encode())
    alone, alone_keys = await import_file(database, tenant.id, path, 1)
    shared, shared_keys = await import_file(database, other_tenant.id, path, 2)
    assert small_shares == ["one process", "one process"], "the first share ended inside the quoted field"
    assert (
        (shared.rows, shared.accepted, shared.rejected) == (alone.rows, alone.accepted, alone.rejected) == (79, 79, 0)
    )
    assert shared_keys == alone_keys


async def test_a_line_that_is_not_utf8_in_a_later_share_refuses_the_file_at_its_line(
    database, tenant, small_shares, tmp_path
):
    from app.lib.errors import InvalidInput  # noqa: PLC0415

    rows = "".join(f"Person Nr{n};Weg;{n};10115;Berlin\n" for n in range(1, 40)).encode()
    path = tmp_path / "list.csv"
    path.write_bytes(b"Name;Strasse;Hausnummer;PLZ;Ort\n" + rows + b"Bad \xff;Weg;1;10115;Berlin\n" + rows)
    with pytest.raises(InvalidInput, match=r"not UTF-8 \(line 41\)"):
        await import_file(database, tenant.id, path, 3)
    assert small_shares == ["refused"], "by a worker"


async def test_workers_import_nothing_from_the_directory_the_import_runs_in(
    database, tenant, other_tenant, small_shares, tmp_path, monkeypatch
):
    """Hostile review: ``python -m`` put the current directory first on a worker's import path, so a ``msgspec.py``
    in a list's drop folder read the worker's job, peppers included, from its stdin."""
    drop = tmp_path / "downloads"
    drop.mkdir()
    stolen = tmp_path / "stolen"
    thief = f"import pathlib, sys\npathlib.Path({str(stolen)!r}).write_bytes(sys.stdin.buffer.read())\n"
    (drop / "msgspec.py").write_text(thief)
    (drop / "app").mkdir()  # another project's package of the same name
    (drop / "app" / "__init__.py").write_text("raise ImportError('the wrong app')\n")
    path = drop / "list.csv"
    path.write_bytes(PLAIN.encode())
    _, alone_keys = await import_file(database, tenant.id, path, 1)
    monkeypatch.chdir(drop)
    _, shared_keys = await import_file(database, other_tenant.id, path, 2)
    assert not stolen.exists()
    assert small_shares == ["one process", "shares"]
    assert shared_keys == alone_keys


async def test_a_list_whose_file_name_is_not_utf8_is_read_by_the_workers(
    database, tenant, other_tenant, small_shares, tmp_path
):
    """Hostile review: the job could not be encoded for such a name and the import hung for good."""
    path = tmp_path / os.fsdecode(b"liste_m\xe4rz.csv")
    path.write_bytes(PLAIN.encode())
    alone, alone_keys = await asyncio.wait_for(import_file(database, tenant.id, path, 1), 60)
    shared, shared_keys = await asyncio.wait_for(import_file(database, other_tenant.id, path, 2), 60)
    assert small_shares == ["one process", "shares"]
    assert (shared.rows, shared_keys) == (alone.rows, alone_keys)
