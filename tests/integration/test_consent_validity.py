"""Consents that end (issue 19 item 1): purposes' validity and inactivity on the read path, in SQL and the sweep."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.domain.gate import Reason, decide_point
from app.domain.model import ActorType, PurposeKind, State, Trigger
from app.domain.validity import Policy, Span
from app.eligibility import fastpath
from app.eligibility import repository as facts_repository
from app.ledger.service import Actor, Change, apply_changes
from app.lib.auth import Scope
from app.lib.orm import utcnow
from app.lifecycle import service as lifecycle
from app.purposes import service as purposes
from tests.conftest import Ledger
from tests.validity_oracle import add_span

BASE_URL = "https://consent.example.com"


@pytest.fixture
async def reader(tenant):
    return await tenant.key(Scope.ELIGIBILITY_READ)


@pytest.fixture
async def no_windows(client, admin):
    response = await client.put("/v1/workspace/settings", json={"send_windows": {}}, headers=admin)
    assert response.status_code == 200


async def make_purpose(database, tenant, key="newsletter", **spans):
    async with database.sessionmaker() as session, session.begin():
        return await purposes.create_purpose(session, tenant.id, key, key.title(), "marketing", **spans)


async def given(database, tenant, point, purpose_id, at: datetime) -> uuid.UUID | None:
    """An opted-in consent given at ``at`` (an import with its captured time: the ledger's way to date one)."""
    async with database.sessionmaker() as session, session.begin():
        applied = await apply_changes(
            session,
            tenant.id,
            [Change(point, purpose_id, Trigger.IMPORT, {"source": "crm"}, occurred_at=at, target=State.OPTED_IN)],
            Actor(ActorType.API_KEY),
        )
    return applied[0].event_id


async def ask(client, headers, contact, purpose="newsletter"):
    response = await client.get(
        "/v1/eligibility", params={"contact": contact, "channel": "email", "purpose": purpose}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- purposes ----------------------------------------------------------------------------------------------------


async def test_a_purpose_carries_validity_inactivity_and_repermission(client, admin):
    body = {"key": "offers", "name": "Offers", "kind": "marketing", "validity": "P24M", "inactivity": "P18M"}
    response = await client.post("/v1/purposes", json={**body, "repermission_before": "P30D"}, headers=admin)
    assert response.status_code == 201, response.text
    out = response.json()
    assert (out["validity"], out["inactivity"], out["repermission_before"]) == ("P24M", "P18M", "P30D")
    listed = (await client.get("/v1/purposes", headers=admin)).json()
    assert [(p["key"], p["validity"]) for p in listed] == [("offers", "P24M")]


@pytest.mark.parametrize(
    "extra",
    [
        {"validity": "P0M"},
        {"validity": "PT24H"},
        {"validity": "P2000Y"},
        {"repermission_before": "P30D"},
        {"inactivity": "24 months"},
    ],
)
async def test_a_span_that_is_no_calendar_span_or_a_repermission_without_an_end_is_refused(client, admin, extra):
    body = {"key": "offers", "name": "Offers", "kind": "marketing", **extra}
    response = await client.post("/v1/purposes", json=body, headers=admin)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "([0-9]" not in response.json()["detail"], "said in words, not as a regular expression"
    assert (await client.get("/v1/purposes", headers=admin)).json() == []


async def test_a_category_that_purchases_cannot_name_is_refused_in_words(client, admin):
    body = {"key": "offers", "name": "Offers", "kind": "marketing", "similar_products_of": ["Coffee Beans"]}
    response = await client.post("/v1/purposes", json=body, headers=admin)
    assert response.status_code in (400, 422), response.text
    assert "'Coffee Beans' is not a category" in response.json()["detail"]


async def test_a_transactional_purpose_has_no_validity(client, admin):
    body = {"key": "orders", "name": "Orders", "kind": "transactional", "validity": "P24M"}
    response = await client.post("/v1/purposes", json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_validity"


# --- the end instant in SQL equals the domain's ------------------------------------------------------------------


def _instants() -> list[datetime]:
    """Random instants, and nights whose wall-clock times land, a span later, in a clock change or a month's end."""
    rng = random.Random(19)  # noqa: S311  # repeatable instants, not a secret
    out = [datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(60 * 365 * 86400)) for _ in range(300)]
    targets = ("2022-03-27", "2022-10-30", "2024-03-10", "2024-11-03", "2024-10-06", "2024-04-07", "2024-02-29")
    for day in targets:
        target = datetime.fromisoformat(f"{day}T00:00:00+00:00")
        for back in (0, 1, 12, 13, 18, 24):
            month = target.month - back
            year = target.year + (month - 1) // 12
            month = (month - 1) % 12 + 1
            start = target.replace(year=year, month=month, day=min(target.day, 28)) - timedelta(hours=14)
            out += [start + timedelta(minutes=30 * n) for n in range(56)]
        out += [target - timedelta(days=30, hours=14) + timedelta(minutes=30 * n) for n in range(56)]
    return out


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC"]
SPANS = [Span(24, 0), Span(1, 0), Span(18, 0), Span(0, 30), Span(13, 2), Span(12, 0), Span(0, 1)]


async def test_the_sql_end_instant_equals_the_domain_end_across_time_zones_and_dst(session):
    instants = _instants()
    for zone in ZONES:
        for span in SPANS:
            sql = text(
                f"SELECT {facts_repository.span_end_sql('s', span, ':tz')} AS e "  # noqa: S608
                "FROM unnest(CAST(:starts AS timestamptz[])) WITH ORDINALITY AS u(s, n) ORDER BY n"
            )
            ends = (await session.execute(sql, {"starts": instants, "tz": zone})).scalars().all()
            expected = [add_span(moment, span, zone) for moment in instants]
            wrong = [(i, e, x) for i, e, x in zip(instants, ends, expected, strict=True) if e != x]
            assert wrong == [], (zone, span, wrong[:3])


async def test_the_sql_says_ended_exactly_from_the_domain_end_on(session):
    """The cheap bounds before the exact instant (lapsed_sql) never change the answer, right at the end either."""
    instants = _instants()[::3]
    for zone in ZONES:
        for span in SPANS:
            policy = Policy(validity=span)
            ends = [add_span(moment, span, zone) for moment in instants]
            lapsed = facts_repository.lapsed_sql(
                policy, since="u.s", point="NULL", workspace="NULL", timezone=":tz", now="u.n"
            )
            sql = text(
                f"SELECT {lapsed} AS ended FROM unnest(CAST(:starts AS timestamptz[]), CAST(:nows AS timestamptz[]))"  # noqa: S608
                " WITH ORDINALITY AS u(s, n, i) ORDER BY i"
            )
            for shift, expected in ((timedelta(0), True), (timedelta(microseconds=-1), False)):
                nows = [end + shift for end in ends]
                got = (await session.execute(sql, {"starts": instants, "nows": nows, "tz": zone})).scalars().all()
                wrong = [m for m, g in zip(instants, got, strict=True) if g is not expected]
                assert wrong == [], (zone, span, shift, wrong[:3])


# --- the read path -----------------------------------------------------------------------------------------------


async def test_a_consent_past_its_validity_is_expired_everywhere_before_any_sweep(
    client, database, tenant, ledger, reader, admin, no_windows
):
    purpose = await make_purpose(database, tenant, validity="P24M")
    old = await ledger.point("email", "old@example.com", external_id="old")
    given_at = utcnow() - timedelta(days=800)
    await given(database, tenant, old, purpose.id, given_at)
    fresh = await ledger.point("email", "fresh@example.com", external_id="fresh")
    fresh_at = utcnow() - timedelta(days=30)
    await given(database, tenant, fresh, purpose.id, fresh_at)
    end_old = add_span(given_at, Span(24, 0), "Europe/Berlin")
    end_fresh = add_span(fresh_at, Span(24, 0), "Europe/Berlin")

    answer = await ask(client, reader, "old")  # the fast path
    assert (answer["eligible"], answer["reason"], answer["expires_at"]) == (False, "expired", iso(end_old))
    answer = await ask(client, reader, "fresh")
    assert (answer["eligible"], answer["reason"], answer["expires_at"]) == (True, "opted_in", iso(end_fresh))

    batch = await client.post(
        "/v1/eligibility/batch",
        json={"contacts": ["old", "fresh"], "channels": ["email"], "purpose": "newsletter"},
        headers=reader,
    )
    decisions = [(d["contact"], d["reason"], d["expires_at"]) for d in batch.json()["decisions"]]
    assert decisions == [("old", "expired", iso(end_old)), ("fresh", "opted_in", iso(end_fresh))]

    audience = await client.get("/v1/audiences", params={"purpose": "newsletter", "channel": "email"}, headers=reader)
    assert [json.loads(line)["external_id"] for line in audience.text.splitlines()] == ["fresh"]

    sender = await tenant.key(Scope.MESSAGES_SEND)
    message = {"purpose": "newsletter", "route": ["email"], "content": {"email": {"subject": "Hi", "text": "Hello"}}}
    routed = await client.post("/v1/messages", json={**message, "contact": "old"}, headers=sender)
    assert routed.json()["status"] == "no_eligible_channel"
    assert routed.json()["decision"]["skipped"] == [{"channel": "email", "reason": "expired"}]
    assert (await client.post("/v1/messages", json={**message, "contact": "fresh"}, headers=sender)).json()[
        "status"
    ] == "queued"


async def test_a_queued_message_is_blocked_at_send_once_the_consent_has_ended(database, tenant, ledger, session):
    purpose = await make_purpose(database, tenant, validity="P24M")
    point = await ledger.point("email", "jane@example.com", external_id="jane")
    given_at = utcnow() - timedelta(days=700)
    await given(database, tenant, point, purpose.id, given_at)
    end = add_span(given_at, Span(24, 0), "Europe/Berlin")
    facts = [
        f for _, f in await facts_repository.point_facts(session, tenant.id, [point.contact_id], ["email"], purpose.id)
    ]
    before = decide_point(
        facts[0], PurposeKind.MARKETING, now=end - timedelta(seconds=1), window=None, default_timezone="UTC"
    )
    after = decide_point(facts[0], PurposeKind.MARKETING, now=end, window=None, default_timezone="UTC")
    assert (before.eligible, before.reason, before.expires_at) == (True, Reason.OPTED_IN, end)
    assert (after.eligible, after.reason, after.expires_at) == (False, Reason.EXPIRED, end)


async def deliver(session, tenant, point, purpose_id, at: datetime) -> None:
    """A message delivered to ``point`` at ``at`` (its history's ``delivered`` step)."""
    message_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO messages (id, workspace_id, contact_id, purpose_id, strategy, route, content, decision,"
            " status) VALUES (:m, :w, :c, :p, 'first_eligible', ARRAY['email'], '{}', '{}', 'queued')"
        ),
        {"m": message_id, "w": tenant.id, "c": point.contact_id, "p": purpose_id},
    )
    await session.execute(
        text(
            "INSERT INTO deliveries (id, workspace_id, message_id, channel, contact_point_id, status, next_attempt_at,"
            " updated_at) VALUES (:d, :w, :m, 'email', :cp, 'delivered', :at, :at)"
        ),
        {"d": delivery_id, "w": tenant.id, "m": message_id, "cp": point.id, "at": at},
    )
    await session.execute(
        text(
            "INSERT INTO message_events (id, workspace_id, message_id, delivery_id, channel, status, at)"
            " VALUES (:e, :w, :m, :d, 'email', 'delivered', :at)"
        ),
        {"e": uuid.uuid4(), "w": tenant.id, "m": message_id, "d": delivery_id, "at": at},
    )
    await session.flush()


async def test_inactivity_counts_from_the_last_delivered_message_on_the_address(
    client, database, tenant, ledger, reader, session
):
    purpose = await make_purpose(database, tenant, inactivity="P18M")
    idle = await ledger.point("email", "idle@example.com", external_id="idle")
    active = await ledger.point("email", "active@example.com", external_id="active")
    given_at = utcnow() - timedelta(days=600)
    for point in (idle, active):
        await given(database, tenant, point, purpose.id, given_at)
    delivered_at = utcnow() - timedelta(days=100)
    await deliver(session, tenant, active, purpose.id, delivered_at)

    idle_answer = await ask(client, reader, "idle")
    assert (idle_answer["reason"], idle_answer["expires_at"]) == (
        "expired",
        iso(add_span(given_at, Span(18, 0), "Europe/Berlin")),
    )
    active_answer = await ask(client, reader, "active")
    assert (active_answer["reason"], active_answer["expires_at"]) == (
        "opted_in",
        iso(add_span(delivered_at, Span(18, 0), "Europe/Berlin")),
    )
    audience = await client.get("/v1/audiences", params={"purpose": "newsletter", "channel": "email"}, headers=reader)
    assert [json.loads(line)["external_id"] for line in audience.text.splitlines()] == ["active"]


async def test_the_workspace_time_zone_sets_the_wall_clock(client, admin, database, tenant, ledger, reader):
    assert (
        await client.put("/v1/workspace/settings", json={"timezone": "America/New_York"}, headers=admin)
    ).status_code == 200
    await make_purpose(database, tenant, validity="P1M")
    purpose_id = (await client.get("/v1/purposes", headers=admin)).json()[0]["id"]
    point = await ledger.point("email", "ny@example.com", external_id="ny")
    given_at = utcnow() - timedelta(days=10)
    await given(database, tenant, point, uuid.UUID(purpose_id), given_at)
    answer = await ask(client, reader, "ny")
    assert answer["expires_at"] == iso(add_span(given_at, Span(1, 0), "America/New_York"))


# --- the sweep ---------------------------------------------------------------------------------------------------


async def test_the_sweep_and_the_read_path_agree_on_who_has_expired(client, database, tenant, ledger, reader, session):
    purpose = await make_purpose(database, tenant, validity="P12M", inactivity="P6M")
    now = utcnow()
    rng = random.Random(7)  # noqa: S311  # a repeatable history, not a secret
    points = []
    for n in range(24):
        point = await ledger.point("email", f"p{n}@example.com", external_id=f"p{n}")
        await given(database, tenant, point, purpose.id, now - timedelta(days=rng.randrange(30, 500)))
        if rng.random() < 0.4:
            await deliver(session, tenant, point, purpose.id, now - timedelta(days=rng.randrange(1, 300)))
        points.append(point)
    contact_ids = [p.contact_id for p in points]
    at = now + timedelta(days=20)  # some ends fall between now and then

    facts = await facts_repository.point_facts(session, tenant.id, contact_ids, ["email"], purpose.id)
    expired_before = {
        f.id
        for _, f in facts
        if decide_point(f, PurposeKind.MARKETING, now=at, window=None, default_timezone="UTC").reason is Reason.EXPIRED
    }
    assert 0 < len(expired_before) < len(points)

    result = await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, now=at)
    assert result.ended == len(expired_before)
    rows = await session.execute(
        text(
            "SELECT contact_point_id, occurred_at, personal FROM consent_events"
            " WHERE workspace_id = :w AND trigger = 'validity_ended' AND to_state = 'expired'"
        ),
        {"w": tenant.id},
    )
    ended = {row.contact_point_id: row for row in rows}
    assert set(ended) == expired_before
    after = await facts_repository.point_facts(session, tenant.id, contact_ids, ["email"], purpose.id)
    decided_after = {
        f.id: decide_point(f, PurposeKind.MARKETING, now=at, window=None, default_timezone="UTC") for _, f in after
    }
    for _, fact in facts:  # the same answer and the same end after the sweep as before it
        before = decide_point(fact, PurposeKind.MARKETING, now=at, window=None, default_timezone="UTC")
        assert (decided_after[fact.id].reason, decided_after[fact.id].expires_at) == (before.reason, before.expires_at)
    some = next(iter(ended.values()))
    assert (
        some.personal["evidence"]["rule"] in ("validity", "inactivity") if "evidence" in (some.personal or {}) else True
    )
    assert (await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, now=at)).ended == 0  # nothing twice
    verified = await client.get("/v1/audit/verify", headers=await tenant.key(Scope.AUDIT_READ))
    assert verified.json()["valid"] is True


async def test_the_sweep_records_the_rule_and_the_instants_as_evidence(database, tenant, ledger, session):
    purpose = await make_purpose(database, tenant, validity="P24M")
    point = await ledger.point("email", "jane@example.com", external_id="jane")
    given_at = datetime(2023, 3, 31, 0, 30, tzinfo=UTC)  # 02:30 CEST
    event_id = await given(database, tenant, point, purpose.id, given_at)
    result = await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)
    assert result.ended == 1
    row = (
        await session.execute(
            text(
                "SELECT occurred_at, personal, actor_type FROM consent_events"
                " WHERE workspace_id = :w AND trigger = 'validity_ended'"
            ),
            {"w": tenant.id},
        )
    ).one()
    # 2025-03-31 02:30 exists in Berlin (the change was on the 30th): the same wall-clock time, CEST
    assert row.occurred_at == datetime(2025, 3, 31, 0, 30, tzinfo=UTC)
    evidence = json.dumps(row.personal)
    for expected in ('"rule": "validity"', '"validity": "P24M"', "2023-03-31T00:30:00+00:00", str(event_id)):
        assert expected in evidence
    assert row.actor_type == "system"


async def test_the_hot_path_and_the_route_answer_the_same_end(client, database, tenant, ledger, reader, monkeypatch):
    served = []
    encoder = fastpath._encoder

    class Counting:
        def encode(self, value):
            served.append(value)
            return encoder.encode(value)

    monkeypatch.setattr(fastpath, "_encoder", Counting())
    purpose = await make_purpose(database, tenant, validity="P24M", inactivity="P18M")
    for name, days in (("old", 800), ("fresh", 30)):
        point = await ledger.point("email", f"{name}@example.com", external_id=name)
        await given(database, tenant, point, purpose.id, utcnow() - timedelta(days=days))
    for name in ("old", "fresh"):
        query = {"contact": name, "channel": "email", "purpose": "newsletter"}
        fast = (await client.get("/v1/eligibility", params=query, headers=reader)).json()
        routed = (await client.get("/v1/eligibility", params={**query, "via": "route"}, headers=reader)).json()
        assert {k: v for k, v in fast.items() if k != "decided_at"} == {
            k: v for k, v in routed.items() if k != "decided_at"
        }
        assert fast["expires_at"] is not None
    assert len(served) == 2


async def test_the_sweep_goes_in_batches_and_says_when_more_may_wait(database, tenant, ledger, session):
    purpose = await make_purpose(database, tenant, validity="P12M")
    for n in range(3):
        point = await ledger.point("email", f"b{n}@example.com", external_id=f"b{n}")
        await given(database, tenant, point, purpose.id, utcnow() - timedelta(days=400 + n))
    first = await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, limit=2)
    assert (first.ended, first.more) == (2, True)
    second = await lifecycle.sweep(session, push_services=None, base_url=BASE_URL, limit=2)
    assert (second.ended, second.more) == (1, False)


async def test_setting_a_validity_on_an_existing_purpose_applies_at_once_and_an_ended_consent_stays_ended(
    client, admin, database, tenant, ledger, reader, session
):
    purpose = await make_purpose(database, tenant)
    point = await ledger.point("email", "old@example.com", external_id="old")
    given_at = utcnow() - timedelta(days=800)
    await given(database, tenant, point, purpose.id, given_at)
    assert (await ask(client, reader, "old"))["reason"] == "opted_in"

    response = await client.put(
        "/v1/purposes/newsletter/lifecycle", json={"validity": "P24M", "repermission_before": "P30D"}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert (response.json()["validity"], response.json()["repermission_before"]) == ("P24M", "P30D")
    answer = await ask(client, reader, "old")
    assert (answer["reason"], answer["expires_at"]) == (
        "expired",
        iso(add_span(given_at, Span(24, 0), "Europe/Berlin")),
    )

    fresh = await ledger.point("email", "fresh@example.com", external_id="fresh")
    await given(database, tenant, fresh, purpose.id, utcnow() - timedelta(days=10))
    cleared = await client.put("/v1/purposes/newsletter/lifecycle", json={}, headers=admin)
    assert cleared.json()["validity"] is None
    # newcomer review: eligibility had said expired; a looser rule must not bring the consent back, whether or
    # not the sweep had recorded it (the PUT records it first, dated at its end)
    assert (await ask(client, reader, "old"))["reason"] == "expired"
    assert (await ask(client, reader, "fresh"))["reason"] == "opted_in", "a consent in force stays in force"
    ended = (
        await session.execute(
            text("SELECT occurred_at FROM consent_events WHERE trigger = 'validity_ended' AND contact_point_id = :p"),
            {"p": point.id},
        )
    ).scalar_one()
    assert ended == add_span(given_at, Span(24, 0), "Europe/Berlin")


@pytest.mark.parametrize(
    ("key", "body", "status"),
    [
        ("unknown", {"validity": "P24M"}, 404),
        ("newsletter", {"repermission_before": "P30D"}, 422),
        ("newsletter", {"validity": "P0D"}, 422),
        ("newsletter", {"validity": "P1M", "repermission_before": "P60D"}, 422),  # re-asked on the day it is given
        ("newsletter", {"validity": "P1M", "repermission_before": "P4W"}, 422),  # February has 28 days
        ("orders", {"validity": "P24M"}, 422),
    ],
)
async def test_a_lifecycle_that_cannot_apply_is_refused(client, admin, database, tenant, key, body, status):
    await make_purpose(database, tenant)
    async with database.sessionmaker() as session, session.begin():
        await purposes.create_purpose(session, tenant.id, "orders", "Orders", "transactional")
    response = await client.put(f"/v1/purposes/{key}/lifecycle", json=body, headers=admin)
    assert response.status_code == status, response.text
    listed = {p["key"]: p["validity"] for p in (await client.get("/v1/purposes", headers=admin)).json()}
    assert listed == {"newsletter": None, "orders": None}


# --- one source of ends ------------------------------------------------------------------------------------------


async def test_every_reader_takes_the_databases_end_where_two_tz_releases_disagree(
    client, admin, database, tenant, ledger, reader, session
):
    """One source: the database computes every end (hostile review of 2026-12-05).

    From November 2026, tz releases disagree on Vancouver: older ones (Debian 12's 2025b, which Python read before
    the service pinned the tzdata package) fall back to UTC-8, 2026's keep UTC-7 all year. 2026-10-15 11:00 PDT + P1M is
    2026-11-15 11:00, 18:00 or 19:00 UTC by which release reads it; + P10Y3M 2037-01-15 11:00 likewise. Whatever the
    server's release says, eligibility (hot path, route, batch), the sweep, the import and the export say the same.
    """
    from tests.integration.test_consent_import import email_line, ndjson, post  # noqa: PLC0415  # no cycle at load

    vancouver = "America/Vancouver"
    assert (await client.put("/v1/workspace/settings", json={"timezone": vancouver}, headers=admin)).status_code == 200
    given_at = datetime(2026, 10, 15, 18, tzinfo=UTC)  # 11:00 PDT
    ten_years = await make_purpose(database, tenant, validity="P10Y3M")
    one_month = await make_purpose(database, tenant, "offers", validity="P1M")

    async def database_end(span: Span) -> datetime:
        sql = f"SELECT {facts_repository.span_end_sql('CAST(:s AS timestamptz)', span, 'CAST(:tz AS text)')}"
        return (await session.execute(text(sql), {"s": given_at, "tz": vancouver})).scalar_one()

    long_end, short_end = await database_end(Span(123, 0)), await database_end(Span(1, 0))
    assert long_end in (datetime(2037, 1, 15, 18, tzinfo=UTC), datetime(2037, 1, 15, 19, tzinfo=UTC))

    point = await ledger.point("email", "bc@example.com", external_id="bc")
    await given(database, tenant, point, ten_years.id, given_at)
    await given(database, tenant, point, one_month.id, given_at)
    answer = await ask(client, reader, "bc")
    routed = await client.get(
        "/v1/eligibility",
        params={"contact": "bc", "channel": "email", "purpose": "newsletter", "via": "route"},
        headers=reader,
    )
    batch = await client.post(
        "/v1/eligibility/batch",
        json={"contacts": ["bc"], "channels": ["email"], "purpose": "newsletter"},
        headers=reader,
    )
    assert (answer["reason"], answer["expires_at"]) == ("opted_in", iso(long_end))
    assert routed.json()["expires_at"] == iso(long_end)
    assert batch.json()["decisions"][0]["expires_at"] == iso(long_end)
    assert (await ask(client, reader, "bc", "offers"))["expires_at"] == iso(short_end)

    assert (await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)).ended == 1
    swept = (
        await session.execute(
            text(
                "SELECT occurred_at, personal FROM consent_events"
                " WHERE trigger = 'validity_ended' AND workspace_id = :w AND contact_point_id = :p"
            ),
            {"w": tenant.id, "p": point.id},
        )
    ).one()
    assert swept.occurred_at == short_end
    assert swept.personal["evidence"]["ended_at"] == short_end.isoformat()

    imported = await post(
        client,
        admin,
        ndjson(
            email_line(contact="bc-2", address="bc2@example.com", purpose="offers", captured_at="2026-10-15T18:00:00Z")
        ),
    )
    assert imported.json()["expired"] == 1, imported.text
    ended_on_arrival = (
        await session.execute(
            text(
                "SELECT e.occurred_at FROM consent_events e JOIN contacts c ON c.id = e.contact_id"
                " WHERE e.workspace_id = :w AND c.external_id = 'bc-2' AND e.trigger = 'validity_ended'"
            ),
            {"w": tenant.id},
        )
    ).scalar_one()
    assert ended_on_arrival == short_end


@pytest.mark.parametrize(
    ("zone", "status"),
    [
        ("Europe/Berlin", 200),
        ("America/Vancouver", 200),
        ("UTC", 200),  # an abbreviation too, of the same fixed offset
        ("EST", 200),  # a fixed zone whose abbreviation means the same
        ("CET", 422),  # the database reads the abbreviation (+01:00 all year), the zone keeps summer time
        ("WET", 422),
        ("localtime", 422),  # a file of this machine's zoneinfo folder, unknown to the database
        ("Mars/Olympus", 422),
    ],
)
async def test_a_workspace_time_zone_must_be_read_by_the_database_as_the_zone(client, admin, zone, status):
    """Hostile review of 2026-12-05: the database computes every end; a name it cannot read, or reads as a
    fixed abbreviation, would break every read of the workspace's ends or shift them by an hour in summer."""
    response = await client.put("/v1/workspace/settings", json={"timezone": zone}, headers=admin)
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["code"] == "invalid_timezone"
        current = await client.get("/v1/workspace/settings", headers=admin)
        assert current.json()["timezone"] == "Europe/Berlin", "nothing stored"


async def test_a_stored_time_zone_the_database_refuses_stops_only_its_own_workspace(
    database, tenant, other_tenant, ledger, session, monkeypatch
):
    """Stored before the settings check (or by hand): the sweep and the snapshots go on for every other workspace."""
    from app.main import _standing_round  # noqa: PLC0415  # the background round itself
    from app.reports import service as reports  # noqa: PLC0415

    broken = await make_purpose(database, other_tenant, validity="P1M")
    async with database.sessionmaker() as db, db.begin():
        await db.execute(
            text('UPDATE workspaces SET settings = settings || \'{"timezone": "localtime"}\' WHERE id = :w'),
            {"w": other_tenant.id},
        )
    their_point = await Ledger(database, other_tenant.id).point("email", "x@example.com", external_id="x")
    # given 30 days ago: within the bounds of P1M, so its exact end (in the refused zone) must be computed
    await given(database, other_tenant, their_point, broken.id, utcnow() - timedelta(days=30))
    purpose = await make_purpose(database, tenant, validity="P1M")
    point = await ledger.point("email", "mine@example.com", external_id="mine")
    await given(database, tenant, point, purpose.id, utcnow() - timedelta(days=90))

    assert (await lifecycle.sweep(session, push_services=None, base_url=BASE_URL)).ended >= 1
    mine = await session.execute(
        text("SELECT count(*) FROM consent_events WHERE workspace_id = :w AND trigger = 'validity_ended'"),
        {"w": tenant.id},
    )
    assert mine.scalar_one() == 1

    async def both(*_: object, **__: object) -> list[uuid.UUID]:
        return [other_tenant.id, tenant.id]  # the broken one first, as the longest waiting

    monkeypatch.setattr(reports, "standing_due", both)
    await _standing_round(database, None)
    monkeypatch.undo()
    async with database.sessionmaker() as db:
        taken = await db.execute(
            text("SELECT DISTINCT workspace_id FROM report_standing_daily WHERE workspace_id IN (:a, :b)"),
            {"a": tenant.id, "b": other_tenant.id},
        )
        assert {row.workspace_id for row in taken} == {tenant.id}
        assert other_tenant.id in await reports.standing_due(db, limit=100_000)


@pytest.mark.parametrize(
    ("stored", "accepted"),
    [("P100Y", True), ("P1200M", True), ("P36500D", True), ("P0D", False), ("P0Y0M", False), ("P999Y", False),
     ("P1201M", False), ("P36501D", False), ("P5300W", False)],
)  # fmt: skip
async def test_the_database_refuses_a_span_the_api_would_refuse(database, tenant, stored, accepted):
    """The facts queries cast the stored span as it is: a hand-edited P0D would end every consent at once."""
    from sqlalchemy.exc import IntegrityError  # noqa: PLC0415

    purpose = await make_purpose(database, tenant)
    update = text("UPDATE purposes SET validity = :v WHERE id = :p")
    if accepted:
        async with database.sessionmaker() as db, db.begin():
            await db.execute(update, {"v": stored, "p": purpose.id})
        return
    with pytest.raises(IntegrityError, match="ck_purposes_validity_span"):
        async with database.sessionmaker() as db, db.begin():
            await db.execute(update, {"v": stored, "p": purpose.id})


async def test_the_service_reads_time_zones_as_the_database_does_and_says_where_not(
    client, admin, session, monkeypatch
):
    """The service pins its tz data (the tzdata package, not the machine's): with the embedded server's release
    it reads Vancouver as the database does; a zone read otherwise is named at start-up (send windows, dates)."""
    from datetime import timezone  # noqa: PLC0415

    from app.workspaces import service as workspace_service  # noqa: PLC0415

    vancouver = "America/Vancouver"
    assert (await client.put("/v1/workspace/settings", json={"timezone": vancouver}, headers=admin)).status_code == 200
    drift = await workspace_service.time_zone_drift(session)
    assert vancouver not in drift
    assert "Europe/Berlin" not in drift

    real = workspace_service.ZoneInfo

    def older_release(name: str):  # what a 2025 release says: Vancouver falls back to UTC-8 in November 2026
        return timezone(timedelta(hours=-8)) if name == vancouver else real(name)

    monkeypatch.setattr(workspace_service, "ZoneInfo", older_release)
    drift = await workspace_service.time_zone_drift(session, months=24)
    assert len(drift[vancouver]) >= 24  # every instant: UTC-7 all year in the database's release
    assert "Europe/Berlin" not in drift
