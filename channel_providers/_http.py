"""What the adapters that speak HTTP themselves (APNs, FCM, the print house) share: httpx, and how they read it."""

from __future__ import annotations

from typing import Any

import httpx

from channel_providers.base import Outcome, SendResult

UNREACHED: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL, TimeoutError)
"""What a request raises when the provider could not be asked or did not answer in time: worth trying again.

``httpx.InvalidURL`` is not an ``httpx.HTTPError``; ``TimeoutError`` is the adapter's own ``asyncio.timeout``.
"""


NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.InvalidURL, httpx.PoolTimeout)
"""Failures before the request left: nothing can have reached the provider. Exceptions that say so themselves
(``before_sending = True``, as the outbound guard's refusals do) count too."""


def unreached(exc: Exception) -> SendResult:
    """The transient result of a request that failed (``UNREACHED``), saying whether it may have arrived.

    A failure while connecting, or before (an invalid URL, the outbound guard's refusal), cannot have reached the
    provider; anything later (no answer in time, the connection lost while waiting) may have.
    """
    sent = not (isinstance(exc, NOT_SENT) or getattr(exc, "before_sending", False))
    return SendResult(Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}"[:500], maybe_delivered=sent)


def json_or_none(response: httpx.Response) -> Any:
    """The body as JSON whatever its content type; ``None`` when it is empty or not JSON (a proxy's HTML page).

    The status decides what an answer means (:func:`channel_providers.base.outcome_for_status`); the body only adds
    detail, so an unreadable one never turns a refusal into a retry.
    """
    try:
        return response.json() if response.content.strip() else None
    except ValueError:
        return None
