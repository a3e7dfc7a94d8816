"""Webhook body signatures: ``X-Consent-Signature: t=<unix time>,v1=<hex HMAC-SHA256>``.

One format both ways: the mail provider's bounce/complaint webhook is checked with it, and our outbound
webhook deliveries are signed with it. The HMAC is over ``"<t>." + body`` with the secret. The timestamp binds
the signature to a moment, so a captured delivery cannot be replayed after :data:`TOLERANCE_SECONDS`; several
``v1`` values may be sent while a secret is being rotated.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "x-consent-signature"
TOLERANCE_SECONDS = 300
_MAX_TIMESTAMP_DIGITS = 12


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float) -> bool:
    """True when ``header`` carries a fresh, matching signature of ``body``."""
    return refusal(secret, header, body, now) is None


def refusal(secret: str, header: str, body: bytes, now: float) -> str | None:
    """Why ``header`` is no fresh, matching signature of ``body`` (``None``: it is one).

    ``"stale"`` only for a signature that matches but whose ``t`` lies more than :data:`TOLERANCE_SECONDS` from
    ``now`` (telling the sender its clock or queue is off reveals nothing to one without the secret), else
    ``"mismatch"``.
    """
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        # str.isdigit() also accepts "²" and other digits int() refuses, and compare_digest() refuses non-ASCII
        # text: anything but ASCII digits and hex is simply not a signature
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= _MAX_TIMESTAMP_DIGITS:
            timestamp = int(value)
        elif name == "v1" and value.isascii():
            macs.append(value)
    if timestamp is None or not macs:
        return "mismatch"
    expected = sign(secret, body, timestamp).rpartition("=")[2]
    if not any(hmac.compare_digest(expected, mac) for mac in macs):
        return "mismatch"
    return "stale" if abs(now - timestamp) > TOLERANCE_SECONDS else None
