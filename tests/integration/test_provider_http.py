"""The print house and FCM adapters over HTTP (httpx) when the far side misbehaves: slow, unreachable, not JSON."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channel_providers.base import Outbound, Outcome
from channel_providers.fcm import FcmAdapter, parse_service_account
from channel_providers.files import PrintHouseAdapter
from tests.conftest import local_http

LETTER = Outbound(
    id="01900000-0000-7000-8000-0000000000aa",
    channel="print",
    to="address-key",
    content={"template": "autumn", "variables": {"name": "Jane"}},
    details={"street": "Hauptstr.", "house_number": "1", "postcode": "10115", "city": "Berlin"},
)


async def _slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({"id": "late"}, status=201)


async def _empty(_request: web.Request) -> web.Response:
    return web.Response(status=201)


async def _html(_request: web.Request) -> web.Response:
    return web.Response(status=502, text="<html>Bad gateway</html>", content_type="text/html")


async def _html_not_found(_request: web.Request) -> web.Response:
    return web.Response(status=404, text="<html>Not found</html>", content_type="text/html")


async def _redirect(_request: web.Request) -> web.Response:
    return web.Response(status=307, headers={"Location": "/empty"})


async def test_the_print_house_answers_are_read_the_same_way_whatever_their_body():
    application = web.Application()
    routes = (("/slow", _slow), ("/empty", _empty), ("/html", _html), ("/missing", _html_not_found))
    for path, handler in (*routes, ("/redirect", _redirect)):
        application.router.add_post(path, handler)
    async with local_http(application) as url:
        empty = PrintHouseAdapter(f"{url}/empty", "t")
        html = PrintHouseAdapter(f"{url}/html", "t")
        missing = PrintHouseAdapter(f"{url}/missing", "t")
        redirect = PrintHouseAdapter(f"{url}/redirect", "t")
        slow = PrintHouseAdapter(f"{url}/slow", "t", timeout=0.3)
        try:
            accepted = await empty.send(LETTER)
            assert (accepted.outcome, accepted.provider_message_id) == (Outcome.ACCEPTED, LETTER.id)
            # the status decides, not whether the body is JSON: a proxy's 502 page is worth a retry ...
            not_json = await html.send(LETTER)
            assert (not_json.outcome, not_json.error_code) == (Outcome.TRANSIENT, "502")
            # ... an HTML 404 is a wrong URL, and the page itself is never stored
            wrong = await missing.send(LETTER)
            assert (wrong.outcome, wrong.error_code, wrong.detail) == (Outcome.PERMANENT, "404", "HTTP 404")
            moved = await redirect.send(LETTER)
            assert (moved.outcome, moved.error_code) == (Outcome.PERMANENT, "307"), "redirects are not followed"
            started = time.monotonic()
            late = await slow.send(LETTER)
            assert late.outcome is Outcome.TRANSIENT
            assert time.monotonic() - started < 2, "the adapter's own deadline, not the server's sleep"
        finally:
            for adapter in (empty, html, missing, redirect, slow):
                await adapter.aclose()


def _account(token_uri: str) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return parse_service_account(
        json.dumps(
            {
                "project_id": "acme-app",
                "private_key_id": "k1",
                "private_key": pem.decode(),
                "client_email": "push@acme-app.iam.gserviceaccount.com",
                "token_uri": token_uri,
            }
        )
    )


PUSH = Outbound(
    id="01900000-0000-7000-8000-0000000000bb",
    channel="app_push",
    to="inst-android",
    content={"title": "Herbst", "body": "Neu da"},
    details={"platform": "android", "token": "device-token-1"},
)


async def test_fcm_token_refusals_are_permanent_and_silence_or_no_server_transient():
    async def refused(_request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid_grant"}, status=400)

    application = web.Application()
    application.router.add_post("/refused", refused)
    application.router.add_post("/slow", _slow)
    application.router.add_post("/busy", _html)
    async with local_http(application) as url:
        adapters = [
            FcmAdapter(_account(f"{url}/refused"), base_url=url),
            FcmAdapter(_account(f"{url}/slow"), base_url=url, timeout=0.3),
            FcmAdapter(_account("http://127.0.0.1:1/token"), base_url=url),
            FcmAdapter(_account(f"{url}/busy"), base_url=url),
        ]
        try:
            auth, late, unreachable, busy = [await adapter.send(PUSH) for adapter in adapters]
        finally:
            for adapter in adapters:
                await adapter.aclose()
    assert (auth.outcome, auth.error_code, auth.detail) == (Outcome.PERMANENT, "auth", "token endpoint answered 400")
    assert late.outcome is Outcome.TRANSIENT
    assert late.detail.startswith("TimeoutError")
    assert unreachable.outcome is Outcome.TRANSIENT
    assert unreachable.detail.startswith("ConnectError")
    assert (busy.outcome, busy.detail) == (Outcome.TRANSIENT, "_TokenUnavailable: token endpoint answered 502")
