"""Action chains (issue 20): versioned definitions checked strictly, runs whose steps are decided by the chain
runner when due (rows with ``due_at``, claimed with SKIP LOCKED), each with the send gate, its ``when`` on earlier
steps' outcomes (unknown is never false) and the ledger: an opt-out since the start ends the rest of the run."""

# ruff: noqa: F811  # the fixtures imported from test_messages are parameters of the tests

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import func, select, text, update

from app.chains import service as chains
from app.chains.models import ChainRun, ChainStep
from app.chains.runner import ChainRunner, RunnerConfig
from app.chains.schemas import ChainIn, RunIn
from app.domain.model import ActorType, Trigger
from app.ledger import repository as ledger_repository
from app.ledger.service import Actor, Change, add_point, apply_changes
from app.lib.db import Database, migrate
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.messages.models import Message
from app.purposes import service as purposes
from app.workspaces import repository as workspace_repository
from app.workspaces import service as workspaces
from tests.conftest import TEST_SECRET
from tests.integration.test_messages import (  # the provider stand-ins and Jane, opted in by SMS and email
    adapters,  # noqa: F401  # fixture
    dispatcher,  # noqa: F401  # fixture
    providers,  # noqa: F401  # fixture
    settings,  # noqa: F401  # fixture
    world,  # noqa: F401  # fixture
)

SMS = {"sms": {"text": "Ihr Gutschein: {{code}}. STOP zum Abmelden"}}
EMAIL = {"email": {"subject": "Herbst", "text": "Die Herbstkollektion ist da, {{name}}."}}


def step(key: str, route: list[str], content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"key": key, "route": route, "content": content, **extra}


async def define(client, world, steps, key="follow_up", **extra) -> dict[str, Any]:
    body = {"key": key, "purpose": "newsletter", "steps": steps, **extra}
    response = await client.post("/v1/chains", json=body, headers=world["key"])
    assert response.status_code in (200, 201), response.text
    return response.json()


async def start(client, world, chain_id, headers=None, **extra) -> str:
    body = {"contact": "jane", "variables": {"code": "HERBST10", "name": "Jane"}, **extra}
    response = await client.post(f"/v1/chains/{chain_id}/runs", json=body, headers={**world["key"], **(headers or {})})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


async def shown(client, world, run_id) -> dict[str, Any]:
    response = await client.get(f"/v1/chain-runs/{run_id}", headers=world["key"])
    assert response.status_code == 200, response.text
    return response.json()


async def make_due(session, run_id) -> None:
    """The controllable clock: the run's armed step is due now (as if its delay had passed)."""
    async with session.begin():
        await session.execute(
            update(ChainStep)
            .where(ChainStep.run_id == uuid.UUID(run_id), ChainStep.status == "pending", ChainStep.due_at.is_not(None))
            .values(due_at=utcnow() - timedelta(seconds=1))
        )


@pytest.fixture
def runner(database):
    return ChainRunner(database, push_services=None, config=RunnerConfig(base_backoff=0.0))


# --- definitions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "field", "code"),
    [
        (
            [step("a", ["sms"], SMS, when={"all": [{"step": "b", "has": "sent"}]}), step("b", ["sms"], SMS)],
            "steps[0].when.all[0].step",
            "condition_not_earlier",
        ),
        (
            [step("a", ["sms"], SMS, when={"any": [{"step": "a", "has_not": "sent"}]})],
            "steps[0].when.any[0].step",
            "condition_not_earlier",
        ),
        (
            [step("a", ["sms"], SMS), step("b", ["sms"], SMS, when={"all": [{"step": "zz", "has": "sent"}]})],
            "steps[1].when.all[0].step",
            "unknown_step",
        ),
        ([step("a", ["sms"], SMS, after="2 hours")], "steps[0].after", "invalid_duration"),
        ([step("a", ["sms"], SMS, after="P1M")], "steps[0].after", "invalid_duration"),
        ([step("a", ["sms"], SMS, after="P366D")], "steps[0].after", "invalid_duration"),
        ([step("a", ["sms"], SMS, after="PT")], "steps[0].after", "invalid_duration"),
        ([step("a", ["sms", "email"], SMS)], "steps[0].content.email", "content_missing"),
        ([step("a", ["sms"], {"sms": {"text": "x" * 1600}})], "steps[0].content.sms", "sms_too_long"),
        ([step("a", ["sms"], SMS), step("a", ["sms"], SMS)], "steps[1].key", "duplicate_step"),
        (
            [step("a", ["sms"], SMS), step("b", ["sms"], SMS, when={"all": [{"step": "a"}]})],
            "steps[1].when.all[0]",
            "invalid_condition",
        ),
        (
            [step("a", ["sms"], SMS), step("b", ["sms"], SMS, when={"all": [], "any": []})],
            "steps[1].when.all",
            None,
        ),
    ],
)
async def test_a_bad_definition_is_refused_naming_the_field(client, world, steps, field, code):
    response = await client.post(
        "/v1/chains", json={"key": "bad", "purpose": "newsletter", "steps": steps}, headers=world["key"]
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert body["errors"][0]["field"] == field, body
    if code is not None:
        assert body["code"] == code, body
    assert (await client.get("/v1/chains", headers=world["key"])).json() == []


async def test_an_unknown_purpose_is_refused(client, world):
    body = {"key": "x", "purpose": "nope", "steps": [step("a", ["sms"], SMS)]}
    response = await client.post("/v1/chains", json=body, headers=world["key"])
    assert response.status_code == 422
    assert response.json()["code"] == "purpose_not_found"
    assert response.json()["errors"][0]["field"] == "purpose"


async def test_the_sms_content_is_checked_like_a_message(client, world):
    bad = step("a", ["whatsapp"], {"whatsapp": {"template_sid": "nope"}})
    response = await client.post(
        "/v1/chains", json={"key": "x", "purpose": "newsletter", "steps": [bad]}, headers=world["key"]
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "steps[0].content.whatsapp"


async def test_a_new_definition_under_the_same_key_is_a_new_version_and_runs_keep_theirs(
    client, world, runner, session
):
    first = await define(client, world, [step("a", ["sms"], SMS)])
    assert first["version"] == 1
    again = await client.post(
        "/v1/chains",
        json={"key": "follow_up", "purpose": "newsletter", "steps": [step("a", ["sms"], SMS)]},
        headers=world["key"],
    )
    assert again.status_code == 200, "the same definition again is the same version"
    assert again.json()["id"] == first["id"]
    run_id = await start(client, world, first["id"])
    changed = {"sms": {"text": "Version zwei"}}
    second = await define(client, world, [step("a", ["sms"], changed)])
    assert (second["version"], second["key"]) == (2, "follow_up")
    listed = (await client.get("/v1/chains", params={"key": "follow_up"}, headers=world["key"])).json()
    assert [c["version"] for c in listed] == [1, 2]
    assert (await client.get(f"/v1/chains/{second['id']}", headers=world["key"])).json()["steps"][0]["content"] == (
        changed
    )
    assert await runner.run_once() == 1
    run = await shown(client, world, run_id)
    assert (run["chain_version"], run["status"]) == (1, "completed")
    message = await session.get(Message, uuid.UUID(run["steps"][0]["message_id"]))
    assert message.content["sms"]["text"] == "Ihr Gutschein: HERBST10. STOP zum Abmelden", "version 1, filled in"


async def test_a_step_is_routed_past_a_web_push_endpoint_off_the_operators_push_services(
    client, world, ledger, database, session
):
    """The runner routes with the operator's list (here: only 127.0.0.1), as ``POST /v1/messages`` does."""
    old = await ledger.point("web_push", "https://push.old-service.example/sub/1", contact_id=world["sms"].contact_id)
    await ledger.apply(old, world["newsletter"].id, "permission_granted")
    push = {"web_push": {"title": "Herbst", "body": "Neu da"}}
    chain = await define(client, world, [step("a", ["web_push", "email"], {**push, **EMAIL})])
    run_id = await start(client, world, chain["id"])
    runner = ChainRunner(database, config=RunnerConfig(base_backoff=0.0), push_services=("127.0.0.1",))
    assert await runner.run_once() == 1
    run = await shown(client, world, run_id)
    message = await session.get(Message, uuid.UUID(run["steps"][0]["message_id"]))
    assert message.decision["channel"] == "email"
    assert message.decision["skipped"] == [{"channel": "web_push", "reason": "undeliverable"}]


# --- runs ----------------------------------------------------------------------------------------------------


THREE_STEPS = [
    step("sms_now", ["sms"], SMS),
    step(
        "mail_later",
        ["email"],
        EMAIL,
        after="PT1H",
        when={"all": [{"step": "sms_now", "has_not": "delivered"}]},
    ),
    step(
        "sms_again",
        ["sms"],
        SMS,
        after="PT2H",
        after_previous=True,
        when={"any": [{"step": "mail_later", "has": "failed"}, {"step": "sms_now", "has": "delivered"}]},
    ),
]


async def test_a_three_step_run_is_decided_step_by_step_when_due(client, world, providers, dispatcher, runner, session):
    chain = await define(client, world, THREE_STEPS)
    run_id = await start(client, world, chain["id"], campaign="autumn")
    run = await shown(client, world, run_id)
    assert [s["status"] for s in run["steps"]] == ["pending"] * 3
    assert run["steps"][0]["due_at"] is not None
    assert "due_at" not in run["steps"][1], "a later step waits for its turn"

    assert await runner.run_once() == 1
    run = await shown(client, world, run_id)
    first = run["steps"][0]
    assert first["status"] == "sent"
    assert await dispatcher.run_once() == 1
    [request] = providers["twilio"].requests
    assert request["Body"] == "Ihr Gutschein: HERBST10. STOP zum Abmelden"
    message = (await client.get(f"/v1/messages/{first['message_id']}", headers=world["key"])).json()
    assert (message["status"], message["campaign"]) == ("sent", "autumn")

    waiting = run["steps"][1]
    assert waiting["status"] == "pending"
    started = run["started_at"]
    assert waiting["due_at"] > started
    assert await runner.run_once() == 0, "not due for an hour"

    await make_due(session, run_id)
    assert await runner.run_once() == 1
    run = await shown(client, world, run_id)
    second = run["steps"][1]
    assert second["status"] == "sent", second
    assert second["detail"]["when"] == [{"step": "sms_now", "has_not": "delivered", "outcome": "false"}]
    assert await dispatcher.run_once() == 1
    [mail] = providers["inbox"].messages
    assert "Die Herbstkollektion ist da, Jane." in mail.get_body(("plain",)).get_content()

    third = run["steps"][2]
    assert third["status"] == "pending"
    assert third["due_at"] > second["decided_at"], "PT2H after the step before"
    await make_due(session, run_id)
    assert await runner.run_once() == 1
    run = await shown(client, world, run_id)
    assert run["status"] == "completed"
    assert run["steps"][2]["status"] == "skipped"
    assert run["steps"][2]["reason"] == "condition_not_met"
    assert len(providers["twilio"].requests) == 1


async def test_a_delivered_sms_makes_has_not_delivered_false(client, world, providers, dispatcher, runner, session):
    from twilio.request_validator import RequestValidator  # noqa: PLC0415

    from tests.integration.test_messages import ACCOUNT, PHONE, SENDER, TOKEN  # noqa: PLC0415

    chain = await define(client, world, THREE_STEPS[:2])
    run_id = await start(client, world, chain["id"])
    await runner.run_once()
    await dispatcher.run_once()
    first = (await shown(client, world, run_id))["steps"][0]
    sid = (await client.get(f"/v1/messages/{first['message_id']}", headers=world["key"])).json()["deliveries"][0][
        "provider_message_id"
    ]
    path = f"/webhooks/twilio/{world['sms'].workspace_id}/status"
    params = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": ACCOUNT, "To": PHONE, "From": SENDER}
    signature = RequestValidator(TOKEN).compute_signature(f"https://consent.example.com{path}", params)
    assert (await client.post(path, data=params, headers={"X-Twilio-Signature": signature})).status_code == 204
    await make_due(session, run_id)
    await runner.run_once()
    second = (await shown(client, world, run_id))["steps"][1]
    assert (second["status"], second["reason"]) == ("skipped", "condition_not_met")
    assert second["detail"]["when"][0]["outcome"] == "true"
    assert providers["inbox"].messages == []


@pytest.mark.parametrize(
    ("on_unknown", "status", "reason"), [("skip", "skipped", "outcome_unknown"), ("send", "sent", None)]
)
async def test_an_unknown_outcome_follows_on_unknown(
    client, world, providers, dispatcher, runner, session, on_unknown, status, reason
):
    steps = [
        step("mail", ["email"], EMAIL),
        step(
            "nudge",
            ["sms"],
            SMS,
            after="PT1H",
            when={"all": [{"step": "mail", "has_not": "opened"}]},
            on_unknown=on_unknown,
        ),
    ]
    chain = await define(client, world, steps)
    run_id = await start(client, world, chain["id"])
    await runner.run_once()
    await dispatcher.run_once()
    await make_due(session, run_id)
    await runner.run_once()
    nudge = (await shown(client, world, run_id))["steps"][1]
    assert nudge["status"] == status
    assert nudge.get("reason") == reason
    assert nudge["detail"]["when"] == [{"step": "mail", "has_not": "opened", "outcome": "unknown"}]
    await dispatcher.run_once()
    assert len(providers["twilio"].requests) == (1 if on_unknown == "send" else 0)


async def test_a_skipped_step_has_known_outcomes(client, world, runner, session, ledger):
    """A step that sent nothing was not opened: that is known, not unknown."""
    await ledger.apply(world["email"], world["newsletter"].id, "unsubscribe")
    steps = [
        step("mail", ["email"], EMAIL),
        step("nudge", ["sms"], SMS, when={"all": [{"step": "mail", "has_not": "opened"}]}),
    ]
    chain = await define(client, world, steps, stop_on_opt_out="channel")
    run_id = await start(client, world, chain["id"])
    await runner.run_once()
    await runner.run_once()
    run = await shown(client, world, run_id)
    assert run["steps"][0]["status"] == "skipped"
    assert run["steps"][0]["reason"] == "no_eligible_channel"
    assert run["steps"][0]["detail"]["skipped"] == [{"channel": "email", "reason": "opted_out"}]
    assert run["steps"][1]["status"] == "sent"
    assert run["steps"][1]["detail"]["when"][0]["outcome"] == "false"


async def test_an_opt_out_after_the_start_ends_the_remaining_steps_with_its_event(
    client, world, providers, dispatcher, runner, session, ledger
):
    steps = [step("mail", ["email"], EMAIL), step("sms", ["sms"], SMS, after="PT1H"), step("last", ["sms"], SMS)]
    chain = await define(client, world, steps)
    run_id = await start(client, world, chain["id"])
    await runner.run_once()
    await dispatcher.run_once()
    # a STOP on the SMS channel: with stop_on_opt_out purpose, the opt-out on any channel ends the run
    [result] = await ledger.apply(world["email"], world["newsletter"].id, "unsubscribe")
    await make_due(session, run_id)
    assert await runner.run_once() == 1
    run = await shown(client, world, run_id)
    assert run["status"] == "ended"
    assert run["ended_by_event_id"] == str(result.event_id)
    assert [s["status"] for s in run["steps"]] == ["sent", "ended", "ended"]
    for ended in run["steps"][1:]:
        assert ended["event_id"] == str(result.event_id)
        assert ended["reason"] == "opted_out"
    await dispatcher.run_once()
    assert providers["twilio"].requests == [], "no SMS although SMS consent stands: the purpose's consent ended"
    assert await runner.run_once() == 0


async def test_with_stop_on_opt_out_channel_only_that_channel_is_left_out(
    client, world, providers, dispatcher, runner, session, ledger
):
    steps = [step("mail", ["email"], EMAIL), step("both", ["email", "sms"], {**EMAIL, **SMS}, after="PT1H")]
    chain = await define(client, world, steps, stop_on_opt_out="channel")
    run_id = await start(client, world, chain["id"])
    await runner.run_once()
    await ledger.apply(world["email"], world["newsletter"].id, "unsubscribe")
    await make_due(session, run_id)
    await runner.run_once()
    run = await shown(client, world, run_id)
    assert run["status"] == "completed"
    assert run["steps"][1]["status"] == "sent"
    message = (await client.get(f"/v1/messages/{run['steps'][1]['message_id']}", headers=world["key"])).json()
    assert message["decision"]["channel"] == "sms"


async def test_an_opt_out_before_the_first_step_is_due_ends_the_run(client, world, runner, ledger, session):
    chain = await define(client, world, [step("later", ["sms"], SMS, after="P3D")])
    run_id = await start(client, world, chain["id"])
    [result] = await ledger.apply(world["sms"], world["newsletter"].id, "stop_word")
    await make_due(session, run_id)
    await runner.run_once()
    run = await shown(client, world, run_id)
    assert (run["status"], run["steps"][0]["status"]) == ("ended", "ended")
    assert run["steps"][0]["event_id"] == str(result.event_id)
    assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_a_cancelled_run_sends_nothing_more(client, world, providers, dispatcher, runner, session):
    chain = await define(client, world, THREE_STEPS)
    run_id = await start(client, world, chain["id"])
    await runner.run_once()
    response = await client.delete(f"/v1/chain-runs/{run_id}", headers=world["key"])
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "cancelled"
    assert [s["status"] for s in run["steps"]] == ["sent", "cancelled", "cancelled"]
    await session.execute(
        update(ChainStep).where(ChainStep.run_id == uuid.UUID(run_id)).values(due_at=utcnow() - timedelta(hours=1))
    )
    await session.commit()
    assert await runner.run_once() == 0
    again = await client.delete(f"/v1/chain-runs/{run_id}", headers=world["key"])
    assert again.json()["status"] == "cancelled"


async def test_a_run_started_twice_with_one_idempotency_key_starts_once(client, world, session):
    chain = await define(client, world, THREE_STEPS)
    key = {"Idempotency-Key": "run-jane-1"}
    first = await start(client, world, chain["id"], headers=key)
    second = await start(client, world, chain["id"], headers=key)
    assert first == second
    assert await session.scalar(select(func.count()).select_from(ChainRun)) == 1


async def test_a_run_needs_the_variables_its_content_uses(client, world):
    chain = await define(client, world, THREE_STEPS)
    response = await client.post(
        f"/v1/chains/{chain['id']}/runs", json={"contact": "jane", "variables": {"code": "X"}}, headers=world["key"]
    )
    assert response.status_code == 422
    assert response.json()["code"] == "variable_missing"
    unknown = await client.post(f"/v1/chains/{chain['id']}/runs", json={"contact": "nobody"}, headers=world["key"])
    assert unknown.status_code == 404
    bad_name = await client.post(
        f"/v1/chains/{chain['id']}/runs",
        json={"contact": "jane", "variables": {"Not a name!": "X"}},
        headers=world["key"],
    )
    assert bad_name.status_code == 422, bad_name.text
    [error] = bad_name.json()["errors"]
    assert error["field"] == "variables"
    assert error["message"].startswith("a key: ")
    assert "$.data" not in bad_name.text, "no internal path in the answer"
    assert "`key` in" not in bad_name.text


async def test_another_workspace_cannot_see_or_cancel_a_run(client, world, other_tenant):
    from app.lib.auth import Scope  # noqa: PLC0415

    chain = await define(client, world, THREE_STEPS)
    run_id = await start(client, world, chain["id"])
    stranger = await other_tenant.key(Scope.MESSAGES_SEND)
    assert (await client.get(f"/v1/chain-runs/{run_id}", headers=stranger)).status_code == 404
    assert (await client.delete(f"/v1/chain-runs/{run_id}", headers=stranger)).status_code == 404
    assert (await client.get(f"/v1/chains/{chain['id']}", headers=stranger)).status_code == 404
    started = await client.post(f"/v1/chains/{chain['id']}/runs", json={"contact": "jane"}, headers=stranger)
    assert started.status_code == 404
    assert (await client.get("/v1/chains", headers=stranger)).json() == []
    assert (await shown(client, world, run_id))["status"] == "active"


async def test_chains_need_the_messages_send_scope(client, world, tenant):
    from app.lib.auth import Scope  # noqa: PLC0415

    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    assert (await client.get("/v1/chains", headers=reader)).status_code == 403
    assert (await client.get("/v1/chains")).status_code == 401


# --- runners -------------------------------------------------------------------------------------------------


@pytest.fixture
async def committed(pg_server):
    """A database of its own (concurrent runners need real, committed rows): Jane opted in by SMS."""
    url = await pg_server.create_database("consent_chains")
    database = Database.from_url(url, pool_size=4)
    await migrate(database.engine)
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme")
        await workspace_repository.save_settings(
            session, workspace.id, {"phone": {"sms_from": "+4930123456789"}, "send_windows": {}}
        )
        purpose = await purposes.create_purpose(session, workspace.id, "newsletter", "News", "marketing")
        contact = await ledger_repository.add_contact(session, workspace.id, "jane", "de", "Europe/Berlin")
        point = await add_point(
            session, Keys(TEST_SECRET), workspace.id, contact_id=contact.id, channel="sms", value="+4915123456789"
        )
        await apply_changes(
            session, workspace.id, [Change(point, purpose.id, Trigger.START_WORD)], Actor(ActorType.SYSTEM)
        )
        definition = msgspec.convert(
            {"key": "c", "purpose": "newsletter", "steps": [step("a", ["sms"], {"sms": {"text": "Hallo"}})]}, ChainIn
        )
        chain, _ = await chains.define_chain(session, workspace.id, definition)

    async def start_runs(count: int) -> None:
        async with database.sessionmaker() as session, session.begin():
            for _ in range(count):
                await chains.start_run(session, workspace.id, chain.id, RunIn(contact="jane"))

    try:
        yield database, start_runs
    finally:
        await database.engine.dispose()
        await pg_server.drop_database(url)


async def test_two_runners_never_take_the_same_step(committed):
    database, start_runs = committed
    await start_runs(1)
    first = ChainRunner(database, push_services=None, worker_id="a")
    second = ChainRunner(database, push_services=None, worker_id="b")
    claimed = await asyncio.gather(first.run_once(), second.run_once())
    assert sorted(claimed) == [0, 1]
    await start_runs(60)
    small = RunnerConfig(batch=7)
    runners = [ChainRunner(database, push_services=None, config=small, worker_id=f"r{i}") for i in range(3)]
    total = 0
    for _ in range(20):
        total += sum(await asyncio.gather(*(r.run_once() for r in runners)))
    assert total == 60
    async with database.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 61, "one message per step"
        decided = await session.execute(text("SELECT count(*), count(DISTINCT message_id) FROM chain_steps"))
        assert tuple(decided.one()) == (61, 61)
        assert (
            await session.scalar(select(func.count()).select_from(ChainRun).where(ChainRun.status != "completed")) == 0
        )


async def test_the_person_gets_their_runs_and_an_erasure_deletes_them(client, world, runner, admin, tenant, session):
    from app.lib.auth import Scope  # noqa: PLC0415

    chain = await define(client, world, THREE_STEPS)
    run_id = await start(client, world, chain["id"])
    exported = await client.get("/v1/contacts/jane/export", headers=await tenant.key(Scope.AUDIT_READ))
    assert exported.status_code == 200, exported.text
    [run] = exported.json()["chain_runs"]
    assert (run["run_id"], run["variables"]) == (run_id, {"code": "HERBST10", "name": "Jane"})
    erased = await client.delete("/v1/contacts/jane", params={"request_ref": "T-1"}, headers=admin)
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["chain_runs"] == 1
    assert await session.scalar(select(func.count()).select_from(ChainStep)) == 0
    assert await runner.run_once() == 0


async def test_a_step_that_fails_is_retried_then_skipped_and_the_batch_goes_on(client, world, database, monkeypatch):
    from app.chains import runner as runner_module  # noqa: PLC0415

    chain = await define(client, world, [step("a", ["sms"], SMS), step("b", ["sms"], SMS)])
    failing = await start(client, world, chain["id"], campaign="fails")
    working = await start(client, world, chain["id"])
    real = runner_module.create_messages

    async def flaky(session, workspace_id, batch, **kwargs):
        if any(data.campaign == "fails" for data in batch):
            raise RuntimeError("boom")
        return await real(session, workspace_id, batch, **kwargs)

    monkeypatch.setattr(runner_module, "create_messages", flaky)
    runner = ChainRunner(database, push_services=None, config=RunnerConfig(base_backoff=0.0, max_attempts=2))
    assert await runner.run_once() == 2
    first = (await shown(client, world, failing))["steps"][0]
    assert (first["status"], first.get("reason")) == ("pending", None), "retried"
    assert (await shown(client, world, working))["steps"][0]["status"] == "sent", "the rest of the batch went on"
    await runner.run_once()
    run = await shown(client, world, failing)
    assert (run["steps"][0]["status"], run["steps"][0]["reason"]) == ("skipped", "step_failed")
    assert run["steps"][1]["status"] == "pending"
    assert "due_at" in run["steps"][1], "the next step is armed"


async def test_a_runner_killed_mid_step_loses_nothing_and_the_next_sends_once(committed, monkeypatch):
    from app.chains import runner as runner_module  # noqa: PLC0415

    database, start_runs = committed
    await start_runs(1)
    real = runner_module.create_messages
    written = asyncio.Event()

    async def then_hang(session, workspace_id, batch, **kwargs):
        answer = await real(session, workspace_id, batch, **kwargs)  # the message is written, not committed
        written.set()
        await asyncio.sleep(3600)
        return answer

    monkeypatch.setattr(runner_module, "create_messages", then_hang)
    killed = asyncio.create_task(ChainRunner(database, push_services=None, worker_id="killed").run_once())
    await asyncio.wait_for(written.wait(), 10)
    killed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killed
    monkeypatch.setattr(runner_module, "create_messages", real)
    async with database.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0, "rolled back with the step"
        assert await session.scalar(select(ChainStep.status)) == "pending"
    assert await ChainRunner(database, push_services=None, worker_id="next").run_once() == 1
    assert await ChainRunner(database, push_services=None, worker_id="third").run_once() == 0
    async with database.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 1
        assert await session.scalar(select(ChainStep.status)) == "sent"


async def test_an_opt_out_before_the_run_started_does_not_end_it(client, world, runner, ledger, providers, dispatcher):
    """Consent given again before the start: the run goes on (only what happened since the start counts)."""
    await ledger.apply(world["sms"], world["newsletter"].id, "stop_word", "start_word")
    chain = await define(client, world, [step("sms", ["sms"], SMS)])
    run_id = await start(client, world, chain["id"])
    await runner.run_once()
    run = await shown(client, world, run_id)
    assert (run["status"], run["steps"][0]["status"]) == ("completed", "sent")
    await dispatcher.run_once()
    assert len(providers["twilio"].requests) == 1


async def test_the_claim_reads_only_due_steps_through_the_index(session):
    from app.chains.repository import _CLAIM  # noqa: PLC0415

    # as for a table too large to read whole: on the tests' few rows, statistics left by other tests' (rolled back)
    # inserts can make a sequential scan the cheaper plan, and the test failed now and then for that alone
    await session.execute(text("SET LOCAL enable_seqscan = off"))
    explained = await session.execute(text(f"EXPLAIN {_CLAIM.text}"), {"now": utcnow(), "batch": 100})
    plan = "\n".join(explained.scalars())
    assert "ix_chain_steps_due" in plan, plan
    assert any("Index Cond" in line and "due_at <=" in line for line in plan.splitlines()), "the time bounds the scan"
    assert "Seq Scan on chain_steps" not in plan, plan
