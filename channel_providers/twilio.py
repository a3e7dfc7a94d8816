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
import socket

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


class _HeaderAuthClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """The library's async client, sending Basic auth as a header (aiohttp deprecates its ``auth=`` argument)."""

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
        if auth is not None:
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        return await super().request(method, url, params, data, headers, None, timeout, allow_redirects)


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
