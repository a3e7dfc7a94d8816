"""Link tokens of the email channel.

- **Confirmation** tokens are 256 random bits; only their SHA-256 is stored, so a database leak cannot confirm
  anything. Single use and expiring: the row says when.
- **Unsubscribe** tokens must work for months, unattended (RFC 8058 one-click POSTs carry no cookies), so they
  are stateless: the contact point and purpose, authenticated with an HMAC under a key derived from
  ``CONSENT_SECRET_KEY``. They can unsubscribe that address, and (``/p/via``) open its preference centre.
  Version 2 also names the message the link came in, so reports can say which campaign an opt-out followed;
  version 1 tokens (mails sent before) keep working.
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
_VERSION_WITH_MESSAGE = "2"
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
    message_id: uuid.UUID | None = None
    """The message whose link this is (version 2), for attributing the opt-out to its campaign."""


def sign_unsubscribe(key: bytes, target: UnsubscribeTarget) -> str:
    """``1`` + base64url(point id ‖ purpose id? ‖ MAC), or ``2`` + base64url(point ‖ purpose? ‖ message ‖ MAC).

    The MAC is HMAC-SHA256 over the version and the body, cut to 16 bytes.
    """
    body = target.contact_point_id.bytes + (target.purpose_id.bytes if target.purpose_id else b"")
    version = _VERSION
    if target.message_id is not None:
        version, body = _VERSION_WITH_MESSAGE, body + target.message_id.bytes
    mac = hmac.new(key, version.encode() + body, hashlib.sha256).digest()[:_MAC_BYTES]
    return version + base64.urlsafe_b64encode(body + mac).decode().rstrip("=")


def verify_unsubscribe(key: bytes, token: str) -> UnsubscribeTarget | None:
    """The target of a genuine token; ``None`` for anything forged, truncated or malformed."""
    version = token[:1]
    if version not in (_VERSION, _VERSION_WITH_MESSAGE) or len(token) > 110:  # noqa: PLR2004  # 108 at most
        return None
    payload = token[1:]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return None
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    uuids, rest = divmod(len(body), _UUID_BYTES)
    with_message = version == _VERSION_WITH_MESSAGE
    if rest or not (1 + with_message <= uuids <= 2 + with_message):
        return None
    expected = hmac.new(key, version.encode() + body, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        return None
    ids = [uuid.UUID(bytes=body[i : i + _UUID_BYTES]) for i in range(0, len(body), _UUID_BYTES)]
    message = ids.pop() if with_message else None
    purpose = ids[1] if len(ids) == 2 else None  # noqa: PLR2004  # point and purpose
    return UnsubscribeTarget(ids[0], purpose, message)
