"""Reports on real PostgreSQL: the rollups reconcile with the ledger, a rebuild and the audience export; each metric
counts what docs/reporting.md says; another workspace sees nothing; bad parameters are refused with a 4xx."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.domain.model import ActorType, SuppressionReason, Trigger
from app.domain.transitions import TransitionNotAllowed
from app.ledger import repository as ledger_repository
from app.ledger.actions import suppression_rows
from app.ledger.service import Actor, Change, apply_changes
from app.lib.auth import Scope
from app.lib.keys import Keys
from app.messages import repository as messages
from app.messages.status import DeliveryStatus, MessageStatus, Step
from app.reports import repository, service
from app.workspaces import service as workspace_service
from tests.conftest import TEST_SECRET, Ledger, Tenant

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
BASE = NOW - timedelta(days=10)
SYSTEM = Actor(ActorType.SYSTEM, "test")


async def record(
    ledger: Ledger,
    point: Any,
    purpose_id: uuid.UUID | None,
    trigger: str,
    at: datetime,
    evidence: dict[str, Any] | None = None,
    actor: Actor = SYSTEM,
) -> bool:
    """One ledger event at ``at``; False when the state machine refuses it (nothing written)."""
    try:
        async with ledger.database.sessionmaker() as session, session.begin():
            change = Change(point, purpose_id, Trigger(trigger), evidence or {}, occurred_at=at)
            await apply_changes(session, ledger.workspace_id, [change], actor)
    except TransitionNotAllowed:
        return False
    return True


async def report(client, headers, kind="consents", **params) -> dict[str, Any]:
    response = await client.get(f"/v1/reports/{kind}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def span(start: datetime = BASE - timedelta(days=1), end: datetime = NOW + timedelta(hours=1)) -> dict[str, str]:
    return {"from": start.isoformat(), "to": end.isoformat()}


# --- reconciliation -------------------------------------------------------------------------------------------

EMAIL_STEPS = ("signup", "confirm", "lapse", "unsubscribe", "validity_ended", "complaint", "erasure")
SMS_STEPS = ("signup", "start_word", "stop_word", "provider_block")
#: Who records a step, and the evidence: the ways an unsubscribe comes are told apart by both (a mail's link, the
#: preference centre, an API key), and the catch-ups and the rebuild must tell them apart alike.
WAYS = (
    (SYSTEM, {}),
    (Actor(ActorType.API_KEY, "00000000-0000-0000-0000-000000000001"), {"form_id": "footer"}),
    (Actor(ActorType.SUBJECT, "preference_centre"), {"source": "preference_centre", "method": "withdraw"}),
    (Actor(ActorType.SUBJECT), {"method": "rfc8058_one_click"}),
)
steps = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 1),
        st.integers(0, 6),
        st.integers(0, 200),
        st.booleans(),
        st.integers(0, len(WAYS) - 1),
    ),
    min_size=5,
    max_size=40,
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps)
async def test_rollups_equal_a_recount_a_rebuild_and_the_audience_export(client, database, history):
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspace_service.create_workspace(session, "Random")
    tenant, ledger = Tenant(workspace.id, database), Ledger(database, workspace.id)
    reader = await tenant.key(Scope.AUDIT_READ)
    purposes = [await ledger.purpose("newsletter"), await ledger.purpose("offers")]
    points = []
    for n in range(4):
        channel = "email" if n < 2 else "sms"
        value = f"p{n}@example.com" if channel == "email" else f"+4915112345{n:03d}"
        points.append(await ledger.point(channel, value, external_id=f"c{n}"))
    for n, point in enumerate(points):  # everyone starts opted in to one purpose: the random steps then leave it
        opt_in = ("signup", "confirm") if point.channel == "email" else ("signup", "start_word")
        for trigger in opt_in:
            assert await record(ledger, point, purposes[n % 2].id, trigger, BASE)
    for i, (who, which, step, hours, look, way) in enumerate(history):
        point = points[who]
        names = EMAIL_STEPS if point.channel == "email" else SMS_STEPS
        trigger = names[step % len(names)]
        if trigger == "erasure":
            continue  # an erasure deletes the address; the other steps keep using it
        actor, evidence = WAYS[way]
        at = BASE + timedelta(hours=hours, seconds=i)
        await record(ledger, point, purposes[which].id, trigger, at, evidence, actor)
        if look:  # a report in between: the rollups grow in increments
            await report(client, reader, **span())

    body = await report(client, reader, group_by="channel,purpose", **span())
    async with database.sessionmaker() as session, session.begin():
        assert sorted(map(tuple, await repository.stored_consent_counts(session, workspace.id)), key=repr) == sorted(
            map(tuple, await repository.recount_ledger(session, workspace.id)), key=repr
        )
        kept = await repository.stored_rollups(session, workspace.id)
        await service.rebuild(session, workspace.id)
        assert await repository.stored_rollups(session, workspace.id) == kept
    assert await report(client, reader, group_by="channel,purpose", **span()) == body

    # whole UTC days read the daily counters; the same range shifted by an hour at each end reads the hourly ones
    first = (BASE - timedelta(days=1)).replace(hour=0)
    last = (NOW + timedelta(days=1)).replace(hour=0)
    for group_by in ("channel,purpose", "trigger,source"):
        daily = await report(client, reader, group_by=group_by, **span(first, last))
        hourly = await report(
            client, reader, group_by=group_by, **span(first + timedelta(hours=1), last - timedelta(hours=1))
        )
        assert daily["series"] == hourly["series"]

    exporter = await tenant.key(Scope.ELIGIBILITY_READ)
    for purpose in purposes:
        exported = await client.get(
            "/v1/audiences", params={"purpose": purpose.key, "channel": "email"}, headers=exporter
        )
        assert exported.status_code == 200
        audience = len(exported.text.splitlines())
        rows = [r for r in body["series"] if r["group"] == {"channel": "email", "purpose": purpose.key}]
        standing = rows[-1]["metrics"]["opted_in_total"] if rows else 0
        assert standing == audience
        # the standing total is the running sum of the net growth
        assert sum(r["metrics"]["net_growth"] for r in rows) == standing


# --- metrics --------------------------------------------------------------------------------------------------


async def test_opt_outs_by_stop_word_and_by_unsubscribe_link_and_one_click(client, tenant, ledger):
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    at = BASE + timedelta(hours=5)
    sms = await ledger.point("sms", "+4915112345678", external_id="a")
    for trigger in ("signup", "start_word", "stop_word", "stop_word"):  # the second STOP changes nothing
        assert await record(ledger, sms, purpose.id, trigger, at)
    for n, method in enumerate(("rfc8058_one_click", "unsubscribe_page")):
        mail = await ledger.point("email", f"m{n}@example.com", external_id=f"m{n}")
        for trigger in ("signup", "confirm"):
            await record(ledger, mail, purpose.id, trigger, at)
        await record(ledger, mail, purpose.id, "unsubscribe", at, {"ip": "198.51.100.4", "method": method})

    body = await report(client, reader, group_by="trigger", **span())
    by_trigger = {}
    for row in body["series"]:
        cell = by_trigger.setdefault(row["group"]["trigger"], dict.fromkeys(row["metrics"], 0))
        for name, value in row["metrics"].items():
            cell[name] = (cell[name] or 0) + (value or 0)
    assert by_trigger["stop_word"]["opt_outs"] == 1
    assert by_trigger["stop_word"]["events"] == 2
    assert by_trigger["unsubscribe"]["opt_outs"] == 2
    assert by_trigger["unsubscribe"]["opt_outs_one_click"] == 1
    assert by_trigger["unsubscribe"]["opt_outs_unsubscribe_page"] == 1
    assert by_trigger["start_word"]["opt_ins"] == 1
    assert by_trigger["confirm"]["opt_ins"] == 2

    totals = await report(client, reader, group_by="channel", **span())
    last = {
        row["group"]["channel"]: row["metrics"]
        for row in totals["series"]
        if row["bucket"] == totals["series"][-1]["bucket"]
    }
    assert last["sms"]["opted_in_total"] == 0
    assert last["email"]["opted_in_total"] == 0
    assert sum(r["metrics"]["opt_ins"] for r in totals["series"]) == 3


async def test_a_range_off_midnight_counts_its_hours_at_both_ends_and_the_whole_days_between(client, tenant, ledger):
    """Whole days are read from the daily rollup, the hours before and after them from the hourly one: an event an
    hour outside the range is not counted, one an hour inside is, and the standing total starts from every earlier
    event, the same day's hours before the range included."""
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    day0 = (BASE - timedelta(days=3)).replace(hour=0)
    start, end = day0 + timedelta(hours=5), day0 + timedelta(days=3, hours=20)

    early = await ledger.point("email", "early@example.com", external_id="early")
    for trigger in ("signup", "confirm"):  # before the range, on its first day: in the standing total only
        await record(ledger, early, purpose.id, trigger, day0 + timedelta(hours=4))
    first = await ledger.point("email", "first@example.com", external_id="first")
    await record(ledger, first, purpose.id, "signup", day0 + timedelta(hours=5))  # the range's first hour
    await record(ledger, first, purpose.id, "confirm", day0 + timedelta(days=1, hours=12))  # a whole day
    await record(ledger, early, purpose.id, "unsubscribe", day0 + timedelta(days=3, hours=19))  # the last hour
    late = await ledger.point("email", "late@example.com", external_id="late")
    await record(ledger, late, purpose.id, "signup", day0 + timedelta(days=3, hours=20))  # just after the range

    for granularity in ("day", "week"):
        body = await report(
            client, reader, granularity=granularity, **{"from": start.isoformat(), "to": end.isoformat()}
        )
        totals = {name: sum(row["metrics"][name] for row in body["series"]) for name in ("signups", "opt_ins")}
        assert totals == {"signups": 1, "opt_ins": 1}, granularity
        assert sum(row["metrics"]["opt_outs"] for row in body["series"]) == 1
        assert body["series"][0]["metrics"]["opted_in_total"] == 1  # early's opt-in at 04:00 of the first day
        assert body["series"][-1]["metrics"]["opted_in_total"] == 1  # first's in, early's out

    days = await report(client, reader, granularity="day", **{"from": start.isoformat(), "to": end.isoformat()})
    by_day = {row["bucket"][:10]: row["metrics"] for row in days["series"]}
    assert [by_day[(day0 + timedelta(days=n)).date().isoformat()]["opted_in_total"] for n in range(4)] == [1, 2, 2, 1]


async def test_doi_confirmation_rate_and_time_to_confirm_per_signup_cohort(client, tenant, ledger):
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    day = (BASE + timedelta(days=2)).replace(hour=10)
    for n, seconds in enumerate((30, 60, 600, None)):
        mail = await ledger.point("email", f"d{n}@example.com", external_id=f"d{n}")
        await record(ledger, mail, purpose.id, "signup", day)
        if seconds is not None:  # confirmed on the next day for the slowest: still the signup's cohort
            evidence = {"signals": ["fast_confirmation"]} if seconds == 30 else {}
            await record(ledger, mail, purpose.id, "confirm", day + timedelta(seconds=seconds), evidence)
    late = await ledger.point("email", "late@example.com", external_id="late")
    await record(ledger, late, purpose.id, "signup", day + timedelta(days=1))
    await record(ledger, late, purpose.id, "confirm", day + timedelta(days=1, hours=20))

    body = await report(client, reader, granularity="day", purpose="newsletter", **span())
    cohorts = {row["bucket"][:10]: row["metrics"] for row in body["series"]}
    first = cohorts[day.date().isoformat()]
    assert first["signups"] == 4
    assert first["confirmations"] == 3
    assert first["confirmations_with_scanner_signal"] == 1
    assert first["confirmation_rate"] == 0.75
    assert first["time_to_confirm_p50_s"] == 60
    assert first["time_to_confirm_p90_s"] == 600
    second = cohorts[(day + timedelta(days=1)).date().isoformat()]
    assert second["confirmation_rate"] == 1.0
    assert second["time_to_confirm_p50_s"] == 72_000  # 20 hours, two significant digits
    assert cohorts[(day + timedelta(days=2)).date().isoformat()]["confirmation_rate"] is None


async def test_a_start_word_completing_an_sms_signup_is_its_double_opt_in_confirmation(client, tenant, ledger):
    """An SMS/WhatsApp signup is confirmed by the start word texted from the number (pending → opted in): the
    channel's confirmation rate counts it, in the live rollups and after a rebuild; a start word with no pending
    signup (keyword-only opt-in) confirms nothing."""
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    day = (BASE + timedelta(days=2)).replace(hour=10)
    for n, seconds in enumerate((45, 300, None)):
        phone = await ledger.point("sms", f"+4915112340{n:03d}", external_id=f"s{n}")
        await record(ledger, phone, purpose.id, "signup", day)
        if seconds is not None:
            await record(ledger, phone, purpose.id, "start_word", day + timedelta(seconds=seconds))
    keyword_only = await ledger.point("whatsapp", "+4915112349999", external_id="k")
    assert await record(ledger, keyword_only, purpose.id, "start_word", day)

    expected = {"sms": (3, 2, 0.6667, 45), "whatsapp": (0, 0, None, None)}  # rates to four places
    for rebuilt in (False, True):
        if rebuilt:
            async with ledger.database.sessionmaker() as session, session.begin():
                await service.rebuild(session, tenant.id)
        body = await report(client, reader, granularity="day", group_by="channel", **span())
        found = {
            row["group"]["channel"]: (
                row["metrics"]["signups"],
                row["metrics"]["confirmations"],
                row["metrics"]["confirmation_rate"],
                row["metrics"]["time_to_confirm_p50_s"],
            )
            for row in body["series"]
            if row["bucket"][:10] == day.date().isoformat()
        }
        assert found == expected, (rebuilt, found)


async def test_a_range_ending_within_a_day_shows_that_days_signup_cohort(client, tenant, ledger):
    """A cohort is a whole UTC day, shown in the bucket named by its day whenever the range touches that day: the
    day ``to`` falls in was left out (newcomer review: its signups counted, its confirmation rate missing)."""
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    day = (BASE + timedelta(days=3)).replace(hour=0)
    mail = await ledger.point("email", "cohort@example.com", external_id="cohort")
    await record(ledger, mail, purpose.id, "signup", day + timedelta(hours=4))
    await record(ledger, mail, purpose.id, "confirm", day + timedelta(hours=4, seconds=30))
    start, end = day - timedelta(hours=19), day + timedelta(hours=5)  # 05:00 the day before to 05:00
    body = await report(client, reader, granularity="day", **{"from": start.isoformat(), "to": end.isoformat()})
    last = body["series"][-1]
    assert last["bucket"][:10] == day.date().isoformat()
    assert (last["metrics"]["signups"], last["metrics"]["confirmation_rate"]) == (1, 1.0)
    assert last["metrics"]["time_to_confirm_p50_s"] == 30


async def test_objections_and_robinson_matches_on_print_by_kind(client, tenant, ledger):
    reader = await tenant.key(Scope.AUDIT_READ)
    at = BASE + timedelta(hours=3)
    for n, (trigger, kind) in enumerate((("objection", "sticker"), ("objection", "art21"), ("robinson_match", None))):
        letter = await ledger.point("print", f"Musterstr. {n}|12345|Berlin|DE", external_id=f"o{n}")
        evidence = {"kind": kind} if kind else {"kind": "robinson"}
        assert await record(ledger, letter, None, trigger, at, evidence)
    metrics = (await report(client, reader, granularity="month", channel="print", **span()))["series"]
    total = {name: sum(r["metrics"][name] or 0 for r in metrics) for name in ("objections", "robinson_matches")}
    assert total == {"objections": 2, "robinson_matches": 1}
    assert sum(r["metrics"]["objections_sticker"] for r in metrics) == 1
    assert sum(r["metrics"]["objections_art21"] for r in metrics) == 1


async def message_history(database, workspace_id, purpose_id, mail, phone, at) -> None:
    """Three emails sent after 2, 4 and 8 s (one delivered), an SMS sent after a retry and then reported failed,
    an email blocked at send time, a message with no eligible channel: written as the messages package writes."""
    async with database.sessionmaker() as session, session.begin():

        async def message(status: MessageStatus = MessageStatus.QUEUED) -> uuid.UUID:
            row = await messages.add_message(
                session, workspace_id, contact_id=mail.contact_id, purpose_id=purpose_id, strategy="first_eligible",
                route=["email"], content={}, decision={}, status=status, send_at=None,
            )  # fmt: skip
            return row.id

        async def delivery(message_id: uuid.UUID, point: Any) -> uuid.UUID:
            row = await messages.add_delivery(
                session, workspace_id, message_id, channel=point.channel, contact_point_id=point.id,
                status=DeliveryStatus.QUEUED, next_attempt_at=at, at=at,
            )  # fmt: skip
            return row.id

        for n, seconds in enumerate((2, 4, 8)):  # three emails sent after 2, 4 and 8 s, one delivered
            m = await message()
            d = await delivery(m, mail)
            messages.add_event(
                session, workspace_id, m, d, "email", Step.QUEUED, detail={"not_before": at.isoformat()}, at=at
            )
            messages.add_event(session, workspace_id, m, d, "email", Step.SENT, at=at + timedelta(seconds=seconds))
            if n == 0:
                messages.add_event(session, workspace_id, m, d, "email", Step.DELIVERED, at=at + timedelta(seconds=30))
            # engagement: the first mail opened, clicked and converted; the second clicked by a mail scanner, the
            # third opened by one (its pixel fetched by a proxy)
            later = at + timedelta(minutes=1)
            scanned = {"scanner_signals": ["user_agent"]}
            signals = [
                [(Step.OPENED, {"via": "pixel"}), (Step.CLICKED, {"via": "link"}), (Step.CONVERTED, {})],
                [(Step.CLICKED, {"via": "link", **scanned})],
                [(Step.OPENED, {"via": "pixel", **scanned})],
            ][n]
            for step, detail in signals:
                messages.add_event(session, workspace_id, m, d, "email", step, detail=detail, at=later)
        m = await message()  # an SMS: one retry, sent after 100 s, then the provider reports it failed (bounce)
        d = await delivery(m, phone)
        messages.add_event(
            session, workspace_id, m, d, "sms", Step.QUEUED, detail={"not_before": at.isoformat()}, at=at
        )
        messages.add_event(session, workspace_id, m, d, "sms", Step.RETRY_SCHEDULED, at=at + timedelta(seconds=1))
        messages.add_event(session, workspace_id, m, d, "sms", Step.SENDING, at=at + timedelta(seconds=99))
        messages.add_event(session, workspace_id, m, d, "sms", Step.SENT, at=at + timedelta(seconds=100))
        messages.add_event(
            session,
            workspace_id,
            m,
            d,
            "sms",
            Step.FAILED,
            detail={"provider_status": "undelivered"},
            at=at + timedelta(seconds=200),
        )
        m = await message()  # blocked at send time
        d = await delivery(m, mail)
        messages.add_event(session, workspace_id, m, d, "email", Step.QUEUED, at=at)
        messages.add_event(session, workspace_id, m, d, "email", Step.BLOCKED_AT_SEND, at=at + timedelta(seconds=5))
        m = await message(MessageStatus.NO_ELIGIBLE_CHANNEL)
        messages.add_event(session, workspace_id, m, None, None, Step.NO_ELIGIBLE_CHANNEL, at=at)
        await messages.write_staged(session)


async def test_latencies_counted_by_two_catch_ups_in_one_hour_add_up_count_by_count(tenant, ledger, database):
    """A second catch-up's ``sent`` events of a key already counted add to its latency histogram, each latency's
    count to its own (migration 0049): the rollups then equal a rebuild's."""
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "twice@example.com", external_id="twice")
    phone = await ledger.point("sms", "+4915112340001", contact_id=mail.contact_id)
    at = BASE + timedelta(hours=7)
    for later in (0, 10):  # the same steps ten minutes later: the same hourly and daily keys
        await message_history(database, tenant.id, purpose.id, mail, phone, at + timedelta(minutes=later))
        async with database.sessionmaker() as session, session.begin():
            await service.catch_up(session, tenant.id)
    async with database.sessionmaker() as session, session.begin():
        counted = await repository.stored_rollups(session, tenant.id)
        await service.rebuild(session, tenant.id)
        assert await repository.stored_rollups(session, tenant.id) == counted
    for table in ("report_message_counts", "report_message_daily"):
        sent = [row for row in counted[table] if row[1] == "email" and row[4] == "sent"]
        assert [(row[5], row[-1]) for row in sent] == [(((2000, 2), (4000, 2), (8000, 2)), 6)], table


async def test_a_rebuild_after_merged_catch_ups_rewrites_no_row(tenant, ledger, database):
    """Histograms merged by three catch-ups (``ON CONFLICT``) equal a rebuild's, in value and in JSON numbers: the
    rebuild's fingerprint finds every row right and writes none (each row keeps its id)."""
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "thrice@example.com", external_id="thrice")
    phone = await ledger.point("sms", "+4915112340003", contact_id=mail.contact_id)
    for later in (0, 10, 20):
        await message_history(database, tenant.id, purpose.id, mail, phone, BASE + timedelta(hours=7, minutes=later))
        async with database.sessionmaker() as session, session.begin():
            await service.catch_up(session, tenant.id)
    async with database.sessionmaker() as session, session.begin():
        before = await _rollup_rows(session, tenant.id)
        await service.rebuild(session, tenant.id)
        assert await _rollup_rows(session, tenant.id) == before


async def test_a_sent_without_a_queued_step_is_counted_but_not_timed(client, tenant, ledger, database):
    """Its delivery's start is unknown: no latency (it counted as 0 ms before, pulling the percentiles down: hostile
    review 2026-12-06), in the catch-up and the rebuild alike."""
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "untimed@example.com", external_id="untimed")
    at = BASE + timedelta(hours=5)
    async with database.sessionmaker() as session, session.begin():
        for seconds in (None, 3):  # one sent without its queued step, one 3 s after it
            m = await messages.add_message(
                session, tenant.id, contact_id=mail.contact_id, purpose_id=purpose.id, strategy="first_eligible",
                route=["email"], content={}, decision={}, status=MessageStatus.QUEUED, send_at=None,
            )  # fmt: skip
            d = await messages.add_delivery(
                session, tenant.id, m.id, channel="email", contact_point_id=mail.id, status=DeliveryStatus.QUEUED,
                next_attempt_at=at, at=at,
            )  # fmt: skip
            if seconds is not None:
                messages.add_event(session, tenant.id, m.id, d.id, "email", Step.QUEUED, at=at)
            messages.add_event(session, tenant.id, m.id, d.id, "email", Step.SENT, at=at + timedelta(seconds=5))
    body = await report(client, reader, "messages", granularity="month", group_by="channel", **span())
    (email,) = [
        row["metrics"] for row in body["series"] if row["group"]["channel"] == "email" and row["metrics"]["sent"]
    ]
    assert email["sent"] == 2
    assert (email["latency_p50_ms"], email["latency_p99_ms"]) == (5000, 5000), "the untimed one is not 0 ms"
    async with database.sessionmaker() as session, session.begin():
        counted = await repository.stored_rollups(session, tenant.id)
        await service.rebuild(session, tenant.id)
        assert await repository.stored_rollups(session, tenant.id) == counted
    sent = [row for row in counted["report_message_counts"] if row[4] == "sent"]
    assert [(row[5], row[-1]) for row in sent] == [(((5000, 1),), 2)]


async def test_no_message_history_step_can_be_named_as_an_outcome_the_ledger_counts(database):
    """The rebuild puts the history's message rows and the ledger's (``complaint``, ``opt_out``) side by side
    without summing them (``_STAGED_MESSAGES``): the statuses the database allows in ``message_events`` (its CHECK
    constraint, as migrated) must never include those, nor may the outcomes named after a step."""
    async with database.sessionmaker() as session:
        allowed = await session.scalar(
            text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conname = 'ck_message_events_status_known' AND conrelid = 'message_events'::regclass"
            )
        )
    assert allowed is not None
    assert "'sent'" in allowed, allowed
    assert "'complaint'" not in allowed, allowed
    assert "'opt_out'" not in allowed, allowed
    assert {"bounced", "opened_by_scanner", "clicked_by_scanner"}.isdisjoint({"complaint", "opt_out"})


async def test_message_outcomes_latency_and_a_rebuild(client, tenant, ledger, database):
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "msg@example.com", external_id="msg")
    phone = await ledger.point("sms", "+4915112340000", contact_id=mail.contact_id)
    at = BASE + timedelta(hours=7)
    await message_history(database, tenant.id, purpose.id, mail, phone, at)
    await record(ledger, mail, purpose.id, "signup", at)
    await record(ledger, mail, purpose.id, "confirm", at)
    await record(
        ledger, mail, purpose.id, "complaint", at + timedelta(minutes=5), actor=Actor(ActorType.PROVIDER, "email")
    )

    body = await report(client, reader, "messages", granularity="month", group_by="channel", **span())
    totals: dict[str | None, dict[str, Any]] = {}
    for row in body["series"]:
        cell = totals.setdefault(row["group"]["channel"], {})
        for name, value in row["metrics"].items():
            if value is not None:
                cell[name] = cell.get(name, 0) + value if not name.startswith("latency") else value
    assert totals["email"]["accepted"] == 4
    assert totals["email"]["sent"] == 3
    assert totals["email"]["delivered"] == 1
    assert totals["email"]["blocked_at_send"] == 1
    assert totals["email"]["complaints"] == 1
    assert (totals["email"]["opened"], totals["email"]["clicked"], totals["email"]["converted"]) == (1, 1, 1)
    assert (totals["email"]["opened_by_scanner"], totals["email"]["clicked_by_scanner"]) == (1, 1)
    assert totals["sms"].get("opened", 0) == 0, "no signal of the SMS: none counted"
    assert totals["email"]["latency_p50_ms"] == 4000
    assert totals["email"]["latency_p99_ms"] == 8000
    assert totals["sms"]["failed"] == 1
    assert totals["sms"]["bounced"] == 1
    assert totals["sms"]["failed_transient"] == 1
    assert totals["sms"]["latency_p50_ms"] == 100_000
    assert totals[None]["no_eligible_channel"] == 1

    # whole UTC days read the daily counters: the same answer as the hourly ones for the same data
    first, last = (BASE - timedelta(days=1)).replace(hour=0), (NOW + timedelta(days=1)).replace(hour=0)
    for granularity in ("day", "month"):
        daily = await report(
            client, reader, "messages", granularity=granularity, group_by="channel,purpose", **span(first, last)
        )
        hourly = await report(client, reader, "messages", granularity=granularity, group_by="channel,purpose",
                              **span(first + timedelta(hours=1), last - timedelta(hours=1)))  # fmt: skip
        assert daily["series"] == hourly["series"]

    async with database.sessionmaker() as session, session.begin():
        kept = await repository.stored_rollups(session, tenant.id)
        await service.rebuild(session, tenant.id)
        assert await repository.stored_rollups(session, tenant.id) == kept
    assert await report(client, reader, "messages", granularity="month", group_by="channel", **span()) == body


#: Each rollup and its time column (a stray row is a copy moved to a time without events).
ROLLUP_TIMES = {
    "report_consent_counts": "hour",
    "report_consent_daily": "day",
    "report_doi": "cohort_day",
    "report_message_counts": "hour",
    "report_message_daily": "day",
}


async def test_a_rebuild_restores_rollups_that_lost_rows_gained_rows_or_miscount(tenant, other_tenant, database):
    """The rebuild writes only what differs from its count: every kind of difference is put right, and the rows of
    another workspace and the rows that were right are left as they were (their ids too)."""
    ledgers = []
    for workspace_id in (tenant.id, other_tenant.id):
        ledger = Ledger(database, workspace_id)
        purpose = await ledger.purpose("newsletter")
        mail = await ledger.point("email", "rebuilt@example.com", external_id="r")
        phone = await ledger.point("sms", "+4915112349999", contact_id=mail.contact_id)
        at = BASE + timedelta(hours=3)
        await message_history(database, workspace_id, purpose.id, mail, phone, at)
        for n, trigger in enumerate(("signup", "confirm", "unsubscribe")):
            evidence = (
                {"campaign": "spring", "attributed_purpose_id": str(purpose.id)} if trigger == "unsubscribe" else {}
            )
            assert await record(ledger, mail, purpose.id, trigger, at + timedelta(minutes=n), evidence)
        assert await record(ledger, phone, None, "stop_word", at + timedelta(hours=1))
        ledgers.append(ledger)
    async with database.sessionmaker() as session, session.begin():
        for ledger in ledgers:
            await service.catch_up(session, ledger.workspace_id)
    async with database.sessionmaker() as session, session.begin():
        kept = await repository.stored_rollups(session, tenant.id)
        others = await _rollup_rows(session, other_tenant.id)
        assert all(len(rows) >= 2 for rows in kept.values()), kept

    async with database.sessionmaker() as session, session.begin():
        untouched = await _rollup_rows(session, tenant.id)
        for table, time in ROLLUP_TIMES.items():
            columns = await session.scalars(
                text(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = :t"
                    " AND column_name NOT IN ('id', 'workspace_id', :time, 'n')"
                ),
                {"t": table, "time": time},
            )
            key = ", ".join(columns)
            lowest = f"(SELECT min(id) FROM {table} WHERE workspace_id = :ws)"  # noqa: S608
            highest = f"(SELECT max(id) FROM {table} WHERE workspace_id = :ws)"  # noqa: S608
            ws = {"ws": tenant.id}
            await session.execute(
                text(
                    f"INSERT INTO {table} (workspace_id, {time}, {key}, n)"  # noqa: S608
                    f" SELECT workspace_id, {time} - interval '400 days', {key}, n FROM {table} WHERE id = {lowest}"
                ),
                ws,
            )
            await session.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = {lowest}"), ws)  # noqa: S608
            await session.execute(text(f"DELETE FROM {table} WHERE id = {highest}"), ws)  # noqa: S608
            untouched[table] = untouched[table][1:-1]  # (by id) the miscounted row and the lost one are rewritten
        assert await repository.stored_rollups(session, tenant.id) != kept
        await service.rebuild(session, tenant.id)
        assert await repository.stored_rollups(session, tenant.id) == kept
        rows = await _rollup_rows(session, tenant.id)
        for table, right in untouched.items():
            assert set(right) <= set(rows[table]), f"{table}: a right row was written again"
        assert await _rollup_rows(session, other_tenant.id) == others

    async with database.sessionmaker() as session, session.begin():  # and from nothing
        for table in ROLLUP_TIMES:
            await session.execute(text(f"DELETE FROM {table} WHERE workspace_id = :ws"), {"ws": tenant.id})  # noqa: S608
        await service.rebuild(session, tenant.id)
        assert await repository.stored_rollups(session, tenant.id) == kept
        assert await _rollup_rows(session, other_tenant.id) == others


async def test_a_rebuild_compares_row_by_row_only_the_rollups_whose_fingerprint_differs(tenant, database, monkeypatch):
    """A rebuild of right rollups finds each equal by its fingerprint and compares none row by row; a rollup with one
    count moved from one row to another (as many rows, the same total) differs and is put right, and only it."""
    ledger = Ledger(database, tenant.id)
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "print@example.com", external_id="f")
    phone = await ledger.point("sms", "+4915112348888", contact_id=mail.contact_id)
    at = BASE + timedelta(hours=5)
    await message_history(database, tenant.id, purpose.id, mail, phone, at)
    for n, trigger in enumerate(("signup", "confirm", "unsubscribe", "signup")):
        evidence = {"campaign": "spring", "attributed_purpose_id": str(purpose.id)} if trigger == "unsubscribe" else {}
        assert await record(ledger, mail, purpose.id, trigger, at + timedelta(hours=n), evidence)
    async with database.sessionmaker() as session, session.begin():
        await service.catch_up(session, tenant.id)
    compared: list[str] = []
    differences = repository._differences

    def spy(table: str, key: str, rebuilt: str) -> str:
        compared.append(table)
        return differences(table, key, rebuilt)

    monkeypatch.setattr(repository, "_differences", spy)
    async with database.sessionmaker() as session, session.begin():
        right = await repository.stored_rollups(session, tenant.id)
        kept = await _rollup_rows(session, tenant.id)
        await service.rebuild(session, tenant.id)
        assert await _rollup_rows(session, tenant.id) == kept, "right rollups: nothing written (ids kept)"
    assert compared == []

    for table in ROLLUP_TIMES:
        compared.clear()
        async with database.sessionmaker() as session, session.begin():
            ids = (await session.scalars(text(f"SELECT id FROM {table} WHERE workspace_id = :ws ORDER BY id"),  # noqa: S608
                                         {"ws": tenant.id})).all()  # fmt: skip
            assert len(ids) >= 2, table
            await session.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = :id"), {"id": ids[0]})  # noqa: S608
            await session.execute(text(f"UPDATE {table} SET n = n - 1 WHERE id = :id"), {"id": ids[-1]})  # noqa: S608
            await service.rebuild(session, tenant.id)
            assert await repository.stored_rollups(session, tenant.id) == right
        assert compared == [table]


async def _rollup_rows(session, workspace_id) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup row of the workspace with its id, by id."""
    found = {}
    for table in ROLLUP_TIMES:
        sql = f"SELECT * FROM {table} WHERE workspace_id = :ws ORDER BY id"  # noqa: S608
        rows = await session.execute(text(sql), {"ws": workspace_id})
        found[table] = [tuple(repository._comparable(value) for value in row) for row in rows]
    return found


# --- isolation, CSV, bad input ----------------------------------------------------------------------------------


async def test_a_key_of_another_workspace_sees_nothing_of_this_one(client, tenant, other_tenant, ledger):
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "iso@example.com", external_id="iso")
    await record(ledger, mail, purpose.id, "signup", BASE)
    await record(ledger, mail, purpose.id, "confirm", BASE)
    mine = await report(client, await tenant.key(Scope.AUDIT_READ), group_by="channel", **span())
    assert sum(r["metrics"]["opt_ins"] for r in mine["series"]) == 1

    other = await other_tenant.key(Scope.AUDIT_READ)
    theirs = await report(client, other, group_by="channel,purpose", **span())
    assert theirs["series"] == []
    plain = await report(client, other, **span())
    assert all(r["metrics"]["events"] == 0 and r["metrics"]["opted_in_total"] == 0 for r in plain["series"])
    assert (await report(client, other, "messages", group_by="channel", **span()))["series"] == []
    refused = await client.get("/v1/reports/consents", params={"purpose": "newsletter"}, headers=other)
    assert refused.status_code == 422
    assert refused.json()["code"] == "unknown_purpose"
    async with ledger.database.sessionmaker() as session:
        assert await repository.stored_consent_counts(session, other_tenant.id) == []


async def test_csv_answer(client, tenant, ledger):
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "csv@example.com", external_id="csv")
    await record(ledger, mail, purpose.id, "signup", BASE, {"form_id": "=HYPERLINK(1)"})
    response = await client.get(
        "/v1/reports/consents",
        params={"group_by": "channel,source", **span()},
        headers={**reader, "Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"  # once (it was named twice)
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0])[:3] == ["bucket", "channel", "source"]
    assert [(r["channel"], r["source"], r["signups"]) for r in table] == [("email", "form:=HYPERLINK(1)", "1")]
    assert table[0]["opted_in_total"] == ""  # not given when grouped by source


@pytest.mark.parametrize(
    ("kind", "params", "status"),
    [
        ("consents", {"granularity": "year"}, 400),
        ("consents", {"from": "2026-11-01T00:30:00Z", "to": "2026-11-02T00:00:00Z"}, 422),
        ("consents", {"from": "2026-11-01T00:00:00", "to": "2026-11-02T00:00:00Z"}, 422),
        ("consents", {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, 422),
        ("consents", {"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 422),
        ("consents", {"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "granularity": "hour"}, 422),
        ("consents", {"group_by": "provider"}, 422),
        ("consents", {"group_by": "channel,nonsense"}, 422),
        ("messages", {"group_by": "trigger"}, 422),
        ("messages", {"channel": "fax"}, 400),
        ("consents", {"from": "yesterday"}, 400),
        ("consents", {"from": "0001-01-01T00:00:00+14:00", "to": "2026-01-01T00:00:00Z"}, 422),
        ("consents", {"purpose": "x" * 64}, 422),
        # the buckets of the last year ran past the calendar: a 500 (newcomer review)
        ("consents", {"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:00:00Z"}, 422),
        ("messages", {"from": "9999-12-01T00:00:00Z", "to": "9999-12-31T00:00:00Z", "granularity": "month"}, 422),
        # a misspelled parameter answered the default report as if it were right (newcomer review)
        ("consents", {"groupby": "channel"}, 422),
        ("messages", {"granularty": "week"}, 422),
    ],
)
async def test_bad_parameters_are_refused_with_a_problem(client, tenant, kind, params, status):
    response = await client.get(f"/v1/reports/{kind}", params=params, headers=await tenant.key(Scope.AUDIT_READ))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("kind", ["consents", "messages"])
async def test_a_dimension_list_given_as_repeated_group_by_is_refused_not_cut_to_its_last(client, tenant, kind):
    """``group_by=campaign&group_by=provider`` answered grouped by provider alone (newcomer review): the filters are
    repeated parameters, ``group_by`` is one comma-separated list."""
    params = [("group_by", "channel"), ("group_by", "purpose")]
    response = await client.get(f"/v1/reports/{kind}", params=params, headers=await tenant.key(Scope.AUDIT_READ))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "repeated_parameter"
    assert "group_by=campaign,provider" in problem["detail"]
    joined = await client.get(
        f"/v1/reports/{kind}", params={"group_by": "channel,purpose"}, headers=await tenant.key(Scope.AUDIT_READ)
    )
    assert joined.status_code == 200, joined.text
    assert joined.json()["group_by"] == ["channel", "purpose"]


@pytest.mark.parametrize("value", ["2026-11-01", "yesterday"])
async def test_an_unreadable_from_is_refused_naming_from_as_the_caller_wrote_it(client, tenant, value):
    """The handler's argument is ``start`` (``from`` is a Python keyword): the caller never wrote that name."""
    response = await client.get(
        "/v1/reports/consents", params={"from": value}, headers=await tenant.key(Scope.AUDIT_READ)
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["detail"].startswith("Invalid query parameter 'from': ")
    assert "write an offset's '+' as %2B" in problem["detail"]  # newcomer review: an unencoded '+' reads as a space
    assert [e["field"] for e in problem["errors"]] == ["from"]


async def test_reports_need_the_audit_scope(client, tenant):
    response = await client.get("/v1/reports/consents", headers=await tenant.key(Scope.ELIGIBILITY_READ))
    assert response.status_code == 403


async def test_the_rebuild_and_catch_up_commands(pg_server):
    import json  # noqa: PLC0415

    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine  # noqa: PLC0415

    from app.ledger import repository as ledger_repository  # noqa: PLC0415
    from tests.conftest import consent_cli  # noqa: PLC0415

    url = await pg_server.create_database("consent_cli_reports", migrated=True)
    run = consent_cli(url)
    try:
        assert run("migrate").returncode == 0
        nothing = run("reports", "catch-up")
        assert nothing.returncode == 0, nothing.stderr
        assert "nothing to count" in nothing.stdout
        workspace_id = uuid.UUID(json.loads(run("workspace", "create", "Acme", "--json").stdout.splitlines()[-1])["id"])
        engine = create_async_engine(url)
        async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
            contact = await ledger_repository.add_contact(session, workspace_id, None, None, None)
            point = await ledger_repository.add_contact_point(
                session, workspace_id, contact_id=contact.id, channel="sms", value="+4915100000009", details={},
                suppression_keys=[],
            )  # fmt: skip
            for trigger in (Trigger.START_WORD, Trigger.STOP_WORD):
                await apply_changes(session, workspace_id, [Change(point, None, trigger)], SYSTEM)
        await engine.dispose()

        caught_up = run("reports", "catch-up", "--workspace", str(workspace_id), "--json")
        assert caught_up.returncode == 0, caught_up.stderr
        assert json.loads(caught_up.stdout.splitlines()[-1])["ledger_events"] == 2
        again = run("reports", "catch-up", "--json")  # every workspace; nothing new
        assert json.loads(again.stdout.splitlines()[-1])["ledger_events"] == 0
        rebuilt = run("reports", "rebuild", "--json")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert json.loads(rebuilt.stdout.splitlines()[-1])["ledger_events"] == 2
        # and today's standing snapshot at once (newcomer review: a first one taken before any data stood for the
        # whole interval)
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            taken = await conn.scalar(
                text("SELECT count(*) FROM report_standing_daily WHERE workspace_id = :w"), {"w": workspace_id}
            )
            # the rollups it rewrote are vacuumed and analysed (dead rows gone, the planner told their size)
            vacuumed = await conn.scalars(  # (a fresh database: nothing vacuumed it by hand before)
                text(
                    "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL AND last_analyze IS NOT NULL"
                )
            )
            assert {"report_consent_counts", "report_message_daily", "report_message_queue"} <= set(vacuumed)
        await engine.dispose()
        assert taken > 0
        for command in ("rebuild", "catch-up"):  # (catch-up printed a traceback: newcomer review)
            unknown = run("reports", command, "--workspace", str(uuid.uuid4()))
            assert unknown.returncode == 1
            assert "No workspace" in unknown.stderr
            assert "Traceback" not in unknown.stderr
    finally:
        await pg_server.drop_database(url)


async def test_deleted_messages_keep_their_counts_and_unqueued_ones_go_with_them(client, tenant, ledger, database):
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "gone@example.com", external_id="gone")
    phone = await ledger.point("sms", "+4915112349999", contact_id=mail.contact_id)
    at = BASE + timedelta(hours=7)

    async def accepted() -> int:
        body = await report(client, reader, "messages", granularity="month", **span())
        return sum(row["metrics"]["accepted"] for row in body["series"])

    await message_history(database, tenant.id, purpose.id, mail, phone, at)
    assert await accepted() == 5  # counted before the erasure: the counts stay
    async with database.sessionmaker() as session, session.begin():
        await messages.delete_messages_of_contact(session, tenant.id, mail.contact_id)
    assert await accepted() == 5
    await message_history(database, tenant.id, purpose.id, mail, phone, at)  # erased before any report counted it
    async with database.sessionmaker() as session, session.begin():
        await messages.delete_messages_of_contact(session, tenant.id, mail.contact_id)
        assert await repository.queued_messages(session, tenant.id) == 0
    assert await accepted() == 5


async def test_a_source_that_is_an_api_key_is_named_by_the_keys_name(client, database, tenant, other_tenant, ledger):
    """Issue 18: sources by API key name; another workspace's key of the same id shape is never named."""
    reader = await tenant.key(Scope.AUDIT_READ)
    async with database.sessionmaker() as session, session.begin():
        key, _ = await workspace_service.create_api_key(session, tenant.id, "Shop backend", (Scope.CONSENTS_WRITE,))
        foreign, _ = await workspace_service.create_api_key(session, other_tenant.id, "Theirs", (Scope.ADMIN,))
    purpose = await ledger.purpose("newsletter")
    mail = await ledger.point("email", "named@example.com", external_id="named")
    await record(ledger, mail, purpose.id, "signup", BASE, actor=Actor(ActorType.API_KEY, str(key.id)))
    other = await ledger.point("email", "foreign@example.com", external_id="foreign")
    await record(ledger, other, purpose.id, "signup", BASE, actor=Actor(ActorType.API_KEY, str(foreign.id)))
    answer = await report(client, reader, group_by="source", **span())
    assert answer["source_names"] == {f"api_key:{key.id}": "Shop backend"}
    response = await client.get(
        "/v1/reports/consents", params={"group_by": "source", **span()}, headers={**reader, "Accept": "text/csv"}
    )
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["source"]: r["source_name"] for r in table} == {
        f"api_key:{key.id}": "Shop backend",
        f"api_key:{foreign.id}": "",
    }


# --- standing snapshots: eligible addresses and suppressions per day ------------------------------------------


@pytest.mark.parametrize(("push_services", "counted"), [(None, 2), (("fcm.googleapis.com",), 1)])
async def test_the_eligible_total_leaves_out_a_web_push_endpoint_off_the_push_services(
    client, tenant, ledger, database, push_services, counted
):
    """As the audience export does: an endpoint on a host the operator no longer lists is not counted eligible."""
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    listed = await ledger.point("web_push", "https://fcm.googleapis.com/fcm/send/a", external_id="jane")
    off = await ledger.point("web_push", "https://push.example.net/b", contact_id=listed.contact_id)
    for point in (listed, off):
        assert await record(ledger, point, purpose.id, "permission_granted", NOW - timedelta(days=1))
    async with database.sessionmaker() as session, session.begin():
        await service.take_standing(session, tenant.id, now=NOW, push_services=push_services)
    window = {"from": NOW.replace(hour=0).isoformat(), "to": (NOW + timedelta(days=1)).isoformat()}
    body = await report(client, reader, granularity="day", group_by="channel", **window)
    day = NOW.date().isoformat()
    [web_push] = [
        row["metrics"]
        for row in body["series"]
        if row["group"]["channel"] == "web_push" and row["bucket"].startswith(day)
    ]
    assert web_push["eligible_total"] == counted


async def test_eligible_totals_and_suppressions_per_day_come_from_the_days_last_snapshot(
    client, tenant, other_tenant, ledger, database
):
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    jane = await ledger.point("email", "jane@example.com", external_id="jane")
    max_ = await ledger.point("email", "max@example.com", external_id="max")
    phone = await ledger.point("sms", "+4915112340001", contact_id=jane.contact_id)
    for point, steps in ((jane, ("signup", "confirm")), (max_, ("signup", "confirm")), (phone, ("start_word",))):
        for step in steps:
            assert await record(ledger, point, purpose.id, step, NOW - timedelta(days=3))
    today = NOW.replace(hour=0)
    yesterday = today - timedelta(days=1)
    async with database.sessionmaker() as session, session.begin():
        assert (
            await service.take_standing(session, tenant.id, now=yesterday + timedelta(hours=9), push_services=None) > 0
        )
        await service.take_standing(
            session, tenant.id, now=yesterday + timedelta(hours=23), push_services=None
        )  # the day's last
        # max objects: his address is suppressed for every marketing purpose
        await ledger_repository.add_suppressions(
            session, suppression_rows(Keys(TEST_SECRET), tenant.id, [max_], SuppressionReason.OBJECTION_ART21)
        )
        await service.take_standing(session, tenant.id, now=NOW, push_services=None)

    window = {"from": (yesterday - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    body = await report(client, reader, granularity="day", group_by="channel", **window)
    by_day = {
        (row["bucket"][:10], row["group"]["channel"]): row["metrics"]
        for row in body["series"]
        if row["group"]["channel"] in ("email", "sms")
    }
    day_before, first, second = (d.date().isoformat() for d in (yesterday - timedelta(days=1), yesterday, today))
    standing = ("eligible_total", "suppressions_total", "suppressions_added")
    assert [by_day[second, "email"][m] for m in standing] == [1, 1, 1]
    assert [by_day[first, "email"][m] for m in standing] == [2, 0, 0]
    assert [by_day[second, "sms"][m] for m in standing] == [1, 0, 0]
    assert [by_day[day_before, "email"][m] for m in standing] == [None, None, None], "no snapshot that day"
    assert [by_day[first, "email"]["opted_in_total"], by_day[second, "email"]["opted_in_total"]] == [2, 2]

    # the standing eligible total is the audience export's size
    audience = await client.get(
        "/v1/audiences",
        params={"purpose": "newsletter", "channel": "email"},
        headers=await tenant.key(Scope.ELIGIBILITY_READ),
    )
    assert len(audience.text.splitlines()) == by_day[second, "email"]["eligible_total"]

    # a month: the last snapshot's totals, the added ones summed; per purpose; per hour: none (daily snapshots)
    month = await report(client, reader, granularity="month", group_by="purpose", **window)
    newsletter = [row["metrics"] for row in month["series"] if row["group"]["purpose"] == "newsletter"]
    assert sum(m["eligible_total"] or 0 for m in newsletter) == 2  # jane's email and her phone, today
    hourly = await report(client, reader, granularity="hour", **span(NOW - timedelta(hours=2), NOW))
    assert all(row["metrics"]["eligible_total"] is None for row in hourly["series"])
    filtered = await report(client, reader, granularity="day", channel="email", purpose="newsletter", **window)
    assert [r["metrics"]["suppressions_total"] for r in filtered["series"]][-2:] == [0, 1], "all-purpose ones count"

    # another workspace's key sees none of it
    theirs = await report(client, await other_tenant.key(Scope.AUDIT_READ), granularity="day", **window)
    assert all(row["metrics"]["eligible_total"] is None for row in theirs["series"])


async def test_a_snapshot_is_taken_again_after_its_interval_and_on_a_new_day(tenant, ledger, database):
    await ledger.purpose("newsletter")
    at = NOW.replace(hour=10)
    every = service.STANDING_INTERVAL
    async with database.sessionmaker() as session, session.begin():
        assert tenant.id in await service.standing_due(session, now=at, limit=10_000)
        assert await service.take_standing_if_due(session, tenant.id, now=at, push_services=None)
        almost = at + every - timedelta(seconds=1)
        assert not await service.take_standing_if_due(session, tenant.id, now=almost, push_services=None)
        assert tenant.id not in await service.standing_due(session, now=almost, limit=10_000)
        assert await service.take_standing_if_due(session, tenant.id, now=at + every, push_services=None)
        assert await service.take_standing_if_due(
            session, tenant.id, now=at.replace(hour=23, minute=59), push_services=None
        )
        # a new UTC day is due at once, even within the interval
        assert tenant.id in await service.standing_due(
            session, now=at.replace(hour=23, minute=59) + timedelta(minutes=2), limit=10_000
        )


async def test_a_week_reads_the_workspaces_last_snapshot_day_and_a_group_gone_that_day_counts_zero(
    client, tenant, ledger, database
):
    """Hostile review of 2026-12-05: a purpose-scoped suppression lifted mid-week kept its Monday figure in the
    week's total grouped by purpose (the group's own last row was read, not the week's last day)."""
    reader = await tenant.key(Scope.AUDIT_READ)
    purpose = await ledger.purpose("newsletter")
    today = NOW.replace(hour=0)
    monday = today - timedelta(days=today.weekday() + 7)
    tuesday = monday + timedelta(days=1)
    insert = text(
        "INSERT INTO report_standing_daily (workspace_id, day, metric, channel, purpose_id, n, taken_at)"
        " VALUES (:w, :d, :m, 'email', :p, :n, :d)"
    )
    async with database.sessionmaker() as session, session.begin():
        for day, scoped in ((monday, 5), (tuesday, None)):  # Tuesday: lifted, so no purpose-scoped row
            for metric in ("suppressions_total", "suppressions_added"):
                await session.execute(insert, {"w": tenant.id, "d": day, "m": metric, "p": None, "n": 0})
                if scoped:
                    await session.execute(insert, {"w": tenant.id, "d": day, "m": metric, "p": purpose.id, "n": 5})
            await session.execute(insert, {"w": tenant.id, "d": day, "m": "eligible_total", "p": purpose.id, "n": 3})
    window = {"from": monday.isoformat(), "to": (monday + timedelta(days=7)).isoformat()}
    body = await report(client, reader, granularity="week", group_by="purpose", **window)
    newsletter = [row["metrics"] for row in body["series"] if row["group"]["purpose"] == "newsletter"]
    assert [(m["suppressions_total"], m["suppressions_added"], m["eligible_total"]) for m in newsletter] == [(0, 5, 3)]
    by_channel = await report(client, reader, granularity="week", group_by="channel", **window)
    email = [row["metrics"] for row in by_channel["series"] if row["group"]["channel"] == "email"]
    assert [(m["suppressions_total"], m["eligible_total"]) for m in email] == [(0, 3)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(counted=[(latency, 1) for latency in range(1, 101)] + [(None, 7)])  # p50 50, p99 99: every rank counts
@given(
    counted=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 10**7)), st.integers(1, 1000)), min_size=0, max_size=30
    )
)
async def test_latency_percentiles_computed_in_sql_equal_the_nearest_rank_of_the_counted_latencies(
    tenant, database, counted
):
    """The report reads a row per outcome with its percentiles (computed by SQL from the latency histograms of a
    bucket's rows, here two providers' merged): the same numbers as ``service.percentile`` over those counters,
    ``None`` where none was timed (a ``sent`` without a latency counts in ``n`` only)."""
    hour = BASE.replace(hour=3)
    async with database.sessionmaker() as session, session.begin():
        await session.execute(text("DELETE FROM report_message_counts WHERE workspace_id = :ws"), {"ws": tenant.id})
        merged: dict[int | None, int] = {}
        rows_of: dict[str, tuple[int, dict[str, int]]] = {}
        for i, (latency, n) in enumerate(counted):  # alternately counted by two providers' rows
            merged[latency] = merged.get(latency, 0) + n
            total, histogram = rows_of.get(("sms", "twilio")[i % 2], (0, {}))
            if latency is not None:
                histogram[str(latency)] = histogram.get(str(latency), 0) + n
            rows_of[("sms", "twilio")[i % 2]] = (total + n, histogram)
        for provider, (n, histogram) in rows_of.items():
            await session.execute(
                text(
                    "INSERT INTO report_message_counts (workspace_id, hour, channel, provider, purpose_id, outcome,"
                    " latencies, campaign, n)"
                    " VALUES (:ws, :hour, 'sms', :provider, NULL, 'sent', CAST(:latencies AS jsonb), NULL, :n)"
                ),
                {
                    "ws": tenant.id,
                    "hour": hour,
                    "provider": provider,
                    "latencies": json.dumps(histogram) if histogram else None,
                    "n": n,
                },
            )
        selection = repository.Selection((), (), (), daily=False)
        rows = await repository.message_rows(
            session, tenant.id, selection, start=hour, end=hour + timedelta(hours=1), granularity="hour"
        )
    timed = [(latency, n) for latency, n in merged.items() if latency is not None]
    expected = (service.percentile(timed, 0.5), service.percentile(timed, 0.99))
    if not merged:
        assert rows == []
        return
    (row,) = rows
    assert row.n == sum(merged.values())
    assert (row.latency_p50_ms, row.latency_p99_ms) == expected
