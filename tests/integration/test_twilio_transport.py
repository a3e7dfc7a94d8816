"""The Twilio adapter's transport sends, byte for byte, what the twilio library's own async client sends.

The adapter carries the library's requests with less work per send (``channel_providers.twilio._HeaderAuthClient``,
issue 21); a stand-in that keeps the raw bytes it receives compares both, and the answers Twilio gives for errors
map as they always did.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from channel_providers.base import Outbound, Outcome
from channel_providers.twilio import TwilioAdapter

ACCOUNT = "AC" + "ab" * 16
TOKEN = "t" * 32

OUTBOUNDS = [
    Outbound(
        id="d1",
        channel="sms",
        to="+4915123456789",
        content={"text": "Hallo Jane! 50 % Rabatt & mehr: https://example.com/x?a=1+2 \n Grüße 👋"},
        sender="+4930123456789",
        extras={"status_callback": "https://consent.example.com/webhooks/twilio/ws/status?delivery=d1"},
    ),
    Outbound(id="d2", channel="sms", to="+4915123456789", content={"text": "plain"}, sender="MG" + "1" * 32),
    Outbound(
        id="d3",
        channel="whatsapp",
        to="+4915123456789",
        content={"template_sid": "HX" + "2" * 32, "variables": {"1": "Jane Doe", "2": "ä ß / + &"}},
        sender="+4930123456789",
    ),
]


class Recorder:
    """An HTTP/1.1 server keeping each request's raw bytes; answers as Twilio does (201, or the queued error)."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
        self.answers: list[tuple[int, dict[str, object]]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            line, *fields = head[:-4].split(b"\r\n")
            headers = {}
            for field in fields:
                name, _, value = field.partition(b":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            self.requests.append((line, headers, body))
            status, payload = self.answers.pop(0) if self.answers else (201, {"sid": "SM" + "0" * 32})
            data = json.dumps(payload).encode()
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(data))
                + data
            )
            await writer.drain()
            if reader.at_eof():
                break


@asynccontextmanager
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    kept = Recorder()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await kept.handle(reader, writer)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield kept, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


class LibraryAdapter(TwilioAdapter):
    """The same adapter on the library's own async HTTP client (``auth=`` to aiohttp, as the library does)."""

    def __init__(self, base_url: str) -> None:  # not the parent's: its client is the one replaced
        self.client = Client(ACCOUNT, TOKEN, http_client=AsyncTwilioHttpClient(timeout=10.0))
        self.client.api.base_url = base_url
        self.timeout = 10.0


async def test_the_requests_are_those_of_the_library_s_own_client():
    async with recorder() as (kept, url):
        ours, library = TwilioAdapter(ACCOUNT, TOKEN, base_url=url), LibraryAdapter(url)
        try:
            for outbound in OUTBOUNDS:
                assert (await ours.send(outbound)).outcome is Outcome.ACCEPTED
                with warnings.catch_warnings():  # aiohttp deprecates the ``auth=`` the library passes
                    warnings.simplefilter("ignore", DeprecationWarning)
                    assert (await library.send(outbound)).outcome is Outcome.ACCEPTED
        finally:
            await ours.aclose()
            await library.aclose()
    assert len(kept.requests) == 2 * len(OUTBOUNDS)
    for sent_by_us, sent_by_library in zip(kept.requests[::2], kept.requests[1::2], strict=True):
        assert sent_by_us == sent_by_library
    line, headers, body = kept.requests[0]
    assert line == f"POST /2010-04-01/Accounts/{ACCOUNT}/Messages.json HTTP/1.1".encode()
    assert headers[b"authorization"].startswith(b"Basic ")
    assert headers[b"content-type"] == b"application/x-www-form-urlencoded"
    assert body.startswith(b"To=%2B4915123456789&StatusCallback=https%3A%2F%2Fconsent.example.com%2Fwebhooks%2F")
    assert b"&Body=Hallo+Jane%21+50+%25+Rabatt+%26+mehr%3A+https%3A%2F%2Fexample.com%2Fx%3Fa%3D1%2B2+%0A+Gr" in body


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, 21610, Outcome.BLOCKED),
        (400, 21211, Outcome.GONE),
        (400, 21606, Outcome.PERMANENT),
        (429, 20429, Outcome.TRANSIENT),
        (503, None, Outcome.TRANSIENT),
    ],
)
async def test_twilio_s_errors_map_as_the_library_reports_them(status, code, outcome):
    async with recorder() as (kept, url):
        kept.answers.append((status, {"code": code, "message": "refused", "status": status}))
        adapter = TwilioAdapter(ACCOUNT, TOKEN, base_url=url)
        try:
            result = await adapter.send(OUTBOUNDS[0])
        finally:
            await adapter.aclose()
    assert result.outcome is outcome
    assert result.error_code == (str(code) if code else None)
    assert result.detail.startswith(f"HTTP {status}: ")
