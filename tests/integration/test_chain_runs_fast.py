"""The fast path of ``POST /v1/chains/{id}/runs`` with an ``Idempotency-Key`` (``app/chains/fastpath.py``).

It must answer the plain case as the route does (the same answer, the same rows, the same kept key), hand every
other case to the route (which answers it as before), keep one workspace's chain out of another's runs, and drop a
chain's cached plan when the chain goes. A chain id in upper case is not taken by the fast path: it reaches the
route, which the tests use as the reference.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import func, select, text

from app.chains import repository as chains_repository
from app.chains import service as chains
from app.chains.fastpath import PATH_TEMPLATE
from app.chains.models import ChainRun, ChainStep
from app.ledger import repository as ledger_repository
from app.lib.auth import Scope
from app.lib.db import Database
from app.lib.models import IdempotencyKey

STEPS = [
    {"key": "first", "route": ["sms"], "content": {"sms": {"text": "Hallo {{name}}"}}, "after": "PT1H"},
    {"key": "second", "route": ["sms"], "content": {"sms": {"text": "Noch da?"}}, "after": "P1D"},
]


def route_path(path: str) -> str:
    """The same chain's runs with the id in upper case: the route answers, not the fast path."""
    chain_id = path.split("/")[3]
    return path.replace(chain_id, chain_id.upper())


class Ways:
    """Counts which way each run was started: the fast path's one statement, or the route's transaction."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fast = 0
        self.route = 0
        fast, route = chains_repository.start_keyed_run_on_driver, chains.start_run_on_driver

        async def counted_fast(*args: Any, **kwargs: Any) -> Any:
            self.fast += 1
            return await fast(*args, **kwargs)

        async def counted_route(*args: Any, **kwargs: Any) -> Any:
            self.route += 1
            return await route(*args, **kwargs)

        monkeypatch.setattr(chains_repository, "start_keyed_run_on_driver", counted_fast)
        monkeypatch.setattr(chains, "start_run_on_driver", counted_route)


@pytest.fixture
def ways(monkeypatch: pytest.MonkeyPatch) -> Ways:
    return Ways(monkeypatch)


@pytest.fixture
async def world(client, tenant, ledger) -> dict[str, Any]:
    """A chain of two steps, Jane (external id ``jane``), and a key that may start runs."""
    await ledger.purpose("newsletter")
    jane = await ledger.point("sms", "+4915123456789", external_id="jane")
    key = await tenant.key(Scope.MESSAGES_SEND)
    created = await client.post("/v1/chains", json={"key": "c", "purpose": "newsletter", "steps": STEPS}, headers=key)
    assert created.status_code == 201, created.text
    chain_id = created.json()["id"]
    return {"path": f"/v1/chains/{chain_id}/runs", "chain_id": chain_id, "key": key, "jane": jane.contact_id}


async def post(client, world, key: str, body: Any, *, path: str | None = None, headers: dict[str, str] | None = None):
    return await client.post(
        path or world["path"], json=body, headers={**world["key"], "Idempotency-Key": key, **(headers or {})}
    )


async def rows_of(session, run_id: str) -> tuple[Any, list[Any]]:
    run = await session.scalar(select(ChainRun).where(ChainRun.id == uuid.UUID(run_id)))
    steps = (
        await session.scalars(
            select(ChainStep).where(ChainStep.run_id == uuid.UUID(run_id)).order_by(ChainStep.position)
        )
    ).all()
    return run, list(steps)


async def test_the_fast_path_starts_a_run_as_the_route_does(client, app, world, session, ways):
    body = {"contact": "jane", "variables": {"name": "Jane"}, "campaign": "herbst"}
    fast = await post(client, world, "fast-1", body)
    routed = await post(client, world, "route-1", body, path=route_path(world["path"]))
    assert (ways.fast, ways.route) == (1, 1)
    assert (fast.status_code, routed.status_code) == (202, 202), (fast.text, routed.text)
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert int(fast.headers["content-length"]) == len(fast.content)
    assert fast.headers["x-request-id"]
    assert list(fast.json()) == list(routed.json()) == ["run_id"]
    compared = []
    for answer in (fast, routed):
        run, steps = await rows_of(session, answer.json()["run_id"])
        assert steps[0].due_at is not None
        assert steps[0].due_at - run.started_at == timedelta(hours=1)
        compared.append(
            (
                (run.workspace_id, run.chain_id, run.contact_id, run.variables, run.campaign, run.status, run.ended_at),
                [
                    (s.workspace_id, s.position, s.key, s.status, s.due_at is None, s.attempts, s.decided_at)
                    for s in steps
                ],
            )
        )
    assert compared[0] == compared[1]
    assert compared[0][0][2] == world["jane"]
    kept = {
        k.key: k
        for k in await session.scalars(select(IdempotencyKey).where(IdempotencyKey.key.in_(["fast-1", "route-1"])))
    }
    for key, answer in (("fast-1", fast), ("route-1", routed)):
        assert (kept[key].status, kept[key].headers, kept[key].body) == (
            202,
            "content-type: application/json",
            answer.content,
        )
        assert kept[key].completed_at is not None
    again = await post(client, world, "fast-1", body)
    assert (again.status_code, again.content, again.headers["idempotent-replayed"]) == (202, fast.content, "true")
    other = await post(client, world, "fast-1", {**body, "campaign": "anders"})
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")
    assert await session.scalar(select(func.count()).select_from(ChainRun)) == 2
    metrics = app.state.metrics.requests
    assert metrics.labels("POST", PATH_TEMPLATE, "202")._value.get() == 3, "both ways count under the route's name"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"contact": "nobody", "variables": {"name": "x"}}, 404, "contact_not_found"),
        ({"contact": "jane"}, 422, "variable_missing"),
        ({"contact": "jane", "variables": {"name": "x"}, "extra": 1}, 422, None),
        ({"contact": "", "variables": {"name": "x"}}, 422, None),
        ({"contact": "ja\u0000ne", "variables": {"name": "x"}}, 422, "nul_character"),
        ({"contact": "jane", "variables": {"name": "x"}, "campaign": "a\nb"}, 422, None),
    ],
)
async def test_what_the_fast_path_does_not_take_is_answered_by_the_route(
    client, world, session, ways, body, status, code
):
    """Each refusal as the route gives it, no run and no key kept; the corrected request then runs."""
    answers = [
        await post(client, world, "k-fast", body),
        await post(client, world, "k-route", body, path=route_path(world["path"])),
    ]
    for answer in answers:
        assert answer.status_code == status, answer.text
        if code is not None:
            assert answer.json()["code"] == code
    assert answers[0].json()["code"] == answers[1].json()["code"]
    assert ways.fast <= 1, "a refused request writes nothing (at most one statement, which wrote nothing)"
    assert await session.scalar(select(func.count()).select_from(ChainRun)) == 0
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
    corrected = await post(client, world, "k-fast", {"contact": "jane", "variables": {"name": "x"}})
    assert corrected.status_code == 202, corrected.text
    assert "idempotent-replayed" not in corrected.headers


@pytest.mark.parametrize(
    "raw",
    [
        b'{"contact":"ja\xffne","variables":{"name":"x"}}',  # not UTF-8
        b'{"contact":"ja\xed\xa0\x80ne","variables":{"name":"x"}}',  # a lone surrogate, UTF-8-encoded
    ],
)
async def test_a_body_that_is_not_utf8_is_answered_by_the_route(client, world, session, raw):
    """Hostile review: msgspec reports invalid UTF-8 in a string as a UnicodeDecodeError, which left the fast path as
    a bare 500 (the route answers 400)."""
    answers = [
        await client.post(
            path, content=raw, headers={**world["key"], "Idempotency-Key": key, "Content-Type": "application/json"}
        )
        for key, path in (("k-fast", world["path"]), ("k-route", route_path(world["path"])))
    ]
    assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
    assert answers[0].json()["code"] == answers[1].json()["code"]
    assert await session.scalar(select(func.count()).select_from(ChainRun)) == 0


async def test_a_merged_contact_is_refused_with_its_survivor(client, world, ledger, session):
    survivor = await ledger.point("sms", "+4915199999999", external_id="june")
    await session.execute(
        text("UPDATE contacts SET merged_into = :into, merged_at = now() WHERE id = :id"),
        {"into": survivor.contact_id, "id": world["jane"]},
    )
    await session.commit()
    merged = await post(client, world, "m-1", {"contact": "jane", "variables": {"name": "x"}})
    assert (merged.status_code, merged.json()["code"]) == (409, "contact_merged")
    assert merged.json()["merged_into"] == str(survivor.contact_id)
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


async def test_a_contact_is_found_by_id_before_another_contacts_equal_external_id(client, world, ledger, session, ways):
    """The fast path's contact look-up agrees with the ledger's (``find_contact_on_driver``)."""
    tricky = await ledger.point("sms", "+4915188888888", external_id=str(world["jane"]))
    started = await post(client, world, "id-1", {"contact": str(world["jane"]), "variables": {"name": "x"}})
    assert started.status_code == 202, started.text
    assert ways.fast == 1
    run, _ = await rows_of(session, started.json()["run_id"])
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    found = await ledger_repository.find_contact_on_driver(driver, run.workspace_id, str(world["jane"]))
    assert found is not None
    assert run.contact_id == found[0] == world["jane"] != tricky.contact_id
    by_external = await post(client, world, "id-2", {"contact": "jane", "variables": {"name": "x"}})
    run, _ = await rows_of(session, by_external.json()["run_id"])
    assert run.contact_id == world["jane"]


async def test_another_workspace_never_starts_a_run_of_this_chain(client, app, world, tenant, other_tenant, session):
    """Not with the chain's plan cached in the process, not with a contact of its own of the same external id."""
    assert (await post(client, world, "w-1", {"contact": "jane", "variables": {"name": "x"}})).status_code == 202
    assert app.state.chain_run_plans.get(tenant.id, uuid.UUID(world["chain_id"])) is not None
    stranger = await other_tenant.key(Scope.MESSAGES_SEND, Scope.CONSENTS_WRITE)
    async with app.state.database.sessionmaker() as db_session, db_session.begin():
        await ledger_repository.add_contact(db_session, other_tenant.id, "jane", "de", "Europe/Berlin")
    refused = await client.post(
        world["path"],
        json={"contact": "jane", "variables": {"name": "x"}},
        headers={**stranger, "Idempotency-Key": "w-1"},
    )
    assert (refused.status_code, refused.json()["code"]) == (404, "chain_not_found")
    assert app.state.chain_run_plans.get(other_tenant.id, uuid.UUID(world["chain_id"])) is None
    assert await session.scalar(select(func.count()).select_from(ChainRun)) == 1
    keys = (await session.scalars(select(IdempotencyKey.workspace_id))).all()
    assert other_tenant.id not in keys


async def test_a_key_without_the_scope_is_refused_before_anything_is_written(client, world, tenant, session):
    reader = await tenant.key(Scope.ELIGIBILITY_READ)
    refused = await client.post(
        world["path"], json={"contact": "jane", "variables": {"name": "x"}}, headers={**reader, "Idempotency-Key": "s"}
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
    unknown = await client.post(
        world["path"],
        json={"contact": "jane", "variables": {"name": "x"}},
        headers={"Authorization": "Bearer csk_" + "x" * 43, "Idempotency-Key": "s"},
    )
    assert unknown.status_code == 401
    assert await session.scalar(select(func.count()).select_from(ChainRun)) == 0
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


async def test_a_chains_plan_is_read_once_and_each_version_keeps_its_own(client, app, world, connection, session):
    statements: list[str] = []
    driver = (await connection.get_raw_connection()).driver_connection

    def logger(record: Any) -> None:
        if not record.query.startswith(("SAVEPOINT", "RELEASE")):  # the test's transaction around each statement
            statements.append(record.query)

    driver.add_query_logger(logger)
    try:
        first = await post(client, world, "v-1", {"contact": "jane", "variables": {"name": "x"}})
        second = await post(client, world, "v-2", {"contact": "jane", "variables": {"name": "x"}})
    finally:
        driver.remove_query_logger(logger)
    assert (first.status_code, second.status_code) == (202, 202)
    reads = [s for s in statements if "FROM chains" in s]
    assert len(reads) == 1, "the second run used the cached plan"
    assert len(statements) == 3, statements  # the plan, then one statement per run
    # a new version under the same key: its own id, its own plan; runs of the first version keep theirs
    changed = [{**STEPS[0], "key": "only", "content": {"sms": {"text": "Neu"}}}]
    created = await client.post(
        "/v1/chains", json={"key": "c", "purpose": "newsletter", "steps": changed}, headers=world["key"]
    )
    assert (created.status_code, created.json()["version"]) == (201, 2)
    newer = f"/v1/chains/{created.json()['id']}/runs"
    on_new = await post(client, world, "v-3", {"contact": "jane"}, path=newer)
    on_old = await post(client, world, "v-4", {"contact": "jane", "variables": {"name": "x"}})
    assert (on_new.status_code, on_old.status_code) == (202, 202), (on_new.text, on_old.text)
    _, new_steps = await rows_of(session, on_new.json()["run_id"])
    _, old_steps = await rows_of(session, on_old.json()["run_id"])
    assert [s.key for s in new_steps] == ["only"]
    assert [s.key for s in old_steps] == ["first", "second"]


async def test_a_chain_gone_since_its_plan_was_cached_starts_no_run(client, app, world, tenant, session):
    """A chain goes with its workspace, in any process: the run's statement fails on the chain's foreign key, the
    plan is dropped, and the route answers 404 (no run, no key)."""
    assert (await post(client, world, "g-1", {"contact": "jane", "variables": {"name": "x"}})).status_code == 202
    chain_id = uuid.UUID(world["chain_id"])
    assert app.state.chain_run_plans.get(tenant.id, chain_id) is not None
    await session.execute(text("DELETE FROM chains WHERE id = :id"), {"id": chain_id})  # its runs go with it
    await session.commit()
    gone = await post(client, world, "g-2", {"contact": "jane", "variables": {"name": "x"}})
    assert (gone.status_code, gone.json()["code"]) == (404, "chain_not_found")
    assert app.state.chain_run_plans.get(tenant.id, chain_id) is None
    assert await session.scalar(select(func.count()).select_from(ChainRun)) == 0
    assert await session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == "g-2")) is None


async def test_a_stateless_checkout_goes_back_without_the_reset_query_and_others_with_it(pg_server):
    """``driver(stateless=True)`` (the fast path's) spares the reset round trip; every other checkout is reset."""
    url = await pg_server.create_database("consent_stateless")
    database = Database.from_url(url, pool_size=1)
    try:
        await database.open_driver_pool(1)
        async with database.driver(stateless=True) as connection:
            await connection.execute("SET application_name = 'left_behind'")  # what a stateless caller must not do
        async with database.driver() as connection:  # the pool's one connection again
            assert await connection.fetchval("SHOW application_name") == "left_behind", "no reset query was sent"
            await connection.execute("SET application_name = 'reset_me'")
        async with database.driver() as connection:
            assert await connection.fetchval("SHOW application_name") == "", "reset as always"
            await connection.execute("BEGIN")
        async with database.driver(stateless=True) as connection:
            assert not connection.is_in_transaction(), "an open transaction is rolled back all the same"
    finally:
        await database.dispose()
        await pg_server.drop_database(url)


async def asgi_post(app, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, bytes]:
    """A POST straight through the app's ASGI interface, its body sent in ``chunks`` (one message each)."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "server": ("consent.example.com", 443),
        "client": ("203.0.113.7", 50000),
    }

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize(
    ("declared", "way"),
    [("exact", "fast"), ("short", "route"), ("none", "route")],
)
async def test_a_body_in_several_messages_is_read_whole_or_left_to_the_route(app, world, session, ways, declared, way):
    """The fast path reads a body of its ``Content-Length`` however it arrives; a body that does not match its
    length, or one without a length, goes to the route with every message the fast path had read."""
    body = b'{"contact": "jane", "variables": {"name": "Jane"}}'
    headers = {**world["key"], "Idempotency-Key": f"chunks-{declared}", "Content-Type": "application/json"}
    if declared == "exact":
        headers["Content-Length"] = str(len(body))
    elif declared == "short":
        headers["Content-Length"] = str(len(body) - 5)
    status, answer = await asgi_post(app, world["path"], headers, [body[:10], body[10:30], body[30:]])
    assert status == 202, answer  # the route, too, starts the run of the whole body it is replayed
    assert (ways.fast, ways.route) == ((1, 0) if way == "fast" else (0, 1))
    run, _ = await rows_of(session, msgspec.json.decode(answer)["run_id"])
    assert run.contact_id == world["jane"]


def test_the_fast_path_checks_the_scope_the_route_is_registered_with(routed_app):
    """Hostile review: the fast path reads its scope from the controller; a scope set on the route handler itself
    later must not leave the fast path checking another one."""
    from app.chains import fastpath  # noqa: PLC0415

    [handler] = [
        h
        for route in routed_app.routes
        if route.path_format == PATH_TEMPLATE
        for h in route.route_handlers
        if "POST" in h.http_methods
    ]
    assert handler.opt["scope"] == fastpath._SCOPE
