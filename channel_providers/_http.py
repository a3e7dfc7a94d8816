"""What the adapters that speak HTTP themselves (APNs, FCM, the print house) share: httpx, and how they read it."""

from __future__ import annotations

from typing import Any

import httpx

UNREACHED: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL, TimeoutError)
"""What a request raises when the provider could not be asked or did not answer in time: worth trying again.

``httpx.InvalidURL`` is not an ``httpx.HTTPError``; ``TimeoutError`` is the adapter's own ``asyncio.timeout``.
"""


def json_or_none(response: httpx.Response) -> Any:
    """The body as JSON whatever its content type; ``None`` when it is empty or not JSON (a proxy's HTML page).

    The status decides what an answer means (:func:`channel_providers.base.outcome_for_status`); the body only adds
    detail, so an unreadable one never turns a refusal into a retry.
    """
    try:
        return response.json() if response.content.strip() else None
    except ValueError:
        return None
