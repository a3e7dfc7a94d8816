"""The purchases table (migration 0033), and the ledger index the existing-customer basis is read through."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.ledger.models import ConsentEvent
from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key

#: A product category: lower case, digits, ``_`` and ``-`` (what purposes name in ``similar_products_of``).
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Purchase(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """A sale made with an email address, recorded with the objection notice shown at collection (UWG §7(3)).

    Keyed on the address (not the contact): an identity merge moves addresses, and the purchase goes with its
    address. ``event_id`` is the ``purchase`` event the ledger chained for it, the evidence eligibility answers.
    """

    __tablename__ = "purchases"

    contact_point_id: Mapped[uuid.UUID]
    reference: Mapped[str] = mapped_column(Text)
    purchased_at: Mapped[datetime]
    category: Mapped[str] = mapped_column(Text)
    #: The version (or other name) of the objection notice shown at collection, if the caller gave one.
    objection_notice_version: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[uuid.UUID]

    __table_args__ = (
        UniqueConstraint("workspace_id", "reference"),
        tenant_key("contact_point_id", "contact_points", ondelete="CASCADE"),
        CheckConstraint("length(reference) BETWEEN 1 AND 200", name="reference_length"),
        CheckConstraint(f"category ~ '{CATEGORY_PATTERN}'", name="category_format"),
        CheckConstraint(
            "objection_notice_version IS NULL OR length(objection_notice_version) BETWEEN 1 AND 200",
            name="notice_version_length",
        ),
        # eligibility looks up the newest purchase of an address in the purpose's categories
        Index("ix_purchases_contact_point_id_category", "contact_point_id", "category", "purchased_at"),
    )


#: Eligibility asks, for an address with a purchase, whether a withdrawal or objection was ever recorded for it (the
#: existing-customer basis then has ended for good): one probe of this partial index instead of reading the
#: address's history. Declared here, beside the only reader, on the ledger's table (migration 0033).
WITHDRAWALS_INDEX = Index(
    "ix_consent_events_withdrawals",
    ConsentEvent.contact_point_id,
    ConsentEvent.purpose_id,
    postgresql_where=text("to_state IN ('opted_out', 'objected')"),
)
