"""SMS and WhatsApp start-word opt-in through signed Twilio webhooks (CHANNEL_RULES.md §2, §3)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from twilio.request_validator import RequestValidator

from app.ledger import sealer
from app.ledger.models import ConsentEvent, ContactPoint
from app.lib.auth import Scope
from app.lib.db import Database
from app.twilio.models import InboundMessage
from tests.conftest import own_database

TOKEN = "f" * 32
ACCOUNT = "AC" + "0123456789abcdef" * 2
PUBLIC = "https://consent.example.com"
SENDER = "+4930123456789"
PERSON = "+4915123456789"
_sids = itertools.count(1)


def sid() -> str:
    return f"SM{next(_sids):032x}"


def reply_of(response) -> str | None:
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)  # noqa: S314  # our own TwiML
    assert root.tag == "Response"
    messages = root.findall("Message")
    assert len(messages) <= 1
    return messages[0].text if messages else None


class Phone:
    """A handset texting the workspace's number through Twilio."""

    def __init__(self, client, workspace_id):
        self.client = client
        self.workspace_id = workspace_id

    def path(self, kind="inbound"):
        return f"/webhooks/twilio/{self.workspace_id}/{kind}"

    async def post(self, params, *, kind="inbound", signed_url=None, token=TOKEN, via=None):
        url = signed_url or PUBLIC + self.path(kind)
        signature = RequestValidator(token).compute_signature(url, params)
        target = (via or "") + self.path(kind)
        return await self.client.post(target, data=params, headers={"X-Twilio-Signature": signature})

    async def text(self, body, *, sender=PERSON, whatsapp=False, message_sid=None, **extra):
        params = {
            "MessageSid": message_sid or sid(),
            "AccountSid": ACCOUNT,
            "From": f"whatsapp:{sender}" if whatsapp else sender,
            "To": f"whatsapp:{SENDER}" if whatsapp else SENDER,
            "Body": body,
            "NumMedia": "0",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
            **extra,
        }
        return await self.post(params)


@pytest.fixture(autouse=True, params=["session", "driver"])
def ledger_path(request, database, monkeypatch):
    """Every test twice: without a sealer in the process (the session's statements), and with one, where a STOP
    takes four statements on the driver connection (claim and reads, lock, write, the reply stored)."""
    if request.param == "driver":
        monkeypatch.setattr(sealer, "_running", sealer.Sealer(database))
    return request.param


@pytest.fixture
async def configured(client, admin, ledger):
    newsletter = await ledger.purpose("newsletter")
    notice = (
        await client.post(
            "/v1/notices",
            json={"purpose": "newsletter", "channels": ["sms", "whatsapp"], "locale": "de", "text": "Ja, SMS-News."},
            headers=admin,
        )
    ).json()
    response = await client.put(
        "/v1/workspace/settings",
        json={
            "brand": "Acme",
            "phone": {
                "sms_from": SENDER,
                "whatsapp_from": f"whatsapp:{SENDER}",
                "start_words": {"NEWS": "newsletter"},
                "help_contact": "acme.example/help",
                "frequency": "Max. 4 SMS/Monat",
            },
            "twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN},
        },
        headers=admin,
    )
    assert response.status_code == 200, response.text
    return {"purpose": newsletter, "notice_id": notice["notice_id"]}


@pytest.fixture
def phone(client, tenant):
    return Phone(client, tenant.id)


async def signup(client, tenant, configured, channel="sms", address="0151 23456789"):
    response = await client.post(
        "/v1/signups",
        json={
            "channel": channel,
            "address": address,
            "purpose": "newsletter",
            "notice_id": configured["notice_id"],
            "contact": {"external_id": "crm-1", "locale": "de"},
            "evidence": {"ip": "198.51.100.4", "form_id": "footer"},
        },
        headers=await tenant.key(Scope.SIGNUP),
    )
    assert response.status_code == 202, response.text
    return response.json()


async def state_of(client, tenant, channel="sms", purpose="newsletter", contact="crm-1"):
    body = (await client.get(f"/v1/contacts/{contact}", headers=await tenant.key(Scope.AUDIT_READ))).json()
    for point in body["contact_points"]:
        if point["channel"] == channel:
            return {c["purpose"]: c["state"] for c in point["consents"]}.get(purpose, "none")
    return "none"


async def count(session, model, **where):
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return await session.scalar(query)


async def test_settings_keep_the_auth_token_write_only_and_sealed(client, admin, configured, session):
    shown = (await client.get("/v1/workspace/settings", headers=admin)).json()
    assert shown["twilio"] == {"account_sid": ACCOUNT, "auth_token_set": True}
    from sqlalchemy import text  # noqa: PLC0415

    stored = (await session.execute(text("SELECT settings::text FROM workspaces"))).scalars().all()
    assert not any(TOKEN in row for row in stored)
    bad = await client.put("/v1/workspace/settings", json={"phone": {"start_words": {"X": "missing"}}}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["code"] == "purpose_not_found"


async def test_signup_records_pending_and_answers_the_instructions(client, tenant, configured):
    body = await signup(client, tenant, configured)
    assert body["state"] == "pending"
    assert body["instructions"] == {"send_keyword": "NEWS", "to_number": SENDER}
    assert await state_of(client, tenant) == "pending"


async def test_signup_refuses_bad_numbers_and_mismatched_notices(client, tenant, admin, configured):
    headers = await tenant.key(Scope.SIGNUP)
    base = {"channel": "sms", "purpose": "newsletter", "notice_id": configured["notice_id"]}
    bad = await client.post("/v1/signups", json={**base, "address": "12345"}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_phone_number"
    email_notice = (
        await client.post(
            "/v1/notices",
            json={"purpose": "newsletter", "channels": ["email"], "locale": "de", "text": "Mail"},
            headers=admin,
        )
    ).json()
    mismatch = await client.post(
        "/v1/signups", json={**base, "address": PERSON, "notice_id": email_notice["notice_id"]}, headers=headers
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["code"] == "notice_mismatch"
    assert (
        await client.post(
            "/v1/signups", json={**base, "address": PERSON}, headers=await tenant.key(Scope.ELIGIBILITY_READ)
        )
    ).status_code == 403


async def test_a_signup_does_not_tell_a_form_key_whether_the_number_is_subscribed(client, tenant, configured, phone):
    unknown = await signup(client, tenant, configured)
    await phone.text("NEWS")
    assert await state_of(client, tenant) == "opted_in"
    known = await signup(client, tenant, configured)
    drop = {"contact_id", "contact_point_id"}
    assert {k: v for k, v in known.items() if k not in drop} == {k: v for k, v in unknown.items() if k not in drop}
    assert known["state"] == "pending"
    assert await state_of(client, tenant) == "opted_in", "the subscription itself is untouched"
    # nor do the ids tell an old customer from a new sign-up: random, without the creation time a UUIDv7 carries
    assert {uuid.UUID(known[k]).version for k in drop} == {4}


async def test_start_word_after_signup_opts_in_and_confirms_with_the_required_contents(
    client, tenant, configured, phone, session
):
    await signup(client, tenant, configured)
    response = await phone.text("  news ")
    assert response.status_code == 200
    reply = reply_of(response)
    assert reply is not None
    assert "Acme" in reply
    assert "STOPP" in reply
    assert "HILFE" in reply
    assert "Max. 4 SMS/Monat" in reply
    assert await state_of(client, tenant) == "opted_in"
    events = (await client.get("/v1/contacts/crm-1/events", headers=await tenant.key(Scope.AUDIT_READ))).json()
    confirm = events[-1]
    assert (confirm["trigger"], confirm["actor_type"]) == ("start_word", "subject")
    assert confirm["evidence"]["keyword"] == "news"
    assert confirm["evidence"]["message_sid"].startswith("SM")
    assert len(confirm["evidence"]["raw_params_digest"]) == 64
    assert confirm["notice_id"] == configured["notice_id"], "the notice of the signup stays the proof"


async def test_tampered_signature_is_refused_and_records_nothing(client, tenant, configured, phone, session):
    await signup(client, tenant, configured)
    params = {"MessageSid": sid(), "AccountSid": ACCOUNT, "From": PERSON, "To": SENDER, "Body": "NEWS"}
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + phone.path(), params)
    tampered = {**params, "Body": "STOP"}
    response = await client.post(phone.path(), data=tampered, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert response.json()["code"] == "invalid_signature"
    assert (await client.post(phone.path(), data=params)).status_code == 403, "no signature at all"
    wrong_token = await phone.post(params, token="0" * 32)
    assert wrong_token.status_code == 403
    added = await phone.post({**params, "Extra": "x"}, signed_url=None)
    assert added.status_code == 200, "parameters Twilio adds are covered by the signature"
    assert await count(session, InboundMessage, message_sid=params["MessageSid"]) == 1


async def test_signature_uses_the_public_url_not_the_one_behind_the_proxy(client, tenant, configured, phone):
    await signup(client, tenant, configured)
    params = {"MessageSid": sid(), "AccountSid": ACCOUNT, "From": PERSON, "To": SENDER, "Body": "NEWS"}
    # the request reaches the app as http://10.0.0.5:8000/… behind a TLS-terminating proxy
    behind_proxy = await phone.post(params, via="http://10.0.0.5:8000")
    assert behind_proxy.status_code == 200
    internal = await phone.post(
        {**params, "MessageSid": sid()}, signed_url="http://10.0.0.5:8000" + phone.path(), via="http://10.0.0.5:8000"
    )
    assert internal.status_code == 403


async def test_retried_message_sid_records_nothing_new_and_answers_the_same(client, tenant, configured, phone, session):
    await signup(client, tenant, configured)
    message_sid = sid()
    first = await phone.text("NEWS", message_sid=message_sid)
    events = await count(session, ConsentEvent)
    again = await phone.text("NEWS", message_sid=message_sid)
    assert again.text == first.text
    assert await count(session, ConsentEvent) == events


@pytest.mark.parametrize(
    "word",
    [
        "STOP",
        "stop",
        " Unsubscribe ",
        "END",
        "quit",
        "STOPALL",
        "Revoke",
        "OPTOUT",
        "cancel",
        "STOPP",
        "abmelden",
        "ABBESTELLEN",
        "Austragen",
        "kündigen",
        "KUENDIGEN",
        "Stornieren",
        "ende!",
    ],
)
async def test_every_default_stop_word_withdraws_sms_consent(client, tenant, configured, phone, word):
    await signup(client, tenant, configured)
    await phone.text("NEWS")
    response = await phone.text(word)
    assert await state_of(client, tenant) == "opted_out"
    assert await state_of(client, tenant, purpose=None) == "opted_out", "the channel-level row covers new purposes"
    assert reply_of(response) is not None


async def test_stop_please_is_an_opt_out_flagged_as_natural_language(client, tenant, configured, phone):
    await signup(client, tenant, configured)
    await phone.text("NEWS")
    await phone.text("stop please")
    assert await state_of(client, tenant) == "opted_out"
    events = (await client.get("/v1/contacts/crm-1/events", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert events[-1]["evidence"]["natural_language"] is True


async def test_a_stop_refused_by_a_merge_committed_meanwhile_is_taken_again(
    client, tenant, configured, phone, monkeypatch
):
    """The hostile review of 2026-12-06: a merge committing between finding the number and locking its consents
    made the database refuse the row (CM001); the webhook answered 409 and Twilio, which does not retry an inbound
    message, lost the STOP. It is taken again (here the first try is refused as the trigger refuses it)."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from app.twilio import service  # noqa: PLC0415

    await signup(client, tenant, configured)
    await phone.text("NEWS")
    real = service.handle_inbound
    tries = []

    class MergedMeanwhile(Exception):
        sqlstate = "CM001"

    async def refused_once(*args, **kwargs):
        tries.append(1)
        if len(tries) == 1:
            await real(*args, **kwargs)  # written, then refused: the transaction is rolled back
            raise DBAPIError("INSERT INTO consents …", None, MergedMeanwhile("contact was merged"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(service, "handle_inbound", refused_once)
    response = await phone.text("STOP")
    assert response.status_code == 200, response.text
    assert len(tries) == 2
    assert await state_of(client, tenant) == "opted_out"
    assert reply_of(response) is not None, "the confirmation of the STOP taken the second time"


async def test_exactly_one_stop_confirmation(client, tenant, configured, phone, admin):
    await signup(client, tenant, configured)
    await phone.text("NEWS")
    assert reply_of(await phone.text("STOP")) is not None
    assert reply_of(await phone.text("STOP")) is None, "a second STOP gets no second confirmation"


async def test_stop_confirmation_can_be_left_to_twilio_advanced_opt_out(client, tenant, configured, phone, admin):
    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    current["phone"]["stop_reply"] = False
    current["twilio"] = {"account_sid": ACCOUNT}
    assert (await client.put("/v1/workspace/settings", json=current, headers=admin)).status_code == 200
    await signup(client, tenant, configured)
    await phone.text("NEWS")
    assert reply_of(await phone.text("STOP")) is None
    assert await state_of(client, tenant) == "opted_out"


async def test_help_answers_and_changes_nothing(client, tenant, configured, phone):
    await signup(client, tenant, configured)
    reply = reply_of(await phone.text("hilfe"))
    assert reply is not None
    assert "acme.example/help" in reply
    assert await state_of(client, tenant) == "pending"


async def test_whatsapp_and_sms_are_separate_channels(client, tenant, configured, phone):
    await signup(client, tenant, configured, channel="whatsapp")
    await signup(client, tenant, configured, channel="sms")
    await phone.text("NEWS", whatsapp=True, WaId=PERSON[1:], ProfileName="Jane")
    assert await state_of(client, tenant, channel="whatsapp") == "opted_in"
    assert await state_of(client, tenant, channel="sms") == "pending"
    events = (await client.get("/v1/contacts/crm-1/events", headers=await tenant.key(Scope.AUDIT_READ))).json()
    assert events[-1]["evidence"]["WaId"] == PERSON[1:]
    assert events[-1]["channel"] == "whatsapp"


async def test_keyword_only_opt_in_is_refused_unless_the_workspace_allows_it(
    client, tenant, configured, phone, admin, session
):
    stranger = "+4917699999999"
    reply = reply_of(await phone.text("NEWS", sender=stranger))
    assert reply is not None
    assert "Anmeldung" in reply or "sign up" in reply
    assert await count(session, ContactPoint, value=stranger) == 0, "no record for a refused keyword-only opt-in"

    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    current["phone"]["keyword_only_opt_in"] = True
    current["twilio"] = {"account_sid": ACCOUNT}
    assert (await client.put("/v1/workspace/settings", json=current, headers=admin)).status_code == 200
    reply = reply_of(await phone.text("NEWS", sender=stranger))
    assert reply is not None
    assert "angemeldet" in reply
    point = await session.scalar(select(ContactPoint).where(ContactPoint.value == stranger))
    assert point is not None
    assert await state_of(client, tenant, contact=str(point.contact_id)) == "opted_in"


async def test_stop_from_an_unknown_number_is_still_recorded(client, tenant, configured, phone, session):
    stranger = "+4917688888888"
    await phone.text("STOP", sender=stranger)
    point = await session.scalar(select(ContactPoint).where(ContactPoint.value == stranger))
    assert point is not None
    assert await state_of(client, tenant, purpose=None, contact=str(point.contact_id)) == "opted_out"


async def test_other_messages_get_an_empty_response(client, tenant, configured, phone):
    await signup(client, tenant, configured)
    assert reply_of(await phone.text("Wann habt ihr offen?")) is None
    assert await state_of(client, tenant) == "pending"


async def test_status_callback_21610_blocks_the_number_once(client, tenant, configured, phone, session):
    await signup(client, tenant, configured)
    await phone.text("NEWS")
    params = {
        "MessageSid": sid(),
        "AccountSid": ACCOUNT,
        "MessageStatus": "failed",
        "ErrorCode": "21610",
        "To": PERSON,
        "From": SENDER,
    }
    response = await phone.post(params, kind="status")
    assert response.status_code == 204
    contact = (await client.get("/v1/contacts/crm-1", headers=await tenant.key(Scope.AUDIT_READ))).json()
    [sms] = contact["contact_points"]
    assert sms["reachability"] == "provider_blocked"
    assert await state_of(client, tenant) == "opted_out"
    events = await count(session, ConsentEvent)
    assert (await phone.post(params, kind="status")).status_code == 204
    assert await count(session, ConsentEvent) == events, "a repeated callback changes nothing"


async def test_a_21610_refused_by_a_merge_committed_meanwhile_is_taken_again(
    client, tenant, configured, phone, monkeypatch
):
    """A status callback's 21610 (the carrier's STOP) withdraws the number's consent; refused by a merge committing in
    its transaction (the database's CM001), it is taken again instead of answering 409 and losing the withdrawal."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from app.twilio import service  # noqa: PLC0415

    await signup(client, tenant, configured)
    await phone.text("NEWS")
    real = service.handle_status
    tries = []

    class MergedMeanwhile(Exception):
        sqlstate = "CM001"

    async def refused_once(*args, **kwargs):
        tries.append(1)
        await real(*args, **kwargs)
        if len(tries) == 1:  # written, then refused: the transaction is rolled back
            raise DBAPIError("INSERT INTO consents …", None, MergedMeanwhile("contact was merged"))

    monkeypatch.setattr(service, "handle_status", refused_once)
    params = {
        "MessageSid": sid(),
        "AccountSid": ACCOUNT,
        "MessageStatus": "failed",
        "ErrorCode": "21610",
        "To": PERSON,
        "From": SENDER,
    }
    response = await phone.post(params, kind="status")
    assert response.status_code == 204, response.text
    assert len(tries) == 2
    assert await state_of(client, tenant) == "opted_out"


async def test_another_account_or_missing_token_is_refused(client, tenant, configured, phone, other_tenant):
    params = {"MessageSid": sid(), "AccountSid": "AC" + "9" * 32, "From": PERSON, "To": SENDER, "Body": "STOP"}
    response = await phone.post(params)
    assert response.status_code == 403
    assert response.json()["code"] == "account_mismatch"
    unconfigured = Phone(client, other_tenant.id)
    response = await unconfigured.post({**params, "AccountSid": ACCOUNT})
    assert response.status_code == 403
    assert response.json()["code"] == "twilio_not_configured"


async def test_a_message_for_a_number_the_workspace_does_not_hold_is_refused_and_records_nothing(
    client, tenant, configured, phone, session
):
    await signup(client, tenant, configured)
    elsewhere = "+4940123456789"  # signed with this workspace's token, but not one of its senders
    inbound = {"MessageSid": sid(), "AccountSid": ACCOUNT, "From": PERSON, "To": elsewhere, "Body": "STOP"}
    response = await phone.post(inbound)
    assert response.status_code == 403
    assert response.json()["code"] == "sender_not_owned"
    assert await count(session, InboundMessage) == 0
    assert await state_of(client, tenant) == "pending"
    status = {
        "MessageSid": sid(),
        "AccountSid": ACCOUNT,
        "MessageStatus": "failed",
        "ErrorCode": "21610",
        "To": PERSON,
        "From": elsewhere,
    }
    response = await phone.post(status, kind="status")
    assert response.status_code == 403
    assert response.json()["code"] == "sender_not_owned"
    assert await state_of(client, tenant) == "pending"


async def test_a_word_of_both_languages_is_answered_in_the_contacts_language(client, tenant, configured, phone):
    """START and STOP are German words too: the reply takes the contact's language (here German), not English;
    an English-only word (UNSUBSCRIBE) is answered in English whatever the contact's language."""
    await signup(client, tenant, configured)  # the contact's locale: de
    started = reply_of(await phone.text("Start"))
    assert started is not None
    assert started.startswith("Acme: Sie sind jetzt für Newsletter angemeldet."), started
    stopped = reply_of(await phone.text("STOP"))
    assert stopped is not None
    assert stopped.startswith("Sie sind von Acme abgemeldet"), stopped
    await client.post(
        "/v1/signups",
        json={
            "channel": "sms",
            "address": "0151 99999999",
            "purpose": "newsletter",
            "notice_id": configured["notice_id"],
            "contact": {"external_id": "crm-2", "locale": "de"},
        },
        headers=await tenant.key(Scope.SIGNUP),
    )
    await phone.text("NEWS", sender="+4915199999999")
    english = reply_of(await phone.text("unsubscribe", sender="+4915199999999"))
    assert english is not None
    assert english.startswith("You are unsubscribed from Acme."), english


class TestAStopRacingARealMerge:
    """On a database of the class's own, where the merge really commits in another transaction."""

    @pytest.fixture
    async def own_engine(self, pg_server):
        async with own_database(pg_server) as own:
            yield own

    @pytest.fixture
    def database(self, own_engine):
        return Database(own_engine, async_sessionmaker(own_engine, expire_on_commit=False))

    async def test_a_stop_whose_contact_an_erasure_removed_meanwhile_is_taken_again(
        self, client, database, tenant, configured, monkeypatch
    ):
        """The hostile review of 2026-12-06: an erasure of the number's contact committing between finding the
        number and locking its consents made the consent row's foreign key fail (23503): 500, the STOP lost (Twilio
        does not resend). Taken again (the number is found no more, the STOP is taken as from a new number): 200,
        and the number stays blocked."""
        from app.domain.model import ActorType  # noqa: PLC0415
        from app.ledger.service import Actor  # noqa: PLC0415
        from app.lib.keys import Keys  # noqa: PLC0415
        from app.privacy.erasure import erase  # noqa: PLC0415
        from app.twilio import service  # noqa: PLC0415
        from tests.conftest import TEST_SECRET  # noqa: PLC0415

        phone = Phone(client, tenant.id)
        await signup(client, tenant, configured)
        await phone.text("NEWS")
        real_withdraw = service.withdraw_point
        calls: list[uuid.UUID] = []

        async def erased_first(session, workspace_id, point, **kwargs):
            calls.append(point.contact_id)
            if len(calls) == 1:  # the erasure commits in its own transaction before the STOP locks anything
                async with database.sessionmaker() as db, db.begin():
                    await erase(
                        db,
                        Keys(TEST_SECRET),
                        workspace_id,
                        str(point.contact_id),
                        request_ref=None,
                        received_via=None,
                        actor=Actor(ActorType.SYSTEM),
                    )
            return await real_withdraw(session, workspace_id, point, **kwargs)

        monkeypatch.setattr(service, "withdraw_point", erased_first)
        response = await phone.text("STOP")
        assert response.status_code == 200, response.text
        assert calls, "the STOP found the number before the erasure"
        async with database.sessionmaker() as db:
            taken = text("SELECT intent FROM inbound_messages WHERE intent <> 'opt_in' ORDER BY received_at")
            intents = (await db.execute(taken)).all()
            blocked = (await db.execute(text("SELECT count(*) FROM suppressions WHERE channel = 'sms'"))).scalar()
        assert intents == [("opt_out",)], "the STOP is taken, once"
        assert blocked, "the number stays blocked (the erasure's suppression)"

    async def test_a_stop_from_an_undeliverable_number_deadlocked_with_a_merge_is_taken_again(
        self, client, ledger, database, tenant, configured, monkeypatch
    ):
        """The hostile review of 2026-12-06: marking the number reachable again, the STOP deadlocked with a merge of
        its contact (40P01) and answered 500 with nothing recorded; Twilio does not resend. Taken again (then the
        merge's CM001 once it has committed, then the survivor's address): 200, the STOP recorded."""
        from app.domain.model import ActorType  # noqa: PLC0415
        from app.ledger import merge as merging  # noqa: PLC0415
        from app.ledger.service import Actor  # noqa: PLC0415
        from app.twilio import service  # noqa: PLC0415

        phone = Phone(client, tenant.id)
        await signup(client, tenant, configured)
        await phone.text("NEWS")
        async with database.sessionmaker() as db, db.begin():
            await db.execute(text("UPDATE contact_points SET reachability = 'undeliverable' WHERE channel = 'sms'"))
        survivor = await ledger.point("email", "other@example.com", external_id="crm-2")
        real_withdraw, real_move = service.withdraw_point, merging.repository.move_contact_references
        calls: list[uuid.UUID] = []
        merges: list[asyncio.Task[None]] = []

        async def merge(workspace_id, duplicate):
            async with database.sessionmaker() as db, db.begin():
                await merging.merge(
                    db,
                    workspace_id,
                    survivor_ref=str(survivor.contact_id),
                    duplicate_ref=str(duplicate),
                    evidence={},
                    actor=Actor(ActorType.SYSTEM),
                )

        async def merged_first(session, workspace_id, point, **kwargs):
            calls.append(point.contact_id)
            if len(calls) == 1:
                merges.append(asyncio.create_task(merge(workspace_id, point.contact_id)))
                await asyncio.sleep(0.1)  # the merge has locked the contact
            return await real_withdraw(session, workspace_id, point, **kwargs)

        async def slow_move(*args, **kwargs):
            await asyncio.sleep(0.4)  # the merge reads both histories before it moves the addresses
            return await real_move(*args, **kwargs)

        monkeypatch.setattr(service, "withdraw_point", merged_first)
        monkeypatch.setattr(merging.repository, "move_contact_references", slow_move)
        response = await phone.text("STOP")
        await merges[0]
        assert response.status_code == 200, response.text
        assert calls[-1] == survivor.contact_id, "the last try found the number under the survivor"
        async with database.sessionmaker() as db:
            stops = (await db.execute(text("SELECT to_state FROM consent_events WHERE trigger = 'stop_word'"))).all()
        assert stops, "the STOP is recorded"
        assert {state for (state,) in stops} == {"opted_out"}


async def test_a_text_read_as_from_an_undeliverable_number_leaves_a_block_reported_since(ledger, session):
    """The hostile review of 2026-12-06: a STOP reads the number's reachability in its first statement; a status
    callback marking it provider_blocked before the STOP writes was overwritten with reachable (the next send then
    failed with 21610). Only the state read is replaced."""
    from app.ledger.models import ContactPoint as Point  # noqa: PLC0415
    from app.twilio import service  # noqa: PLC0415

    point = await ledger.point("sms", "+4915122200011")
    await session.execute(
        text("UPDATE contact_points SET reachability = 'provider_blocked' WHERE id = :id"), {"id": point.id}
    )
    stale = Point(id=point.id, workspace_id=ledger.workspace_id, contact_id=point.contact_id, channel="sms")
    stale.reachability = "undeliverable"  # as the STOP's first statement read it, before the callback committed
    message = service.Inbound("SM-stale", "+4915122200011", "+4915100000001", "STOP", {"Body": ["STOP"]})
    await service._reachable_again(session, ledger.workspace_id, stale, message)
    now = await session.scalar(text("SELECT reachability FROM contact_points WHERE id = :id"), {"id": point.id})
    assert now == "provider_blocked"


@pytest.mark.parametrize("whatsapp", [False, True], ids=["sms", "whatsapp"])
async def test_a_stop_from_a_number_the_phone_library_refuses_is_honoured(
    client, tenant, configured, session, whatsapp
):
    """The hostile review of 2026-12-06: a STOP from +49 1999… (a range the library's data does not list) was
    stored as intent none with nothing suppressed; should the data come to accept the number, it would be mailed.
    Now every marketing purpose is suppressed for it, the message is the proof, and it gets the confirmation."""
    from app.lib.keys import Keys  # noqa: PLC0415
    from tests.conftest import TEST_SECRET  # noqa: PLC0415

    number = "+4919991234567"
    phone = Phone(client, tenant.id)
    help_first = await phone.text("HELLO", sender=number, whatsapp=whatsapp)
    assert help_first.status_code == 200, help_first.text
    assert "<Message>" not in help_first.text, "anything but a STOP is answered with nothing"
    answer = await phone.text("STOP", sender=number, whatsapp=whatsapp)
    assert answer.status_code == 200, answer.text
    assert "<Message>" in answer.text, "the STOP's confirmation"
    channel = "whatsapp" if whatsapp else "sms"
    intents = (await session.execute(text("SELECT channel, intent FROM inbound_messages ORDER BY received_at"))).all()
    assert intents == [(channel, "none"), (channel, "opt_out")]
    keys = set(Keys(TEST_SECRET).suppression_keys(channel, number).values())
    rows = (await session.execute(text("SELECT key, channel, scope, reason FROM suppressions"))).all()
    assert {(bytes(k), c, s, r) for k, c, s, r in rows} == {(k, channel, "all_marketing", "unsubscribe") for k in keys}
    again = await phone.text("STOP", sender=number, whatsapp=whatsapp)
    assert again.status_code == 200, again.text
    assert "<Message>" not in again.text, "one confirmation, then nothing more (CTIA)"
