"""Keys derived from ``CONSENT_SECRET_KEY`` (HKDF-SHA256, one label per use) and the suppression keys built on them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The pepper version new suppression keys are written with; lookups compute every version in ``peppers``.
CURRENT_PEPPER_VERSION = 1


def derive(secret: bytes, label: str, length: int = 32) -> bytes:
    """A subkey of ``secret`` for ``label`` (``"suppression-pepper-v1"``, ``"token"``…)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode()).derive(secret)


class Keys:
    """The derived keys of one process."""

    def __init__(self, secret: bytes) -> None:
        self.peppers = {CURRENT_PEPPER_VERSION: derive(secret, f"suppression-pepper-v{CURRENT_PEPPER_VERSION}")}
        self._sealing = AESGCM(derive(secret, "settings-encryption-v1"))
        self.unsubscribe = derive(secret, "unsubscribe-token-v1")
        self.rate_limit = derive(secret, "rate-limit-v1")
        self._fingerprint = derive(secret, "request-fingerprint-v1")

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt a stored secret (a provider credential); ``context`` binds it to where it is stored."""
        nonce = os.urandom(12)
        sealed = self._sealing.encrypt(nonce, plaintext.encode(), context.encode())
        return "v1:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, token: str, context: str) -> str:
        """Decrypt what :meth:`seal` made for the same ``context``."""
        version, _, payload = token.partition(":")
        if version != "v1":
            raise ValueError("unknown sealing version")
        raw = base64.urlsafe_b64decode(payload)
        return self._sealing.decrypt(raw[:12], raw[12:], context.encode()).decode()

    def request_fingerprint(self, *parts: bytes) -> bytes:
        """The keyed hash an idempotent request is recognised by.

        Its body names people: a plain hash of a short body could be matched by guessing it, after an erasure too.
        """
        return hmac.new(self._fingerprint, b"\0".join(parts), hashlib.sha256).digest()

    def rate_limit_key(self, kind: str, value: str) -> bytes:
        """The keyed hash a rate-limit counter is stored under (no address or IP in clear)."""
        return hmac.new(self.rate_limit, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    def point_keys(self, channel: str, value: str, details: dict[str, object]) -> list[bytes]:
        """The current-version keys a contact point is matched against suppressions by.

        Email is lower-cased as a whole (over-matching is the safe side); a postal address has the person's key
        and the household's (a "no advertising" sticker covers everyone living there).
        """
        identifiers = [value.lower() if channel == "email" else value]
        household = details.get("address_key")
        if channel == "print" and isinstance(household, str) and household != value:
            identifiers.append(household)
        return [self.suppression_keys(channel, identifier)[CURRENT_PEPPER_VERSION] for identifier in identifiers]

    def suppression_keys(self, channel: str, normalised: str) -> dict[int, bytes]:
        """``HMAC-SHA256(pepper_vN, channel:identifier)`` for every pepper version (CHANNEL_RULES.md §8 X4)."""
        return suppression_keys(self.peppers, channel, normalised)


class PreparedHmac:
    """``hmac.digest(key, message, "sha256")`` with the key's padded blocks hashed once, not per message.

    For the millions of keys of a list: OpenSSL's one-shot HMAC sets the key up on every call, about twice the
    cost of the two hashes themselves (``tests/unit/test_keys.py`` holds the two equal).
    """

    _BLOCK = 64  # SHA-256's block size

    def __init__(self, key: bytes) -> None:
        if len(key) > self._BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(self._BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))

    def digest(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under the key."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def suppression_keys(peppers: dict[int, bytes], channel: str, normalised: str) -> dict[int, bytes]:
    """:meth:`Keys.suppression_keys` with the peppers given: for a worker process that holds only these."""
    message = f"{channel}:{normalised}".encode()
    return {version: hmac.digest(pepper, message, "sha256") for version, pepper in peppers.items()}
