"""A send window across midnight (22:00-06:00) through the API: set in the settings, applied by eligibility."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import app.eligibility.service as eligibility_service
from app.lib.auth import Scope

NIGHT = {"start": "22:00", "end": "06:00"}


@pytest.fixture
async def reader(tenant):
    return await tenant.key(Scope.ELIGIBILITY_READ)


async def ask_at(client, reader, monkeypatch, moment):
    monkeypatch.setattr(eligibility_service, "utcnow", lambda: moment)
    response = await client.get(
        "/v1/eligibility", params={"contact": "night-owl", "channel": "sms", "purpose": "newsletter"}, headers=reader
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["eligible"], answer["reason"], answer["next_window_opens_at"]


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # summer in Berlin: CEST, two hours ahead of UTC
        (datetime(2026, 6, 10, 21, 30, tzinfo=UTC), (True, "opted_in", None)),  # 23:30
        (datetime(2026, 6, 10, 22, 0, tzinfo=UTC), (True, "opted_in", None)),  # 00:00
        (datetime(2026, 6, 11, 3, 59, 59, tzinfo=UTC), (True, "opted_in", None)),  # 05:59:59
        (datetime(2026, 6, 11, 4, 0, tzinfo=UTC), (False, "outside_send_window", "2026-06-11T20:00:00Z")),  # 06:00
        (datetime(2026, 6, 10, 10, 0, tzinfo=UTC), (False, "outside_send_window", "2026-06-10T20:00:00Z")),  # noon
        (datetime(2026, 6, 10, 19, 59, 59, tzinfo=UTC), (False, "outside_send_window", "2026-06-10T20:00:00Z")),
        (datetime(2026, 6, 10, 20, 0, tzinfo=UTC), (True, "opted_in", None)),  # 22:00
        # winter in Berlin: CET, one hour ahead of UTC
        (datetime(2026, 1, 10, 22, 30, tzinfo=UTC), (True, "opted_in", None)),  # 23:30
        (datetime(2026, 1, 10, 12, 0, tzinfo=UTC), (False, "outside_send_window", "2026-01-10T21:00:00Z")),
        # the night Berlin's clocks go back (25 October 2026): 06:00 CET is 05:00 UTC, the window reopens 21:00 UTC
        (datetime(2026, 10, 25, 4, 59, tzinfo=UTC), (True, "opted_in", None)),
        (datetime(2026, 10, 25, 5, 0, tzinfo=UTC), (False, "outside_send_window", "2026-10-25T21:00:00Z")),
    ],
)
async def test_a_window_across_midnight_is_open_at_night_and_closed_by_day(
    client, admin, ledger, reader, monkeypatch, moment, expected
):
    settings = await client.put(
        "/v1/workspace/settings", json={"timezone": "Europe/Berlin", "send_windows": {"sms": NIGHT}}, headers=admin
    )
    assert settings.status_code == 200, settings.text
    assert settings.json()["send_windows"] == {"sms": NIGHT}
    purpose = await ledger.purpose("newsletter")
    point = await ledger.point("sms", "+4915123456789", external_id="night-owl")
    await ledger.apply(point, purpose.id, "signup", "start_word")
    assert await ask_at(client, reader, monkeypatch, moment) == expected


async def test_a_window_whose_end_equals_its_start_is_refused_and_changes_nothing(client, admin):
    before = (await client.get("/v1/workspace/settings", headers=admin)).json()
    response = await client.put(
        "/v1/workspace/settings", json={"send_windows": {"sms": {"start": "08:00", "end": "08:00"}}}, headers=admin
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_send_window"
    assert "send_windows.sms" in problem["detail"]
    assert "leave the channel out" in problem["detail"]
    assert (await client.get("/v1/workspace/settings", headers=admin)).json() == before
