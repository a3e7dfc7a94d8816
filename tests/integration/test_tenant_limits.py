"""One tenant's settings or one bad row must not hurt the service (issue 16, findings 5, 6, 7, 14).

Reply texts are templates with known placeholders, never format strings; an opt-out is recorded whatever its
reply; time zones are checked at input and one delivery's error stays its own; the public VAPID key is read
without a lock; header-bound settings are one line.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event, select, update

from app.ledger.models import Contact
from app.lib.auth import Scope
from app.messages.models import Delivery
from app.workspaces import repository as workspaces
from app.workspaces import settings as settings_module
from app.workspaces.settings import WorkspaceSettings, fill_template, template_problem
from tests.integration import test_messages
from tests.integration.test_twilio import Phone, reply_of, signup, state_of
from tests.integration.test_twilio import configured as configured  # noqa: PLC0414  # a fixture, re-exported

# the dispatcher's fixtures: local servers speaking the providers' protocols, a workspace sending SMS
providers = test_messages.providers
settings = test_messages.settings
world = test_messages.world
adapters = test_messages.adapters
dispatcher = test_messages.dispatcher
PHONE = test_messages.PHONE


async def put_settings(client, admin, **changes):
    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    for path, value in changes.items():
        target = current
        *parents, name = path.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[name] = value
    return await client.put("/v1/workspace/settings", json=current, headers=admin)


# --- 5: reply texts are templates, not format strings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{brand:>1500000000}", "{brand}"),
        ("Bye from {brand!r}", "{brand}"),
        ("Bye from {brand.__class__}", "{brand.__class__}"),
        ("Bye from {brand[0]}", "{brand[0]}"),
        ("Bye from {company}", "{company}"),
        ("Bye from {}", "{}"),
        ("Bye from {brand", "brace"),
    ],
)
async def test_reply_texts_with_format_specs_or_unknown_placeholders_are_refused(client, admin, text, says):
    response = await put_settings(client, admin, phone__texts={"en": {"stop": text}})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_reply_text"
    assert body["errors"][0]["field"] == "phone.texts.en.stop"
    assert says in body["detail"]


async def test_reply_texts_with_known_placeholders_and_literal_braces_are_taken(client, admin):
    text = "{brand}: bye {{for now}}. Help: {help_contact}"
    response = await put_settings(client, admin, phone__texts={"en": {"help": text}})
    assert response.status_code == 200, response.text
    assert response.json()["phone"]["texts"]["en"]["help"] == text


def test_filling_a_template_evaluates_nothing_of_the_tenants_text():
    values = {"brand": "Acme", "purposes": "News"}
    assert fill_template("{brand}: {purposes} {{x}}", values) == "Acme: News {x}"
    # texts stored before they were checked stay as written instead of raising or allocating
    assert fill_template("{brand:>1500000000} {nope} {brand.x}", values) == "{brand:>1500000000} {nope} {brand.x}"
    assert fill_template("{brand", values) == "{brand"
    assert template_problem("{purposes} at {signup_url}") is None


async def test_a_stop_is_recorded_even_when_its_stored_reply_cannot_be_built(client, tenant, configured, session):
    # a reply text stored before the settings were checked (written straight into the row)
    current = WorkspaceSettings.load((await workspaces.get_workspace(session, tenant.id)).settings)
    texts = {"de": {"stop": "Bye from {company} {brand:>1500000000}"}}  # the contact's language
    stored = current.dump()
    stored["phone"]["texts"] = texts
    await workspaces.save_settings(session, tenant.id, stored)
    await session.commit()
    phone = Phone(client, tenant.id)
    await signup(client, tenant, configured)
    await phone.text("NEWS")
    assert await state_of(client, tenant) == "opted_in"
    response = await phone.text("STOP")
    assert response.status_code == 200, response.text
    assert await state_of(client, tenant) == "opted_out", "the opt-out must not be lost to its reply"
    assert reply_of(response) == "Bye from {company} {brand:>1500000000}", "stays as written, nothing evaluated"


async def test_a_stop_is_recorded_when_building_its_reply_fails(client, tenant, configured, monkeypatch):
    phone = Phone(client, tenant.id)
    await signup(client, tenant, configured)
    await phone.text("NEWS")
    assert await state_of(client, tenant) == "opted_in"
    stored = (await client.get("/v1/workspace/settings", headers=await tenant.key(Scope.ADMIN))).json()
    assert stored["brand"] == "Acme"
    real_fill = settings_module.fill_template

    def broken(text, values):
        if text.startswith("Own"):
            raise RuntimeError("a bug on the tenant's template path")
        return real_fill(text, values)

    monkeypatch.setattr(settings_module, "fill_template", broken)
    texts = {"de": {"stop": "Own goodbye from {brand}"}}  # the contact's language
    response = await put_settings(client, await tenant.key(Scope.ADMIN), phone__texts=texts)
    assert response.status_code == 200, response.text
    response = await phone.text("STOP")
    assert response.status_code == 200, response.text
    assert await state_of(client, tenant) == "opted_out", "the opt-out must not be lost to its reply"
    assert reply_of(response).startswith("Sie sind von Acme abgemeldet"), "the built-in reply goes out"


# --- 6: time zones are checked at input; one delivery's error stays its own ------------------------------------


async def test_an_unknown_workspace_time_zone_is_refused(client, admin):
    for zone in ("Mars/Olympus_Mons", "../../etc/passwd", "", "Europe"):
        response = await put_settings(client, admin, timezone=zone)
        assert response.status_code == 422, (zone, response.text)
        assert response.json()["errors"][0]["field"] == "timezone"
    assert (await put_settings(client, admin, timezone="America/New_York")).status_code == 200


async def test_an_unknown_contact_time_zone_is_refused(client, tenant, ledger):
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    response = await client.post("/v1/contacts", json={"external_id": "x", "timezone": "Mars/Base"}, headers=writer)
    assert response.status_code == 422, response.text
    assert "timezone" in response.json()["detail"]
    ok = await client.post("/v1/contacts", json={"external_id": "y", "timezone": "Asia/Tokyo"}, headers=writer)
    assert ok.status_code == 201, ok.text
    purpose = await ledger.purpose("newsletter")
    body = {
        "channel": "email",
        "address": "jane@example.com",
        "purpose": purpose.key,
        "notice_id": "0193a7e0-0000-7000-8000-000000000000",
        "contact": {"timezone": "Mars/Base"},
    }
    response = await client.post("/v1/signups", json=body, headers=await tenant.key(Scope.SIGNUP))
    assert response.status_code == 422, response.text
    assert "timezone" in response.json()["detail"]


async def test_a_contact_row_with_a_bad_time_zone_does_not_stop_other_deliveries(
    client,
    admin,
    world,
    ledger,
    providers,
    dispatcher,
    session,
):
    assert (
        await put_settings(client, admin, send_windows={"sms": {"start": "00:00", "end": "24:00"}})
    ).status_code == (200)
    bob = await ledger.point("sms", "+4915199999999", external_id="bob")
    await ledger.apply(bob, world["newsletter"].id, "signup", "start_word")
    for contact in ("bob", "jane"):
        body = {"contact": contact, "purpose": "newsletter", "route": ["sms"], "content": {"sms": {"text": "Hi"}}}
        response = await client.post("/v1/messages", json=body, headers=world["key"])
        assert response.status_code == 202, response.text
    # a row no zone database knows, as an older version or a direct import could have left it
    await session.execute(update(Contact).where(Contact.id == bob.contact_id).values(timezone="Mars/Olympus_Mons"))
    await session.commit()

    assert await dispatcher.run_once() == 2
    assert [r["To"] for r in providers["twilio"].requests] == [PHONE], "Jane's message goes out"
    stuck = await session.scalar(
        select(Delivery).where(Delivery.contact_point_id == bob.id).execution_options(populate_existing=True)
    )
    assert stuck.status == "queued", "Bob's delivery waits for a retry"
    assert "ZoneInfoNotFoundError" in stuck.last_error


# --- 7: the public VAPID key is read without a lock ------------------------------------------------------------


async def test_the_vapid_public_key_is_read_without_locking_the_workspace(client, tenant, connection):
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement)

    path = f"/v1/push/web/vapid-public-key?workspace={tenant.id}"
    event.listen(connection.sync_engine, "before_cursor_execute", seen)
    try:
        first = await client.get(path)
        locked_first = [s for s in statements if "FOR UPDATE" in s]
        statements.clear()
        again = await client.get(path)
    finally:
        event.remove(connection.sync_engine, "before_cursor_execute", seen)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json()
    assert locked_first, "generating the key locks the row, so concurrent first uses make one key"
    assert not [s for s in statements if "FOR UPDATE" in s], "a key that exists is read without a lock"


# --- 14: header-bound settings are one line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("brand", "Acme\r\nBcc: victim@example.com"),
        ("email__from_address", "Acme <news@acme.example>\nBcc: x@example.com"),
        ("email__from_address", "Acme\r <news@acme.example>"),
        ("email__reply_to", "help@acme.example\r\nX-Evil: 1"),
        ("phone__sms_from", "+4930123456789\n"),
        ("phone__whatsapp_from", "whatsapp:+4930123456789\r"),
    ],
)
async def test_line_breaks_in_header_bound_settings_are_refused(client, admin, field, value):
    response = await put_settings(client, admin, **{field: value})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field.replace("__", ".")
