"""Eligibility through the API on real PostgreSQL: reasons, consistency, batch limits, streamed audiences."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import random
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from app.domain.gate import decide_point
from app.domain.model import Channel, PurposeKind, SuppressionScope
from app.eligibility import repository
from app.lib.auth import Scope
from app.lib.copystream import PIECE
from app.lib.keys import Keys
from tests.conftest import TEST_SECRET, audience_request, request_then_disconnect


@pytest.fixture
async def reader(tenant):
    return await tenant.key(Scope.ELIGIBILITY_READ)


@pytest.fixture
async def no_windows(client, admin):
    response = await client.put("/v1/workspace/settings", json={"send_windows": {}}, headers=admin)
    assert response.status_code == 200


async def ask(client, headers, contact, channel="email", purpose="newsletter"):
    response = await client.get(
        "/v1/eligibility", params={"contact": contact, "channel": channel, "purpose": purpose}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_opted_in_contact_is_eligible_with_its_evidence(client, ledger, reader):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com", external_id="crm-1")
    applied = await ledger.apply(point, purpose.id, "signup", "confirm")
    answer = await ask(client, reader, "crm-1")
    assert answer["eligible"] is True
    assert answer["reason"] == "opted_in"
    assert answer["evidence_event_id"] == str(applied[-1].event_id)
    assert answer["contact_points"] == [
        {"id": str(point.id), "address_masked": "j***@example.com", "eligible": True, "reason": "opted_in"}
    ]
    assert answer["decided_at"].endswith("Z")


@pytest.mark.parametrize(
    ("triggers", "reason"),
    [
        ((), "no_consent"),
        (("signup",), "pending_confirmation"),
        (("signup", "confirm", "unsubscribe"), "opted_out"),
        (("signup", "lapse"), "expired"),
    ],
)
async def test_reasons_come_from_the_ledger(client, ledger, reader, triggers, reason):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com", external_id="crm-1")
    if triggers:
        await ledger.apply(point, purpose.id, *triggers)
    answer = await ask(client, reader, "crm-1")
    assert (answer["eligible"], answer["reason"]) == (False, reason)


async def test_a_withdrawal_is_reflected_at_once(client, ledger, tenant, reader):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com", external_id="crm-1")
    await ledger.apply(point, purpose.id, "signup", "confirm")
    assert (await ask(client, reader, "crm-1"))["eligible"] is True
    withdrawn = await client.post(
        "/v1/withdrawals",
        json={"contact": "crm-1", "channel": "email", "purpose": "newsletter"},
        headers=await tenant.key(Scope.CONSENTS_WRITE),
    )
    assert withdrawn.status_code == 200
    after = await ask(client, reader, "crm-1")
    assert (after["eligible"], after["reason"]) == (False, "opted_out")


async def test_objection_suppresses_and_print_rests_on_legitimate_interest(client, ledger, tenant, reader):
    await ledger.purpose("newsletter")
    point = await ledger.point(
        "print", "DE|10115|hauptstr|1", external_id="crm-2", details={"address_key": "DE|10115|hauptstr|1"}
    )
    assert (await ask(client, reader, "crm-2", channel="print"))["reason"] == "legitimate_interest"
    await ledger.apply(point, None, "objection")
    answer = await ask(client, reader, "crm-2", channel="print")
    assert (answer["eligible"], answer["reason"]) == (False, "objected")


async def test_no_address_on_the_channel_and_unknown_contacts(client, ledger, reader):
    await ledger.purpose("newsletter")
    await ledger.point("email", "jane@example.com", external_id="crm-1")
    assert (await ask(client, reader, "crm-1", channel="sms"))["reason"] == "no_contact_point"
    unknown = await client.get(
        "/v1/eligibility", params={"contact": "nobody", "channel": "sms", "purpose": "newsletter"}, headers=reader
    )
    assert unknown.status_code == 404
    bad = await client.get(
        "/v1/eligibility", params={"contact": "crm-1", "channel": "fax", "purpose": "newsletter"}, headers=reader
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_parameter"


async def test_sms_outside_the_send_window_says_when_it_opens(client, ledger, reader, monkeypatch):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("sms", "+4915123456789", external_id="crm-3")
    await ledger.apply(point, purpose.id, "signup", "start_word")
    import app.eligibility.service as eligibility_service  # noqa: PLC0415

    monkeypatch.setattr(eligibility_service, "utcnow", lambda: datetime(2026, 6, 10, 20, 30, tzinfo=UTC))
    answer = await ask(client, reader, "crm-3", channel="sms")
    assert (answer["eligible"], answer["reason"]) == (False, "outside_send_window")
    assert answer["next_window_opens_at"] == "2026-06-11T06:00:00Z"


async def test_transactional_purposes_need_no_consent(client, ledger, reader):
    await ledger.purpose("order_updates", kind="transactional")
    await ledger.point("email", "jane@example.com", external_id="crm-1")
    answer = await ask(client, reader, "crm-1", purpose="order_updates")
    assert (answer["eligible"], answer["reason"]) == (True, "transactional")


async def test_batch_answers_every_contact_and_channel_in_order(client, ledger, reader, no_windows):
    purpose = await ledger.purpose("newsletter")
    a = await ledger.point("email", "a@example.com", external_id="a")
    await ledger.point("sms", "+4915100000001", contact_id=a.contact_id)
    await ledger.apply(a, purpose.id, "signup", "confirm")
    await ledger.point("email", "b@example.com", external_id="b")
    response = await client.post(
        "/v1/eligibility/batch",
        json={
            "contacts": ["a", "b", "ghost", str(a.contact_id)],
            "channels": ["email", "sms"],
            "purpose": "newsletter",
        },
        headers=reader,
    )
    assert response.status_code == 200, response.text
    decisions = [(d["contact"], d["channel"], d["eligible"], d["reason"]) for d in response.json()["decisions"]]
    assert decisions == [
        ("a", "email", True, "opted_in"),
        ("a", "sms", False, "no_consent"),
        ("b", "email", False, "no_consent"),
        ("b", "sms", False, "no_contact_point"),
        ("ghost", "email", False, "contact_not_found"),
        ("ghost", "sms", False, "contact_not_found"),
        (str(a.contact_id), "email", True, "opted_in"),
        (str(a.contact_id), "sms", False, "no_consent"),
    ]


async def test_batch_agrees_with_single_checks_and_knows_unknown_purposes(client, ledger, reader, no_windows):
    purpose = await ledger.purpose("newsletter")
    refs = []
    for index, triggers in enumerate([("signup", "confirm"), ("signup",), ("signup", "confirm", "unsubscribe"), ()]):
        point = await ledger.point("email", f"p{index}@example.com", external_id=f"p{index}")
        if triggers:
            await ledger.apply(point, purpose.id, *triggers)
        refs.append(f"p{index}")
    batch = await client.post(
        "/v1/eligibility/batch", json={"contacts": refs, "channels": ["email"], "purpose": "newsletter"}, headers=reader
    )
    for decision in batch.json()["decisions"]:
        single = await ask(client, reader, decision["contact"])
        assert (decision["eligible"], decision["reason"]) == (single["eligible"], single["reason"])
    unknown = await client.post(
        "/v1/eligibility/batch", json={"contacts": refs, "channels": ["email"], "purpose": "nope"}, headers=reader
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "purpose_not_found"


async def test_batch_probes_the_index_per_contact_whatever_the_statistics(database, ledger, tenant):
    """10,000 references are 10,000 index probes: no plan may read every address or contact of the workspace.

    Written as joins, the planner chose by statistics; at 1M contacts one choice hashed every address
    (1.1-1.5 s instead of 0.2 s).
    """
    purpose = await ledger.purpose("newsletter")
    await ledger.opted_in_in_bulk(purpose.id, 30_000)
    refs = [f"bulk-{n}" for n in range(1, 10_001)]
    async with database.driver() as driver:
        plan = await driver.fetchval(
            f"EXPLAIN (FORMAT JSON) {repository._BATCH_FACTS}",
            tenant.id,
            [],
            refs,
            ["email", "sms"],
            purpose.id,
            "Europe/Berlin",
        )

    def scans(node: dict) -> list[tuple[str, str]]:
        found = [(node["Node Type"], node["Relation Name"])] if "Relation Name" in node else []
        return found + [scan for child in node.get("Plans", []) for scan in scans(child)]

    read = scans((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    on_tables = [(kind, table) for kind, table in read if table in {"contacts", "contact_points", "consents"}]
    assert {table for _, table in on_tables} == {"contacts", "contact_points", "consents"}
    assert all(kind in {"Index Scan", "Index Only Scan"} for kind, _ in on_tables), on_tables


async def test_batch_over_the_limit_is_413_with_a_clear_message(client, ledger, reader):
    await ledger.purpose("newsletter")
    body = {"contacts": [f"c{i}" for i in range(10_001)], "channels": ["email"], "purpose": "newsletter"}
    response = await client.post("/v1/eligibility/batch", json=body, headers=reader)
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"
    assert "10,000" in response.json()["detail"]
    ok = await client.post(
        "/v1/eligibility/batch", json={**body, "contacts": body["contacts"][:10_000]}, headers=reader
    )
    assert ok.status_code == 200
    assert len(ok.json()["decisions"]) == 10_000


async def test_audience_streams_ndjson_and_csv(client, ledger, reader):
    purpose = await ledger.purpose("newsletter")
    yes = await ledger.point("email", "yes@example.com", external_id="yes")
    await ledger.apply(yes, purpose.id, "signup", "confirm")
    no = await ledger.point("email", "no@example.com", external_id="no")
    await ledger.apply(no, purpose.id, "signup")
    response = await client.get("/v1/audiences", params={"purpose": "newsletter", "channel": "email"}, headers=reader)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert [(r["external_id"], r["address"], r["reason"]) for r in rows] == [("yes", "yes@example.com", "opted_in")]

    as_csv = await client.get(
        "/v1/audiences", params={"purpose": "newsletter", "channel": "email"}, headers={**reader, "Accept": "text/csv"}
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["external_id"], r["address"]) for r in table] == [("yes", "yes@example.com")]


async def test_audience_external_id_follows_the_contact(client, ledger, reader, session):
    """The export reads the external id kept on the contact point; triggers keep it equal to the contact's."""
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "moved@example.com", external_id="crm-1")
    await ledger.apply(point, purpose.id, "signup", "confirm")
    other = await ledger.point("sms", "+491701234567", external_id="crm-2")

    async def exported() -> list[str | None]:
        response = await client.get(
            "/v1/audiences", params={"purpose": "newsletter", "channel": "email"}, headers=reader
        )
        return [json.loads(line)["external_id"] for line in response.text.splitlines()]

    assert await exported() == ["crm-1"]
    await session.execute(text("UPDATE contacts SET external_id = 'crm-1b' WHERE id = :id"), {"id": point.contact_id})
    assert await exported() == ["crm-1b"]
    await session.execute(text("UPDATE contacts SET external_id = NULL WHERE id = :id"), {"id": point.contact_id})
    assert await exported() == [None]
    # written directly, the copy is replaced by the contact's own value
    await session.execute(
        text("UPDATE contact_points SET contact_external_id = 'forged' WHERE id = :id"), {"id": point.id}
    )
    assert await exported() == [None]
    # a point moved to another contact takes that contact's external id
    await session.execute(
        text("UPDATE contact_points SET contact_id = :to WHERE id = :id"), {"to": other.contact_id, "id": point.id}
    )
    await session.execute(
        text("UPDATE consents SET contact_id = :to WHERE contact_point_id = :id"),
        {"to": other.contact_id, "id": point.id},
    )
    assert await exported() == ["crm-2"]


async def test_new_addresses_go_straight_into_the_suppression_index(ledger, session):
    """No pending list: with one, every probe of the export's suppression lookup read all recent entries."""
    purpose = await ledger.purpose("newsletter")
    await ledger.opted_in_in_bulk(purpose.id, 2_000)
    waiting = await session.scalar(text("SELECT gin_clean_pending_list('ix_contact_points_suppression_keys')"))
    assert waiting == 0, f"{waiting} pages of entries were waiting in the GIN pending list"


async def test_audience_starts_before_the_query_ends_and_waits_for_a_slow_client(app, engine, session, ledger, reader):
    """The first bytes go out while COPY still runs; a client that does not read holds the query back."""
    purpose = await ledger.purpose("newsletter")
    await ledger.opted_in_in_bulk(purpose.id, 30_000)  # about 7 MB of NDJSON
    sent: list[dict] = []
    complete = asyncio.Event()
    reading = asyncio.Event()
    copy_seen_running: list[bool] = []
    receive = request_then_disconnect(complete)

    async def copy_running() -> bool:
        async with engine.connect() as other:
            active = await other.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY (%'")
            )
            return active.scalar_one() == 1

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not reading.is_set():
            # a client that has not read on for a while: the query must still be running, held back
            await asyncio.sleep(0.5)
            copy_seen_running.append(await copy_running())
            reading.set()
        if message["type"] == "http.response.body" and not message.get("more_body"):
            complete.set()

    scope = audience_request(reader["Authorization"])
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert copy_seen_running == [True], "the response started while COPY was still running, and it waited"
    pieces = [m["body"] for m in sent if m["type"] == "http.response.body" and m.get("body")]
    # COPY's small pieces (one socket read each) are gathered before they go out: fewer, larger writes
    assert all(len(piece) >= PIECE for piece in pieces[:-1]), [len(p) for p in pieces]
    lines = b"".join(pieces).splitlines()
    assert len(lines) == 30_000
    assert json.loads(lines[0])["channel"] == "email"
    assert not await copy_running()


async def test_audience_strings_survive_json_and_csv(client, ledger, reader):
    """Addresses and external ids with quotes, backslashes, commas and non-ASCII come out exactly."""
    purpose = await ledger.purpose("newsletter")
    awkward = "o'brien\"\\x,y\u00e9@example.com"
    point = await ledger.point("email", awkward, external_id='crm "7",\\ü')
    await ledger.apply(point, purpose.id, "signup", "confirm")
    params = {"purpose": "newsletter", "channel": "email"}
    as_json = await client.get("/v1/audiences", params=params, headers=reader)
    (row,) = [json.loads(line) for line in as_json.text.splitlines()]
    assert row == {
        "contact_id": str(point.contact_id),
        "external_id": 'crm "7",\\ü',
        "contact_point_id": str(point.id),
        "channel": "email",
        "address": point.value,
        "reason": "opted_in",
        "evidence_event_id": row["evidence_event_id"],
    }
    assert uuid.UUID(row["evidence_event_id"])
    as_csv = await client.get("/v1/audiences", params=params, headers={**reader, "Accept": "text/csv"})
    (record,) = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert record == {**row, "evidence_event_id": row["evidence_event_id"]}


@pytest.mark.parametrize("inline_blocked", [100_000, 0], ids=["blocked-as-constant", "blocked-by-subquery"])
async def test_audience_sql_selects_exactly_what_the_gate_decides(
    ledger, session, database, monkeypatch, inline_blocked
):
    """One send gate: the SQL filter of the export agrees with decide_point on random data (both forms)."""
    monkeypatch.setattr(repository, "AUDIENCE_INLINE_BLOCKED", inline_blocked)
    rng = random.Random(20261122)  # noqa: S311  # reproducible test data, not cryptography
    newsletter = await ledger.purpose("newsletter")
    orders = await ledger.purpose("order_updates", kind="transactional")
    keys = Keys(TEST_SECRET)
    channels = [Channel.EMAIL, Channel.SMS, Channel.PRINT, Channel.WEB_PUSH]
    triggers = {
        Channel.EMAIL: ["signup", "confirm", "unsubscribe", "lapse", "complaint", "objection"],
        Channel.SMS: ["signup", "start_word", "stop_word", "provider_block", "unsubscribe"],
        Channel.PRINT: ["objection", "objection_withdrawn", "robinson_match"],
        Channel.WEB_PUSH: ["permission_granted", "permission_denied", "permission_revoked", "provider_gone"],
    }
    import contextlib  # noqa: PLC0415

    from app.domain.transitions import TransitionNotAllowed  # noqa: PLC0415

    points = []
    for i in range(60):
        channel = rng.choice(channels)
        # half of them as a form brings them (unverified until confirmed, start word or permission)
        verified = rng.choice(["api", None])
        point = await ledger.point(channel.value, f"{channel.value}-{i}-{uuid.uuid4().hex[:6]}", verified=verified)
        points.append(point)
        for _ in range(rng.randint(0, 4)):
            purpose_id = rng.choice([newsletter.id, None])
            with contextlib.suppress(TransitionNotAllowed):
                await ledger.apply(point, purpose_id, rng.choice(triggers[channel]))
        if rng.random() < 0.15:
            await session.execute(
                text("UPDATE contact_points SET reachability = :r WHERE id = :id"),
                {"r": rng.choice(["undeliverable", "provider_blocked", "expired"]), "id": point.id},
            )
        if rng.random() < 0.15:
            scope = rng.choice([SuppressionScope.ALL, SuppressionScope.ALL_MARKETING, SuppressionScope.PURPOSE])
            key = keys.point_keys(channel.value, point.value, {})[0]
            await session.execute(
                text(
                    "INSERT INTO suppressions (id, workspace_id, key, key_version, channel, scope, purpose_id, reason) "
                    "VALUES (:id, :ws, :key, 1, :channel, :scope, :purpose, 'unsubscribe')"
                ),
                {
                    "id": uuid.uuid4(),
                    "ws": ledger.workspace_id,
                    "key": key,
                    "channel": channel.value,
                    "scope": scope.value,
                    "purpose": newsletter.id if scope is SuppressionScope.PURPOSE else None,
                },
            )

    contact_ids = sorted({p.contact_id for p in points})
    for purpose in (newsletter, orders):
        kind = PurposeKind(purpose.kind)
        facts = await repository.point_facts(
            session, ledger.workspace_id, contact_ids, [c.value for c in channels], purpose.id
        )
        by_gate = {
            f.id
            for _, f in facts
            if decide_point(f, kind, now=datetime.now(UTC), window=None, default_timezone="Europe/Berlin").eligible
        }
        chunks: list[bytes] = []

        async def collect(chunk: bytes) -> None:
            chunks.append(chunk)  # noqa: B023  # used within this iteration only

        async with database.driver() as driver:
            await repository.copy_audience(
                driver, ledger.workspace_id, purpose.id, kind, channels, as_csv=False, sink=collect, push_services=None
            )
        by_sql = {uuid.UUID(json.loads(line)["contact_point_id"]) for line in b"".join(chunks).splitlines()}
        assert by_sql == by_gate, purpose.key
        assert by_gate, "the random data should make some points eligible"
        assert len(by_gate) < len(points), "and some not"


async def test_the_audience_export_leaves_out_a_web_push_endpoint_off_the_push_services(client, ledger, reader):
    """An endpoint stored before the operator narrowed ``CONSENT_WEB_PUSH_SERVICES`` (here: the known push services)
    is undeliverable for eligibility and routing: the export does not list it either."""
    newsletter = await ledger.purpose("newsletter")
    listed_point = await ledger.point("web_push", "https://fcm.googleapis.com/fcm/send/abc", external_id="on")
    off = await ledger.point("web_push", "https://push.old-service.example/sub/1", external_id="off")
    for point in (listed_point, off):
        await ledger.apply(point, newsletter.id, "permission_granted")
    for accept in ("application/x-ndjson", "text/csv"):
        exported = await client.get(
            "/v1/audiences",
            params={"purpose": "newsletter", "channel": ["web_push", "email"]},
            headers={**reader, "Accept": accept},
        )
        assert exported.status_code == 200, exported.text
        assert str(listed_point.id) in exported.text
        assert str(off.id) not in exported.text
    for contact, eligible in (("on", True), ("off", False)):
        answer = await ask(client, reader, contact, channel="web_push")
        assert answer["eligible"] is eligible


#: Host patterns as an operator might write them by hand (settings lower-case them; the match must not rely on it).
PUSH_PATTERNS = ("fcm.googleapis.com", "*.push.apple.com", "Push.Example.NET.", "127.0.0.1")

#: Endpoints and whether their host is on PUSH_PATTERNS, as :func:`app.lib.outbound.listed` reads them.
PUSH_ENDPOINTS = [
    ("https://fcm.googleapis.com/fcm/send/a", True),
    ("https://FCM.GoogleAPIs.com/fcm/send/b", True),  # case
    ("HTTPS://fcm.googleapis.com/fcm/send/c", True),
    ("https://fcm.googleapis.com./fcm/send/d", True),  # a trailing dot
    ("https://fcm.googleapis.com../fcm/send/d2", True),
    ("https://fcm.googleapis.com:443/fcm/send/e", True),  # a port
    ("https://fcm.googleapis.com:/fcm/send/f", True),
    ("https://fcm.googleapis.com", True),  # no path
    ("https://fcm.googleapis.com?x=g", True),
    ("https://fcm.googleapis.com#h", True),
    ("http://fcm.googleapis.com/fcm/send/i", True),  # the host only is matched (the guard refuses http apart)
    ("https://user:pw@fcm.googleapis.com/j", True),  # userinfo is not the host
    ("https://evil.example\\@fcm.googleapis.com/k", True),
    (" https://fcm.googleapis.com/l", True),  # urlsplit strips leading spaces
    ("https://fcm.google\tapis.com/m", True),  # and removes tabs and newlines
    ("https://fcm.googleapis.com:443\n/n", True),
    ("https://fcm.googleapis.com@evil.example/o", False),
    ("https://fcm.googleapis.com:pw@evil.example/o2", False),  # what precedes the first ':' is no host here
    ("https://fcm.googleapis.com.evil.example/p", False),
    ("https://xfcm.googleapis.com/q", False),
    ("https://fcm%2egoogleapis.com/r", False),
    ("https://fcm_googleapis.com/s", False),
    ("https://web.push.apple.com/QAbc", True),
    ("https://a.b.push.apple.com/QAbc", True),  # any depth below
    ("https://.push.apple.com/QAbc", True),  # an empty label below: still ends with .push.apple.com
    ("https://WEB.PUSH.APPLE.COM:8443/QAbc", True),
    ("https://push.apple.com/QAbc", False),  # *. matches names below only
    ("https://evilpush.apple.com/QAbc", False),
    ("https://push.example.net/t", True),  # the pattern in capitals and with a trailing dot
    ("https://sub.push.example.net/u", False),
    ("https://127.0.0.1:8443/v", True),
    ("https://127.0.0.2/w", False),
    ("https://[::1]/x", False),
    ("https://[fcm.googleapis.com]/y", False),  # brackets without an IPv6 literal: urlsplit raises
    ("https://[::1/z", False),
    ("not a url", False),
    ("", False),
]


@pytest.mark.parametrize("inline_blocked", [100_000, 0], ids=["blocked-as-constant", "blocked-by-subquery"])
async def test_the_audience_export_matches_push_hosts_as_routing_does(
    ledger, session, database, monkeypatch, inline_blocked
):
    """Case, trailing dots, ports, userinfo, odd spellings: the export lists an endpoint exactly when routing
    (:func:`app.eligibility.service.routable`, through ``listed``) would send to it; other channels are untouched."""
    from app.domain.model import Reachability  # noqa: PLC0415
    from app.eligibility.service import routable  # noqa: PLC0415

    monkeypatch.setattr(repository, "AUDIENCE_INLINE_BLOCKED", inline_blocked)
    newsletter = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "jane@example.com")
    await ledger.apply(mail, newsletter.id, "signup", "confirm")
    expected = {mail.id}
    ids = {}
    for i, (endpoint, on_list) in enumerate(PUSH_ENDPOINTS):
        point = await ledger.point("web_push", endpoint or f"https://{i}", contact_id=mail.contact_id)
        if not endpoint:  # an empty value: written past the service's own checks
            await session.execute(text("UPDATE contact_points SET value = '' WHERE id = :id"), {"id": point.id})
        await ledger.apply(point, newsletter.id, "permission_granted")
        ids[point.id] = endpoint
        if on_list:
            expected.add(point.id)
    [(_, fact)] = await repository.point_facts(
        session, ledger.workspace_id, [mail.contact_id], ["email"], newsletter.id
    )
    channels = [Channel.EMAIL, Channel.WEB_PUSH]

    async def export(push_services):
        chunks: list[bytes] = []

        async def collect(chunk: bytes) -> None:
            chunks.append(chunk)

        async with database.driver() as driver:
            await repository.copy_audience(
                driver,
                ledger.workspace_id,
                newsletter.id,
                PurposeKind.MARKETING,
                channels,
                as_csv=False,
                sink=collect,
                push_services=push_services,
            )
        return {uuid.UUID(json.loads(line)["contact_point_id"]) for line in b"".join(chunks).splitlines()}

    exported = await export(PUSH_PATTERNS)
    wrong = {ids.get(i, "email") for i in exported ^ expected}
    assert exported == expected, f"export and routing disagree on {sorted(wrong)}"
    # the expectations above are routing's own answers
    for endpoint, on_list in PUSH_ENDPOINTS:
        pushed = dataclasses.replace(fact, channel=Channel.WEB_PUSH, value=endpoint)
        routed = routable(pushed, PUSH_PATTERNS).reachability is Reachability.REACHABLE
        assert routed is on_list, endpoint
    assert await export(None) == {mail.id, *ids}  # no list: every host


async def test_the_export_reads_only_reachable_endpoints_not_spelled_plainly(ledger, session, database):
    """An endpoint stored before subscriptions had to be plain is read into Python by the export only while it is
    reachable (the export lists no other): a workspace's dead odd endpoints do not grow every export's statement."""
    from app.domain.model import Reachability  # noqa: PLC0415

    newsletter = await ledger.purpose("newsletter")
    alive = await ledger.point("web_push", "https://fcm.googleapis.com?alive")
    dead = await ledger.point("web_push", "https://fcm.googleapis.com?dead", contact_id=alive.contact_id)
    for point in (alive, dead):
        await ledger.apply(point, newsletter.id, "permission_granted")
    await session.execute(
        text("UPDATE contact_points SET reachability = :r WHERE id = :id"),
        {"r": Reachability.UNDELIVERABLE.value, "id": dead.id},
    )
    await session.commit()
    async with database.driver() as driver:
        _, allowed, refused = await repository.push_hosts_args(
            driver, ledger.workspace_id, [Channel.WEB_PUSH], ("fcm.googleapis.com",)
        )
    assert (allowed, refused) == (["https://fcm.googleapis.com?alive"], [])
