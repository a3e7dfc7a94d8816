"""Webhook subscriptions: change events queued with the change, signed, delivered and retried."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import typing

import msgspec
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.lib.auth import Scope
from app.lib.errors import InvalidInput
from app.lib.keys import Keys
from app.lib.signatures import verify
from app.settings import Settings
from app.webhooks import service
from app.webhooks.destinations import DestinationRefused, check_destination
from app.webhooks.outbox import EVENT_TYPES, prune_deliveries
from app.webhooks.schemas import EventType, SubscriptionIn
from app.webhooks.sender import SenderConfig, WebhookSender
from app.webhooks.status import WebhookStatus
from tests.conftest import TEST_SECRET, local_http


@pytest.fixture
def settings(tmp_path):
    """As the suite's, with plain http and private addresses allowed (the receiver below runs on 127.0.0.1)."""
    return Settings(
        data_dir=tmp_path / "data",
        secret_key=TEST_SECRET,
        public_base_url="https://consent.example.com",
        webhooks_allow_http=True,
        webhooks_allow_private=True,
    )


class Receiver:
    """A customer's endpoint: records what it gets, answers the statuses it is told to, then 200."""

    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        self.statuses: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver():
    handler = Receiver()
    application = web.Application()
    application.router.add_post("/hooks", handler.handle)
    async with local_http(application) as url:
        handler.url = f"{url}/hooks"
        yield handler


@pytest.fixture
def sender(database):
    return WebhookSender(database, Keys(TEST_SECRET), SenderConfig(base_backoff=60, max_attempts=3), allow_private=True)


async def subscribe(client, headers, url, **extra):
    response = await client.post(
        "/v1/webhook-subscriptions", json={"url": url, "events": ["consent.changed"]} | extra, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def deliveries(session):
    rows = await session.execute(
        text("SELECT status, attempts, last_status FROM webhook_deliveries ORDER BY created_at")
    )
    return [tuple(row) for row in rows]


async def test_a_consent_change_is_delivered_signed_with_what_changed(client, admin, ledger, receiver, sender, session):
    subscription = await subscribe(client, admin, receiver.url)
    assert subscription["secret"].startswith("whsec_")
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com", external_id="crm-42")
    [applied] = await ledger.apply(point, purpose.id, "signup")
    assert await deliveries(session) == [("queued", 0, None)], "queued in the transaction of the change"

    assert await sender.run_once() == 1
    [(headers, body)] = receiver.requests
    assert verify(subscription["secret"], headers["X-Consent-Signature"], body, time.time())
    assert headers["X-Consent-Event-Type"] == "consent.changed"
    event = json.loads(body)
    assert event["id"] == str(applied.event_id) == headers["X-Consent-Event-Id"]
    assert event["type"] == "consent.changed"
    data = event["data"]
    assert (data["external_id"], data["channel"], data["purpose"]) == ("crm-42", "email", "newsletter")
    assert (data["trigger"], data["from_state"], data["to_state"]) == ("signup", "none", "pending")
    assert "jane@example.com" not in body.decode(), "no address leaves in a change event"
    assert await deliveries(session) == [("delivered", 1, 200)]
    assert await sender.run_once() == 0, "delivered once"


async def test_a_failing_receiver_is_retried_with_backoff_and_then_given_up(
    client, admin, ledger, receiver, sender, session
):
    await subscribe(client, admin, receiver.url)
    purpose = await ledger.purpose("newsletter")
    await ledger.apply(await ledger.point("sms", "+4915112345678"), purpose.id, "start_word")
    receiver.statuses = [500, 503]

    await sender.run_once()
    assert await deliveries(session) == [("queued", 1, 500)]
    assert await sender.run_once() == 0, "not due before its backoff"
    due = "UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'"
    await session.execute(text(due))
    await sender.run_once()
    assert await deliveries(session) == [("queued", 2, 503)]
    await session.execute(text(due))
    await sender.run_once()
    assert await deliveries(session) == [("delivered", 3, 200)]
    assert len(receiver.requests) == 3
    assert len({headers["X-Consent-Event-Id"] for headers, _ in receiver.requests}) == 1, "the same event id"

    receiver.statuses = [500, 500, 500]
    await ledger.apply(await ledger.point("sms", "+4915112345679"), purpose.id, "start_word")
    for _ in range(3):
        await sender.run_once()
        await session.execute(text(due))
    assert (await deliveries(session))[-1] == ("failed", 3, 500), "given up after max_attempts"
    listed = (await client.get("/v1/webhook-subscriptions", headers=admin)).json()
    assert listed[0]["failed"] == 1
    assert "secret" not in listed[0], "the secret is shown once, when created"


async def test_a_receiver_answering_a_byte_at_a_time_is_cut_off_at_the_deadline(
    client, admin, ledger, database, session
):
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        with contextlib.suppress(ConnectionError):
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":  # each byte well within httpx's read timeout
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await subscribe(client, admin, f"http://127.0.0.1:{port}/hooks")
        purpose = await ledger.purpose("newsletter")
        await ledger.apply(await ledger.point("sms", "+4915112345678"), purpose.id, "start_word")
        sender = WebhookSender(database, Keys(TEST_SECRET), SenderConfig(timeout=1.0), allow_private=True)
        started = time.monotonic()
        await sender.run_once()
        assert time.monotonic() - started < 4, "the whole exchange is bounded, not each read"
    finally:
        server.close()
    [(status, attempts, last_status)] = await deliveries(session)
    assert (status, attempts, last_status) == ("queued", 1, None), "retried later, not delivered"


async def test_a_lost_claim_is_taken_over_after_its_lease(client, admin, ledger, receiver, database, session):
    await subscribe(client, admin, receiver.url)
    purpose = await ledger.purpose("newsletter")
    await ledger.apply(await ledger.point("email", "jane@example.com"), purpose.id, "signup")
    # a sender claimed it and died: the row is 'sending' with its lease running
    await session.execute(
        text(
            "UPDATE webhook_deliveries SET status = 'sending', attempts = 1, next_attempt_at = now() + interval '1 min'"
        )
    )
    other = WebhookSender(database, Keys(TEST_SECRET), allow_private=True)
    assert await other.run_once() == 0, "the lease still runs"
    await session.execute(text("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'"))
    assert await other.run_once() == 1
    assert await deliveries(session) == [("delivered", 2, 200)]


async def test_no_subscription_no_delivery_and_workspaces_stay_apart(
    client, ledger, other_tenant, receiver, sender, session
):
    await subscribe(client, await other_tenant.key(Scope.ADMIN), receiver.url)
    purpose = await ledger.purpose("newsletter")
    await ledger.apply(await ledger.point("email", "jane@example.com"), purpose.id, "signup")
    assert await deliveries(session) == [], "the other workspace's subscription gets nothing of ours"
    assert await sender.run_once() == 0


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://example.com/hooks", "webhook_url_not_https"),
        ("ftp://example.com/hooks", "invalid_webhook_url"),
        ("https://user:pw@example.com/hooks", "invalid_webhook_url"),
    ],
)
async def test_a_url_that_is_not_https_is_refused(client, admin, url, code):
    response = await client.post(
        "/v1/webhook-subscriptions", json={"url": url, "events": ["consent.changed"]}, headers=admin
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code


async def test_plain_http_needs_the_setting_even_to_the_loopback(admin, tenant):
    from app.lib.errors import InvalidInput  # noqa: PLC0415

    with pytest.raises(InvalidInput):
        service.check_url("http://127.0.0.1:8080/hooks", allow_http=False)
    assert service.check_url("http://127.0.0.1:8080/hooks", allow_http=True)
    assert service.check_url("https://crm.example.com/hooks", allow_http=False)


async def test_subscriptions_are_admin_only_listed_and_deleted(client, admin, tenant, other_tenant, receiver, session):
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    refused = await client.post(
        "/v1/webhook-subscriptions", json={"url": receiver.url, "events": ["consent.changed"]}, headers=writer
    )
    assert refused.status_code == 403
    created = await subscribe(client, admin, receiver.url, secret="a-secret-of-our-own-choosing-123")
    assert created["secret"] == "a-secret-of-our-own-choosing-123"
    stored = (await session.execute(text("SELECT secret_sealed FROM webhook_subscriptions"))).scalar_one()
    assert "a-secret-of-our-own-choosing" not in stored, "stored sealed"
    foreign = await client.delete(
        f"/v1/webhook-subscriptions/{created['id']}", headers=await other_tenant.key(Scope.ADMIN)
    )
    assert foreign.status_code == 404
    gone = await client.delete(f"/v1/webhook-subscriptions/{created['id']}", headers=admin)
    assert gone.status_code == 204
    assert (await client.get("/v1/webhook-subscriptions", headers=admin)).json() == []
    unknown_event = await client.post(
        "/v1/webhook-subscriptions", json={"url": receiver.url, "events": ["everything"]}, headers=admin
    )
    assert unknown_event.status_code == 422


async def test_each_step_of_a_message_is_a_message_status_event(client, admin, ledger, receiver, sender, session):
    await subscribe(client, admin, receiver.url, events=["message.status"])
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com", external_id="crm-42")
    await ledger.apply(point, purpose.id, "signup", "confirm")
    assert await deliveries(session) == [], "only message.status was asked for"
    message = await client.post(
        "/v1/messages",
        json={
            "contact": "crm-42",
            "purpose": "newsletter",
            "route": ["sms", "email"],
            "content": {"email": {"subject": "Hallo", "text": "Neuigkeiten"}, "sms": {"text": "Neu"}},
        },
        headers=admin,
    )
    assert message.status_code == 202, message.text

    assert await sender.run_once() >= 1
    events = [json.loads(body) for _, body in receiver.requests]
    assert {e["type"] for e in events} == {"message.status"}
    queued = next(e["data"] for e in events if e["data"]["status"] == "queued")
    assert queued["message_id"] == message.json()["message_id"]
    assert (queued["external_id"], queued["purpose"], queued["channel"]) == ("crm-42", "newsletter", "email")


def test_the_event_types_accepted_are_the_ones_queued():
    assert typing.get_args(EventType) == EVENT_TYPES


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5/hooks",
        "https://127.0.0.1/hooks",
        "https://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "https://[::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://[fc00::1]/hooks",
        "https://localhost/hooks",  # a name that resolves to the loopback
    ],
)
async def test_webhooks_go_to_public_addresses_only(url):
    with pytest.raises(DestinationRefused, match="not a public address"):
        await check_destination(url, allow_private=False)
    await check_destination(url, allow_private=True)  # the operator may allow the private network


async def test_a_public_address_is_accepted():
    await check_destination("https://93.184.215.14/hooks", allow_private=False)


async def test_a_subscription_to_an_internal_address_is_refused(session, tenant):
    data = msgspec.convert({"url": "https://192.168.1.10/hooks", "events": ["consent.changed"]}, SubscriptionIn)
    with pytest.raises(InvalidInput) as refused:
        await service.create(session, Keys(TEST_SECRET), tenant.id, data, allow_http=False, allow_private=False)
    assert refused.value.code == "webhook_destination_not_public"


async def test_the_sender_checks_the_destination_again_before_sending(
    client, admin, ledger, receiver, database, session
):
    await subscribe(client, admin, receiver.url)  # allowed when made (the setting is on in this module)
    purpose = await ledger.purpose("newsletter")
    await ledger.apply(await ledger.point("email", "jane@example.com"), purpose.id, "signup")
    strict = WebhookSender(database, Keys(TEST_SECRET), SenderConfig(max_attempts=1))  # private not allowed
    await strict.run_once()
    assert receiver.requests == [], "nothing left for an internal address"
    error = (await session.execute(text("SELECT last_error FROM webhook_deliveries"))).scalar_one()
    assert "not a public address" in error


async def test_an_erasure_forgets_the_persons_deliveries_and_announces_itself(client, admin, ledger, receiver, session):
    await subscribe(client, admin, receiver.url)
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com", external_id="crm-42")
    await ledger.apply(point, purpose.id, "signup", "confirm")
    assert len(await deliveries(session)) == 2

    report = (await client.delete("/v1/contacts/crm-42", headers=admin)).json()
    assert report["deleted"]["webhook_deliveries"] == 2
    payloads = (await session.execute(text("SELECT payload FROM webhook_deliveries"))).scalars().all()
    assert [(p["data"]["trigger"], p["data"]["external_id"]) for p in payloads] == [("erasure", "crm-42")], (
        "the erasure goes out, so the CRM can erase too"
    )


async def test_ended_deliveries_are_forgotten_after_a_while(client, admin, ledger, receiver, session):
    await subscribe(client, admin, receiver.url)
    purpose = await ledger.purpose("newsletter")
    for n in range(4):
        await ledger.apply(await ledger.point("email", f"p{n}@example.com"), purpose.id, "signup")
    await session.execute(
        text(
            """
            UPDATE webhook_deliveries d SET status = v.status, created_at = now() - v.age::interval
              FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM webhook_deliveries) o,
                   (VALUES (1, 'delivered', '8 days'), (2, 'delivered', '6 days'), (3, 'failed', '31 days'),
                           (4, 'queued', '40 days')) v(n, status, age)
             WHERE o.id = d.id AND o.n = v.n
            """
        )
    )
    assert await prune_deliveries(session) == 2
    kept = (await session.execute(text("SELECT status FROM webhook_deliveries ORDER BY created_at"))).scalars().all()
    assert sorted(kept) == ["delivered", "queued"], "a recent delivery and one still waiting stay"


@pytest.mark.parametrize("status", ["shipped", "QUEUED", ""])
async def test_the_database_refuses_an_unknown_webhook_delivery_status(session, tenant, status):
    subscription = await session.scalar(
        text(
            "INSERT INTO webhook_subscriptions (id, workspace_id, url, events, secret_sealed)"
            " VALUES (gen_random_uuid(), :workspace, 'https://example.com/hook', '{consent.changed}', 'x') RETURNING id"
        ),
        {"workspace": tenant.id},
    )
    insert = text(
        "INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload, status)"
        " VALUES (gen_random_uuid(), :workspace, :subscription, gen_random_uuid(), 'consent.changed', '{}', :status)"
    )
    values = {"workspace": tenant.id, "subscription": subscription}
    async with session.begin_nested():
        await session.execute(insert, {**values, "status": WebhookStatus.QUEUED.value})
    with pytest.raises(IntegrityError, match="ck_webhook_deliveries_status_known"):
        async with session.begin_nested():
            await session.execute(insert, {**values, "status": status})


async def test_the_webhook_status_check_lists_exactly_the_enum(session):
    # autogenerate does not compare check constraints: this keeps the migration's list and the enum together
    definition = await session.scalar(
        text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ck_webhook_deliveries_status_known'")
    )
    assert definition is not None
    assert re.findall(r"'([^']*)'", definition) == [status.value for status in WebhookStatus]


async def test_the_senders_claim_reads_no_more_of_the_outbox_than_it_claims(pg_server):
    """Written ``id IN (SELECT ... SKIP LOCKED)``, the claim's locked ids were joined to a sequential scan of the whole
    outbox (25,000 rows read for every 128 claimed here), as the dispatcher's claim was (issue 21, item 4)."""
    from app.webhooks.repository import _CLAIM  # noqa: PLC0415
    from tests.conftest import own_database  # noqa: PLC0415

    async with own_database(pg_server) as engine:
        async with engine.begin() as conn:
            # 20,000 due deliveries, 5,000 delivered; their subscriptions are left out (foreign keys not checked)
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                text(
                    """INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload,
                                                       status, attempts, next_attempt_at)
                       SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(),
                              'consent.changed', '{}', CASE WHEN g % 5 = 0 THEN 'delivered' ELSE 'queued' END, 0,
                              now() - interval '1 minute'
                         FROM generate_series(1, 25000) g"""
                )
            )
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE webhook_deliveries"))
            explained = await conn.execute(text(f"EXPLAIN {_CLAIM.text}"), {"lease": 60, "batch": 128})
            plan = "\n".join(explained.scalars())
            assert "Seq Scan" not in plan, plan
            claimed = (await conn.execute(_CLAIM, {"lease": 60, "batch": 128})).all()
            assert len({row.id for row in claimed}) == len(claimed) == 128
