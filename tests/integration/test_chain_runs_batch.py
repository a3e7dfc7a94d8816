"""``POST /v1/chains/{id}/runs/batch``: many runs in one request, each exactly the run the single call starts.

Issue 20 asks for 2,000 runs/s through the API; campaign tools start a chain for a whole audience at once (Knock's
workflow trigger takes up to 1,000 recipients per call). Every item is checked as ``POST /v1/chains/{id}/runs``
checks its body and answered in its entry; the runs and their steps go in a few statements on one connection.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import func, select, text

from app.chains import service as chains
from app.chains.models import ChainRun
from app.chains.schemas import ChainIn
from app.ledger import repository as ledger_repository
from app.lib.auth import Scope
from app.lib.db import Database, migrate
from app.main import create_app
from app.purposes import service as purposes
from app.settings import Settings
from app.workspaces import service as workspaces
from tests.conftest import TEST_SECRET, running

#: Three steps, a delay first, a condition and a variable: every column the start writes has something to show.
STEPS = [
    {"key": "mail", "route": ["sms"], "content": {"sms": {"text": "Hallo {{name}}"}}, "after": "PT2H"},
    {
        "key": "nudge",
        "route": ["sms"],
        "content": {"sms": {"text": "Noch da?"}},
        "after": "P1D",
        "when": {"all": [{"step": "mail", "has_not": "delivered"}]},
    },
    {"key": "last", "route": ["sms"], "content": {"sms": {"text": "Zuletzt"}}, "after": "PT0S", "after_previous": True},
]


async def runs(session) -> int:
    return await session.scalar(select(func.count()).select_from(ChainRun))


async def define(client, key: dict[str, str], chain_key: str) -> str:
    created = await client.post(
        "/v1/chains", json={"key": chain_key, "purpose": "newsletter", "steps": STEPS}, headers=key
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


@pytest.fixture
async def chain(client, tenant, ledger) -> dict[str, Any]:
    """A chain of three steps, Jane and John, and a key that may start runs."""
    await ledger.purpose("newsletter")
    jane = await ledger.point("sms", "+4915123456789", external_id="jane")
    john = await ledger.point("sms", "+4915123456788", external_id="john")
    key = await tenant.key(Scope.MESSAGES_SEND)
    chain_id = await define(client, key, "c")
    return {
        "id": chain_id,
        "path": f"/v1/chains/{chain_id}/runs/batch",
        "key": key,
        "jane": jane.contact_id,
        "john": john.contact_id,
    }


async def _counts(session) -> dict[str, int]:
    """Rows per table of the schema (every table: what a start writes beyond the run and its steps shows here)."""
    tables = await session.scalars(
        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
    )
    counts = {}
    for table in tables:
        counts[table] = await session.scalar(text(f'SELECT count(*) FROM "{table}"'))  # noqa: S608  # catalogue names
    return counts


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in after if after[table] != before.get(table, 0)}


async def _rows(session, chain_id: str) -> list[dict[str, Any]]:
    """The chain version's runs with their steps, by contact, ids and times aside (due times relative to the start)."""
    found = await session.execute(
        text(
            """
            SELECT r.*, json_agg(json_build_object(
                       'workspace_id', s.workspace_id, 'position', s.position, 'key', s.key, 'status', s.status,
                       'due_after', extract(epoch FROM s.due_at - r.started_at), 'attempts', s.attempts,
                       'decided_at', s.decided_at, 'message_id', s.message_id, 'reason', s.reason,
                       'event_id', s.event_id, 'detail', s.detail) ORDER BY s.position) AS steps
              FROM chain_runs r JOIN chain_steps s ON s.run_id = r.id AND s.workspace_id = r.workspace_id
             WHERE r.chain_id = :chain
             GROUP BY r.id, r.workspace_id
             ORDER BY r.contact_id, r.campaign NULLS FIRST
            """
        ),
        {"chain": uuid.UUID(chain_id)},
    )
    rows = []
    for row in found.mappings():
        kept = {k: v for k, v in row.items() if k not in {"id", "chain_id", "created_at", "started_at", "key"}}
        rows.append(kept)
    return rows


async def test_a_batch_starts_exactly_the_runs_the_single_call_starts(client, chain, session):
    """The same contacts through the single call (chain A) and through one batch (chain B): the same rows, field by
    field, and nothing else written (no event, message or outbox row) beyond what the single calls wrote."""
    other = await define(client, chain["key"], "d")
    items: list[dict[str, Any]] = [
        {"contact": "jane", "variables": {"name": "Jane"}},
        {"contact": str(chain["john"]), "variables": {"name": "John", "extra": "x"}, "campaign": "winter"},
        {"contact": "jane", "variables": {"name": "Jane"}, "campaign": "again"},
    ]
    before = await _counts(session)
    for n, item in enumerate(items):  # with a key (the fast path) and without (the route)
        headers = {**chain["key"], "Idempotency-Key": f"one-{n}"} if n % 2 == 0 else chain["key"]
        single = await client.post(f"/v1/chains/{chain['id']}/runs", json=item, headers=headers)
        assert single.status_code == 202, single.text
    singles = _delta(before, await _counts(session))
    before = await _counts(session)
    batch = await client.post(
        f"/v1/chains/{other}/runs/batch", json={"runs": items}, headers={**chain["key"], "Idempotency-Key": "b"}
    )
    assert batch.status_code == 202, batch.text
    batched = _delta(before, await _counts(session))
    assert [set(entry) for entry in batch.json()["runs"]] == [{"index", "run_id"}] * 3
    assert [entry["index"] for entry in batch.json()["runs"]] == [0, 1, 2]
    assert singles.pop("idempotency_keys") == 2
    assert batched.pop("idempotency_keys") == 1
    assert singles == batched == {"chain_runs": 3, "chain_steps": 9}
    assert await _rows(session, chain["id"]) == await _rows(session, other)
    started = await session.execute(
        text("SELECT started_at, created_at FROM chain_runs WHERE chain_id = :c"), {"c": uuid.UUID(other)}
    )
    for started_at, created_at in started:
        assert abs(created_at - started_at) < timedelta(seconds=5)
    shown = await client.get(f"/v1/chain-runs/{batch.json()['runs'][1]['run_id']}", headers=chain["key"])
    assert shown.status_code == 200, shown.text
    assert (shown.json()["contact_id"], shown.json()["campaign"]) == (str(chain["john"]), "winter")
    assert [s["status"] for s in shown.json()["steps"]] == ["pending"] * 3


async def test_items_are_refused_with_the_single_calls_codes_and_the_others_start(
    client, chain, ledger, other_tenant, session
):
    foreign = await ledger_repository.add_contact(session, other_tenant.id, "stranger", "de", "Europe/Berlin")
    survivor = await ledger.point("sms", "+4915199999999", external_id="june")
    merged = await ledger.point("sms", "+4915199999998", external_id="old")
    await session.execute(
        text("UPDATE contacts SET merged_into = :into, merged_at = now() WHERE id = :id"),
        {"into": survivor.contact_id, "id": merged.contact_id},
    )
    await session.commit()
    items: list[Any] = [
        {"contact": "jane", "variables": {"name": "Jane"}},
        {"contact": "nobody", "variables": {"name": "X"}},
        {"contact": "stranger", "variables": {"name": "X"}},  # another workspace's external id
        {"contact": str(foreign.id), "variables": {"name": "X"}},  # and its id
        {"contact": "old", "variables": {"name": "X"}},
        {"contact": "john"},
        {"contact": "john", "variables": {"1bad": "x"}},
        {"contact": "john", "variables": {"name": "two\nlines"}},
        {"contact": "john", "variables": {"name": "J"}, "campaign": "x" * 101},
        {"contact": "john", "variables": {"name": "J"}, "colour": "blue"},
        {"variables": {"name": "J"}},
        {"contact": "john", "variables": {"name": "J"}, "key": "has space"},
        {"contact": "john", "variables": {"name": "J"}},
    ]
    answer = await client.post(chain["path"], json={"runs": items}, headers=chain["key"])
    assert answer.status_code == 202, answer.text
    entries = answer.json()["runs"]
    assert [e["index"] for e in entries] == list(range(len(items)))
    started = [e["index"] for e in entries if "run_id" in e]
    assert started == [0, 12]
    single_path = f"/v1/chains/{chain['id']}/runs"
    for entry, item in zip(entries, items, strict=True):
        if "run_id" in entry:
            continue
        assert set(entry) == {"index", "error"}
        single = await client.post(single_path, json=item, headers=chain["key"])
        assert single.status_code in {404, 409, 422}, single.text
        assert entry["error"]["code"] == single.json()["code"], (item, entry, single.json())
        if entry["error"]["code"] not in {"validation_failed", "contact_merged"}:  # the app's message, word for word
            assert entry["error"]["detail"] == single.json()["detail"], (item, entry, single.json())
    codes = [e["error"]["code"] for e in entries if "error" in e]
    assert codes == [
        "contact_not_found",
        "contact_not_found",
        "contact_not_found",
        "contact_merged",
        "variable_missing",
        *["validation_failed"] * 6,
    ]
    # a kept answer names no contact: an erasure of the survivor would delete it and free the batch's key (hostile
    # review); the contact's own record names the survivor
    assert str(survivor.contact_id) not in answer.text
    assert await runs(session) == 2


async def test_contacts_are_found_as_the_single_call_finds_them(client, chain, ledger, session):
    """By id or external id, an id winning over another contact's equal external id (as ``find_contact_on_driver``)."""
    shadow = await ledger.point("sms", "+4915100000001", external_id=str(chain["john"]))
    refs = [str(chain["john"]), "jane", str(chain["jane"]), str(shadow.contact_id), str(chain["john"]).upper()]
    answer = await client.post(
        chain["path"],
        json={"runs": [{"contact": ref, "variables": {"name": "N"}} for ref in refs]},
        headers=chain["key"],
    )
    assert answer.status_code == 202, answer.text
    found = await session.execute(text("SELECT id, contact_id FROM chain_runs"))
    by_run = {str(run): contact for run, contact in found.all()}
    started = [by_run[entry["run_id"]] for entry in answer.json()["runs"]]
    singles = []
    for ref in refs:
        single = await client.post(
            f"/v1/chains/{chain['id']}/runs", json={"contact": ref, "variables": {"name": "N"}}, headers=chain["key"]
        )
        assert single.status_code == 202, single.text
        singles.append(
            await session.scalar(
                text("SELECT contact_id FROM chain_runs WHERE id = :id"), {"id": uuid.UUID(single.json()["run_id"])}
            )
        )
    assert started == singles == [chain["john"], chain["jane"], chain["jane"], shadow.contact_id, chain["john"]]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"runs": {"contact": "jane"}}, 422),
        ({"runs": []}, 422),
        ({"runs": [{"contact": "jane", "variables": {"name": "J"}}] * 1001}, 422),
        ({"runs": [{"contact": "jane", "variables": {"name": "J"}}, "jane"]}, 422),
        ({"runs": [{"contact": "jane", "variables": {"name": "J"}}, None]}, 422),
        ({"contact": "jane"}, 422),
        ([{"contact": "jane"}], 422),
    ],
    ids=["not a list", "empty", "1001 items", "an item a string", "an item null", "no runs", "a bare list"],
)
async def test_a_body_malformed_as_a_whole_starts_nothing(client, chain, session, body, status):
    answer = await client.post(chain["path"], json=body, headers={**chain["key"], "Idempotency-Key": "bad"})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "validation_failed"
    broken = await client.post(
        chain["path"], content=b'{"runs": [', headers={**chain["key"], "Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert await runs(session) == 0


async def test_a_thousand_items_start_a_thousand_runs_in_a_few_statements(client, chain, connection, ledger, session):
    await ledger.opted_in_in_bulk((await session.scalar(text("SELECT id FROM purposes LIMIT 1"))), 1000)
    statements: list[str] = []
    driver = (await connection.get_raw_connection()).driver_connection

    def logger(record: Any) -> None:
        statements.append(record.query.split()[0].upper())

    items = [{"contact": f"bulk-{n}", "variables": {"name": f"N{n}"}, "key": f"k{n}"} for n in range(1, 1001)]
    driver.add_query_logger(logger)
    try:
        answer = await client.post(
            chain["path"], json={"runs": items}, headers={**chain["key"], "Idempotency-Key": "1k"}
        )
    finally:
        driver.remove_query_logger(logger)
    assert answer.status_code == 202, answer.text
    assert all("run_id" in entry for entry in answer.json()["runs"])
    assert await runs(session) == 1000
    assert await session.scalar(text("SELECT count(*) FROM chain_steps")) == 3000
    # the transaction's savepoint, the chain, the contacts, the keyed runs, the runs with their steps, the key
    assert len(statements) <= 8, statements


async def test_item_keys_make_a_retried_batch_start_nothing_twice(client, chain, session):
    first = await client.post(
        chain["path"],
        json={
            "runs": [
                {"contact": "jane", "variables": {"name": "Jane"}, "key": "jane-winter"},
                {"contact": "johnny", "variables": {"name": "John"}, "key": "john-winter"},
            ]
        },
        headers={**chain["key"], "Idempotency-Key": "try-1"},
    )
    assert first.status_code == 202, first.text
    jane_run = first.json()["runs"][0]["run_id"]
    assert first.json()["runs"][1]["error"]["code"] == "contact_not_found"
    retry = await client.post(
        chain["path"],
        json={
            "runs": [
                {"contact": "jane", "variables": {"name": "Jane"}, "key": "jane-winter"},
                {"contact": "john", "variables": {"name": "John"}, "key": "john-winter"},
                {"contact": "john", "variables": {"name": "John"}, "key": "john-winter"},
                {"contact": "jane", "variables": {"name": "Janet"}, "key": "jane-winter"},
                {"contact": "john", "variables": {"name": "John"}, "key": "jane-winter"},
                {"contact": "jane", "variables": {"name": "Jane"}, "campaign": "c", "key": "jane-winter"},
            ]
        },
        headers={**chain["key"], "Idempotency-Key": "try-2"},
    )
    assert retry.status_code == 202, retry.text
    entries = retry.json()["runs"]
    assert entries[0] == {"index": 0, "run_id": jane_run}
    john_run = entries[1]["run_id"]
    assert entries[2] == {"index": 2, "run_id": john_run}  # the same key twice in one batch: one run
    assert [e["error"]["code"] for e in entries[3:]] == ["idempotency_key_reused"] * 3
    assert await runs(session) == 2
    keys = dict((await session.execute(text("SELECT key, id FROM chain_runs"))).all())
    assert keys == {"jane-winter": uuid.UUID(jane_run), "john-winter": uuid.UUID(john_run)}
    shown = await client.get(f"/v1/chain-runs/{jane_run}", headers=chain["key"])
    assert shown.json()["key"] == "jane-winter"
    # a key names a run of one chain version: another version starts its own
    other = await define(client, chain["key"], "d")
    elsewhere = await client.post(
        f"/v1/chains/{other}/runs/batch",
        json={"runs": [{"contact": "jane", "variables": {"name": "Jane"}, "key": "jane-winter"}]},
        headers=chain["key"],
    )
    assert elsewhere.json()["runs"][0]["run_id"] != jane_run
    assert await runs(session) == 3


async def test_the_request_key_answers_a_repeat_with_the_first_answer(client, chain, session):
    headers = {**chain["key"], "Idempotency-Key": "batch-1"}
    body = {"runs": [{"contact": "jane", "variables": {"name": "Jane"}}, {"contact": "nobody"}]}
    first = await client.post(chain["path"], json=body, headers=headers)
    assert first.status_code == 202, first.text
    again = await client.post(chain["path"], json=body, headers=headers)
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    other = await client.post(chain["path"], json={"runs": body["runs"][:1]}, headers=headers)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")
    assert await runs(session) == 1


async def test_another_workspace_neither_sees_the_chain_nor_names_its_contacts(client, chain, other_tenant, session):
    foreign_key = await other_tenant.key(Scope.MESSAGES_SEND)
    refused = await client.post(
        chain["path"], json={"runs": [{"contact": "jane", "variables": {"name": "J"}}]}, headers=foreign_key
    )
    assert (refused.status_code, refused.json()["code"]) == (404, "chain_not_found")
    reader = await client.post(
        chain["path"],
        json={"runs": [{"contact": "jane", "variables": {"name": "J"}}]},
        headers=await other_tenant.key(Scope.ELIGIBILITY_READ),
    )
    assert reader.status_code in {401, 403}
    assert await runs(session) == 0


# --- concurrent batches need committed rows: a database of their own ---------------------------------------------


@pytest.fixture
async def served(pg_server, tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, Database, str, dict[str, str]]]:
    """The app on a database of its own (real transactions, real row locks): a chain, 50 contacts, a key."""
    url = await pg_server.create_database("consent_runs_batch")
    database = Database.from_url(url, pool_size=4)
    assert database.engine is not None
    await migrate(database.engine)
    async with database.sessionmaker() as session, session.begin():
        workspace = await workspaces.create_workspace(session, "Acme")
        await purposes.create_purpose(session, workspace.id, "newsletter", "News", "marketing")
        for n in range(50):
            await ledger_repository.add_contact(session, workspace.id, f"c{n}", "de", "Europe/Berlin")
        definition = msgspec.convert({"key": "c", "purpose": "newsletter", "steps": STEPS}, ChainIn)
        defined, _ = await chains.define_chain(session, workspace.id, definition)
        _, secret = await workspaces.create_api_key(session, workspace.id, "test", [Scope.MESSAGES_SEND])
    app = create_app(Settings(data_dir=tmp_path / "data", secret_key=TEST_SECRET, dispatcher=False), database=database)
    try:
        async with running(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="https://consent.example.com") as http:
                yield http, database, f"/v1/chains/{defined.id}/runs/batch", {"Authorization": f"Bearer {secret}"}
    finally:
        await database.dispose()
        await pg_server.drop_database(url)


async def test_concurrent_batches_with_the_same_item_keys_start_each_run_once(served):
    """Two batches, their items' keys overlapping in opposite orders, sent at once: one run per key, both answers
    naming it, and no deadlock (the runs are written in key order)."""
    http, database, path, key = served
    items = [{"contact": f"c{n}", "variables": {"name": "N"}, "key": f"k{n}"} for n in range(50)]
    first, second = await asyncio.gather(
        http.post(path, json={"runs": items}, headers={**key, "Idempotency-Key": "one"}),
        http.post(path, json={"runs": items[::-1]}, headers={**key, "Idempotency-Key": "two"}),
    )
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    named = {e["index"]: e["run_id"] for e in first.json()["runs"]}
    again = {49 - e["index"]: e["run_id"] for e in second.json()["runs"]}
    assert named == again
    async with database.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(ChainRun)) == 50
        assert await session.scalar(text("SELECT count(*) FROM chain_steps")) == 150


async def test_two_concurrent_batches_with_one_request_key_start_one_batch(served):
    """One batch starts; the other answers its answer, whether it found the key held or waited on the key's row
    (its own runs then roll back)."""
    http, database, path, key = served
    items = [{"contact": f"c{n}", "variables": {"name": "N"}} for n in range(50)]
    headers = {**key, "Idempotency-Key": "together"}
    first, second = await asyncio.gather(
        http.post(path, json={"runs": items}, headers=headers), http.post(path, json={"runs": items}, headers=headers)
    )
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    assert first.content == second.content
    assert sorted(r.headers.get("idempotent-replayed", "no") for r in (first, second)) == ["no", "true"]
    async with database.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(ChainRun)) == 50
