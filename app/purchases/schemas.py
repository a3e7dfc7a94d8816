"""API types of purchases (UWG §7(3) existing customers)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from app.ledger.schemas import Evidence
from app.lib.text import SINGLE_LINE
from app.purchases.models import CATEGORY_PATTERN

Category = Annotated[
    str,
    msgspec.Meta(
        pattern=CATEGORY_PATTERN,
        description="Product category, e.g. `coffee` (lower case, digits, `_`, `-`; up to 63 characters).",
    ),
]


class PurchaseIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A sale to the contact, with the email address used for it (UWG §7(3) condition 1).

    `objection_notice_shown` must be `true`: the person was clearly told at collection that they can object to the
    use of the address for advertising at any time, at no cost beyond the basic transmission rate (condition 4);
    `objection_notice_version` names the wording shown (e.g. the checkout's version).
    """

    reference: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=200, description="Your order number; unique per workspace."),
        SINGLE_LINE,
    ]
    purchased_at: (
        Annotated[
            datetime,
            msgspec.Meta(
                tz=True,
                description=(
                    "When the sale was made (RFC 3339 with a time zone; at most 10 years back, not ahead of the "
                    "server's clock by more than 5 minutes)."
                ),
            ),
        ]
        | None
    ) = None
    occurred_at: (
        Annotated[datetime, msgspec.Meta(tz=True, description="`purchased_at` under the name API.md gives it.")] | None
    ) = None
    category: Category
    email: Annotated[
        str,
        msgspec.Meta(
            min_length=3,
            max_length=320,
            description="The address used for the sale: one of the contact's, or a new one attached to it.",
        ),
    ]
    objection_notice_shown: bool = False
    objection_notice_version: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="The notice's version."), SINGLE_LINE]
        | None
    ) = None
    evidence: Evidence = msgspec.field(default_factory=Evidence)

    def __post_init__(self) -> None:
        """One time of sale: ``purchased_at``, or ``occurred_at`` (the contract's name), or both the same."""
        if self.purchased_at is None and self.occurred_at is None:
            raise ValueError("Object missing required field `purchased_at` (or `occurred_at`)")
        if self.purchased_at is not None and self.occurred_at is not None and self.purchased_at != self.occurred_at:
            raise ValueError("`purchased_at` and `occurred_at` name the same time; they differ")

    @property
    def sold_at(self) -> datetime:
        """When the sale was made."""
        at = self.purchased_at or self.occurred_at
        assert at is not None  # __post_init__
        return at


class PurchaseOut(msgspec.Struct, kw_only=True):
    """A recorded sale and the ledger event chained for it (the evidence of the `uwg_7_3` basis)."""

    id: uuid.UUID
    contact_point_id: uuid.UUID
    address_masked: str
    reference: str
    purchased_at: datetime
    category: str
    objection_notice_version: str | None
    event_id: uuid.UUID
    created_at: datetime


class ExportedPurchase(msgspec.Struct, kw_only=True):
    """A sale made with one of the person's addresses (subject access export)."""

    id: uuid.UUID
    contact_point_id: uuid.UUID
    reference: str
    purchased_at: datetime
    category: str
    objection_notice_version: str | None
    event_id: uuid.UUID
    created_at: datetime
