"""Tables of the ledger. Events are append-only (a trigger in the migration enforces it)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.model import (
    Channel,
    LegalBasis,
    Reachability,
    State,
    SuppressionReason,
    SuppressionScope,
    SuppressionSource,
    VerifiedVia,
)
from app.lib.ids import opaque_id
from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key


def _one_of(column: str, values: type[Any]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Contact(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """A person, as the caller knows them (``external_id``: CRM or shop id)."""

    __tablename__ = "contacts"

    #: random, not time-ordered: the id is answered to form keys (:func:`app.lib.ids.opaque_id`)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=opaque_id)

    external_id: Mapped[str | None] = mapped_column(Text)
    locale: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str | None] = mapped_column(Text)
    #: Merged into that contact (migration 0029): this row is left only so that its id and external id answer
    #: 409 ``contact_merged`` naming the survivor; it goes with the survivor (an erasure deletes both).
    merged_into: Mapped[uuid.UUID | None]
    merged_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("workspace_id", "external_id"),
        tenant_key("merged_into", "contacts", ondelete="CASCADE"),
        CheckConstraint("(merged_into IS NULL) = (merged_at IS NULL)", name="merged_both"),
        CheckConstraint("merged_into <> id", name="merged_elsewhere"),
        Index("ix_contacts_merged_into", "merged_into", postgresql_where=text("merged_into IS NOT NULL")),
        CheckConstraint("length(external_id) BETWEEN 1 AND 200", name="external_id_length"),
    )


class ContactPoint(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """One address on one channel; ``value`` is the normalised form, unique per workspace and channel."""

    __tablename__ = "contact_points"

    #: random, not time-ordered: the id is answered to form keys (:func:`app.lib.ids.opaque_id`)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=opaque_id)

    contact_id: Mapped[uuid.UUID]
    channel: Mapped[str] = mapped_column(Text)
    value: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    reachability: Mapped[str] = mapped_column(Text, server_default=Reachability.REACHABLE.value)
    reachability_changed_at: Mapped[datetime | None]
    suppression_keys: Mapped[list[bytes]] = mapped_column(ARRAY(LargeBinary), server_default=text("'{}'::bytea[]"))
    #: The contact's ``external_id``, kept equal to it by triggers (migration 0009), never written by the code:
    #: the audience export reads it here instead of joining a million contacts (1M contacts: about 1.4 s of CPU).
    contact_external_id: Mapped[str | None] = mapped_column(Text)
    #: When and how the address became known to be the contact's (``None``: not yet; migration 0019).
    #: Transactional messages go only to verified addresses: a form's ``signup`` key may name any address for any
    #: ``external_id``; the address's own proof (confirmation, start word, permission) or the tenant's records
    #: (import, API with ``consents:write``) verify it. Set once, never cleared.
    verified_at: Mapped[datetime | None]
    verified_via: Mapped[str | None] = mapped_column(Text)
    #: A ``signup`` key (a public form, an app) named this new address for a customer id (an existing contact, or
    #: an ``external_id`` the form names first): the address's own proof then shows only that whoever filled in
    #: the form controls it, not that it is that contact's, so only the tenant's records (import, a
    #: ``consents:write`` key) verify it (migration 0019).
    attached_by_form: Mapped[bool] = mapped_column(server_default=false(), default=False)

    __table_args__ = (
        UniqueConstraint("workspace_id", "channel", "value"),
        tenant_key("contact_id", "contacts", ondelete="CASCADE"),
        CheckConstraint(_one_of("channel", Channel), name="channel_known"),
        CheckConstraint(_one_of("reachability", Reachability), name="reachability_known"),
        CheckConstraint(
            f"(verified_at IS NULL AND verified_via IS NULL) OR "
            f"(verified_at IS NOT NULL AND {_one_of('verified_via', VerifiedVia)})",
            name="verified_known",
        ),
        Index("ix_contact_points_contact_id", "contact_id"),
        # the audience export finds the suppressed addresses from the suppressions' side: one probe per
        # suppression instead of unnesting the keys of every address (1M contacts: 4.5 s -> 0.4 s)
        # without a pending list (migration 0010): with one, every probe read all recent entries (20,000
        # contacts freshly loaded: 3 ms per probe, 2.1 s for the export's 567 suppressions instead of 12 ms)
        Index(
            "ix_contact_points_suppression_keys",
            "suppression_keys",
            postgresql_using="gin",
            postgresql_with={"fastupdate": "off"},
        ),
    )


class Consent(UUIDPrimaryKey, TenantKey, Base):
    """The current state of one (contact point, purpose): a projection of the events, same transaction.

    ``purpose_id`` NULL is the consent for *every marketing purpose* of the channel: objections and
    "withdraw everything" land there, so they also cover purposes created later.
    """

    __tablename__ = "consents"

    contact_id: Mapped[uuid.UUID]
    contact_point_id: Mapped[uuid.UUID]
    purpose_id: Mapped[uuid.UUID | None]
    channel: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, server_default=State.NONE.value)
    legal_basis: Mapped[str | None] = mapped_column(Text)
    notice_id: Mapped[uuid.UUID | None]
    since: Mapped[datetime | None]
    last_event_id: Mapped[uuid.UUID | None]
    version: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (
        # the name from before workspace_id joined it (migration 0040): upserts name the constraint
        UniqueConstraint(
            "contact_point_id",
            "purpose_id",
            "workspace_id",
            name="uq_consents_contact_point_id_purpose_id",
            postgresql_nulls_not_distinct=True,
        ),
        tenant_key("contact_id", "contacts", ondelete="CASCADE"),
        tenant_key("contact_point_id", "contact_points", ondelete="CASCADE"),
        tenant_key("purpose_id", "purposes", ondelete="RESTRICT"),
        tenant_key("notice_id", "notices", ondelete="RESTRICT"),
        CheckConstraint(_one_of("state", State), name="state_known"),
        CheckConstraint(_one_of("channel", Channel), name="channel_known"),
        CheckConstraint(f"legal_basis IS NULL OR {_one_of('legal_basis', LegalBasis)}", name="legal_basis_known"),
        Index("ix_consents_contact_id", "contact_id"),
        Index("ix_consents_workspace_purpose_channel_state", "workspace_id", "purpose_id", "channel", "state"),
    )


class ConsentEvent(UUIDPrimaryKey, TenantKey, Base):
    """One ledger entry.

    Ids of contacts and contact points are kept (pseudonymous) after erasure; the personal part (evidence)
    is deleted then, while its digest stays in the chain.

    Partitioned by month of ``recorded_at`` (migration 0041, :mod:`app.ledger.partitions`): the primary key
    includes it, as a partitioned table's keys must.

    A consent change inserts its event *unsealed* (``seq``, ``prev_hash``, ``hash`` NULL) and the sealer
    (:mod:`app.ledger.sealer`) gives it its place in the chain after commit, in ``intake`` order (migration 0043).
    """

    __tablename__ = "consent_events"

    seq: Mapped[int | None] = mapped_column(BigInteger)
    contact_id: Mapped[uuid.UUID | None]
    contact_point_id: Mapped[uuid.UUID]
    purpose_id: Mapped[uuid.UUID | None]
    channel: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(Text)
    from_state: Mapped[str] = mapped_column(Text)
    to_state: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str | None] = mapped_column(Text)
    notice_id: Mapped[uuid.UUID | None]
    actor_type: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[str | None] = mapped_column(Text)
    personal: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    personal_digest: Mapped[bytes] = mapped_column(LargeBinary)
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(primary_key=True)
    prev_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    intake: Mapped[int | None] = mapped_column(
        BigInteger, server_default=text("nextval('consent_events_intake_seq'::regclass)")
    )
    """Drawn at insert (after the consent rows' locks): the order the sealer chains unsealed events in."""
    doi_started_at: Mapped[datetime | None]
    """On a double opt-in confirmation: when the pending state it confirms started (the ``occurred_at`` of the newest
    signup of the same contact, address and purpose before it); set by the database at insert (the trigger
    ``consent_events_doi_start``, migration 0045), whatever a writer passes; not in the chain's hash."""

    __table_args__ = (
        # (workspace_id, seq) is unique in each partition, by an index of the partition's own (migration 0041): one
        # on the partitioned table would have to include recorded_at. Across months the chain head keeps one event
        # per seq (its last_seq + 1 under its lock) and the chain's verification would find a second one
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint("octet_length(hash) = 32 AND octet_length(prev_hash) = 32", name="hash_sizes"),
        CheckConstraint("(seq IS NULL) = (hash IS NULL) AND (seq IS NULL) = (prev_hash IS NULL)", name="sealed_whole"),
        CheckConstraint(_one_of("to_state", State), name="to_state_known"),
        CheckConstraint(_one_of("from_state", State), name="from_state_known"),
        Index("ix_consent_events_contact_id_seq", "contact_id", "seq"),
        Index("ix_consent_events_workspace_recorded_at", "workspace_id", "recorded_at"),
        Index("ix_consent_events_unsealed", "workspace_id", "intake", postgresql_where=text("seq IS NULL")),
        {"postgresql_partition_by": "RANGE (recorded_at)"},
    )


class LedgerHead(Base):
    """The newest event of a workspace's chain; locking it serialises appends and pins the tail."""

    __tablename__ = "ledger_heads"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_hash: Mapped[bytes] = mapped_column(LargeBinary)


class RobinsonKey(CreatedAt, Base):
    """A Robinson list entry's keyed hash (print, all marketing, permanent): a suppression in a table of its own.

    Read beside :class:`Suppression` by every reader of suppressions, as one of scope ``all_marketing``, channel
    ``print``, reason ``robinson``, without end (migration 0042). Its own table so that an import of millions
    of entries is one insert in key order into one B-tree; no foreign key is checked per row: the import locks the
    workspace row once (:func:`app.ledger.repository.add_robinson_keys_from_table`), and a workspace deletion
    treats these rows as it treats suppressions.
    """

    __tablename__ = "robinson_keys"

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    key_version: Mapped[int] = mapped_column(Integer)


#: Every element of ``suppressions.reasons`` is a known source (and there is one at least): migration 0047.
REASONS_KNOWN = (
    f"cardinality(reasons) > 0 AND reasons <@ ARRAY[{', '.join(repr(v.value) for v in SuppressionSource)}]::text[]"
)


class Suppression(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """A keyed hash of a normalised identifier that must not be contacted; survives erasure (no clear text).

    ``until`` is set only for a pause (reason ``paused``): the suppression holds while ``until`` is in the future
    and every reader compares it with the time it decides for, so a pause ends by itself (migration 0022).
    A permanent suppression of the same key and scope replaces a pause (:func:`app.ledger.repository.add_suppressions`)
    and keeps its end in ``paused_until``; a pause of a key already suppressed for good is kept there too, so that
    lifting the permanent reasons leaves the pause running (:func:`app.ledger.repository.lift_reason`).

    ``reason`` is the label of the first writer (readers show it); ``reasons`` every source that put the row in force
    (migration 0047): each writer adds its own, a withdrawn objection takes its own away, and a row without any goes.
    A row written before 0047 holds ``unrecorded`` beside its label: what else wrote its key then is not known.
    """

    __tablename__ = "suppressions"

    key: Mapped[bytes] = mapped_column(LargeBinary)
    key_version: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    purpose_id: Mapped[uuid.UUID | None]
    reason: Mapped[str] = mapped_column(Text)
    # a writer that does not name its source (a hand-written INSERT, a COPY) leaves a row no withdrawal lifts
    reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{unrecorded}'::text[]"))
    until: Mapped[datetime | None]
    paused_until: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint(
            "workspace_id", "key", "key_version", "scope", "purpose_id", postgresql_nulls_not_distinct=True
        ),
        tenant_key("purpose_id", "purposes", ondelete="CASCADE"),
        CheckConstraint(_one_of("scope", SuppressionScope), name="scope_known"),
        CheckConstraint(_one_of("reason", SuppressionReason), name="reason_known"),
        CheckConstraint("(scope = 'purpose') = (purpose_id IS NOT NULL)", name="purpose_iff_scoped"),
        # a pause has an end and nothing else has; it pauses marketing only (transactional messages go on)
        CheckConstraint(
            f"(reason = '{SuppressionReason.PAUSED.value}') = (until IS NOT NULL) AND "
            f"(until IS NULL OR scope <> '{SuppressionScope.ALL.value}')",
            name="until_iff_paused",
        ),
        CheckConstraint(REASONS_KNOWN, name="reasons_known"),
        # a pause kept under a permanent row (its own row has ``until``)
        CheckConstraint("paused_until IS NULL OR until IS NULL", name="paused_until_if_permanent"),
    )
