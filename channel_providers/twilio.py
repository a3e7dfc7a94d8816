"""SMS and WhatsApp through Twilio's Messages API with the twilio library's async client.

Errors map to outcomes: 21610 (the recipient texted STOP to Twilio) is ``BLOCKED``; the codes of
:data:`UNREACHABLE` (the number cannot receive: invalid, a landline, no longer in service, no WhatsApp) are
``GONE``; the rest follows the HTTP
status (:func:`~channel_providers.base.outcome_for_status`): 4xx are ``PERMANENT`` (invalid number, unverified
sender…), 429 and 5xx ``TRANSIENT``, and so are timeouts and connection errors.
The API base URL is configurable (a regional edge, or a local stand-in in tests).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import string
from typing import Any, cast
from urllib.parse import quote_plus, urlencode

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channel_providers.base import Outbound, Outcome, SendResult, outcome_for_status

STOPPED = 21610
#: Twilio's error codes saying the number itself cannot receive (https://www.twilio.com/docs/api/errors/<code>):
#: 21211 invalid 'To' number, 21614 'To' is not a mobile number, 21635 'To' is a landline, 30005 unknown destination
#: handset (no longer in service: a number recycled, or not yet), 30006 landline or unreachable carrier, 63024 not a
#: valid WhatsApp recipient. Not here, as they pass or concern the message rather than the number: 30003 (handset
#: off or out of coverage), 30004 (blocked), 30007 (carrier filtering), 30008 (unknown), 21612 (route).
UNREACHABLE = frozenset({21211, 21614, 21635, 30005, 30006, 63024})


#: What :func:`urllib.parse.quote_plus` leaves as it is (RFC 3986's unreserved characters).
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "_.-~")
#: ``%XX`` (and ``+`` for a space) for every other ASCII character, as ``quote_plus`` writes them.
_FORM_ESCAPES = {c: "+" if c == ord(" ") else f"%{c:02X}" for c in range(128) if chr(c) not in _UNRESERVED}


def _quote_plus(text: str | bytes, safe: str = "", encoding: str | None = None, errors: str | None = None) -> str:
    """:func:`urllib.parse.quote_plus`, the same characters out, a table look-up for ASCII text.

    ``quote_plus`` escapes byte by byte in Python (a status callback URL is some 90 of them, a few microseconds
    each); ``str.translate`` does it in C. Anything but ASCII text without extra safe characters goes to
    ``quote_plus`` itself.
    """
    if isinstance(text, bytes):
        return quote_plus(text, safe)
    if not safe and text.isascii():
        return text.translate(_FORM_ESCAPES)
    return quote_plus(text, safe, encoding, errors)


def form_body(data: dict[str, object]) -> bytes:
    """The ``application/x-www-form-urlencoded`` body aiohttp makes of the library's ``data`` (``FormData``).

    The same call as aiohttp's (``urlencode(pairs, doseq=True)``, UTF-8), with the faster, equal quoting.
    """
    return urlencode(list(data.items()), doseq=True, quote_via=cast("Any", _quote_plus)).encode()


class _HeaderAuthClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """The library's async client with its per-request overhead removed, the request on the wire unchanged.

    The library builds every request (URL, form fields, headers with its User-Agent, the account's credentials)
    and reads every answer (its ``Response``, ``TwilioRestException`` with Twilio's error code, the message's
    fields); this class only carries it, as ``AsyncTwilioHttpClient.request`` does, minus what cost the most per
    send in a profile of the worker (issue 21; docs/benchmarks.md, "where the worker's time goes"):

    - Basic auth as a header, encoded once per credential pair (aiohttp deprecates its ``auth=`` argument, and
      encoded it per request);
    - the form body encoded here (:func:`form_body`: the bytes aiohttp's ``FormData`` makes, without its
      per-field checks and with a C-speed quoting);
    - the library's request and response logging only when its logger would write it (it formatted each line
      first), and no copy of the request kept for the library's tests.

    ``tests/integration/test_twilio_transport.py`` checks, against a stand-in that keeps what it receives, that
    the requests are byte for byte those of the library's own client.
    """

    def __init__(self, *, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self._authorization: dict[tuple[str, str], str] = {}

    async def request(  # noqa: PLR0917  # the library's signature
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,  # noqa: FBT001, FBT002  # the library's signature
    ) -> Response:
        if timeout is not None and timeout <= 0:  # as the library refuses it
            raise ValueError(timeout)
        headers = dict(headers or {})
        if auth is not None:
            if (authorization := self._authorization.get(auth)) is None:
                credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                authorization = self._authorization.setdefault(auth, f"Basic {credentials}")
            headers["Authorization"] = authorization
        kwargs = {
            "method": method.upper(),
            "url": url,
            "params": params,
            "data": None if data is None else form_body(data),
            "headers": headers,
            "timeout": timeout,
            "allow_redirects": allow_redirects,
        }
        logs = self.logger.isEnabledFor(logging.INFO)
        if logs:
            self.log_request(kwargs)
        async with self.session.request(**kwargs) as answer:
            if logs:
                self.log_response(answer.status, answer)
            return Response(answer.status, await answer.text(), answer.headers)


class TwilioAdapter:
    """Sends through one Twilio account."""

    provider = "twilio"
    """The provider a report names (``group_by=provider``)."""

    def __init__(
        self, account_sid: str, auth_token: str, *, base_url: str | None = None, timeout: float = 10.0
    ) -> None:
        self.client = Client(account_sid, auth_token, http_client=_HeaderAuthClient(timeout=timeout))
        if base_url:
            self.client.api.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        http = self.client.http_client
        if isinstance(http, AsyncTwilioHttpClient):
            await http.close()

    async def send(self, outbound: Outbound) -> SendResult:
        """Create the message; WhatsApp addresses get the ``whatsapp:`` prefix."""
        whatsapp = outbound.channel == "whatsapp"
        to = f"whatsapp:{outbound.to}" if whatsapp else outbound.to
        sender = outbound.sender or ""
        if whatsapp and not sender.startswith("whatsapp:"):
            sender = f"whatsapp:{sender}"
        params: dict[str, object] = {"to": to}
        if sender.startswith("MG"):
            params["messaging_service_sid"] = sender
        else:
            params["from_"] = sender
        content = outbound.content
        if content.get("template_sid"):
            params["content_sid"] = content["template_sid"]
            if content.get("variables"):
                params["content_variables"] = json.dumps(content["variables"])
        else:
            params["body"] = content["text"]
        if callback := outbound.extras.get("status_callback"):
            params["status_callback"] = callback
        try:
            async with asyncio.timeout(self.timeout + 1):
                message = await self.client.messages.create_async(**params)
        except TwilioRestException as exc:
            return _mapped(exc)
        except Exception as exc:  # noqa: BLE001  # Twilio's and aiohttp's errors: never let a vendor exception escape
            # refused or unresolved: nothing reached Twilio; anything else (no answer in time, the connection lost
            # while waiting) may have been accepted
            return SendResult(
                Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}", maybe_delivered=_maybe_sent(exc)
            )
        return SendResult(Outcome.ACCEPTED, provider_message_id=message.sid)


def _maybe_sent(exc: BaseException) -> bool:
    """Whether a failed call may have reached Twilio: not when the connection was refused or the name unresolved.

    aiohttp wraps the connect failure (``ClientConnectorError.os_error``); the twilio library raises its own
    ``TwilioException`` for what it makes of it.
    """
    for error in (exc, getattr(exc, "os_error", None), exc.__cause__):
        if isinstance(error, (ConnectionRefusedError, socket.gaierror)):
            return False
    return True


def _mapped(exc: TwilioRestException) -> SendResult:
    code = str(exc.code) if exc.code is not None else None
    detail = f"HTTP {exc.status}: {exc.msg}"
    if exc.code == STOPPED:  # Twilio's error code, whatever the status
        return SendResult(Outcome.BLOCKED, error_code=code, detail=detail)
    if exc.code in UNREACHABLE:
        return SendResult(Outcome.GONE, error_code=code, detail=detail)
    return SendResult(outcome_for_status(exc.status), error_code=code, detail=detail)
