"""What the adapters that speak HTTP themselves (APNs, FCM, the print house) share: httpx, and how they read it."""

from __future__ import annotations

from typing import Any

import httpx

UNREACHED: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL, TimeoutError)
"""What a request raises when the provider could not be asked or did not answer in time: worth trying again.

``httpx.InvalidURL`` is not an ``httpx.HTTPError``; ``TimeoutError`` is the adapter's own ``asyncio.timeout``.
"""

UNREACHED_OR_NOT_JSON: tuple[type[Exception], ...] = (*UNREACHED, ValueError)
""":data:`UNREACHED`, or an answer :func:`json_or_none` could not read (a proxy's HTML page): worth trying again."""


def json_or_none(response: httpx.Response) -> Any:
    """The body as JSON whatever its content type; ``None`` when it is empty; ``ValueError`` when it is not JSON."""
    return response.json() if response.content.strip() else None
