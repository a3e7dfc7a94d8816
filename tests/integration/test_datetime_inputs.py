"""A date-time in a JSON body is RFC 3339 text, never a number (hostile review of 2026-12-05, "Datetimes as numbers").

Litestar converts bodies with msgspec's lax rules, which read a number (or a string holding one) as a Unix
timestamp: ``"purchased_at": 5`` was a sale in 1970. Every date-time field of every documented JSON body refuses
one, named as other schema errors name their field; what else the lax rules take is still taken.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.cli import render_openapi
from app.imports import consents
from app.lib.auth import Scope


def _datetime_fields(schema: dict[str, Any], components: dict[str, Any], path: str = "", seen=frozenset()):
    """The dotted paths of the date-time fields of a JSON schema (top-level objects and their nested objects)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            yield from _datetime_fields(components[name], components, path, seen | {name})
        return
    if schema.get("format") == "date-time":
        yield path
    for key in ("oneOf", "anyOf", "allOf"):
        for member in schema.get(key, []):
            yield from _datetime_fields(member, components, path, seen)
    for name, member in schema.get("properties", {}).items():
        yield from _datetime_fields(member, components, f"{path}.{name}" if path else name, seen)


def _documented() -> list[tuple[str, str, str]]:
    document = json.loads(render_openapi())
    components = document["components"]["schemas"]
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            if schema is not None:
                found += [(method, path, field) for field in _datetime_fields(schema, components)]
    return sorted(set(found))


DOCUMENTED = _documented()


def _body(field: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    *parents, name = field.split(".")
    inner = body
    for parent in parents:
        inner = inner.setdefault(parent, {})
    inner[name] = value
    return body


def test_the_documented_bodies_have_the_date_times_this_test_sends_numbers_to():
    """If a route gains a date-time field, the test below covers it by itself; these must stay covered."""
    assert {
        ("post", "/v1/contacts/{contact}/purchases", "purchased_at"),
        ("post", "/v1/contacts/{contact}/purchases", "occurred_at"),
        ("post", "/v1/messages", "send_at"),
        ("post", "/v1/messages/{message_id}/events", "occurred_at"),
        ("post", "/v1/contacts/{contact}/reassigned-numbers", "reassigned_at"),
    } <= set(DOCUMENTED)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("number", [5, 1_800_000_000.5, "5", "1.7e9"])
@pytest.mark.parametrize(("method", "path", "field"), DOCUMENTED)
async def test_every_date_time_of_a_json_body_refuses_a_number(
    client, admin, method, path, field, number, content_type
):
    """Whatever the Content-Type: the route decodes its body as JSON all the same (hostile review: text/plain, or
    curl's default form type, went past the check and ``reassigned_at: 5`` was 1970)."""
    url = path.replace("{contact}", "crm-1").replace("{message_id}", "0193b0a6-0000-7000-8000-000000000000")
    body = json.dumps(_body(field, number)).encode()
    response = await client.request(method.upper(), url, content=body, headers={**admin, "content-type": content_type})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed"
    [error] = problem["errors"]
    assert error["field"] == field
    assert "RFC 3339" in error["message"]
    assert problem["detail"].startswith(f"{field}: ")


async def _customer(client, tenant) -> dict[str, str]:
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    assert (await client.post("/v1/contacts", json={"external_id": "jane"}, headers=writer)).status_code == 201
    return writer


def _sale(**changes: Any) -> dict[str, Any]:
    return {
        "reference": "A-1",
        "purchased_at": "2026-11-20T10:15:00+01:00",
        "category": "coffee",
        "email": "jane@example.com",
        "objection_notice_shown": True,
        **changes,
    }


async def test_a_purchase_dated_by_a_number_records_nothing(client, tenant):
    writer = await _customer(client, tenant)
    response = await client.post("/v1/contacts/jane/purchases", json=_sale(purchased_at=5), headers=writer)
    assert response.status_code == 422, response.text
    listed = await client.get("/v1/contacts/jane/purchases", headers=writer)
    assert listed.status_code == 200, listed.text
    assert listed.json() == []


async def test_a_date_time_as_text_and_the_lax_rules_elsewhere_are_still_taken(client, tenant):
    """Only date-times are held to text: ``"true"`` for a boolean is taken as before (lax rules, callers send it)."""
    writer = await _customer(client, tenant)
    response = await client.post(
        "/v1/contacts/jane/purchases", json=_sale(objection_notice_shown="true"), headers=writer
    )
    assert response.status_code == 201, response.text


async def _lines(body: bytes):
    async def chunks():
        yield body

    return [item async for item in consents.csv_lines(chunks())]


@pytest.mark.parametrize("when", ["5", "1700000000", "1.7e9"])
async def test_a_csv_import_line_dated_by_a_number_is_rejected(when):
    """CSV fields are text, read by the lax rules too: ``captured_at`` 5 was a consent of 1970."""
    body = f"contact,channel,address,state,captured_at,source\ncrm-1,email,a@example.com,opted_in,{when},old\n"
    [(number, line)] = await _lines(body.encode())
    assert number == 2
    assert isinstance(line, consents.LineRejected), line
    assert line.code == "invalid_line"
    assert "captured_at" in line.message


async def test_an_ndjson_import_line_dated_by_a_number_is_rejected():
    async def chunks():
        yield json.dumps(
            {
                "contact": "c",
                "channel": "email",
                "address": "a@example.com",
                "state": "opted_in",
                "captured_at": 5,
                "source": "old",
            }
        ).encode()

    [(_, line)] = [item async for item in consents.ndjson_lines(chunks())]
    assert isinstance(line, consents.LineRejected)
    assert line.code == "invalid_line"


async def test_a_csv_import_line_dated_as_text_is_taken():
    body = b"contact,channel,address,state,captured_at,source\nc,email,a@example.com,opted_in,2024-03-01T10:00:00Z,x\n"
    [(_, line)] = await _lines(body)
    assert isinstance(line, consents.ImportLine)
