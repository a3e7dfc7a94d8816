"""The dispatcher's send-time check: a consent whose end passed between queueing and sending blocks the send."""

from __future__ import annotations

from sqlalchemy import text

from tests.integration.test_messages import (  # the provider stand-ins and Jane, opted in by SMS and email
    adapters,  # noqa: F401  # fixture
    detail,
    dispatcher,  # noqa: F401  # fixture
    providers,  # noqa: F401  # fixture
    send,
    settings,  # noqa: F401  # fixture
    world,  # noqa: F401  # fixture
)


async def test_an_end_after_queueing_blocks_at_send(client, world, providers, dispatcher, session):  # noqa: F811
    body = (await send(client, world, ["sms"])).json()
    assert body["status"] == "queued"
    # the purpose gains a validity its SMS consent is past (as if the end came while the message waited)
    await session.execute(text("UPDATE purposes SET validity = 'P24M' WHERE id = :p"), {"p": world["newsletter"].id})
    await session.execute(
        text("UPDATE consents SET since = now() - interval '25 months' WHERE contact_point_id = :cp"),
        {"cp": world["sms"].id},
    )
    await session.commit()
    await dispatcher.run_once()
    assert providers["twilio"].requests == []
    shown = await detail(client, world, body["message_id"])
    assert shown["status"] == "blocked_at_send"
    assert shown["history"][-1]["error"] == "expired"
