"""The chain runner's batches (issue 20, performance): a round decides all its due steps and creates their messages
together (:func:`app.messages.service.create_messages`), each still decided on its own — every step sent once,
the send gate and the ledger applied per contact, one step's refusal staying with that step."""

# ruff: noqa: F811  # the fixtures imported from test_messages are parameters of the tests

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from sqlalchemy import func, select

from app.chains.models import ChainRun, ChainStep
from app.chains.runner import ChainRunner, RunnerConfig
from app.lib.errors import AppError
from app.messages import service as messages
from app.messages.models import Delivery, Message
from app.messages.schemas import MessageIn
from tests.integration.test_chains import SMS, define, shown, start, step
from tests.integration.test_messages import (  # the provider stand-ins and Jane, opted in by SMS and email
    adapters,  # noqa: F401  # fixture
    dispatcher,  # noqa: F401  # fixture
    providers,  # noqa: F401  # fixture
    settings,  # noqa: F401  # fixture
    world,  # noqa: F401  # fixture
)

VARIABLES = {"code": "HERBST10", "name": "Jane"}


@pytest.fixture
def runner(database):
    return ChainRunner(database, push_services=None, config=RunnerConfig(batch=100, base_backoff=0.0))


async def opted_in(ledger, world, name: str, number: str) -> Any:
    """A contact ``name`` with an SMS number opted in to the newsletter."""
    point = await ledger.point("sms", number, external_id=name)
    await ledger.apply(point, world["newsletter"].id, "signup", "start_word")
    return point


async def run_of(client, world, chain_id: str, contact: str, **extra: Any) -> str:
    return await start(client, world, chain_id, contact=contact, variables=extra.pop("variables", VARIABLES), **extra)


async def drain(dispatcher) -> None:
    while await dispatcher.run_once():
        pass


async def test_a_round_of_many_due_steps_sends_each_exactly_once(
    client, world, ledger, providers, dispatcher, runner, session, tenant
):
    numbers = {f"c{i}": f"+49151220000{i:02d}" for i in range(12)}
    points = {name: await opted_in(ledger, world, name, number) for name, number in numbers.items()}
    chain = await define(client, world, [step("first", ["sms"], SMS), step("second", ["sms"], SMS)])
    runs = {name: await run_of(client, world, chain["id"], name) for name in numbers}

    assert await runner.run_once() == 12, "one round takes every due step"
    assert await runner.run_once() == 12, "and the next round every second step (PT0S after the first)"
    assert await runner.run_once() == 0

    messages_of_workspace = select(Message).where(Message.workspace_id == tenant.id)
    written = (await session.scalars(messages_of_workspace)).all()
    assert len(written) == 24, "one message per step"
    for name, run_id in runs.items():
        run = await shown(client, world, run_id)
        assert run["status"] == "completed"
        assert [s["status"] for s in run["steps"]] == ["sent", "sent"]
        for decided in run["steps"]:
            [delivery] = (
                await session.scalars(select(Delivery).where(Delivery.message_id == uuid.UUID(decided["message_id"])))
            ).all()
            assert delivery.contact_point_id == points[name].id, "each message goes to its own run's contact"
    steps_of_workspace = select(func.count(func.distinct(ChainStep.message_id))).where(
        ChainStep.workspace_id == tenant.id
    )
    assert await session.scalar(steps_of_workspace) == 24

    await drain(dispatcher)
    sent_to = sorted(request["To"] for request in providers["twilio"].requests)
    assert sent_to == sorted([*numbers.values(), *numbers.values()]), "every step sent once, none twice"


async def test_one_batch_decides_each_step_on_its_own_contact(
    client, world, ledger, providers, dispatcher, runner, session
):
    """Sent, refused by the gate, ended by an opt-out, refused for its content, blocked at send: one round."""
    twice = {
        "sms": {"text": "Ihr Gutschein: {{code}}, noch einmal: {{code}}. STOP zum Abmelden"}
    }  # dora: 16 UCS-2 segments
    chain = await define(client, world, [step("first", ["sms"], twice), step("second", ["sms"], SMS, after="PT1H")])
    bob = await opted_in(ledger, world, "bob", "+4915122000101")
    await ledger.apply(bob, world["newsletter"].id, "stop_word")  # before the run starts: the gate refuses him
    carl = await opted_in(ledger, world, "carl", "+4915122000102")
    await opted_in(ledger, world, "dora", "+4915122000103")
    eve = await opted_in(ledger, world, "eve", "+4915122000104")
    runs = {
        "jane": await run_of(client, world, chain["id"], "jane"),
        "bob": await run_of(client, world, chain["id"], "bob"),
        "carl": await run_of(client, world, chain["id"], "carl"),
        "dora": await run_of(client, world, chain["id"], "dora", variables={**VARIABLES, "code": "ł" * 400}),
        "eve": await run_of(client, world, chain["id"], "eve"),
    }
    [stop] = await ledger.apply(carl, world["newsletter"].id, "stop_word")  # after carl's run started

    assert await runner.run_once() == 5, "one round"
    first = {name: (await shown(client, world, run_id))["steps"][0] for name, run_id in runs.items()}
    assert first["jane"]["status"] == "sent"
    assert (first["bob"]["status"], first["bob"]["reason"]) == ("skipped", "no_eligible_channel")
    assert first["bob"]["detail"]["skipped"] == [{"channel": "sms", "reason": "opted_out"}]
    assert (first["carl"]["status"], first["carl"]["event_id"]) == ("ended", str(stop.event_id))
    assert (await shown(client, world, runs["carl"]))["status"] == "ended"
    assert (first["dora"]["status"], first["dora"]["reason"]) == ("skipped", "content_invalid")
    assert first["dora"]["detail"]["error"] == "sms_too_long"
    assert first["eve"]["status"] == "sent"
    for name in ("jane", "bob", "dora", "eve"):
        run = await shown(client, world, runs[name])
        assert (run["status"], run["steps"][1]["status"]) == ("active", "pending")
        assert "due_at" in run["steps"][1], f"{name}'s next step is armed"

    await ledger.apply(eve, world["newsletter"].id, "stop_word")  # between the decision and the send
    await drain(dispatcher)
    assert [r["To"] for r in providers["twilio"].requests] == [world["sms"].value], "only Jane's step went out"
    eve_message = (await client.get(f"/v1/messages/{first['eve']['message_id']}", headers=world["key"])).json()
    assert eve_message["status"] == "blocked_at_send", "the gate asked again at send time"


async def test_runs_of_two_workspaces_in_one_round_each_write_in_their_own(
    client, world, ledger, runner, session, tenant, other_tenant
):
    from app.chains import service as chains  # noqa: PLC0415
    from app.chains.schemas import ChainIn, RunIn  # noqa: PLC0415
    from app.purposes import service as purposes  # noqa: PLC0415
    from tests.conftest import Ledger  # noqa: PLC0415

    chain = await define(client, world, [step("only", ["sms"], SMS)])
    mine = await run_of(client, world, chain["id"], "jane")
    other = Ledger(ledger.database, other_tenant.id)
    async with ledger.database.sessionmaker() as db, db.begin():
        purpose = await purposes.create_purpose(db, other_tenant.id, "newsletter", "News", "marketing")
    point = await other.point("sms", "+4915122000201", external_id="jane")
    await other.apply(point, purpose.id, "signup", "start_word")
    async with ledger.database.sessionmaker() as db, db.begin():
        definition = msgspec.convert(
            {"key": "c", "purpose": "newsletter", "steps": [step("only", ["sms"], SMS)]}, ChainIn
        )
        their_chain, _ = await chains.define_chain(db, other_tenant.id, definition)
        theirs = await chains.start_run(db, other_tenant.id, their_chain.id, RunIn(contact="jane", variables=VARIABLES))

    assert await runner.run_once() == 2
    for workspace_id, run_id, contact_id in (
        (tenant.id, uuid.UUID(mine), world["sms"].contact_id),
        (other_tenant.id, theirs.id, point.contact_id),
    ):
        [decided] = (await session.scalars(select(ChainStep).where(ChainStep.run_id == run_id))).all()
        assert decided.status == "sent"
        message = await session.get(Message, decided.message_id)
        assert message is not None
        assert (message.workspace_id, message.contact_id) == (workspace_id, contact_id)
        run = await session.get(ChainRun, run_id)
        assert run is not None
        assert run.status == "completed"


async def test_the_batch_create_answers_each_message_as_create_message_would(client, world, session, tenant):
    def message(contact: str, purpose: str = "newsletter", **content: Any) -> MessageIn:
        body = {"contact": contact, "purpose": purpose, "route": ["sms"], "content": {"sms": {"text": "Hallo"}}}
        return msgspec.convert({**body, **content}, MessageIn)

    batch = [
        message("jane"),
        message("nobody"),
        message("jane", purpose="unknown"),
        message("jane", content={"sms": {"text": "x" * 1600}}),
        message(str(world["sms"].contact_id), route=["email", "sms"], content={"sms": {"text": "Hallo"}}),
    ]
    async with session.begin():
        answers = await messages.create_messages(session, tenant.id, batch)
        alone: list[Any] = []
        for data in batch:
            try:
                async with session.begin_nested():
                    alone.append(await messages.create_message(session, tenant.id, data))
            except AppError as exc:
                alone.append(exc)
    assert [a.code if isinstance(a, AppError) else a.status for a in answers] == [
        "queued",
        "contact_not_found",
        "purpose_not_found",
        "sms_too_long",
        "content_missing",
    ]
    assert [a.code if isinstance(a, AppError) else a.status for a in alone] == [
        a.code if isinstance(a, AppError) else a.status for a in answers
    ]
    first = answers[0]
    assert not isinstance(first, AppError)
    assert first.decision.channel == "sms"
    assert msgspec.to_builtins(first.decision) == msgspec.to_builtins(alone[0].decision)
    written = await client.get(f"/v1/messages/{first.message_id}", headers=world["key"])
    assert written.status_code == 200, written.text
    assert [h["status"] for h in written.json()["history"]] == ["queued"]
