"""API types of purposes."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from app.domain.model import Channel
from app.domain.validity import SPAN_PATTERN
from app.lib.text import SINGLE_LINE

PurposeKind = Literal["marketing", "transactional"]

#: Product categories (the ``category`` of purchases) whose buyers may get a marketing purpose's email without
#: consent, as existing customers (UWG §7(3)): the purpose must advertise the company's own similar products.
SimilarProducts = Annotated[
    list[
        Annotated[
            str,
            msgspec.Meta(
                max_length=63,
                description="A product category: lower case letters, digits, `_` and `-`, from a letter or digit.",
            ),
        ]
    ],
    msgspec.Meta(
        max_length=50,
        description="Product categories whose buyers may get this marketing purpose by email without consent "
        "(UWG §7(3) existing customers: the company's own similar products), until they object. Email only.",
    ),
]
Span = Annotated[
    str,
    msgspec.Meta(
        max_length=40,
        description="How long a consent lasts since it was given: an ISO 8601 duration of years, months, weeks or "
        "days (`P24M`), counted on the workspace's wall clock (end of month clamped). Past it, eligibility answers "
        "`expired` and the sweep records `validity_ended`. Marketing purposes only.",
    ),
]
InactivitySpan = Annotated[
    str,
    msgspec.Meta(
        max_length=40,
        description="A consent ends after this long without engagement on its address (no delivered, opened or "
        "clicked message there; counted from the consent if there was none since), e.g. `P18M`.",
    ),
]
RepermissionSpan = Annotated[
    str,
    msgspec.Meta(
        max_length=40,
        description='How long before a consent\'s end a re-permission message with a "keep me subscribed" link is '
        "queued (once per consent period, while the consent is in force), e.g. `P30D`. Needs `validity` or "
        "`inactivity`.",
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
    validity: Span | None = None
    inactivity: InactivitySpan | None = None
    repermission_before: RepermissionSpan | None = None

    def __post_init__(self) -> None:
        """Say in words what is wrong (msgspec would answer with the whole regular expression)."""
        check_spans(self.validity, self.inactivity, self.repermission_before)
        for category in self.similar_products_of:
            if not _CATEGORY.fullmatch(category):
                raise ValueError(
                    f"similar_products_of: {category[:70]!r} is not a category: lower-case letters, digits, '_' and "
                    "'-', starting with a letter or digit (as the purchases name it, e.g. 'coffee')"
                )


class PurposeLifecycleIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A purpose's lifecycle as a whole: a field left out (or null) is cleared."""

    validity: Span | None = None
    inactivity: InactivitySpan | None = None
    repermission_before: RepermissionSpan | None = None

    def __post_init__(self) -> None:
        """Say in words what is wrong (msgspec would answer with the whole regular expression)."""
        check_spans(self.validity, self.inactivity, self.repermission_before)


_CATEGORY = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_SPAN = re.compile(SPAN_PATTERN)


def check_spans(validity: str | None, inactivity: str | None, repermission_before: str | None) -> None:
    """Each span given is an ISO 8601 duration of the kind a purpose takes, else a ``ValueError`` saying so."""
    for name, value in (
        ("validity", validity),
        ("inactivity", inactivity),
        ("repermission_before", repermission_before),
    ):
        if value is not None and not _SPAN.fullmatch(value):
            raise ValueError(
                f"{name}: {value[:40]!r} is not a span: an ISO 8601 duration of years, months, weeks or days such "
                "as P24M, P2Y, P6W or P30D (upper case; no hours)"
            )


class PurposeOut(msgspec.Struct, kw_only=True):
    """A purpose."""

    id: uuid.UUID
    key: str
    name: str
    kind: PurposeKind
    created_at: datetime
    similar_products_of: list[str] = msgspec.field(default_factory=list)
    validity: str | None = None
    inactivity: str | None = None
    repermission_before: str | None = None


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
