"""API types of the preference centre."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class PreferenceLinkOut(msgspec.Struct, kw_only=True):
    """A link to the contact's preference centre, for the brand's own messages. Shown once: only its hash is kept."""

    url: str
    expires_at: datetime
    link_id: uuid.UUID
    """Recorded as evidence with every change made through this link."""
