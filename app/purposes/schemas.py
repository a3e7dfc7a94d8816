"""API types of purposes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from app.domain.model import Channel
from app.lib.text import SINGLE_LINE

PurposeKind = Literal["marketing", "transactional"]

#: Product categories (the ``category`` of purchases) whose buyers may get a marketing purpose's email without
#: consent, as existing customers (UWG §7(3)): the purpose must advertise the company's own similar products.
SimilarProducts = Annotated[
    list[
        Annotated[
            str,
            msgspec.Meta(
                pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                description="A product category (lower case, digits, `_`, `-`).",
            ),
        ]
    ],
    msgspec.Meta(
        max_length=50,
        description="Product categories whose buyers may get this marketing purpose by email without consent "
        "(UWG §7(3) existing customers: the company's own similar products), until they object. Email only.",
    ),
]


class PurposeCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new purpose."""

    key: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^[a-z][a-z0-9_]{0,62}$",
            description="Stable identifier used by callers, e.g. `newsletter` (lower case, digits, underscore).",
        ),
    ]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200), SINGLE_LINE]  # shown in mail subjects
    kind: PurposeKind
    similar_products_of: SimilarProducts = msgspec.field(default_factory=list)


class PurposeOut(msgspec.Struct, kw_only=True):
    """A purpose."""

    id: uuid.UUID
    key: str
    name: str
    kind: PurposeKind
    created_at: datetime
    similar_products_of: list[str] = msgspec.field(default_factory=list)


Locale = Annotated[
    str, msgspec.Meta(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", description="Language tag, e.g. `de` or `de-AT`.")
]


class NoticeCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A consent text exactly as shown to people; immutable once created."""

    purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=63, description="Purpose key.")]
    channels: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=6)]
    locale: Locale
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]


class NoticeOut(msgspec.Struct, kw_only=True):
    """A notice version. ``sha256`` is over the UTF-8 text, so anyone can check a stored copy."""

    notice_id: uuid.UUID
    purpose: str
    channels: list[Channel]
    locale: str
    version: int
    sha256: str
    text: str
    created_at: datetime
