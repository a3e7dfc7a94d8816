"""Web Push (RFC 8030) with VAPID (RFC 8292) and payload encryption (RFC 8291): pywebpush encrypts, httpx posts.

The endpoint is the browser's input, so the request is ours, not pywebpush's (which follows redirects and reads
any answer whole): no redirects are followed, and the service passes its outbound guard as ``transport`` (public
addresses only, the connection to the checked address, a capped answer). What is kept of an answer is its status
and its ``Location`` header, never its body.

404 and 410 from the push service mean the subscription is gone; 429 and 5xx are transient; other 4xx
(413 payload too large, 400 bad request, 403 VAPID mismatch) are permanent.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import httpx
from pywebpush import Vapid, WebPusher

from channel_providers._http import UNREACHED, unreached
from channel_providers.base import Outbound, Outcome, SendResult, outcome_for_status

DEFAULT_TTL = 24 * 3600  # a notification older than a day is not worth showing
_GONE = (404, 410)
_VAPID_LIFETIME = 12 * 3600
_MAX_LOCATION = 500


class WebPushAdapter:
    """Sends encrypted notifications to browser push services."""

    provider = "web_push_service"
    """The provider a report names (``group_by=provider``): the browser's push service."""

    def __init__(self, timeout: float = 10.0, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.timeout = timeout
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, transport=self.transport)
        return self._client

    async def send(self, outbound: Outbound) -> SendResult:
        """Encrypt the content for the subscription's keys and POST it with a VAPID JWT and a real TTL."""
        try:
            endpoint, body, headers = _request(outbound)
        except Exception as exc:  # noqa: BLE001  # crypto and key errors: never let a vendor exception escape
            return SendResult(Outcome.PERMANENT, error_code="encryption", detail=f"{type(exc).__name__}")
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http().post(endpoint, content=body, headers=headers)
            status = response.status_code
        except UNREACHED as exc:
            return unreached(exc)
        outcome = outcome_for_status(status, gone=_GONE)
        if outcome is Outcome.ACCEPTED:
            location = response.headers.get("Location")
            return SendResult(outcome, provider_message_id=(location or outbound.id)[:_MAX_LOCATION])
        return SendResult(outcome, error_code=str(status), detail=f"HTTP {status}")


def _request(outbound: Outbound) -> tuple[str, bytes, dict[str, str]]:
    """The endpoint, the encrypted body (aes128gcm) and the headers: TTL, urgency, topic and VAPID."""
    subscription = {
        "endpoint": outbound.to,
        "keys": {"p256dh": outbound.details.get("p256dh", ""), "auth": outbound.details.get("auth", "")},
    }
    parts = urlsplit(outbound.to)
    claims = {
        "sub": outbound.extras.get("vapid_subject") or "mailto:push@localhost",
        "aud": f"{parts.scheme}://{parts.netloc}",
        "exp": int(time.time()) + _VAPID_LIFETIME,
    }
    vapid_headers = Vapid.from_string(private_key=outbound.extras["vapid_private_key"]).sign(claims)
    headers = {"Urgency": "normal", "Topic": outbound.id.replace("-", "")[:32], **vapid_headers}
    prepared = WebPusher(subscription)._prepare_send_data(  # noqa: SLF001  # pywebpush's encryption and headers
        data=json.dumps(outbound.content, ensure_ascii=False).encode(),
        headers=headers,
        ttl=int(outbound.extras.get("ttl", DEFAULT_TTL)),
        content_encoding="aes128gcm",
    )
    return str(prepared["endpoint"]), bytes(prepared["data"]), {str(k): str(v) for k, v in prepared["headers"].items()}
