"""The statuses of messages, deliveries and history steps: the enums are exactly what the database accepts."""

from __future__ import annotations

import re

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.messages import service
from app.messages.schemas import MessageIn
from app.messages.status import DeliveryStatus, MessageStatus, Step


@pytest.fixture
async def message_id(database, tenant, ledger):
    """A queued SMS to an opted-in number: a message, its delivery and its first history step."""
    purpose = await ledger.purpose()
    point = await ledger.point("sms", "+4915123456789", external_id="jane")
    await ledger.apply(point, purpose.id, "signup", "start_word")
    body = {"contact": "jane", "purpose": "newsletter", "route": ["sms"], "content": {"sms": {"text": "Hallo"}}}
    async with database.sessionmaker() as session, session.begin():
        out = await service.create_message(session, tenant.id, msgspec.convert(body, MessageIn))
    assert out.status == MessageStatus.QUEUED
    return out.message_id


#: Each table, and the column naming the message's rows in it.
ROWS = [("messages", "id"), ("deliveries", "message_id"), ("message_events", "message_id")]


def set_status(table, key, status):
    return text(f"UPDATE {table} SET status = '{status}' WHERE {key} = :id")  # noqa: S608  # names from ROWS


@pytest.mark.parametrize(("table", "key"), ROWS)
async def test_the_database_refuses_an_unknown_status(session, message_id, table, key):
    with pytest.raises(IntegrityError, match=f"ck_{table}_status_known"):
        async with session.begin_nested():
            await session.execute(set_status(table, key, "shipped"), {"id": message_id})


@pytest.mark.parametrize(("table", "key"), ROWS)
async def test_a_known_status_is_taken(session, message_id, table, key):
    async with session.begin_nested():
        await session.execute(set_status(table, key, "queued"), {"id": message_id})


@pytest.mark.parametrize(
    ("table", "values"), [("messages", MessageStatus), ("deliveries", DeliveryStatus), ("message_events", Step)]
)
async def test_each_check_lists_exactly_its_enum(session, table, values):
    # autogenerate does not compare check constraints: this keeps the migration's lists and the enums together
    definition = await session.scalar(
        text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :name"),
        {"name": f"ck_{table}_status_known"},
    )
    assert definition is not None
    assert re.findall(r"'([^']*)'", definition) == [value.value for value in values]


def test_the_api_answers_a_new_message_with_a_message_status():
    from typing import get_args, get_type_hints  # noqa: PLC0415

    from app.messages.schemas import MessageOut  # noqa: PLC0415

    # the API keeps its literal type (the contract is unchanged); it must name the same values
    assert set(get_args(get_type_hints(MessageOut)["status"])) == set(MessageStatus)
