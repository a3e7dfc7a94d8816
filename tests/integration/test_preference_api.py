"""The preference centre as JSON (issue 17 item 6): ``/p/{token}/preferences``, its CORS and its refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.preferences.models import PreferenceLink
from app.preferences.service import FROM_A_MAIL
from tests.integration.test_preference_centre import (
    BASE,
    eligibility,
    event_count,
    jane,  # noqa: F401  # the fixture
    last_event,
    link_of,
)

SHOP = "https://shop.example"
JSON = {"Content-Type": "application/json"}


async def set_origins(client, admin, origins):
    current = (await client.get("/v1/workspace/settings", headers=admin)).json()
    current["preference_origins"] = origins
    return await client.put("/v1/workspace/settings", json=current, headers=admin)


@pytest.fixture
async def api(client, tenant, jane):  # noqa: F811
    return (await link_of(client, tenant, jane["contact_id"])) + "/preferences"


async def test_the_view_shows_every_address_masked_with_its_states(client, jane, api, session):  # noqa: F811
    before = await event_count(session)
    answer = await client.get(api)
    assert answer.status_code == 200, answer.text
    assert await event_count(session) == before, "a read changes nothing"
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in answer.headers
    assert "jane@example.com" not in answer.text
    assert "Hauptstraße" not in answer.text
    assert "Berlin" not in answer.text
    view = answer.json()
    assert view["language"] == "de"
    assert view["print_objected"] is False
    assert view["all_paused_until"] is None
    assert view["pause_weeks"] == [1, 4, 12]
    assert "changed" not in view or view["changed"] is None
    by_channel = {a["channel"]: a for a in view["addresses"]}
    assert set(by_channel) == {"email", "sms", "print"}
    email = by_channel["email"]
    assert email["masked"] == "j***@example.com"
    assert email["point_id"] == str(jane["email"].id)
    assert {p["key"]: p["state"] for p in email["purposes"]} == {"newsletter": "receiving", "offers": "receiving"}
    assert {p["key"]: p["state"] for p in by_channel["sms"]["purposes"]} == {
        "newsletter": "receiving",
        "offers": "not_receiving",
    }
    assert by_channel["print"]["print_state"] == "postal_allowed"
    assert by_channel["print"]["purposes"] == []


async def test_withdrawing_records_the_person_as_actor_via_the_json_api(client, tenant, jane, api, session):  # noqa: F811
    change = {"action": "withdraw", "point": str(jane["email"].id), "purpose": str(jane["newsletter"].id)}
    answer = await client.post(api, json=change, headers={"User-Agent": "Shop app", "Origin": BASE})
    assert answer.status_code == 200, answer.text
    view = answer.json()
    assert view["changed"] is True
    [email] = [a for a in view["addresses"] if a["channel"] == "email"]
    assert {p["key"]: p["state"] for p in email["purposes"]} == {"newsletter": "withdrawn", "offers": "receiving"}
    link = await session.scalar(select(PreferenceLink))
    event = await last_event(session, tenant.id)
    assert (event.trigger, event.to_state, event.actor_type) == ("unsubscribe", "opted_out", "subject")
    assert (event.contact_point_id, event.purpose_id) == (jane["email"].id, jane["newsletter"].id)
    evidence = event.personal["evidence"]
    assert evidence["via"] == "json_api"
    assert evidence["source"] == "preference_centre"
    assert evidence["preference_link_id"] == str(link.id)
    assert (evidence["ip"], evidence["user_agent"]) == ("203.0.113.7", "Shop app")
    decision = await eligibility(client, tenant, jane["contact_id"], "email", "newsletter")
    assert (decision["eligible"], decision["reason"]) == (False, "opted_out")
    count = await event_count(session)
    again = await client.post(api, json=change)
    assert again.status_code == 200
    assert again.json()["changed"] is False
    assert await event_count(session) == count, "a repeated request records nothing new"


async def test_another_contacts_address_is_refused_and_changes_nothing(client, tenant, ledger, jane, api, session):  # noqa: F811
    john = await ledger.point("email", "john@example.com")
    await ledger.apply(john, jane["newsletter"].id, "signup", "confirm")
    before = await event_count(session)
    for change in (
        {"action": "withdraw", "point": str(john.id), "purpose": str(jane["newsletter"].id)},
        {"action": "pause", "point": str(john.id), "weeks": 4},
    ):
        answer = await client.post(api, json=change)
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "not_this_contact"
    assert await event_count(session) == before
    assert (await eligibility(client, tenant, john.contact_id, "email", "newsletter"))["eligible"] is True


async def test_a_purpose_of_another_workspace_is_refused(client, other_tenant, database, jane, api, session):  # noqa: F811
    from tests.conftest import Ledger  # noqa: PLC0415

    foreign = await Ledger(database, other_tenant.id).purpose("newsletter")
    before = await event_count(session)
    answer = await client.post(
        api, json={"action": "withdraw", "point": str(jane["email"].id), "purpose": str(foreign.id)}
    )
    assert answer.status_code == 422
    assert answer.json()["code"] == "purpose_not_found"
    assert await event_count(session) == before


async def test_cors_answers_only_a_configured_origin(client, admin, api):
    assert (await set_origins(client, admin, [SHOP])).status_code == 200
    preflight = await client.options(
        api,
        headers={
            "Origin": SHOP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204, preflight.text
    assert preflight.headers["access-control-allow-origin"] == SHOP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    assert "Origin" in preflight.headers["vary"]
    assert "access-control-allow-credentials" not in preflight.headers
    read = await client.get(api, headers={"Origin": SHOP})
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == SHOP
    assert "Origin" in read.headers["vary"]
    assert "access-control-allow-credentials" not in read.headers
    refused = await client.post(api, json={"action": "nonsense"}, headers={"Origin": SHOP})
    assert refused.status_code in (400, 422)
    assert refused.headers["access-control-allow-origin"] == SHOP, "the brand's page can read the problem"

    other = "https://evil.example"
    denied = await client.options(api, headers={"Origin": other, "Access-Control-Request-Method": "POST"})
    assert denied.status_code == 403
    assert "access-control-allow-origin" not in denied.headers
    foreign_read = await client.get(api, headers={"Origin": other})
    assert "access-control-allow-origin" not in foreign_read.headers, "the browser lets evil.example read nothing"


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://shop.example", "https://shop.example.evil"])
async def test_a_post_from_an_unconfigured_origin_is_refused(client, admin, tenant, jane, api, session, origin):  # noqa: F811
    assert (await set_origins(client, admin, [SHOP])).status_code == 200
    before = await event_count(session)
    answer = await client.post(api, json={"action": "withdraw_all"}, headers={"Origin": origin})
    assert answer.status_code == 403
    assert answer.json()["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in answer.headers
    assert await event_count(session) == before
    assert (await eligibility(client, tenant, jane["contact_id"], "email", "newsletter"))["eligible"] is True


async def test_a_configured_origin_may_change(client, admin, tenant, jane, api):  # noqa: F811
    assert (await set_origins(client, admin, ["https://Shop.Example:443"])).status_code == 200
    answer = await client.post(api, json={"action": "object_print"}, headers={"Origin": SHOP})
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == SHOP
    assert answer.json()["print_objected"] is True
    decision = await eligibility(client, tenant, jane["contact_id"], "print", "newsletter")
    assert (decision["eligible"], decision["reason"]) == (False, "objected")


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("action=withdraw_all", {"Content-Type": "application/x-www-form-urlencoded"}),
        ('{"action": "withdraw_all"}', {"Content-Type": "text/plain"}),
        ('{"action": "withdraw_all"}', {}),
    ],
    ids=["form", "text-plain", "none"],
)
async def test_a_body_that_is_not_json_is_refused(client, tenant, jane, api, session, body, headers):  # noqa: F811
    before = await event_count(session)
    answer = await client.post(api, content=body.encode(), headers=headers)
    assert answer.status_code == 415
    assert answer.json()["code"] == "unsupported_media_type"
    assert await event_count(session) == before


@pytest.mark.parametrize(
    "change",
    [
        {"action": "withdraw_all", "extra": 1},
        {"action": "delete_me"},
        {"action": "withdraw", "point": "all", "purpose": "00000000-0000-0000-0000-000000000000"},
        {"action": "pause", "point": "all", "weeks": 2},
        {"action": "pause", "point": "all"},
        {"action": "withdraw_all", "weeks": 4},
        {"action": "withdraw", "point": "x' OR 1=1", "purpose": "00000000-0000-0000-0000-000000000000"},
    ],
)
async def test_a_change_is_validated_strictly(client, api, session, change):
    before = await event_count(session)
    answer = await client.post(api, json=change)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert await event_count(session) == before


async def test_a_big_body_is_refused(client, api, session):
    before = await event_count(session)
    answer = await client.post(
        api, content=b'{"action": "withdraw_all", "point": "' + b"a" * 5000 + b'"}', headers=JSON
    )
    assert answer.status_code == 413
    assert await event_count(session) == before


async def test_unknown_and_expired_links_answer_problems(client, api, session):
    for path in ("/p/" + "x" * 43 + "/preferences", "/p/" + "x" * 500 + "/preferences"):
        unknown = await client.get(path)
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "link_not_found"
    await session.execute(update(PreferenceLink).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    expired = await client.get(api)
    assert expired.status_code == 410
    assert expired.headers["content-type"].startswith("application/problem+json")
    assert expired.json()["code"] == "link_expired"
    assert (await client.post(api, json={"action": "withdraw_all"})).status_code == 410


async def test_a_pause_makes_eligibility_say_paused_and_can_be_ended(client, tenant, jane, api):  # noqa: F811
    answer = await client.post(api, json={"action": "pause", "point": str(jane["sms"].id), "weeks": 4})
    assert answer.status_code == 200, answer.text
    [sms] = [a for a in answer.json()["addresses"] if a["channel"] == "sms"]
    until = datetime.fromisoformat(sms["paused_until"])
    assert timedelta(weeks=4) - timedelta(minutes=1) < until - datetime.now(UTC) <= timedelta(weeks=4)
    decision = await eligibility(client, tenant, jane["contact_id"], "sms", "newsletter")
    assert (decision["eligible"], decision["reason"]) == (False, "paused")
    assert (await eligibility(client, tenant, jane["contact_id"], "email", "newsletter"))["eligible"] is True
    ended = await client.post(api, json={"action": "end_pause", "point": "all"})
    assert ended.status_code == 200
    assert ended.json()["changed"] is True
    assert all(a["paused_until"] is None for a in ended.json()["addresses"])
    assert (await eligibility(client, tenant, jane["contact_id"], "sms", "newsletter"))["reason"] != "paused"


async def test_a_link_from_a_mail_footer_may_read_and_change(client, tenant, jane, api, session):  # noqa: F811
    await session.execute(update(PreferenceLink).values(issued_by=FROM_A_MAIL))
    assert (await client.get(api)).status_code == 200
    answer = await client.post(api, json={"action": "withdraw_all"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["anything_to_withdraw"] is False
    assert (await eligibility(client, tenant, jane["contact_id"], "email", "offers"))["eligible"] is False


@pytest.mark.parametrize(
    "origins",
    [
        ["http://shop.example"],
        ["https://shop.example/"],
        ["https://shop.example/preferences"],
        ["https://user@shop.example"],
        ["https://shop.example?x=1"],
        ["https://shop.example:99999"],
        ["*"],
        [f"https://shop{i}.example" for i in range(21)],
    ],
    ids=["http", "slash", "path", "userinfo", "query", "port", "wildcard", "too-many"],
)
async def test_preference_origins_are_validated(client, admin, origins):
    answer = await set_origins(client, admin, origins)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "preference_origins" in detail
    if len(origins) == 1:
        assert "is not an https origin" in detail, "in words, not a regular expression"
        assert "(?:" not in detail


async def test_preference_origins_are_stored_and_shown(client, admin):
    origins = ["https://shop.example", "https://app.shop.example:8443"] + [f"https://s{i}.example" for i in range(18)]
    answer = await set_origins(client, admin, origins)
    assert answer.status_code == 200, answer.text
    assert answer.json()["preference_origins"] == origins
    assert (await client.get("/v1/workspace/settings", headers=admin)).json()["preference_origins"] == origins


async def test_a_purpose_may_be_named_by_its_key_and_print_is_objected_not_withdrawn(client, tenant, jane, api):  # noqa: F811
    """Newcomer review: a brand's page names purposes by key, as every /v1 call does; a withdrawal of a postal
    address is told to object instead (422), not refused as someone else's."""
    by_key = {"action": "withdraw", "point": str(jane["email"].id), "purpose": "offers"}
    answer = await client.post(api, json=by_key, headers={"Origin": BASE})
    assert answer.status_code == 200, answer.text
    decision = await eligibility(client, tenant, jane["contact_id"], "email", "offers")
    assert (decision["eligible"], decision["reason"]) == (False, "opted_out")
    unknown = await client.post(api, json={**by_key, "purpose": "no-such-purpose"}, headers={"Origin": BASE})
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "purpose_not_found"
    [postal] = [a for a in (await client.get(api)).json()["addresses"] if a["channel"] == "print"]
    on_post = {"action": "withdraw", "point": postal["point_id"], "purpose": "newsletter"}
    refused = await client.post(api, json=on_post, headers={"Origin": BASE})
    assert refused.status_code == 422
    assert refused.json()["code"] == "use_object_print"


async def test_pausing_every_address_pauses_post_too_and_says_until_when(client, tenant, jane, api):  # noqa: F811
    answer = await client.post(api, json={"action": "pause", "point": "all", "weeks": 4})
    assert answer.status_code == 200, answer.text
    view = answer.json()
    assert {a["channel"] for a in view["addresses"]} == {"email", "sms", "print"}
    assert all(a["paused_until"] is not None for a in view["addresses"]), view["addresses"]
    assert view["all_paused_until"] is not None
    for channel in ("email", "sms", "print"):
        decision = await eligibility(client, tenant, jane["contact_id"], channel, "newsletter")
        assert (channel, decision["eligible"], decision["reason"]) == (channel, False, "paused")


async def test_after_an_objection_to_post_a_pause_of_everything_is_all_paused(client, api):
    objected = await client.post(api, json={"action": "object_print"})
    assert objected.status_code == 200, objected.text
    assert objected.json()["all_paused_until"] is None
    answer = await client.post(api, json={"action": "pause", "point": "all", "weeks": 1})
    assert answer.status_code == 200, answer.text
    view = answer.json()
    [post] = [a for a in view["addresses"] if a["channel"] == "print"]
    assert post["paused_until"] is None  # its objection stops it for good: the pause wrote nothing under its keys
    others = [datetime.fromisoformat(a["paused_until"]) for a in view["addresses"] if a["channel"] != "print"]
    assert datetime.fromisoformat(view["all_paused_until"]) == min(others)
