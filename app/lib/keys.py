"""Keys derived from ``CONSENT_SECRET_KEY`` (HKDF-SHA256, one label per use) and the suppression keys built on them."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
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

    def suppression_keys(self, channel: str, normalised: str) -> dict[int, bytes]:
        """``HMAC-SHA256(pepper_vN, channel:identifier)`` for every pepper version (CHANNEL_RULES.md §8 X4)."""
        message = f"{channel}:{normalised}".encode()
        return {version: hmac.new(pepper, message, hashlib.sha256).digest() for version, pepper in self.peppers.items()}
