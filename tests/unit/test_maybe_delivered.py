"""Which failed provider calls may have reached the provider (and so must not be repeated for marketing)."""

from __future__ import annotations

import socket

import httpx
import pytest

from app.lib.outbound import OutboundRefused
from channel_providers._http import unreached
from channel_providers.twilio import _maybe_sent


@pytest.mark.parametrize(
    ("exc", "maybe"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow connect"), False),
        (httpx.PoolTimeout("no connection free"), False),
        (OutboundRefused("not a public address"), False),
        (httpx.ReadTimeout("no answer"), True),
        (httpx.RemoteProtocolError("closed while waiting"), True),
        (httpx.ReadError("reset"), True),
        (TimeoutError(), True),
    ],
)
def test_a_failure_after_the_request_left_may_have_been_delivered(exc, maybe):
    assert unreached(exc).maybe_delivered is maybe


def test_twilio_calls_refused_or_unresolved_never_reached_twilio():
    assert _maybe_sent(ConnectionRefusedError()) is False
    assert _maybe_sent(socket.gaierror()) is False
    wrapped = OSError("Cannot connect")
    wrapped.os_error = ConnectionRefusedError()  # type: ignore[attr-defined]  # as aiohttp's ClientConnectorError
    assert _maybe_sent(wrapped) is False
    assert _maybe_sent(TimeoutError()) is True
    assert _maybe_sent(OSError("Connection reset by peer")) is True
