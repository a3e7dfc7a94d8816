"""Link tokens of the email channel.

- **Confirmation** tokens are 256 random bits; only their SHA-256 is stored, so a database leak cannot confirm
  anything. Single use and expiring: the row says when.
- **Unsubscribe** tokens must work for months, unattended (RFC 8058 one-click POSTs carry no cookies), so they
  are stateless: the contact point and purpose, authenticated with an HMAC under a key derived from
  ``CONSENT_SECRET_KEY``. They can do one thing only: unsubscribe that address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

_VERSION = "1"
_MAC_BYTES = 16
_UUID_BYTES = 16


def new_confirmation_token() -> tuple[str, bytes]:
    """A fresh token (for the link) and its hash (for the database)."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    """What is stored and looked up: ``SHA-256(token)``."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    """What an unsubscribe token names: an address, and one purpose or (``None``) every marketing purpose."""

    contact_point_id: uuid.UUID
    purpose_id: uuid.UUID | None


def sign_unsubscribe(key: bytes, target: UnsubscribeTarget) -> str:
    """``1`` + base64url(point id ‖ purpose id? ‖ HMAC-SHA256[:16])."""
    body = target.contact_point_id.bytes + (target.purpose_id.bytes if target.purpose_id else b"")
    mac = hmac.new(key, _VERSION.encode() + body, hashlib.sha256).digest()[:_MAC_BYTES]
    return _VERSION + base64.urlsafe_b64encode(body + mac).decode().rstrip("=")


def verify_unsubscribe(key: bytes, token: str) -> UnsubscribeTarget | None:
    """The target of a genuine token; ``None`` for anything forged, truncated or malformed."""
    if not token.startswith(_VERSION) or len(token) > 100:  # noqa: PLR2004  # 88 characters at most
        return None
    payload = token[1:]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return None
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if len(body) not in (_UUID_BYTES, 2 * _UUID_BYTES):
        return None
    expected = hmac.new(key, _VERSION.encode() + body, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        return None
    purpose = uuid.UUID(bytes=body[_UUID_BYTES:]) if len(body) == 2 * _UUID_BYTES else None
    return UnsubscribeTarget(uuid.UUID(bytes=body[:_UUID_BYTES]), purpose)
