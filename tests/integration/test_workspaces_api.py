"""Workspaces by API (issue 19 item 4): the operator key, its boundary, export and deletion."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from sqlalchemy import text

from app.channels.adapters import Adapters
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.messages.dispatcher import DispatchConfig, Dispatcher
from app.workspaces import operator as workspaces_operator
from tests.conftest import TEST_SECRET, consent_cli


@pytest.fixture
async def operator(database) -> dict[str, str]:
    """Headers of an operator key."""
    async with database.sessionmaker() as db_session, db_session.begin():
        _, secret = await workspaces_operator.create_operator_key(db_session, "ops")
    return {"Authorization": f"Bearer {secret}"}


async def _tables(session) -> list[str]:
    rows = await session.execute(
        text(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = 'workspace_id' ORDER BY table_name"
        )
    )
    return [r[0] for r in rows]


async def _counts(session, workspace_id: uuid.UUID) -> dict[str, int]:
    """Rows of the workspace in every table with a workspace_id column, its message events, its workspace row."""
    counts = {}
    for table in await _tables(session):
        query = text(f'SELECT count(*) FROM "{table}" WHERE workspace_id = :ws')  # noqa: S608  # catalogue names
        counts[table] = (await session.execute(query, {"ws": workspace_id})).scalar_one()
    counts["message_events"] = (
        await session.execute(
            text(
                "SELECT count(*) FROM message_events e JOIN messages m ON m.id = e.message_id "
                "WHERE m.workspace_id = :ws"
            ),
            {"ws": workspace_id},
        )
    ).scalar_one()
    counts["workspaces"] = (
        await session.execute(text("SELECT count(*) FROM workspaces WHERE id = :ws"), {"ws": workspace_id})
    ).scalar_one()
    return counts


# --- creating, listing, reading --------------------------------------------------------------------------------


async def test_operator_creates_a_workspace_with_a_first_admin_key(client, operator, session):
    body = {
        "name": "Initech",
        "settings": {"locale": "en", "default_region": "GB", "timezone": "Europe/London", "brand": "Initech"},
        "mail_domains": ["initech.example"],
    }
    response = await client.post("/v1/workspaces", json=body, headers=operator)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "Initech"
    assert created["state"] == "active"
    assert created["mail_domains"] == ["initech.example"]
    admin_key = created["admin_key"]
    assert admin_key["scopes"] == ["admin"]
    assert admin_key["secret"].startswith("csk_")
    stored = (
        await session.execute(
            text("SELECT secret_hash FROM api_keys WHERE id = :id"), {"id": uuid.UUID(admin_key["id"])}
        )
    ).scalar_one()
    assert stored == hashlib.sha256(admin_key["secret"].encode()).digest(), "only the hash is stored"

    tenant_headers = {"Authorization": f"Bearer {admin_key['secret']}"}
    mine = await client.get("/v1/workspace", headers=tenant_headers)
    assert mine.status_code == 200
    assert mine.json()["id"] == created["id"]
    settings = (await client.get("/v1/workspace/settings", headers=tenant_headers)).json()
    assert (settings["locale"], settings["default_region"], settings["brand"]) == ("en", "GB", "Initech")

    one = await client.get(f"/v1/workspaces/{created['id']}", headers=operator)
    assert one.status_code == 200
    assert one.json()["name"] == "Initech"
    assert "admin_key" not in one.json()
    missing = await client.get(f"/v1/workspaces/{uuid.uuid4()}", headers=operator)
    assert missing.status_code == 404
    assert missing.json()["code"] == "workspace_not_found"


async def test_listing_pages_in_id_order(client, operator, tenant, other_tenant):
    for name in ("A", "B", "C"):
        assert (await client.post("/v1/workspaces", json={"name": name}, headers=operator)).status_code == 201
    everything = (await client.get("/v1/workspaces?limit=1000", headers=operator)).json()
    ids = [w["id"] for w in everything]
    assert ids == sorted(ids, key=uuid.UUID)
    assert {str(tenant.id), str(other_tenant.id)} <= set(ids)
    paged: list[str] = []
    after = None
    while True:
        query = "?limit=2" + (f"&after={after}" if after else "")
        page = (await client.get(f"/v1/workspaces{query}", headers=operator)).json()
        if not page:
            break
        assert len(page) <= 2
        paged += [w["id"] for w in page]
        after = page[-1]["id"]
    assert paged == ids
    assert (await client.get("/v1/workspaces?limit=0", headers=operator)).status_code == 400
    assert (await client.get("/v1/workspaces?after=nope", headers=operator)).status_code == 400


async def test_creation_is_validated_like_the_settings_and_a_refusal_leaves_no_workspace(client, operator):
    before = len((await client.get("/v1/workspaces?limit=1000", headers=operator)).json())
    cases = [
        ({"name": ""}, 422),
        ({"name": "x" * 201}, 422),
        ({"name": "Acme", "colour": "red"}, 422),
        ({"name": "Acme", "settings": {"timezone": "Mars/Olympus"}}, 422),
        ({"name": "Acme", "mail_domains": ["not a domain"]}, 422),
        (
            {
                "name": "Acme",
                "mail_domains": ["acme.example"],
                "settings": {"email": {"from_address": "x@evil.example"}},
            },
            422,
        ),
    ]
    for body, status in cases:
        response = await client.post("/v1/workspaces", json=body, headers=operator)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert len((await client.get("/v1/workspaces?limit=1000", headers=operator)).json()) == before


# --- the boundary between operator and tenant keys -------------------------------------------------------------


async def test_a_tenant_admin_key_cannot_call_the_operator_endpoints(client, admin, tenant):
    calls = [
        ("POST", "/v1/workspaces", {"name": "Mine"}),
        ("GET", "/v1/workspaces", None),
        ("GET", f"/v1/workspaces/{tenant.id}", None),
        ("POST", f"/v1/workspaces/{tenant.id}/export", None),
        ("DELETE", f"/v1/workspaces/{tenant.id}?force=true", None),
    ]
    for method, path, body in calls:
        response = await client.request(method, path, json=body, headers=admin)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "insufficient_scope"
        assert response.json()["required_scope"] == "operator"
    assert (await client.get("/v1/workspace", headers=admin)).status_code == 200, "the workspace is still there"


async def test_an_operator_key_reads_and_writes_no_tenant_data(client, operator, ledger):
    await ledger.purpose("newsletter")
    await ledger.point("email", "jane@example.com", external_id="jane")
    calls = [
        ("GET", "/v1/eligibility?contact=jane&channel=email&purpose=newsletter", None),  # the fast path
        ("GET", "/v1/eligibility?contact=jane&channel=email&purpose=newsletter&at=2026-01-01T00:00:00Z", None),
        ("GET", "/v1/contacts/jane", None),
        ("GET", "/v1/contacts/jane/events", None),
        ("POST", "/v1/messages", {"contact": "jane", "purpose": "newsletter", "route": ["email"], "content": {}}),
        ("GET", "/v1/audit/events", None),
        ("GET", "/v1/audit/verify", None),
        ("GET", "/v1/audiences?purpose=newsletter&channel=email", None),
        ("GET", "/v1/workspace", None),
        ("GET", "/v1/workspace/settings", None),
        ("GET", "/v1/api-keys", None),
        ("POST", "/v1/api-keys", {"name": "x", "scopes": ["admin"]}),
        ("GET", "/v1/purposes", None),
        ("POST", "/v1/withdrawals", {"contact": "jane", "channel": "all", "purpose": "all"}),
    ]
    for method, path, body in calls:
        response = await client.request(method, path, json=body, headers=operator)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "operator_key_not_allowed"
    # the Idempotency-Key path authenticates before the route's guard: refused there too, nothing claimed
    again = await client.post(
        "/v1/api-keys", json={"name": "x", "scopes": ["admin"]}, headers={**operator, "Idempotency-Key": "k1"}
    )
    assert again.status_code == 403
    assert again.json()["code"] == "operator_key_not_allowed"


async def test_no_tenant_key_can_carry_the_operator_scope(client, admin):
    response = await client.post("/v1/api-keys", json={"name": "x", "scopes": ["operator"]}, headers=admin)
    assert response.status_code == 422
    assert response.json()["code"] == "operator_scope_not_allowed"


async def test_a_revoked_operator_key_is_refused(client, app, database, operator):
    async with database.sessionmaker() as db_session, db_session.begin():
        key_id = (await db_session.execute(text("SELECT id FROM operator_keys"))).scalar_one()
        await workspaces_operator.revoke_operator_key(db_session, key_id)
    app.state.key_cache.clear()  # as a revocation in this process does; others stop within the cache's 5 s
    assert (await client.get("/v1/workspaces", headers=operator)).status_code == 401


# --- export and deletion ---------------------------------------------------------------------------------------


async def _populate(client, tenant, ledger, database, settings, app) -> dict:
    """A workspace with purposes, notices, contacts, consents and events, a suppression, a sent message (with its
    events and dev outbox mail), a webhook subscription, an idempotency key, and an outbox file of its own."""
    admin = await tenant.key(Scope.ADMIN)
    newsletter = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "jane@example.com", external_id="jane")
    other = await ledger.point("email", "max@example.com", external_id="max")
    await ledger.apply(mail, newsletter.id, "signup", "confirm")
    await ledger.apply(other, newsletter.id, "signup", "confirm", "unsubscribe")
    notice = await client.post(
        "/v1/notices",
        json={
            "purpose": "newsletter",
            "channels": ["email"],
            "locale": "de",
            "text": "Newsletter, jederzeit abbestellbar.",
        },
        headers=admin,
    )
    assert notice.status_code == 201, notice.text
    objection = await client.post(
        "/v1/objections",
        json={"contact": "max", "scope": "all_marketing", "kind": "art21", "evidence": {}},
        headers=admin,
    )
    assert objection.status_code == 201, objection.text
    async with database.sessionmaker() as db_session, db_session.begin():  # a purpose-scoped suppression too
        await db_session.execute(
            text(
                "INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason) "
                "VALUES (gen_random_uuid(), :ws, :key, 1, 'email', 'purpose', :purpose, 'unsubscribe')"
            ),
            {"ws": tenant.id, "key": b"k" * 32, "purpose": newsletter.id},
        )
    await ledger.purpose("orders", kind="transactional")  # a purpose no suppression names
    hook = await client.post(
        "/v1/webhook-subscriptions",
        json={"url": "https://93.184.216.34/consent", "events": ["consent.changed"]},
        headers=admin,
    )
    assert hook.status_code in {200, 201}, hook.text
    sent = await client.post(
        "/v1/messages",
        json={
            "contact": "jane",
            "purpose": "newsletter",
            "route": ["email"],
            "content": {"email": {"subject": "Herbst", "text": "Die Herbstkollektion ist da."}},
        },
        headers={**admin, "Idempotency-Key": "send-1"},
    )
    assert sent.status_code in {200, 201, 202}, sent.text
    adapters = Adapters(settings, Keys(TEST_SECRET), app.state.mail_sender)
    try:
        dispatcher = Dispatcher(database, Keys(TEST_SECRET), settings, adapters, config=DispatchConfig(concurrency=1))
        assert await dispatcher.run_once() == 1
    finally:
        await adapters.aclose()
    folder = settings.data_dir / "outbox" / str(tenant.id) / "sms"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{uuid.uuid4()}.json").write_text("{}")
    return {"admin": admin}


async def test_deletion_needs_a_current_export_and_leaves_no_row_of_the_workspace(  # noqa: PLR0915  # one story
    client, operator, tenant, other_tenant, ledger, database, session, settings, app
):
    world = await _populate(client, tenant, ledger, database, settings, app)
    from tests.conftest import Ledger  # noqa: PLC0415

    theirs = Ledger(database, other_tenant.id)
    their_purpose = await theirs.purpose("newsletter")
    their_point = await theirs.point("email", "jane@example.com", external_id="jane")
    await theirs.apply(their_point, their_purpose.id, "signup", "confirm", "unsubscribe")
    their_folder = settings.data_dir / "outbox" / str(other_tenant.id) / "sms"
    their_folder.mkdir(parents=True, exist_ok=True)
    (their_folder / "theirs.json").write_text("{}")

    before = await _counts(session, tenant.id)
    for table in (
        "consent_events",
        "consents",
        "contacts",
        "contact_points",
        "suppressions",
        "messages",
        "deliveries",
        "notices",
        "purposes",
        "api_keys",
        "idempotency_keys",
        "webhook_subscriptions",
    ):
        assert before[table] > 0, table
    assert before["message_events"] > 0
    assert list((settings.data_dir / "outbox" / "email").glob("*.eml")), "the dev outbox has the mail"
    theirs_before = await _counts(session, other_tenant.id)

    refused = await client.delete(f"/v1/workspaces/{tenant.id}", headers=operator)
    assert refused.status_code == 409
    assert refused.json()["code"] == "export_required"

    export = await client.post(f"/v1/workspaces/{tenant.id}/export", headers=operator)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert lines[0]["type"] == "workspace"
    assert lines[0]["id"] == str(tenant.id)
    assert lines[-1]["type"] == "end"
    rows = [line for line in lines if line["type"] == "row"]
    assert lines[-1]["rows"] == len(rows)
    exported_tables = {row["table"] for row in rows}
    assert {
        "consent_events",
        "contacts",
        "contact_points",
        "consents",
        "suppressions",
        "messages",
        "message_events",
    } <= exported_tables
    assert sum(1 for r in rows if r["table"] == "consent_events") == before["consent_events"]
    assert all("secret_hash" not in r["row"] for r in rows if r["table"] == "api_keys")
    for row in rows:  # no credential or capability travels in the file (hostile review)
        assert not {"token_hash", "secret_sealed", "id_hash", "secret_hash"} & set(row["row"]), row["table"]
    assert not {"idempotency_keys", "console_links", "console_sessions"} & exported_tables
    assert all(r["row"]["workspace_id"] == str(tenant.id) for r in rows if "workspace_id" in r["row"])
    assert "jane@example.com" in export.text
    got = (await client.get(f"/v1/workspaces/{tenant.id}", headers=operator)).json()
    assert got["exported_at"] is not None

    # the ledger grew since: the export no longer holds everything
    mail = await ledger.point("email", "erika@example.com", external_id="erika")
    newsletter_id = (
        await session.execute(
            text("SELECT id FROM purposes WHERE workspace_id = :ws AND key = 'newsletter'"), {"ws": tenant.id}
        )
    ).scalar_one()
    await ledger.apply(mail, newsletter_id, "signup")
    outdated = await client.delete(f"/v1/workspaces/{tenant.id}", headers=operator)
    assert outdated.status_code == 409
    assert outdated.json()["code"] == "export_outdated"
    assert (await client.post(f"/v1/workspaces/{tenant.id}/export", headers=operator)).status_code == 200

    deleted = await client.delete(f"/v1/workspaces/{tenant.id}", headers=operator)
    assert deleted.status_code == 200, deleted.text
    report = deleted.json()
    assert report["state"] == "deleted"
    assert report["forced"] is False
    assert report["deleted"]["consent_events"] == before["consent_events"] + 1
    assert report["outbox_files"] >= 2  # the delivery's mail and the workspace's own file

    after = await _counts(session, tenant.id)
    assert after == dict.fromkeys(after, 0), {t: n for t, n in after.items() if n}
    record = (
        await session.execute(text("SELECT report FROM workspace_deletions WHERE id = :ws"), {"ws": tenant.id})
    ).scalar_one()
    assert record["deleted"] == report["deleted"]
    assert "jane" not in json.dumps(record), "the record holds no personal data"
    assert not (settings.data_dir / "outbox" / str(tenant.id)).exists()
    assert not list((settings.data_dir / "outbox" / "email").glob("*.eml"))

    # other workspaces untouched, rows and files
    assert await _counts(session, other_tenant.id) == theirs_before
    assert (their_folder / "theirs.json").exists()
    assert (await client.get("/v1/audit/verify", headers=await other_tenant.key(Scope.AUDIT_READ))).json()["valid"]

    # the keys are gone; a repeat answers the same deletion; the workspace is unknown now
    assert (await client.get("/v1/workspace", headers=world["admin"])).status_code == 401
    late = settings.data_dir / "outbox" / str(tenant.id) / "sms"  # a send in flight wrote its file after all
    late.mkdir(parents=True)
    (late / f"{uuid.uuid4()}.json").write_text("{}")
    repeat = await client.delete(f"/v1/workspaces/{tenant.id}", headers=operator)
    assert repeat.status_code == 200
    assert repeat.json()["outbox_files"] == 1
    assert not (settings.data_dir / "outbox" / str(tenant.id)).exists()
    assert repeat.json()["state"] == "deleted"
    assert repeat.json()["deleted"] == {}
    assert repeat.json()["deleted_at"] == report["deleted_at"]
    assert (await client.get(f"/v1/workspaces/{tenant.id}", headers=operator)).status_code == 404
    assert (await client.delete(f"/v1/workspaces/{uuid.uuid4()}", headers=operator)).status_code == 404


async def test_keep_suppressions_leaves_a_tombstone_holding_only_the_suppressions(
    client, operator, tenant, ledger, database, session, settings, app
):
    await _populate(client, tenant, ledger, database, settings, app)
    before = await _counts(session, tenant.id)
    assert before["suppressions"] > 0
    scoped = (
        await session.execute(
            text("SELECT count(DISTINCT purpose_id) FROM suppressions WHERE workspace_id = :ws"), {"ws": tenant.id}
        )
    ).scalar_one()

    kept = await client.delete(f"/v1/workspaces/{tenant.id}?keep_suppressions=true&force=true", headers=operator)
    assert kept.status_code == 200, kept.text
    assert kept.json()["state"] == "tombstone"
    assert kept.json()["kept"] == {"suppressions": before["suppressions"], "purposes": scoped}
    after = await _counts(session, tenant.id)
    left = {table: n for table, n in after.items() if n}
    assert left == {"suppressions": before["suppressions"], "purposes": scoped, "workspaces": 1}, left
    row = (
        await session.execute(
            text("SELECT settings, mail_domains, deleted_at FROM workspaces WHERE id = :ws"), {"ws": tenant.id}
        )
    ).one()
    assert row.settings == {}
    assert row.mail_domains is None
    assert row.deleted_at is not None
    tombstone = (await client.get(f"/v1/workspaces/{tenant.id}", headers=operator)).json()
    assert tombstone["state"] == "tombstone"
    refused = await client.post(f"/v1/workspaces/{tenant.id}/export", headers=operator)
    assert refused.status_code == 409
    assert refused.json()["code"] == "workspace_deleted"

    again = await client.delete(f"/v1/workspaces/{tenant.id}?keep_suppressions=true", headers=operator)
    assert again.status_code == 200
    assert again.json()["state"] == "tombstone"
    assert await _counts(session, tenant.id) == after

    # a late writer (a key still in another process's cache) added a row: a repeat sweeps it
    await ledger.point("email", "late@example.com", external_id="late")
    swept = await client.delete(f"/v1/workspaces/{tenant.id}?keep_suppressions=true", headers=operator)
    assert swept.status_code == 200
    assert swept.json()["deleted"] == {"contact_points": 1, "contacts": 1}
    assert await _counts(session, tenant.id) == after

    # finishing the deletion needs no export (nothing but the suppressions is left to export)
    final = await client.delete(f"/v1/workspaces/{tenant.id}", headers=operator)
    assert final.status_code == 200, final.text
    assert final.json()["state"] == "deleted"
    remaining = await _counts(session, tenant.id)
    assert remaining == dict.fromkeys(remaining, 0)


async def test_the_ledger_stays_append_only_outside_a_workspace_deletion(session, tenant, ledger):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com")
    await ledger.apply(point, purpose.id, "signup")
    # the setting alone does not open the ledger: the workspace must be marked deleted too
    await session.execute(text("SELECT set_config('consent.deleting_workspace', :ws, true)"), {"ws": str(tenant.id)})
    with pytest.raises(Exception, match="append-only"):
        async with session.begin_nested():
            await session.execute(text("DELETE FROM consent_events WHERE workspace_id = :ws"), {"ws": tenant.id})


# --- the CLI ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_cli_creates_and_revokes_an_operator_key(pg_server):
    import asyncpg  # noqa: PLC0415
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from app.lib.auth import OperatorPrincipal  # noqa: PLC0415
    from app.workspaces.repository import find_active_key  # noqa: PLC0415

    url = await pg_server.create_database("consent_cli_operator", migrated=True)
    run = consent_cli(url)
    try:
        assert run("migrate").returncode == 0
        made = run("apikey", "create", "--operator", "--name", "ops", "--json")
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout.strip().splitlines()[-1])
        assert key["scopes"] == ["operator"]
        assert key["secret"].startswith("csk_")
        assert key["secret"] not in made.stderr

        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            found = await find_active_key(conn, hashlib.sha256(key["secret"].encode()).digest())
            assert found == OperatorPrincipal(operator_key_id=uuid.UUID(key["id"]))
            assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0, "no workspace's key was made"
        finally:
            await conn.close()

        workspace = json.loads(run("workspace", "create", "Acme", "--json").stdout.strip().splitlines()[-1])
        both = run("apikey", "create", "--operator", "--workspace", workspace["id"])
        assert both.returncode != 0
        assert "--operator takes neither" in both.stderr
        tenant_operator = run("apikey", "create", "--workspace", workspace["id"], "--scopes", "operator")
        assert tenant_operator.returncode != 0
        assert "operator" in tenant_operator.stderr
        neither = run("apikey", "create", "--name", "x")
        assert neither.returncode != 0

        revoked = run("apikey", "revoke", "--operator", key["id"])
        assert revoked.returncode == 0, revoked.stderr
        conn = await asyncpg.connect(dsn)
        try:
            assert await find_active_key(conn, hashlib.sha256(key["secret"].encode()).digest()) is None
        finally:
            await conn.close()
    finally:
        await pg_server.drop_database(url)


# --- concurrency (committed data, separate connections) --------------------------------------------------------


async def test_deletion_under_concurrent_ledger_writes_leaves_nothing(engine, settings):
    """Writers keep appending to the workspace's ledger from their own connections while the operator deletes it:
    the deletion goes through (retrying a deadlock if one comes), every writer either committed before (its rows
    are deleted) or fails, and no row of the workspace is left."""
    import asyncio  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    from app.lib.db import Database  # noqa: PLC0415
    from app.main import create_app  # noqa: PLC0415
    from tests.conftest import Ledger, running  # noqa: PLC0415

    database = Database.from_url(engine.url.render_as_string(hide_password=False), pool_size=6)
    try:
        async with database.sessionmaker() as db_session, db_session.begin():
            _, secret = await workspaces_operator.create_operator_key(db_session, "ops")
        operator_headers = {"Authorization": f"Bearer {secret}"}
        application = create_app(settings, database=database)
        async with running(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as client:
                created = await client.post("/v1/workspaces", json={"name": "Doomed"}, headers=operator_headers)
                workspace_id = uuid.UUID(created.json()["id"])
                ledger = Ledger(database, workspace_id)
                purpose = await ledger.purpose("newsletter")
                points = [await ledger.point("sms", f"+491510000{n:04d}") for n in range(4)]
                stop = asyncio.Event()
                outcomes = {"written": 0, "refused": 0}

                async def write(point) -> None:
                    while not stop.is_set():
                        try:
                            await ledger.apply(point, purpose.id, "stop_word", "start_word")
                            outcomes["written"] += 1
                        except Exception:  # noqa: BLE001  # the workspace went: refused, whatever the error
                            outcomes["refused"] += 1
                            await asyncio.sleep(0.01)

                writers = [asyncio.create_task(write(p)) for p in points]
                await asyncio.sleep(0.3)
                deleted = await client.delete(f"/v1/workspaces/{workspace_id}?force=true", headers=operator_headers)
                await asyncio.sleep(0.2)
                stop.set()
                await asyncio.gather(*writers)
                assert deleted.status_code == 200, deleted.text
                assert outcomes["written"] > 0
                assert outcomes["refused"] > 0, "writers after the deletion must fail"
                async with database.sessionmaker() as db_session:
                    left = await _counts(db_session, workspace_id)
                assert left == dict.fromkeys(left, 0), {t: n for t, n in left.items() if n}
    finally:
        await database.dispose()


async def test_a_key_of_a_workspace_being_deleted_stops_at_once(client, tenant, session):
    """Hostile review: keys worked until their rows were swept, so late writes could land in a tombstone."""
    key = await tenant.key(Scope.CONSENTS_WRITE)
    await session.execute(text("UPDATE workspaces SET deleted_at = now() WHERE id = :ws"), {"ws": tenant.id})
    await session.commit()
    response = await client.get("/v1/purposes", headers=key)
    assert response.status_code == 401


async def test_the_deletion_names_the_export_taken_before_with_suppressions_kept_and_after(
    client, operator, tenant, ledger
):
    """Newcomer review of 2026-12-05: a tombstone forgot the export, so both answers and the lasting record said
    exported_at null."""
    await ledger.point("email", "jane@example.com", external_id="jane")
    assert (await client.post(f"/v1/workspaces/{tenant.id}/export", headers=operator)).status_code == 200
    kept = await client.delete(f"/v1/workspaces/{tenant.id}?keep_suppressions=true", headers=operator)
    assert kept.status_code == 200, kept.text
    assert (kept.json()["state"], kept.json()["forced"]) == ("tombstone", False)
    assert kept.json()["exported_at"] is not None
    gone = await client.delete(f"/v1/workspaces/{tenant.id}", headers=operator)
    assert gone.status_code == 200, gone.text
    assert gone.json()["state"] == "deleted"
    assert gone.json()["exported_at"] == kept.json()["exported_at"]
