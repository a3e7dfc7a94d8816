"""Bad input (issue 16, findings 12-14 and 22) is a 4xx problem, never a 500 or a half-written change."""

from __future__ import annotations

import pytest

from app.lib.auth import Scope


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "-1"},
        {"limit": "0"},
        {"limit": "1001"},
        {"after_seq": "-1"},
        {"after_seq": "99999999999999999999"},
        {"limit": "99999999999999999999"},
    ],
)
async def test_out_of_range_integers_on_the_events_list_are_a_400(client, tenant, ledger, params):
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com", external_id="crm-1")
    await ledger.apply(point, purpose.id, "signup")
    response = await client.get("/v1/contacts/crm-1/events", params=params, headers=await tenant.key(Scope.AUDIT_READ))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    "params",
    [
        {"contact": "x" * 201, "channel": "email", "purpose": "newsletter"},
        {"contact": "crm-1", "channel": "email", "purpose": "n" * 64},
    ],
)
async def test_overlong_query_strings_on_eligibility_are_a_400(client, tenant, ledger, params):
    await ledger.purpose("newsletter")
    response = await client.get("/v1/eligibility", params=params, headers=await tenant.key(Scope.ELIGIBILITY_READ))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_parameter"


@pytest.mark.parametrize("header", ["t=\u00b2,v1=00", "t=1,v1=\u00e9", "t=" + "1" * 5000 + ",v1=00"])
async def test_a_malformed_email_webhook_signature_is_a_403(client, admin, tenant, header):
    settings = (await client.get("/v1/workspace/settings", headers=admin)).json()
    settings["email"]["webhook_secret"] = "w" * 32
    assert (await client.put("/v1/workspace/settings", json=settings, headers=admin)).status_code == 200
    response = await client.post(
        f"/webhooks/email/{tenant.id}/events",
        content=b'{"events": []}',
        headers={"Content-Type": "application/json", "X-Consent-Signature": header.encode("latin-1", "replace")},
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "invalid_signature"
