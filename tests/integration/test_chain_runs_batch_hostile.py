"""What the hostile review of ``POST /v1/chains/{id}/runs/batch`` found (2026-12-06), each held by a test."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from app.lib.auth import Scope

STEPS = [{"key": "mail", "route": ["sms"], "content": {"sms": {"text": "Hallo {{name}}"}}, "after": "PT2H"}]


@pytest.fixture
async def chain(client, tenant, ledger) -> dict[str, Any]:
    await ledger.purpose("newsletter")
    jane = await ledger.point("sms", "+4915123456789", external_id="jane")
    await ledger.point("sms", "+4915123456788", external_id="john")
    key = await tenant.key(Scope.MESSAGES_SEND)
    created = await client.post("/v1/chains", json={"key": "c", "purpose": "newsletter", "steps": STEPS}, headers=key)
    assert created.status_code == 201, created.text
    chain_id = created.json()["id"]
    return {"id": chain_id, "path": f"/v1/chains/{chain_id}/runs/batch", "key": key, "jane": jane.contact_id}


async def runs(session) -> int:
    return await session.scalar(text("SELECT count(*) FROM chain_runs"))


async def merge(session, duplicate, survivor) -> None:
    """What a merge does to the rows these tests look at (runs move to the survivor, the duplicate points to it)."""
    moved = {"s": survivor, "d": duplicate}
    await session.execute(text("UPDATE chain_runs SET contact_id = :s WHERE contact_id = :d"), moved)
    await session.execute(text("UPDATE contacts SET merged_into = :s, merged_at = now() WHERE id = :d"), moved)
    await session.commit()


@pytest.mark.parametrize("bad_key", ["k1\n", "x" * 255 + "\n"], ids=["newline", "255+newline"])
async def test_an_item_key_with_a_trailing_newline_is_refused_in_its_entry(client, chain, session, bad_key):
    """Python's ``$`` matches before a final newline, the database's CHECK does not: the whole batch was a 500."""
    items = [
        {"contact": "jane", "variables": {"name": "J"}, "key": "fine"},
        {"contact": "john", "variables": {"name": "J"}, "key": bad_key},
    ]
    answer = await client.post(chain["path"], json={"runs": items}, headers=chain["key"])
    assert answer.status_code == 202, answer.text
    first, second = answer.json()["runs"]
    assert "run_id" in first
    assert second["error"]["code"] == "validation_failed"
    assert second["error"]["detail"] == "key: must be 1 to 255 visible ASCII characters, as an Idempotency-Key."
    assert await runs(session) == 1


async def test_erasing_a_merged_items_survivor_keeps_the_batchs_key(client, chain, ledger, tenant, session):
    """The entry of a merged contact named the survivor; erasing the survivor deleted the kept answer with it, and the
    same request and key then started every run again."""
    june = await ledger.point("sms", "+4915199999999", external_id="june")
    old = await ledger.point("sms", "+4915199999998", external_id="old")
    await merge(session, old.contact_id, june.contact_id)
    body = {"runs": [{"contact": name, "variables": {"name": "N"}} for name in ("jane", "john", "old")]}
    headers = {**chain["key"], "Idempotency-Key": "daily-2026-12-06"}
    first = await client.post(chain["path"], json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["runs"][2]["error"]["code"] == "contact_merged"
    erased = await client.delete(f"/v1/contacts/{june.contact_id}", headers=await tenant.key(Scope.ADMIN))
    assert erased.status_code == 200, erased.text
    again = await client.post(chain["path"], json=body, headers=headers)
    assert again.headers.get("idempotent-replayed") == "true", again.text
    assert await runs(session) == 2


async def test_a_keyed_item_naming_a_merged_contact_answers_contact_merged(client, chain, ledger, session):
    """The keyed run moved to the survivor with the merge; the retried item is answered as the single call answers
    the merged contact, not ``idempotency_key_reused``."""
    june = await ledger.point("sms", "+4915199999999", external_id="june")
    item = {"contact": "jane", "variables": {"name": "J"}, "key": "jk"}
    first = await client.post(chain["path"], json={"runs": [item]}, headers=chain["key"])
    assert first.status_code == 202, first.text
    await merge(session, chain["jane"], june.contact_id)
    retry = await client.post(chain["path"], json={"runs": [item]}, headers=chain["key"])
    single = await client.post(
        f"/v1/chains/{chain['id']}/runs", json={"contact": "jane", "variables": {"name": "J"}}, headers=chain["key"]
    )
    assert single.json()["code"] == "contact_merged"
    assert retry.json()["runs"][0]["error"]["code"] == "contact_merged"
    assert await runs(session) == 1


async def test_an_entrys_detail_is_short_whatever_the_item_carried(client, chain):
    """msgspec quotes an unknown field's name: two megabytes of it were answered and kept for the key's 24 hours."""
    item = {"contact": "jane", "variables": {"name": "J"}, "x" * 2_000_000: 1}
    answer = await client.post(chain["path"], json={"runs": [item]}, headers=chain["key"])
    assert answer.status_code == 202, answer.text
    [entry] = answer.json()["runs"]
    assert entry["error"]["code"] == "validation_failed"
    assert len(entry["error"]["detail"]) <= 300
    assert len(answer.content) < 1_000
