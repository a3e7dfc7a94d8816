"""A sender belongs to one workspace (issue 16, finding 20).

With a Twilio account several workspaces share, workspace B could send from A's number, and B's recipients'
STOPs would land in A's ledger. A sender number or Messaging Service is claimed by one workspace (409 for
another); Twilio webhooks are taken only for a sender the workspace in the path holds; a tenant's own mail
``from_address`` is limited to the domains the operator lists for it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import uuid

import pytest
from sqlalchemy import func, select, text
from twilio.request_validator import RequestValidator

from app.ledger.models import ConsentEvent, ContactPoint
from app.lib.auth import Scope
from app.lib.db import Database
from app.lib.errors import InvalidInput
from app.lib.keys import Keys
from app.lib.models import ProviderCallback
from app.settings import MailSettings
from app.twilio.models import InboundMessage
from app.workspaces import service
from app.workspaces.schemas import EmailSettingsIn, WorkspaceSettingsIn
from tests.conftest import run_cli_in_process

PUBLIC = "https://consent.example.com"
ACCOUNT = "AC" + "0123456789abcdef" * 2  # one Twilio account, shared by both workspaces
TOKEN_A = "a" * 32
TOKEN_B = "b" * 32
NUMBER_A = "+4930123456789"
NUMBER_B = "+4940123456789"
SERVICE_A = "MG" + "0123456789abcdef" * 2
PERSON = "+4915123456789"
_sids = itertools.count(1)


def sid() -> str:
    return f"SM{next(_sids):032x}"


async def put_settings(client, headers, *, token, **phone):
    return await client.put(
        "/v1/workspace/settings",
        json={"phone": phone, "twilio": {"account_sid": ACCOUNT, "auth_token": token}},
        headers=headers,
    )


async def post_signed(client, workspace_id, params, *, token, kind="inbound"):
    path = f"/webhooks/twilio/{workspace_id}/{kind}"
    signature = RequestValidator(token).compute_signature(PUBLIC + path, params)
    return await client.post(path, data=params, headers={"X-Twilio-Signature": signature})


async def count(session, model, **where):
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return await session.scalar(query)


@pytest.fixture
async def two_workspaces(client, tenant, other_tenant, admin, ledger):
    """A (Acme) sends from NUMBER_A with Jane opted in; B (Globex) from NUMBER_B; each with its own token."""
    assert (await put_settings(client, admin, token=TOKEN_A, sms_from=NUMBER_A)).status_code == 200
    admin_b = await other_tenant.key(Scope.ADMIN)
    assert (await put_settings(client, admin_b, token=TOKEN_B, sms_from=NUMBER_B)).status_code == 200
    newsletter = await ledger.purpose("newsletter")
    jane = await ledger.point("sms", PERSON, external_id="jane")
    await ledger.apply(jane, newsletter.id, "signup", "start_word")
    return {"a": tenant, "b": other_tenant, "admin_b": admin_b}


# --- one workspace per sender -------------------------------------------------------------------------------


async def test_another_workspace_cannot_claim_a_number_in_any_spelling(client, two_workspaces, session):
    a, b, admin_b = two_workspaces["a"], two_workspaces["b"], two_workspaces["admin_b"]
    spellings = ({"sms_from": NUMBER_A}, {"sms_from": "+49 30 123456789"}, {"whatsapp_from": f"whatsapp:{NUMBER_A}"})
    for spelling in spellings:
        response = await put_settings(client, admin_b, token=TOKEN_B, **spelling)
        assert response.status_code == 409, (spelling, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "sender_taken"
        assert problem["errors"][0]["field"] == f"phone.{next(iter(spelling))}"
        assert str(a.id) not in response.text
        assert "Acme" not in response.text, "which workspace holds the number is not said"
    shown = (await client.get("/v1/workspace/settings", headers=admin_b)).json()
    assert shown["phone"]["sms_from"] == NUMBER_B, "a refused PUT changes nothing"
    owners = dict((await session.execute(text("SELECT identity, workspace_id FROM sender_identities"))).all())
    assert owners == {NUMBER_A: a.id, NUMBER_B: b.id}


async def test_a_messaging_service_belongs_to_one_workspace(client, two_workspaces, admin):
    assert (await put_settings(client, admin, token=TOKEN_A, sms_from=SERVICE_A)).status_code == 200
    taken = await put_settings(client, two_workspaces["admin_b"], token=TOKEN_B, sms_from=SERVICE_A.upper())
    assert taken.status_code == 409
    assert taken.json()["code"] == "sender_taken"


async def test_changing_a_number_releases_it_and_one_workspace_may_use_it_for_sms_and_whatsapp(
    client, two_workspaces, admin
):
    same = await put_settings(client, admin, token=TOKEN_A, sms_from=NUMBER_A, whatsapp_from=f"whatsapp:{NUMBER_A}")
    assert same.status_code == 200, same.text
    moved = await put_settings(client, admin, token=TOKEN_A, sms_from="+4989123456789")
    assert moved.status_code == 200, moved.text
    claimed = await put_settings(client, two_workspaces["admin_b"], token=TOKEN_B, sms_from=NUMBER_A)
    assert claimed.status_code == 200, "the number A gave up is free"
    back = await put_settings(client, admin, token=TOKEN_A, sms_from=NUMBER_A)
    assert back.status_code == 409


# --- webhooks only for the workspace's own senders ----------------------------------------------------------


async def test_a_stop_for_a_number_of_another_workspace_records_nothing_anywhere(client, two_workspaces, session):
    a, b = two_workspaces["a"], two_workspaces["b"]
    events = await count(session, ConsentEvent)
    for to in (NUMBER_A, f"whatsapp:{NUMBER_A}"):
        sender = f"whatsapp:{PERSON}" if to.startswith("whatsapp:") else PERSON
        params = {"MessageSid": sid(), "AccountSid": ACCOUNT, "From": sender, "To": to, "Body": "STOP"}
        response = await post_signed(client, b.id, params, token=TOKEN_B)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "sender_not_owned"
    assert await count(session, ConsentEvent) == events
    assert await count(session, InboundMessage) == 0
    assert await count(session, ContactPoint, workspace_id=b.id) == 0
    contact = (await client.get("/v1/contacts/jane", headers=await a.key(Scope.AUDIT_READ))).json()
    assert [c["state"] for c in contact["contact_points"][0]["consents"]] == ["opted_in"], "A's consent holds"
    # the owner's own path and token: the STOP is A's
    own = {"MessageSid": sid(), "AccountSid": ACCOUNT, "From": PERSON, "To": NUMBER_A, "Body": "STOP"}
    assert (await post_signed(client, a.id, own, token=TOKEN_A)).status_code == 200
    assert await count(session, ConsentEvent) > events


async def test_a_status_for_a_number_of_another_workspace_records_nothing(client, two_workspaces, session):
    b = two_workspaces["b"]
    params = {
        "MessageSid": sid(),
        "AccountSid": ACCOUNT,
        "MessageStatus": "failed",
        "ErrorCode": "21610",
        "To": PERSON,
        "From": NUMBER_A,
    }
    response = await post_signed(client, b.id, params, token=TOKEN_B, kind="status")
    assert response.status_code == 403
    assert response.json()["code"] == "sender_not_owned"
    assert await count(session, ProviderCallback) == 0


async def test_a_messaging_service_message_is_taken_by_its_workspace_only(client, two_workspaces, admin, session):
    a, b = two_workspaces["a"], two_workspaces["b"]
    assert (await put_settings(client, admin, token=TOKEN_A, sms_from=SERVICE_A)).status_code == 200
    pool_number = "+4930999888777"  # a number of the service's pool: not claimed itself
    params = {
        "MessageSid": sid(),
        "AccountSid": ACCOUNT,
        "MessagingServiceSid": SERVICE_A,
        "From": PERSON,
        "To": pool_number,
        "Body": "HELP",
    }
    assert (await post_signed(client, b.id, params, token=TOKEN_B)).status_code == 403
    assert (await post_signed(client, a.id, params, token=TOKEN_A)).status_code == 200
    assert await count(session, InboundMessage, workspace_id=a.id) == 1
    assert await count(session, InboundMessage, workspace_id=b.id) == 0


# --- mail from_address: the operator's domains ---------------------------------------------------------------


async def put_from(client, headers, address):
    return await client.put("/v1/workspace/settings", json={"email": {"from_address": address}}, headers=headers)


async def test_a_from_address_outside_the_operators_list_is_refused(client, tenant, admin, database):
    async with database.sessionmaker() as db, db.begin():
        listed, _ = await service.change_mail_domains(db, tenant.id, add=["Acme.Example", "bücher.example"])
    assert listed == ["acme.example", "xn--bcher-kva.example"]
    assert (await put_from(client, admin, "Acme <news@acme.example>")).status_code == 200
    assert (await put_from(client, admin, "info@BÜCHER.example")).status_code == 200
    for address in ("news@evil.example", "Acme <news@mail.acme.example>", "news@acme.example.evil.example"):
        refused = await put_from(client, admin, address)
        assert refused.status_code == 422, address
        problem = refused.json()
        assert problem["code"] == "from_domain_not_allowed"
        assert problem["errors"][0]["field"] == "email.from_address"
        assert "acme.example" in problem["detail"], "the tenant is told what it may use"
    garbled = await put_from(client, admin, "no address here")
    assert garbled.status_code == 422
    assert garbled.json()["code"] == "invalid_from_address"
    shown = (await client.get("/v1/workspace/settings", headers=admin)).json()
    assert shown["email"]["from_address"] == "info@BÜCHER.example"


async def test_the_tenant_cannot_set_its_own_list(client, admin):
    response = await client.put(
        "/v1/workspace/settings", json={"email": {"mail_domains": ["evil.example"]}}, headers=admin
    )
    assert response.status_code in (400, 422)


async def test_without_a_list_only_the_domain_of_mail_from_is_allowed_when_mail_leaves_the_machine(tenant, database):
    relay = MailSettings(host="smtp.consent.example", mail_from="Consent <no-reply@consent.example>")

    async def replace(address, mail):
        async with database.sessionmaker() as db, db.begin():
            new = WorkspaceSettingsIn(email=EmailSettingsIn(from_address=address), send_windows={})
            return await service.replace_settings(db, Keys(b"t" * 32), tenant.id, new, mail=mail)

    assert (await replace("Acme <news@consent.example>", relay)).email.from_address == "Acme <news@consent.example>"
    with pytest.raises(InvalidInput) as refused:
        await replace("news@acme.example", relay)
    assert refused.value.code == "from_domain_not_allowed"
    no_relay = MailSettings(host=None)  # development: the outbox folder, nothing is sent
    assert (await replace("news@acme.example", no_relay)).email.from_address == "news@acme.example"


async def test_removing_a_domain_clears_a_from_address_on_it(client, tenant, admin, database):
    async with database.sessionmaker() as db, db.begin():
        await service.change_mail_domains(db, tenant.id, add=["acme.example", "acme.test"])
    assert (await put_from(client, admin, "news@acme.example")).status_code == 200
    async with database.sessionmaker() as db, db.begin():
        listed, cleared = await service.change_mail_domains(db, tenant.id, remove=["acme.test"])
    assert (listed, cleared) == (["acme.example"], False)
    async with database.sessionmaker() as db, db.begin():
        listed, cleared = await service.change_mail_domains(db, tenant.id, remove=["ACME.example"])
    assert (listed, cleared) == (None, True)
    shown = (await client.get("/v1/workspace/settings", headers=admin)).json()
    assert shown["email"]["from_address"] is None


# --- the operator's command ----------------------------------------------------------------------------------


def consent(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """The ``consent`` command, in this process (as ``tests.conftest.consent_cli``), without a secret key."""
    env = {"DATABASE_URL": database_url.replace("+asyncpg", ""), "CONSENT_LOG_FORMAT": "json"}
    return run_cli_in_process(args, env)


@pytest.mark.slow
async def test_the_operator_sets_the_list_with_the_cli(pg_server):
    url = await pg_server.create_database("consent_mail_domains", migrated=True)
    try:
        assert consent("migrate", database_url=url).returncode == 0
        created = consent("workspace", "create", "Acme", "--json", database_url=url)
        workspace_id = json.loads(created.stdout.strip().splitlines()[-1])["id"]
        added = consent("workspace", "mail-domains", workspace_id, "add", "Acme.Example", "--json", database_url=url)
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout.strip().splitlines()[-1])["mail_domains"] == ["acme.example"]
        shown = consent("workspace", "mail-domains", workspace_id, database_url=url)
        assert shown.stdout.strip().splitlines()[-1] == "acme.example"
        bad = consent("workspace", "mail-domains", workspace_id, "add", "not a domain", database_url=url)
        assert bad.returncode != 0
        assert "not a domain name" in bad.stderr
        unknown = consent("workspace", "mail-domains", str(uuid.uuid4()), "add", "x.example", database_url=url)
        assert unknown.returncode != 0
        assert "does not exist" in unknown.stderr

        database = Database.from_url(url, pool_size=1)
        relay = MailSettings(host="smtp.consent.example", mail_from="no-reply@consent.example")
        try:
            for address, allowed in (("news@acme.example", True), ("news@consent.example", False)):
                async with database.sessionmaker() as db, db.begin():
                    new = WorkspaceSettingsIn(email=EmailSettingsIn(from_address=address))
                    if allowed:
                        await service.replace_settings(db, Keys(b"t" * 32), uuid.UUID(workspace_id), new, mail=relay)
                    else:
                        with pytest.raises(InvalidInput):
                            await service.replace_settings(
                                db, Keys(b"t" * 32), uuid.UUID(workspace_id), new, mail=relay
                            )
        finally:
            await database.dispose()
    finally:
        await pg_server.drop_database(url)


async def test_two_workspaces_racing_for_one_number_cannot_both_get_it(pg_server):
    """Committed transactions on their own connections: the second claim waits for the first, then sees it."""
    import asyncio  # noqa: PLC0415

    from app.workspaces import repository  # noqa: PLC0415

    url = await pg_server.create_database("consent_sender_race", migrated=True)
    database = Database.from_url(url, pool_size=3)
    try:
        async with database.sessionmaker() as db, db.begin():
            a = (await service.create_workspace(db, "Acme")).id
            b = (await service.create_workspace(db, "Globex")).id
        first_claimed = asyncio.Event()
        release_first = asyncio.Event()

        async def claim(workspace_id: uuid.UUID, *, hold: bool) -> set[str]:
            async with database.sessionmaker() as db, db.begin():
                taken = await repository.claim_senders(db, workspace_id, {NUMBER_A})
                if hold:
                    first_claimed.set()
                    await release_first.wait()
                return taken

        first = asyncio.create_task(claim(a, hold=True))
        await first_claimed.wait()
        second = asyncio.create_task(claim(b, hold=False))
        await asyncio.sleep(0.3)
        assert not second.done(), "the second claim waits for the first transaction"
        release_first.set()
        assert await first == set()
        assert await second == {NUMBER_A}
        async with database.sessionmaker() as db:
            owners = dict((await db.execute(text("SELECT identity, workspace_id FROM sender_identities"))).all())
        assert owners == {NUMBER_A: a}
    finally:
        await database.dispose()
        await pg_server.drop_database(url)


async def test_the_migration_claims_the_senders_of_existing_settings_the_older_workspace_first(pg_server):
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    from app.lib.db import migrate  # noqa: PLC0415

    url = await pg_server.create_database("consent_sender_backfill")
    engine = create_async_engine(url)
    try:
        await migrate(engine, "0016")
        older, younger = uuid.uuid4(), uuid.uuid4()
        async with engine.begin() as conn:
            for workspace_id, name, age, phone in (
                (older, "Acme", 2, {"sms_from": "+49 30 123456789", "whatsapp_from": f"whatsapp:{NUMBER_A}"}),
                (younger, "Globex", 1, {"sms_from": NUMBER_A, "whatsapp_from": SERVICE_A.upper()}),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO workspaces (id, name, settings, created_at) "
                        "VALUES (:id, :name, CAST(:settings AS jsonb), now() - make_interval(days => :age))"
                    ),
                    {"id": workspace_id, "name": name, "settings": json.dumps({"phone": phone}), "age": age},
                )
        await migrate(engine)
        async with engine.connect() as conn:
            owners = dict((await conn.execute(text("SELECT identity, workspace_id FROM sender_identities"))).all())
        assert owners == {NUMBER_A: older, SERVICE_A: younger}
        async with engine.connect() as conn:
            phones = dict((await conn.execute(text("SELECT id, settings -> 'phone' FROM workspaces"))).all())
        assert phones[younger] == {"sms_from": None, "whatsapp_from": SERVICE_A.upper()}, (
            "the younger workspace no longer sends from the number the older one keeps"
        )
        assert phones[older]["sms_from"] == "+49 30 123456789"
    finally:
        await engine.dispose()
        await pg_server.drop_database(url)
