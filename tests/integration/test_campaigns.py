"""Campaign labels (issue 18): a message's campaign is counted in the message reports, and the opt-outs it
caused are attributed to it: an unsubscribe link carries its message, a STOP answers the last SMS or WhatsApp
message sent to the number within 7 days. A rebuild gives the same numbers."""

# ruff: noqa: F811  # the fixtures imported from test_messages are parameters of the tests

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from twilio.request_validator import RequestValidator

from app.ledger.models import ConsentEvent
from app.lib.auth import Scope
from app.reports import repository as reports
from app.reports import service as report_service
from tests.integration.test_messages import (  # the provider stand-ins and Jane, opted in by SMS and email
    ACCOUNT,
    PHONE,
    SENDER,
    TOKEN,
    adapters,  # noqa: F401  # fixture
    dispatcher,  # noqa: F401  # fixture
    providers,  # noqa: F401  # fixture
    send,
    settings,  # noqa: F401  # fixture
    world,  # noqa: F401  # fixture
)

PUBLIC = "https://consent.example.com"


def span() -> dict[str, str]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return {"from": (now - timedelta(days=9)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}


async def report(client, headers, kind: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/v1/reports/{kind}", params={**span(), **params}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def totals(body: dict[str, Any], metric: str) -> dict[str | None, int]:
    """A metric summed over the buckets, per campaign."""
    found: dict[str | None, int] = {}
    for row in body["series"]:
        name = row["group"].get("campaign")
        found[name] = found.get(name, 0) + (row["metrics"][metric] or 0)
    return {k: v for k, v in found.items() if v}


async def stop(client, workspace_id) -> None:
    path = f"/webhooks/twilio/{workspace_id}/inbound"
    params = {"MessageSid": "SM" + "5" * 32, "AccountSid": ACCOUNT, "From": PHONE, "To": SENDER, "Body": "STOP"}
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, params)
    response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text


async def test_a_campaign_is_stored_shown_and_counted(client, world, dispatcher, tenant):
    body = (await send(client, world, ["sms"], campaign="Herbst 2026")).json()
    await send(client, world, ["sms"])  # no campaign
    assert await dispatcher.run_once() == 2
    shown = await client.get(f"/v1/messages/{body['message_id']}", headers=world["key"])
    assert shown.json()["campaign"] == "Herbst 2026"
    reader = await tenant.key(Scope.AUDIT_READ)
    counted = await report(client, reader, "messages", group_by="campaign")
    assert totals(counted, "sent") == {"Herbst 2026": 1, None: 1}
    assert totals(counted, "accepted") == {"Herbst 2026": 1, None: 1}
    only = await report(client, reader, "messages", campaign="Herbst 2026")
    assert sum(row["metrics"]["sent"] for row in only["series"]) == 1


async def test_an_unsubscribe_link_attributes_the_opt_out_to_its_campaign(
    client, world, providers, dispatcher, tenant, database
):
    await send(client, world, ["email"], campaign="Black Friday")
    assert await dispatcher.run_once() == 1
    [mail] = providers["inbox"].messages
    [one_click] = re.findall(r"<(https://[^>]+/one-click)>", mail["List-Unsubscribe"])
    response = await client.post(one_click.removeprefix(PUBLIC), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200, response.text

    async with database.sessionmaker() as session:
        [event] = (await session.scalars(select(ConsentEvent).where(ConsentEvent.trigger == "unsubscribe"))).all()
        assert event.personal["evidence"]["campaign"] == "Black Friday"
        assert event.personal["evidence"]["attributed_purpose_id"] == str(world["newsletter"].id)
    reader = await tenant.key(Scope.AUDIT_READ)
    consents = await report(client, reader, "consents", group_by="campaign")
    assert totals(consents, "opt_outs") == {"Black Friday": 1}
    messages = await report(client, reader, "messages", group_by="campaign,channel")
    assert totals(messages, "opt_outs_caused") == {"Black Friday": 1}
    assert totals(messages, "sent") == {"Black Friday": 1}


async def test_a_stop_is_attributed_to_the_last_sms_within_7_days(client, world, dispatcher, tenant, database):
    await send(client, world, ["sms"], campaign="Old")
    assert await dispatcher.run_once() == 1
    await send(client, world, ["sms"], campaign="Newer")
    assert await dispatcher.run_once() == 1
    async with database.sessionmaker() as session, session.begin():  # "Old" went out two days earlier
        await session.execute(
            text(
                "UPDATE message_events e SET at = e.at - interval '2 days' FROM messages m"
                " WHERE m.id = e.message_id AND m.campaign = 'Old'"
            )
        )
    await stop(client, world["sms"].workspace_id)
    reader = await tenant.key(Scope.AUDIT_READ)
    consents = await report(client, reader, "consents", group_by="campaign", purpose="newsletter")
    assert totals(consents, "opt_outs") == {"Newer": 1}
    everything = await report(client, reader, "consents", group_by="campaign")
    assert totals(everything, "opt_outs") == {"Newer": 2}, "the newsletter and the channel as a whole"
    messages = await report(client, reader, "messages", group_by="campaign")
    assert totals(messages, "opt_outs_caused") == {"Newer": 1}


async def test_a_stop_more_than_7_days_after_the_last_sms_is_no_campaigns(client, world, dispatcher, tenant, database):
    await send(client, world, ["sms"], campaign="Long ago")
    assert await dispatcher.run_once() == 1
    async with database.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE message_events SET at = at - interval '7 days 1 minute'"))
    await stop(client, world["sms"].workspace_id)
    async with database.sessionmaker() as session:
        events = (await session.scalars(select(ConsentEvent).where(ConsentEvent.trigger == "stop_word"))).all()
        assert events
        assert all("attributed_message_id" not in event.personal["evidence"] for event in events)
    reader = await tenant.key(Scope.AUDIT_READ)
    consents = await report(client, reader, "consents", group_by="campaign")
    assert totals(consents, "opt_outs") == {None: 2}
    assert totals(await report(client, reader, "messages", group_by="campaign"), "opt_outs_caused") == {}


async def test_the_rebuild_gives_the_same_campaign_numbers(client, world, providers, dispatcher, tenant, database):
    await send(client, world, ["email", "sms"], strategy="all_eligible", campaign="Both")
    assert await dispatcher.run_once() == 2
    [mail] = providers["inbox"].messages
    [one_click] = re.findall(r"<(https://[^>]+/one-click)>", mail["List-Unsubscribe"])
    await client.post(one_click.removeprefix(PUBLIC), data={"List-Unsubscribe": "One-Click"})
    await stop(client, world["sms"].workspace_id)
    workspace_id = world["sms"].workspace_id
    async with database.sessionmaker() as session, session.begin():
        await report_service.catch_up(session, workspace_id)
        increments = await reports.stored_rollups(session, workspace_id)
        await report_service.rebuild(session, workspace_id)
        rebuilt = await reports.stored_rollups(session, workspace_id)
    assert rebuilt == increments
    campaigns = {row[-2] for row in rebuilt["report_message_counts"]}
    assert "Both" in campaigns


async def test_a_campaign_label_is_checked(client, world):
    for bad in ("", "x" * 101, "two\nlines"):
        response = await send(client, world, ["sms"], campaign=bad)
        assert response.status_code in (400, 422), response.text
        assert "campaign" in response.text


async def test_messages_are_counted_per_provider_that_carried_them(client, world, dispatcher, tenant):
    await send(client, world, ["email", "sms"], strategy="all_eligible")
    assert await dispatcher.run_once() == 2
    reader = await tenant.key(Scope.AUDIT_READ)
    body = await report(client, reader, "messages", group_by="provider")
    sent: dict[str | None, int] = {}
    for row in body["series"]:
        name = row["group"]["provider"]
        sent[name] = sent.get(name, 0) + (row["metrics"]["sent"] or 0)
    assert {k: v for k, v in sent.items() if v} == {"smtp": 1, "twilio": 1}


async def test_steps_taken_before_a_provider_is_chosen_count_under_no_provider_not_the_channels_name(
    client, world, dispatcher, tenant
):
    """``accepted`` is written when the message is queued; the dispatcher chooses the provider later, at send."""
    await send(client, world, ["email", "sms"], strategy="all_eligible")
    assert await dispatcher.run_once() == 2
    reader = await tenant.key(Scope.AUDIT_READ)
    body = await report(client, reader, "messages", group_by="channel,provider")
    counted: dict[tuple[str | None, str | None], dict[str, int]] = {}
    for row in body["series"]:
        cell = counted.setdefault((row["group"]["channel"], row["group"]["provider"]), {"accepted": 0, "sent": 0})
        for metric in cell:
            cell[metric] += row["metrics"][metric] or 0
    assert {key: cell for key, cell in counted.items() if any(cell.values())} == {
        ("email", None): {"accepted": 1, "sent": 0},
        ("sms", None): {"accepted": 1, "sent": 0},
        ("email", "smtp"): {"accepted": 0, "sent": 1},
        ("sms", "twilio"): {"accepted": 0, "sent": 1},
    }
