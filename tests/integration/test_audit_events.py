"""``GET /v1/audit/events``: the ledger streamed in chain order, verifiable by whoever holds the stream."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json

import pytest

from app.ledger.audit import EVENT_COLUMNS
from app.lib.auth import Scope


@pytest.fixture
async def history(ledger, client, admin):
    """Two people's consent histories; the second person is erased afterwards (evidence gone, digest kept)."""
    newsletter = await ledger.purpose("newsletter")
    jane = await ledger.point("email", "jane@example.com", external_id="jane")
    await ledger.apply(jane, newsletter.id, "signup", "confirm")
    max_ = await ledger.point("sms", "+4915112345678", external_id="max")
    await ledger.apply(max_, newsletter.id, "start_word", evidence={"message_sid": "SM1", "body": "START"})
    erased = await client.delete("/v1/contacts/max", params={"request_ref": "DSR-1"}, headers=admin)
    assert erased.status_code == 200, erased.text
    return {"newsletter": newsletter}


async def stream(client, headers, accept="application/x-ndjson", **params):
    response = await client.get("/v1/audit/events", params=params, headers={**headers, "Accept": accept})
    assert response.status_code == 200, response.text
    return response


def recomputed(event, workspace_id):
    """The hash as an auditor would compute it from the stream alone: no code of ours, only the documented recipe."""
    covered = {name: event[name] for name in EVENT_COLUMNS if name not in {"purpose", "evidence", "prev_hash", "hash"}}
    payload = {"v": 1, "workspace_id": str(workspace_id), **covered}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(bytes.fromhex(event["prev_hash"]) + canonical).hexdigest()


async def test_the_stream_holds_the_whole_chain_and_verifies_on_its_own(client, tenant, history):
    response = await stream(client, await tenant.key(Scope.AUDIT_READ))
    assert response.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in response.text.splitlines()]

    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert [e["trigger"] for e in events] == ["signup", "confirm", "start_word", "erasure"]
    assert list(events[0]) == list(EVENT_COLUMNS)
    assert events[0]["prev_hash"] == "00" * 32
    for previous, event in itertools.pairwise(events):
        assert event["prev_hash"] == previous["hash"]
    for event in events:
        assert recomputed(event, tenant.id) == event["hash"], event["seq"]
    assert events[0]["evidence"] == {"ip": "198.51.100.4"}
    assert events[0]["purpose"] == "newsletter"
    assert events[2]["evidence"] is None, "the erased person's message text is gone; the chain still holds"
    assert events[3]["evidence"] == {"request_ref": "DSR-1"}


async def test_csv_and_a_time_range(client, admin, history):
    everything = [json.loads(line) for line in (await stream(client, admin)).text.splitlines()]
    response = await stream(client, admin, accept="text/csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == list(EVENT_COLUMNS)
    assert [int(r[1]) for r in rows[1:]] == [1, 2, 3, 4]
    assert json.loads(rows[1][EVENT_COLUMNS.index("evidence")]) == {"ip": "198.51.100.4"}

    second, third = everything[1]["recorded_at"], everything[2]["recorded_at"]
    window = await stream(client, admin, since=second, until=third)
    assert [json.loads(line)["seq"] for line in window.text.splitlines()] == [2], "since inclusive, until exclusive"
    later = await stream(client, admin, since=third)
    assert [json.loads(line)["seq"] for line in later.text.splitlines()] == [3, 4]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"since": "2026-11-01T00:00:00"}, 422, "timezone_required"),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, 422, "invalid_range"),
        ({"since": "yesterday"}, 400, "invalid_parameter"),
    ],
)
async def test_a_bad_range_is_refused_clearly(client, admin, params, status, code):
    response = await client.get("/v1/audit/events", params=params, headers=admin)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


async def test_the_stream_needs_the_audit_scope_and_shows_only_its_workspace(client, tenant, other_tenant, history):
    refused = await client.get("/v1/audit/events", headers=await tenant.key(Scope.ELIGIBILITY_READ))
    assert refused.status_code == 403
    theirs = await stream(client, await other_tenant.key(Scope.AUDIT_READ))
    assert theirs.text == ""
