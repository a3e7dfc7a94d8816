"""A hosted page meeting an error no handler took answers a page in the person's language, not the API's JSON.

The status and ``Retry-After`` are the API's (503 for a database race or outage, 409 for a row deleted meanwhile,
500 for a fault); the words say what happened and what to do. The RFC 8058 one-click target, which a mail client
calls, keeps the API's problem+json. Errors are PostgreSQL's own, raised on the request's real session.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.emails import service as emails
from app.preferences import service as preferences
from tests.integration.test_database_races import raising
from tests.integration.test_email_unsubscribe import local, states, urls


@pytest.fixture
async def subscribed(ledger):
    """Jane, opted in to the newsletter by email."""
    newsletter = await ledger.purpose("newsletter")
    point = await ledger.point("email", "jane@example.com")
    await ledger.apply(point, newsletter.id, "signup", "confirm")
    return {"point": point, "newsletter": newsletter}


def unsubscribe_failing(monkeypatch, sqlstate: str | None) -> list[int]:
    """The unsubscribe writes its change, then its transaction fails (``sqlstate``; None: a plain fault), always."""
    real = emails.unsubscribe
    tries: list[int] = []

    async def write_then_fail(session, *args, **kwargs):
        tries.append(1)
        await real(session, *args, **kwargs)
        if sqlstate is None:
            raise RuntimeError("a fault of ours")
        await session.execute(text(raising(sqlstate)))

    monkeypatch.setattr(emails, "unsubscribe", write_then_fail)
    return tries


def assert_a_page(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "base-uri 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"
    body = response.text
    assert body.startswith("<!doctype html>")
    for api_word in ('"code"', "internal_error", "Traceback"):
        assert api_word not in body
    return body


async def test_the_unsubscribe_page_answers_a_database_race_with_a_page_saying_try_again(
    client, admin, settings, subscribed, monkeypatch
):
    tries = unsubscribe_failing(monkeypatch, "40P01")
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    response = await client.post(local(target.page_url), data={"scope": "purpose"}, headers={"Accept-Language": "de"})

    body = assert_a_page(response, 503)
    assert response.headers["retry-after"] == "1"
    assert '<html lang="de">' in body
    assert "Bitte versuchen Sie es gleich noch einmal" in body
    assert "nicht abgeschlossen" in body
    assert "nichts geändert" not in body, "a page of several transactions cannot promise that (hostile review)"
    assert len(tries) == 3, "taken again twice first (again_if_raced), then answered"
    current, _ = await states(client, admin, subscribed["point"])
    assert current["newsletter"] == "opted_in", "nothing was recorded"


async def test_a_fault_on_the_unsubscribe_page_is_a_500_page_in_english(client, settings, subscribed, monkeypatch):
    unsubscribe_failing(monkeypatch, None)
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    response = await client.post(local(target.page_url), data={"scope": "purpose"}, headers={"Accept-Language": "en"})

    body = assert_a_page(response, 500)
    assert "Something went wrong" in body
    assert "a fault of ours" not in body


async def test_a_row_deleted_meanwhile_is_a_409_page(client, settings, subscribed, monkeypatch):
    unsubscribe_failing(monkeypatch, "23503")
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    response = await client.post(local(target.page_url), data={"scope": "all"}, headers={"Accept-Language": "en"})

    body = assert_a_page(response, 409)
    assert "Something changed meanwhile" in body


async def test_the_one_click_target_keeps_the_apis_answer(client, settings, subscribed, monkeypatch):
    unsubscribe_failing(monkeypatch, "40P01")
    target = urls(settings, subscribed["point"], subscribed["newsletter"])
    response = await client.post(local(target.url), data={"List-Unsubscribe": "One-Click"})

    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_busy"


async def test_the_preference_page_answers_a_database_race_with_a_page(client, monkeypatch):
    async def fails(session, token):
        await session.execute(text(raising("40001")))

    monkeypatch.setattr(preferences, "open_link", fails)
    response = await client.get("/p/any-token", headers={"Accept-Language": "en-GB,en;q=0.8"})

    body = assert_a_page(response, 503)
    assert response.headers["retry-after"] == "1"
    assert "Please try again in a moment" in body


async def test_a_page_controllers_own_answers_are_unchanged(client, settings):
    unknown = await client.get("/u/not-a-token")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("text/html")
    refused = await client.post("/u/not-a-token/one-click", data={"List-Unsubscribe": "One-Click"})
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"


async def test_only_the_hosted_pages_declare_their_errors_as_html(client):
    """The preference centre's JSON API (CORS, problem+json) wraps the same handlers: its 409/503 stay problem+json
    in the document, as they are at run time (hostile review: it was declared text/html)."""
    document = (await client.get("/schema/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status in ("409", "503"):
                content = operation.get("responses", {}).get(status, {}).get("content", {})
                if "text/html" in content:
                    assert "hosted pages" in operation.get("tags", []), (method, path, status)
    api = document["paths"]["/p/{token}/preferences"]["get"]["responses"]["503"]["content"]
    assert set(api) == {"application/problem+json"}
