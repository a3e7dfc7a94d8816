"""App push through Firebase Cloud Messaging HTTP v1, authenticated with a service account (OAuth 2.0 JWT grant).

The access token is fetched with a self-signed RS256 JWT (RFC 7523) from the service account's ``token_uri`` and
cached until shortly before it expires. Errors map to outcomes: ``UNREGISTERED`` (or 404) means the app
installation's token is gone; 429, 5xx, ``UNAVAILABLE``, ``INTERNAL`` and ``QUOTA_EXCEEDED`` are transient; other
errors (invalid argument, sender mismatch, auth) are permanent.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channel_providers._http import UNREACHED, json_or_none, unreached
from channel_providers.base import Outbound, Outcome, SendResult, outcome_for_status

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105  # a URL, not a secret
DEFAULT_BASE_URL = "https://fcm.googleapis.com"
_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"})
_GONE_CODES = frozenset({"UNREGISTERED", "NOT_FOUND"})
_GONE_STATUS = (404,)
_UNAUTHORIZED = 401
_TRANSIENT_STATUS = (_UNAUTHORIZED,)  # the access token expired or was revoked: a new one is fetched
_REFRESH_MARGIN = 60


class _TokenUnavailable(Exception):
    """The token endpoint is busy or failing (429, 5xx): the send is worth trying again."""


class ServiceAccountError(ValueError):
    """The service account JSON lacks what FCM needs."""


def parse_service_account(text: str) -> dict[str, str]:
    """Check a service account key file's JSON: project, client email, RSA private key, token URI."""
    try:
        account = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServiceAccountError(f"not JSON: {exc.msg}") from None
    if not isinstance(account, dict):
        raise ServiceAccountError("not a JSON object")
    missing = [name for name in ("project_id", "client_email", "private_key", "token_uri") if not account.get(name)]
    if missing:
        raise ServiceAccountError(f"missing {', '.join(missing)}")
    key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ServiceAccountError("private_key is not an RSA key")
    return {name: str(value) for name, value in account.items() if isinstance(value, str)}


class FcmAdapter:
    """Sends to one Firebase project.

    The service account's ``token_uri`` is the tenant's input: with ``token_uris`` given, only those are asked
    (else the send fails as an ``auth`` error, nothing is requested), and ``token_transport`` (the service's
    outbound guard) carries the token request.
    """

    provider = "fcm"
    """The provider a report names (``group_by=provider``)."""

    def __init__(
        self,
        account: dict[str, str],
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        token_uris: frozenset[str] | None = None,
        token_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.account = account
        self.token_uris = token_uris
        self._token_transport = token_transport
        self._token_client: httpx.AsyncClient | None = None
        key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._key = key
        self.url = f"{base_url.rstrip('/')}/v1/projects/{account['project_id']}/messages:send"
        self.timeout = timeout
        """Seconds for each request as a whole (token, send), and for each of its steps."""
        self._client: httpx.AsyncClient | None = None
        self._token: tuple[str, float] | None = None

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._token_client is not None:
            await self._token_client.aclose()
            self._token_client = None

    def _token_http(self) -> httpx.AsyncClient:
        if self._token_transport is None:
            return self._http()
        if self._token_client is None or self._token_client.is_closed:
            self._token_client = httpx.AsyncClient(
                timeout=self.timeout, follow_redirects=False, transport=self._token_transport
            )
        return self._token_client

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            # Redirects are not followed: Google's endpoints do not redirect, and the token URI is the tenant's input.
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    def _assertion(self, now: int) -> str:
        claims = {
            "iss": self.account["client_email"],
            "scope": SCOPE,
            "aud": self.account["token_uri"],
            "iat": now,
            "exp": now + 3600,
        }
        # The header is {alg: RS256, typ: JWT, kid}: PyJWT writes alg and typ itself.
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.account.get("private_key_id", "")})

    async def _access_token(self) -> str:
        now = time.time()
        if self._token is not None and self._token[1] - _REFRESH_MARGIN > now:
            return self._token[0]
        if self.token_uris is not None and self.account["token_uri"] not in self.token_uris:
            raise PermissionError(f"token_uri is not one this service asks ({', '.join(sorted(self.token_uris))})")
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": self._assertion(int(now))}
        async with asyncio.timeout(self.timeout):
            response = await self._token_http().post(self.account["token_uri"], data=form)
        if outcome_for_status(response.status_code) is Outcome.TRANSIENT:  # 429, 5xx: Google's, worth a retry
            raise _TokenUnavailable(f"token endpoint answered {response.status_code}")
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:  # noqa: PLR2004
            raise PermissionError(f"token endpoint answered {response.status_code}")
        self._token = (body["access_token"], now + float(body.get("expires_in", 3600)))
        return self._token[0]

    async def send(self, outbound: Outbound) -> SendResult:
        """Post the notification to the installation's registration token."""
        content = outbound.content
        message: dict[str, Any] = {
            "token": outbound.details.get("token", ""),
            "notification": {"title": content["title"], "body": content["body"]},
            "android": {"ttl": "86400s"},
            "apns": {"headers": {"apns-expiration": str(int(time.time()) + 86400)}},
        }
        if content.get("data"):
            message["data"] = content["data"]
        try:
            token = await self._access_token()
            async with asyncio.timeout(self.timeout):
                response = await self._http().post(
                    self.url, json={"message": message}, headers={"Authorization": f"Bearer {token}"}
                )
            body = json_or_none(response)
            status = response.status_code
        except PermissionError as exc:
            return SendResult(Outcome.PERMANENT, error_code="auth", detail=str(exc))
        except _TokenUnavailable as exc:  # the access token, before the message was sent
            return SendResult(Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}")
        except UNREACHED as exc:
            return unreached(exc)
        outcome = outcome_for_status(status, gone=_GONE_STATUS, transient=_TRANSIENT_STATUS)
        if outcome is Outcome.ACCEPTED:
            name = body.get("name") if isinstance(body, dict) else None
            return SendResult(outcome, provider_message_id=str(name))
        if status == _UNAUTHORIZED:
            self._token = None  # fetched again on the next attempt
        return _mapped(outcome, status, body)


def _mapped(outcome: Outcome, status: int, body: Any) -> SendResult:
    """The status's outcome, overruled by the error codes FCM puts in the body (they say more than the status)."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    codes = {str(error.get("status", ""))}
    for detail in error.get("details", []) or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            codes.add(str(detail["errorCode"]))
    code = next((c for c in codes if c in _GONE_CODES | _TRANSIENT_CODES), next(iter(codes - {""}), str(status)))
    message = f"HTTP {status}: {error.get('message', '')}"
    if "UNREGISTERED" in codes or outcome is Outcome.GONE:
        return SendResult(Outcome.GONE, error_code="UNREGISTERED", detail=message)
    if codes & _TRANSIENT_CODES:
        outcome = Outcome.TRANSIENT
    return SendResult(outcome, error_code=code, detail=message)
