"""A consent import whose batch a race with another writer refuses: taken again, and if it still fails, answered
with what was committed before (docs/security.md, "Races with a merge").

A batch's transaction aborted by PostgreSQL for a concurrent writer (a deadlock it broke, 40P01; a serialization
failure, 40001; a lock wait that ran out, 55P03) or failing on a row a transaction committed meanwhile deleted (23503,
an erasure) wrote nothing, and a batch is idempotent: it is taken again, up to twice more. One still refused answers
the race's status (503 ``database_busy`` or 409 ``deleted_meanwhile``) with ``lines_taken_through`` and ``recorded``
of the batches committed before it, so the client imports the rest again. Every error is PostgreSQL's own, raised on
the batch's session after it wrote.
"""

from __future__ import annotations

import json

import pytest
import structlog
from sqlalchemy import text

from app.imports import consents as consent_import
from tests.integration.test_consent_validity import make_purpose

NDJSON = {"Content-Type": "application/x-ndjson"}


def body(first: int, last: int) -> bytes:
    return "\n".join(
        json.dumps(
            {
                "contact": f"crm-{n}",
                "channel": "email",
                "address": f"p{n}@example.com",
                "purpose": "newsletter",
                "state": "opted_in",
                "captured_at": "2024-03-01T10:00:00Z",
                "source": "mailchimp",
                "notice_text": "Ja, ich möchte den Newsletter erhalten.",
            }
        )
        for n in range(first, last + 1)
    ).encode()


def refusing(monkeypatch, sqlstate: str, *, batches: set[int], times: int) -> list[int]:
    """The import's batches numbered in ``batches`` (1, 2, …) write their events, then their transaction fails
    with ``sqlstate`` (PostgreSQL's own error), ``times`` times each; answers the batches tried, in order."""
    real = consent_import.record_batch
    tried: list[int] = []
    failed: dict[int, int] = {}
    refused_last = [False]

    async def record_then_fail(session, workspace_id, changes, actor):
        applied = await real(session, workspace_id, changes, actor)
        batch = (tried[-1] if refused_last[0] else (tried[-1] + 1 if tried else 1)) if tried else 1
        tried.append(batch)
        refused_last[0] = batch in batches and failed.get(batch, 0) < times
        if refused_last[0]:
            failed[batch] = failed.get(batch, 0) + 1
            await session.execute(text(f"DO $$ BEGIN RAISE EXCEPTION 'raced' USING ERRCODE = '{sqlstate}'; END $$"))
        return applied

    monkeypatch.setattr(consent_import, "record_batch", record_then_fail)
    monkeypatch.setattr(consent_import, "BATCH", 2)
    return tried


async def events(database, workspace_id) -> int:
    async with database.sessionmaker() as session:
        return int(
            await session.scalar(
                text("SELECT count(*) FROM consent_events WHERE workspace_id = :ws AND trigger = 'import'"),
                {"ws": workspace_id},
            )
        )


@pytest.fixture
async def newsletter(ledger):
    await ledger.purpose("newsletter")


@pytest.mark.parametrize("sqlstate", ["40P01", "40001", "55P03", "23503"])
async def test_a_batch_refused_by_a_race_is_taken_again_and_the_import_answers_as_if_nothing_happened(
    client, admin, tenant, database, newsletter, monkeypatch, sqlstate
):
    tried = refusing(monkeypatch, sqlstate, batches={2}, times=2)
    with structlog.testing.capture_logs() as logs:
        response = await client.post("/v1/imports/consents", content=body(1, 5), headers={**admin, **NDJSON})
    assert response.status_code == 200, response.text
    assert (response.json()["lines"], response.json()["recorded"]) == (5, 5)
    assert tried == [1, 2, 2, 2, 3], "the second batch taken twice more"
    assert await events(database, tenant.id) == 5, "each line recorded once"
    assert [e["attempt"] for e in logs if e["event"] == "import_batch_taken_again_after_a_race"] == [1, 2]


@pytest.mark.parametrize(
    ("sqlstate", "status", "code"),
    [("40P01", 503, "database_busy"), ("55P03", 503, "database_busy"), ("23503", 409, "deleted_meanwhile")],
)
async def test_a_batch_a_race_still_refuses_answers_which_lines_were_taken_and_the_rest_imports_again(
    client, admin, tenant, database, newsletter, monkeypatch, sqlstate, status, code
):
    real = consent_import.record_batch
    tried = refusing(monkeypatch, sqlstate, batches={2}, times=3)
    response = await client.post("/v1/imports/consents", content=body(1, 5), headers={**admin, **NDJSON})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert (problem["lines_taken_through"], problem["recorded"]) == (2, 2)
    assert "Lines 1 to 2 were taken (2 recorded), nothing after them" in problem["detail"]
    if status == 503:
        assert response.headers["retry-after"] == "1"
    assert tried == [1, 2, 2, 2], "no batch after the refused one"
    assert await events(database, tenant.id) == 2, "the first batch stays, the refused one left nothing"

    monkeypatch.setattr(consent_import, "record_batch", real)
    again = await client.post("/v1/imports/consents", content=body(1, 5), headers={**admin, **NDJSON})
    assert again.status_code == 200, again.text
    assert (again.json()["recorded"], again.json()["skipped"]) == (3, 2), "the rest recorded, the first two not again"
    assert await events(database, tenant.id) == 5


async def test_a_race_refusing_the_first_batch_says_nothing_was_recorded(
    client, admin, tenant, database, newsletter, monkeypatch
):
    refusing(monkeypatch, "40P01", batches={1}, times=3)
    response = await client.post("/v1/imports/consents", content=body(1, 3), headers={**admin, **NDJSON})
    assert response.status_code == 503, response.text
    problem = response.json()
    assert (problem["lines_taken_through"], problem["recorded"]) == (0, 0)
    assert "No line was recorded: import the file again." in problem["detail"]
    assert await events(database, tenant.id) == 0


async def test_a_race_after_a_batch_counted_its_lines_leaves_the_report_counting_each_once(
    client, admin, tenant, database, monkeypatch
):
    """The race comes after the batch counted its events, contacts and lapsed opt-ins (in ``_end_lapsed``): the
    retry counts them again from what it had before (hostile review: with the reset left out, the other tests here
    still passed)."""
    await make_purpose(database, tenant, validity="P24M")  # opt-ins from 2019 end on arrival: `expired` counts
    monkeypatch.setattr(consent_import, "BATCH", 2)
    real = consent_import._end_lapsed
    calls = [0]

    async def end_then_fail(session, context, changes, applied):
        ended = await real(session, context, changes, applied)
        calls[0] += 1
        if calls[0] == 2:  # the second batch, its first try
            await session.execute(text("DO $$ BEGIN RAISE EXCEPTION 'raced' USING ERRCODE = '40P01'; END $$"))
        return ended

    monkeypatch.setattr(consent_import, "_end_lapsed", end_then_fail)
    lines = [
        json.loads(body(n, n)) | {"captured_at": "2019-03-01T10:00:00Z", "purpose": "newsletter" if n != 3 else "nope"}
        for n in range(1, 6)
    ]
    response = await client.post(
        "/v1/imports/consents", content="\n".join(map(json.dumps, lines)).encode(), headers={**admin, **NDJSON}
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["recorded"], report["expired"], report["contacts_created"], report["rejected"]) == (4, 4, 4, 1)
    assert calls[0] == 4, "the second batch ran twice"
    assert await events(database, tenant.id) == 4


@pytest.mark.parametrize(
    ("sqlstate", "status", "code", "why"),
    [
        ("57P01", 503, "database_unavailable", "the database could not be reached."),
        ("57014", 500, "internal_error", "the database failed on it (logged, with the request id for a request)."),
    ],
)
async def test_any_other_failure_of_a_batch_says_which_lines_were_taken_and_is_not_taken_again(
    client, admin, tenant, database, newsletter, monkeypatch, sqlstate, status, code, why
):
    """A database out of reach (57P01) or a fault (here a statement timeout, 57014) after a committed batch said
    "nothing was recorded" (or nothing at all) though the first batch was (hostile review)."""
    tried = refusing(monkeypatch, sqlstate, batches={2}, times=1)
    response = await client.post("/v1/imports/consents", content=body(1, 5), headers={**admin, **NDJSON})
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["code"] == code
    assert (problem["lines_taken_through"], problem["recorded"]) == (2, 2)
    assert problem["detail"].startswith(f"The import stopped at the batch from line 3: {why} Lines 1 to 2 were taken")
    assert "nothing was recorded" not in problem["detail"].lower()
    assert tried == [1, 2], "not a race: not taken again"
    assert await events(database, tenant.id) == 2


async def test_a_refused_batch_says_its_number_reassignments_may_have_been_applied(
    client, admin, tenant, database, newsletter, monkeypatch
):
    """``reassigned_at`` lines end the number's former owner's consents before their batch, each committed on its
    own: a batch refused after that did not record its lines, but the reassignment stands (hostile review)."""
    line = {
        "contact": "crm-1", "channel": "sms", "address": "+4915123456789", "purpose": "newsletter",
        "state": "opted_in", "captured_at": "2024-01-01T00:00:00Z", "source": "crm", "notice_text": "Ja.",
    }  # fmt: skip
    first = await client.post("/v1/imports/consents", content=json.dumps(line).encode(), headers={**admin, **NDJSON})
    assert first.json()["recorded"] == 1, first.text
    refusing(monkeypatch, "40P01", batches={1}, times=3)
    later = line | {"captured_at": "2025-06-01T00:00:00Z", "reassigned_at": "2025-01-01T00:00:00Z"}
    response = await client.post(
        "/v1/imports/consents", content=json.dumps(later).encode(), headers={**admin, **NDJSON}
    )
    assert response.status_code == 503, response.text
    assert response.json()["detail"].endswith(
        "No line was recorded (number reassignments on line 1 and later may have been applied; importing them again "
        "changes nothing): import the file again."
    )
    async with database.sessionmaker() as session:
        reassigned = await session.scalar(
            text("SELECT count(*) FROM consent_events WHERE workspace_id = :ws AND trigger = 'reassigned'"),
            {"ws": tenant.id},
        )
    assert reassigned == 1


async def test_an_unreadable_csv_line_says_which_lines_were_taken_not_all_before_it(
    client, admin, tenant, database, newsletter, monkeypatch
):
    """A line that is no UTF-8 ends a CSV import: the batch being read is dropped, so "the lines before it were
    imported" was not true (hostile review); the answer names the lines the committed batches took."""
    monkeypatch.setattr(consent_import, "BATCH", 2)
    head = b"contact,channel,address,purpose,state,captured_at,source,notice_text\n"
    rows = b"".join(
        f"crm-{n},email,p{n}@example.com,newsletter,opted_in,2024-03-01T10:00:00Z,crm,Ja\n".encode() for n in (1, 2, 3)
    )

    async def chunks():
        yield head + rows
        yield b"crm-9,email,\xff@example.com,newsletter,opted_in,2024-03-01T10:00:00Z,crm,Ja\n"

    response = await client.post(
        "/v1/imports/consents", content=chunks(), headers={**admin, "Content-Type": "text/csv"}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_csv"
    assert (problem["lines_taken_through"], problem["recorded"]) == (3, 2), "the header is line 1"
    assert (
        "Lines 1 to 3 were taken (2 recorded), nothing after them: fix that line and import the rest"
        in (problem["detail"])
    )
    assert await events(database, tenant.id) == 2
