"""Web Push (RFC 8030) with VAPID (RFC 8292) and payload encryption (RFC 8291) via pywebpush's async sender.

404 and 410 from the push service mean the subscription is gone; 429 and 5xx are transient; other 4xx
(413 payload too large, 400 bad request, 403 VAPID mismatch) are permanent.
"""

from __future__ import annotations

import json

from pywebpush import WebPushException, webpush_async

from channel_providers.base import Outbound, Outcome, SendResult, outcome_for_status

DEFAULT_TTL = 24 * 3600  # a notification older than a day is not worth showing
_GONE = (404, 410)


class WebPushAdapter:
    """Sends encrypted notifications to browser push services."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    async def send(self, outbound: Outbound) -> SendResult:
        """Encrypt the content for the subscription's keys and POST it with a VAPID JWT and a real TTL."""
        subscription = {
            "endpoint": outbound.to,
            "keys": {"p256dh": outbound.details.get("p256dh", ""), "auth": outbound.details.get("auth", "")},
        }
        try:
            response = await webpush_async(
                subscription,
                data=json.dumps(outbound.content, ensure_ascii=False),
                vapid_private_key=outbound.extras["vapid_private_key"],
                vapid_claims={"sub": outbound.extras.get("vapid_subject") or "mailto:push@localhost"},
                ttl=int(outbound.extras.get("ttl", DEFAULT_TTL)),
                timeout=self.timeout,
                headers={"Urgency": "normal", "Topic": outbound.id.replace("-", "")[:32]},
            )
        except WebPushException as exc:
            status = getattr(exc.response, "status", None) or getattr(exc.response, "status_code", None)
            return _by_status(status, str(exc))
        except Exception as exc:  # noqa: BLE001  # aiohttp and crypto errors: never let a vendor exception escape
            return SendResult(Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}")
        status = getattr(response, "status", None)
        if isinstance(status, int) and status >= _CLIENT_ERRORS_START:
            return _by_status(status, f"HTTP {status}")
        location = response.headers.get("Location") if hasattr(response, "headers") else None
        return SendResult(Outcome.ACCEPTED, provider_message_id=location or outbound.id)


_CLIENT_ERRORS_START = 400


def _by_status(status: int | None, detail: str) -> SendResult:
    code = str(status) if status is not None else None
    return SendResult(outcome_for_status(status, gone=_GONE), error_code=code, detail=detail)
