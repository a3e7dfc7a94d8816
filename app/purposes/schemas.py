"""API types of purposes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

PurposeKind = Literal["marketing", "transactional"]


class PurposeCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new purpose."""

    key: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^[a-z][a-z0-9_]{0,62}$",
            description="Stable identifier used by callers, e.g. `newsletter` (lower case, digits, underscore).",
        ),
    ]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    kind: PurposeKind


class PurposeOut(msgspec.Struct, kw_only=True):
    """A purpose."""

    id: uuid.UUID
    key: str
    name: str
    kind: PurposeKind
    created_at: datetime
