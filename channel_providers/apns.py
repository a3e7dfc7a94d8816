"""App push to iOS through Apple Push Notification service: HTTP/2 (httpx + h2) and token authentication.

The provider token is an ES256 JWT (``iss`` = team id, ``kid`` = key id) made with the .p8 key and reused for 50
minutes (Apple refuses tokens older than an hour and too frequent refreshes). 410 ``Unregistered`` means the
device token is gone; 403 ``ExpiredProviderToken`` renews the JWT and retries later; 429 and 5xx are
transient; other refusals (400 ``BadDeviceToken``, ``TopicDisallowed``…) are permanent.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channel_providers._http import UNREACHED, unreached
from channel_providers.base import ChannelAdapter, Outbound, Outcome, SendResult, outcome_for_status, provider_of

PRODUCTION = "https://api.push.apple.com"
SANDBOX = "https://api.sandbox.push.apple.com"
_TOKEN_LIFETIME = 50 * 60
_GONE = (410,)  # Unregistered: the app was removed from the device
_FORBIDDEN = 403


def load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The .p8 signing key (PKCS#8 PEM, P-256); ``ValueError`` otherwise."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not a P-256 key (.p8)")  # noqa: TRY004  # a bad key is a value error to the caller
    return key


class ApnsAdapter:
    """Sends alerts for one app (``topic`` = its bundle id)."""

    provider = "apns"
    """The provider a report names (``group_by=provider``)."""

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key: str,
        topic: str,
        base_url: str = PRODUCTION,
        timeout: float = 10.0,
    ) -> None:
        self.team_id = team_id
        self.key_id = key_id
        self.topic = topic
        self._key = load_key(private_key)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        """Seconds for the request as a whole, and for each of its steps."""
        self._client = httpx.AsyncClient(http1=False, http2=True, timeout=timeout)
        self._token: tuple[str, float] | None = None

    async def aclose(self) -> None:
        """Close the HTTP/2 connection."""
        await self._client.aclose()

    def _provider_token(self) -> str:
        now = time.time()
        if self._token is not None and now - self._token[1] < _TOKEN_LIFETIME:
            return self._token[0]
        # Apple's header is exactly {alg, kid}: no "typ" (PyJWT adds one unless told not to).
        token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self.key_id, "typ": None},
        )
        self._token = (token, now)
        return token

    async def send(self, outbound: Outbound) -> SendResult:
        """POST the alert to ``/3/device/<token>``; the delivery id is the ``apns-id``."""
        content = outbound.content
        payload = {
            "aps": {"alert": {"title": content["title"], "body": content["body"]}},
            **(content.get("data") or {}),
        }
        try:
            apns_id = str(uuid.UUID(outbound.id))
        except ValueError:
            apns_id = str(uuid.uuid4())
        headers = {
            "authorization": f"bearer {self._provider_token()}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-expiration": str(int(time.time()) + 86400),
            "apns-id": apns_id,
        }
        url = f"{self.base_url}/3/device/{outbound.details.get('token', '')}"
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(url, content=json.dumps(payload).encode(), headers=headers)
        except UNREACHED as exc:
            return unreached(exc)
        outcome = outcome_for_status(response.status_code, gone=_GONE)
        if outcome is Outcome.ACCEPTED:
            return SendResult(outcome, provider_message_id=response.headers.get("apns-id", apns_id))
        try:
            reason = str(response.json().get("reason", ""))
        except ValueError:
            reason = ""
        detail = f"HTTP {response.status_code}: {reason}"
        if response.status_code == _FORBIDDEN and reason == "ExpiredProviderToken":
            self._token = None  # signed again on the next attempt
            return SendResult(Outcome.TRANSIENT, error_code=reason, detail=detail)
        if outcome is Outcome.GONE:
            return SendResult(outcome, error_code=reason or "Unregistered", detail=detail)
        return SendResult(outcome, error_code=reason or None, detail=detail)


class AppPushRouter:
    """App push by platform: iOS through APNs when configured, the rest (and iOS without APNs) through FCM."""

    def __init__(self, *, apns: ChannelAdapter | None, fcm: ChannelAdapter | None, fallback: ChannelAdapter) -> None:
        self.apns = apns
        self.fcm = fcm
        self.fallback = fallback

    async def send(self, outbound: Outbound) -> SendResult:
        """Pick the provider for the installation's platform."""
        return await self._target(outbound).send(outbound)

    def provider_for(self, outbound: Outbound) -> str | None:
        """The provider the installation's platform goes to."""
        return provider_of(self._target(outbound), outbound)

    def _target(self, outbound: Outbound) -> ChannelAdapter:
        if outbound.details.get("platform") == "ios" and self.apns is not None:
            return self.apns
        return self.fcm if self.fcm is not None else self.fallback
