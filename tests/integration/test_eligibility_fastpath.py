"""The hot path of GET /v1/eligibility answers exactly what the route answers, and hands everything else over."""

from __future__ import annotations

import pytest

from app.eligibility import fastpath
from app.lib.auth import Scope


@pytest.fixture
async def reader(tenant):
    return await tenant.key(Scope.ELIGIBILITY_READ)


@pytest.fixture
def served(monkeypatch):
    """Counts the answers the hot path gave."""
    calls = []
    encoder = fastpath._encoder

    class Counting:
        def encode(self, value):
            calls.append(value)
            return encoder.encode(value)

    monkeypatch.setattr(fastpath, "_encoder", Counting())
    return calls


@pytest.fixture
async def people(client, admin, ledger):
    await client.put("/v1/workspace/settings", json={"send_windows": {}}, headers=admin)
    purpose = await ledger.purpose("newsletter")
    opted_in = await ledger.point("email", "in@example.com", external_id="in")
    await ledger.apply(opted_in, purpose.id, "signup", "confirm")
    pending = await ledger.point("email", "pending@example.com", external_id="pending")
    await ledger.apply(pending, purpose.id, "signup")
    sms = await ledger.point("sms", "+4915100000009", external_id="phone")
    await ledger.apply(sms, purpose.id, "signup", "start_word")
    await ledger.purpose("orders", kind="transactional")
    form = await ledger.point("email", "form@example.com", external_id="form", verified=None)  # as a form adds it
    await ledger.apply(form, purpose.id, "signup")
    return {"in": opted_in, "pending": pending, "phone": sms, "form": form}


def without_time(body):
    return {k: v for k, v in body.items() if k != "decided_at"}


@pytest.mark.parametrize(
    ("contact", "channel"), [("in", "email"), ("pending", "email"), ("phone", "sms"), ("in", "sms"), ("phone", "email")]
)
async def test_the_hot_path_answers_like_the_route(client, reader, people, served, contact, channel):
    query = {"contact": contact, "channel": channel, "purpose": "newsletter"}
    fast = await client.get("/v1/eligibility", params=query, headers=reader)
    assert len(served) == 1, "the plain case took the hot path"
    routed = await client.get("/v1/eligibility", params={**query, "via": "route"}, headers=reader)
    assert len(served) == 1, "an extra parameter goes to the route"
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert without_time(fast.json()) == without_time(routed.json())
    assert fast.json().keys() == routed.json().keys()


async def test_by_contact_id_too(client, reader, people, served):
    contact_id = str(people["in"].contact_id)
    fast = await client.get(
        "/v1/eligibility", params={"contact": contact_id, "channel": "email", "purpose": "newsletter"}, headers=reader
    )
    assert fast.json()["eligible"] is True
    assert len(served) == 1


@pytest.mark.parametrize(
    ("query", "headers", "status", "code"),
    [
        ({"contact": "ghost", "channel": "email", "purpose": "newsletter"}, "reader", 404, "contact_not_found"),
        ({"contact": "in", "channel": "email", "purpose": "nope"}, "reader", 404, "purpose_not_found"),
        ({"contact": "in", "channel": "fax", "purpose": "newsletter"}, "reader", 400, None),
        ({"contact": "in", "purpose": "newsletter"}, "reader", 400, "missing_parameter"),
        ({"contact": "in", "channel": "email", "purpose": "newsletter"}, None, 401, None),
        ({"contact": "in", "channel": "email", "purpose": "newsletter"}, "signup", 403, "insufficient_scope"),
    ],
)
async def test_everything_else_is_answered_by_the_route(
    client, tenant, reader, people, served, query, headers, status, code
):
    keys = {"reader": reader, "signup": await tenant.key(Scope.SIGNUP), None: {}}
    response = await client.get("/v1/eligibility", params=query, headers=keys[headers])
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if code:
        assert response.json()["code"] == code
    if code == "missing_parameter":
        assert response.json()["detail"] == "The required parameter 'channel' is missing."
    assert served == []


async def test_a_withdrawal_is_reflected_at_once_on_the_hot_path(client, reader, people, ledger, served):
    query = {"contact": "in", "channel": "email", "purpose": "newsletter"}
    assert (await client.get("/v1/eligibility", params=query, headers=reader)).json()["eligible"] is True
    await ledger.apply(people["in"], None, "unsubscribe")
    after = (await client.get("/v1/eligibility", params=query, headers=reader)).json()
    assert (after["eligible"], after["reason"]) == (False, "opted_out")
    assert len(served) == 2


@pytest.mark.parametrize(("contact", "purpose"), [("form", "orders"), ("form", "newsletter"), ("in", "orders")])
async def test_the_hot_path_answers_like_the_route_for_an_unverified_address(
    client, reader, people, served, contact, purpose
):
    """Finding 21 (issue 16): both paths refuse transactional messages to an address a form brought."""
    query = {"contact": contact, "channel": "email", "purpose": purpose}
    fast = await client.get("/v1/eligibility", params=query, headers=reader)
    routed = await client.get("/v1/eligibility", params={**query, "via": "route"}, headers=reader)
    assert len(served) == 1, "the plain case took the hot path, the other one the route"
    assert without_time(fast.json()) == without_time(routed.json())
    expected = {
        ("form", "orders"): (False, "unverified_address"),
        ("form", "newsletter"): (False, "pending_confirmation"),
        ("in", "orders"): (True, "transactional"),
    }[contact, purpose]
    assert (fast.json()["eligible"], fast.json()["reason"]) == expected
