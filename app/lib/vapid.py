"""VAPID keys (RFC 8292): P-256 key pairs, their wire forms, and the private key sealed at rest."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_PRIVATE_BYTES = 32
_POINT_BYTES = 65  # uncompressed: 0x04 || X || Y
_AUTH_BYTES = 16


def b64url(data: bytes) -> str:
    """Unpadded base64url, as the Push API uses it."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding (also the standard alphabet, which some browsers send)."""
    cleaned = text.strip().replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))


def generate() -> tuple[str, str]:
    """A new key pair: (public key, private key), both base64url (uncompressed point, raw 32-byte scalar)."""
    private = ec.generate_private_key(ec.SECP256R1())
    return public_of(private), b64url(private.private_numbers().private_value.to_bytes(_PRIVATE_BYTES, "big"))


def load_private(text: str) -> ec.EllipticCurvePrivateKey:
    """A private key given as base64url raw scalar, or PEM; ``ValueError`` if it is neither."""
    if "-----BEGIN" in text:
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("not a P-256 private key")
        return key
    try:
        raw = unb64url(text)
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if len(raw) != _PRIVATE_BYTES:
        raise ValueError("a raw P-256 private key is 32 bytes")
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


def raw_private(key: ec.EllipticCurvePrivateKey) -> str:
    """The base64url raw scalar of ``key`` (what pywebpush's ``vapid_private_key`` accepts)."""
    return b64url(key.private_numbers().private_value.to_bytes(_PRIVATE_BYTES, "big"))


def public_of(key: ec.EllipticCurvePrivateKey) -> str:
    """The uncompressed public point of ``key``, base64url."""
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url(point)


def check_subscription_keys(p256dh: str, auth: str) -> str | None:
    """``None`` if the browser's keys are well formed, else the error code."""
    try:
        point = unb64url(p256dh)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except (binascii.Error, ValueError):
        return "invalid_p256dh"
    if len(point) != _POINT_BYTES:
        return "invalid_p256dh"
    try:
        secret = unb64url(auth)
    except (binascii.Error, ValueError):
        return "invalid_auth_secret"
    return None if len(secret) == _AUTH_BYTES else "invalid_auth_secret"
