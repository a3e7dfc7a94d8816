"""The reports' rollups: counters per workspace and hour, kept by the aggregator (:mod:`app.reports.service`).

None of them names a person: they count events by channel, purpose, source, trigger and outcome. The message
queue holds ids of message events only until the next catch-up, and goes with its event when a message is erased.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Identity, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, TenantKey, tenant_key


class _Counter(TenantKey):
    """A surrogate key (the natural key has NULLs, held unique by ``NULLS NOT DISTINCT``) and the count."""

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class _Rollup(_Counter):
    """A counter the aggregator keeps: ``workspace_id`` without a foreign key (migration 0048).

    Derived counts, written only by a catch-up or a rebuild, under the workspace's watermark lock
    (:func:`app.reports.repository.lock_watermark` says how that keeps them from outliving their workspace): a
    foreign key's check per row was about 30 % of writing a rebuild's counters (docs/benchmarks.md); a workspace's
    deletion deletes them in its rounds and, under its row's ``FOR UPDATE`` lock, in its last step
    (:meth:`app.workspaces.operator._Deletion.finish`).
    """

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)


class ReportWatermark(Base):
    """How far the aggregator has read a workspace's ledger (its ``seq``); locking it serialises catch-ups."""

    __tablename__ = "report_watermarks"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    ledger_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")


class ReportConsentCount(_Rollup, Base):
    """Ledger events per hour x channel x purpose x source x trigger x (from, to) state x detail x campaign.

    ``campaign`` is the label of the message an event is attributed to (an opt-out a campaign caused), else NULL.
    """

    __tablename__ = "report_consent_counts"

    hour: Mapped[datetime]
    channel: Mapped[str] = mapped_column(Text)
    purpose_id: Mapped[uuid.UUID | None]
    source: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(Text)
    from_state: Mapped[str] = mapped_column(Text)
    to_state: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    campaign: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint(
            "workspace_id",
            "hour",
            "channel",
            "purpose_id",
            "source",
            "trigger",
            "from_state",
            "to_state",
            "detail",
            "campaign",
            name="uq_report_consent_counts_key",
            postgresql_nulls_not_distinct=True,
        ),
    )


class ReportConsentDaily(_Rollup, Base):
    """The same counters per UTC day (``day`` is its midnight): what day, week and month reports read.

    A fine history fills almost every hour x purpose x source x transition, so the hourly table barely
    compresses the ledger; a day holds 24 times fewer rows (docs/benchmarks.md, "Reports").
    """

    __tablename__ = "report_consent_daily"

    day: Mapped[datetime]
    channel: Mapped[str] = mapped_column(Text)
    purpose_id: Mapped[uuid.UUID | None]
    source: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str] = mapped_column(Text)
    from_state: Mapped[str] = mapped_column(Text)
    to_state: Mapped[str] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    campaign: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint(
            "workspace_id",
            "day",
            "channel",
            "purpose_id",
            "source",
            "trigger",
            "from_state",
            "to_state",
            "detail",
            "campaign",
            name="uq_report_consent_daily_key",
            postgresql_nulls_not_distinct=True,
        ),
    )


class ReportDoi(_Rollup, Base):
    """Double opt-in per signup cohort (UTC day).

    ``confirm_s`` NULL counts pending started; otherwise confirmations after that many seconds (two significant
    digits).
    """

    __tablename__ = "report_doi"

    cohort_day: Mapped[date] = mapped_column(Date)
    channel: Mapped[str] = mapped_column(Text)
    purpose_id: Mapped[uuid.UUID | None]
    confirm_s: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint(
            "workspace_id",
            "cohort_day",
            "channel",
            "purpose_id",
            "confirm_s",
            name="uq_report_doi_key",
            postgresql_nulls_not_distinct=True,
        ),
    )


class ReportMessageCount(_Rollup, Base):
    """Message outcomes per hour x channel x provider x purpose x outcome x campaign; ``latencies`` on ``sent`` rows.

    ``latencies``: how many of the row's events took each queue-to-sent time, ``{"milliseconds": count}`` with the
    milliseconds rounded to two significant digits (a ``sent`` whose delivery has no ``queued`` step is counted in
    ``n`` only); NULL on the other outcomes. One row per key, not one per latency (migration 0049).

    Besides the message history's steps, two outcomes come from the ledger: ``complaint`` and ``opt_out`` (an
    opt-out attributed to a message: its unsubscribe link, or a STOP after it).
    """

    __tablename__ = "report_message_counts"

    hour: Mapped[datetime]
    channel: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    purpose_id: Mapped[uuid.UUID | None]
    outcome: Mapped[str] = mapped_column(Text)
    campaign: Mapped[str | None] = mapped_column(Text)
    latencies: Mapped[dict[str, int] | None] = mapped_column(JSONB)

    __table_args__ = (
        UniqueConstraint(
            "workspace_id",
            "hour",
            "channel",
            "provider",
            "purpose_id",
            "outcome",
            "campaign",
            name="uq_report_message_counts_key",
            postgresql_nulls_not_distinct=True,
        ),
    )


class ReportMessageDaily(_Rollup, Base):
    """The message counters per UTC day (``day`` is its midnight): what day, week and month reports read."""

    __tablename__ = "report_message_daily"

    day: Mapped[datetime]
    channel: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    purpose_id: Mapped[uuid.UUID | None]
    outcome: Mapped[str] = mapped_column(Text)
    campaign: Mapped[str | None] = mapped_column(Text)
    latencies: Mapped[dict[str, int] | None] = mapped_column(JSONB)

    __table_args__ = (
        UniqueConstraint(
            "workspace_id",
            "day",
            "channel",
            "provider",
            "purpose_id",
            "outcome",
            "campaign",
            name="uq_report_message_daily_key",
            postgresql_nulls_not_distinct=True,
        ),
    )


class ReportMessageQueue(TenantKey, Base):
    """Message events not counted yet, queued by a trigger on ``message_events`` (migration 0020).

    Message events carry no sequence that commits in order (as the ledger's ``seq`` does), so a watermark could
    skip one committed late; the queue is consumed instead, in the transaction that counts it.
    """

    __tablename__ = "report_message_queue"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID]

    __table_args__ = (
        tenant_key("event_id", "message_events", ondelete="CASCADE"),
        Index("ix_report_message_queue_workspace_id", "workspace_id"),
        Index("ix_report_message_queue_event_id", "event_id"),
    )


class ReportStandingDaily(_Counter, Base):
    """Standing totals no ledger event dates, taken as snapshots: the day's row is its last snapshot.

    ``metric``: ``eligible_total`` (addresses the send gate permits for the purpose now: permitted, reachable, not
    suppressed — the audience export's count; one row per channel x purpose, zeros included),
    ``suppressions_total`` (suppressions in force per channel; ``purpose_id`` set for a purpose-scoped one) and
    ``suppressions_added`` (of those, the ones made that UTC day). ``taken_at``: when the snapshot was taken.
    """

    __tablename__ = "report_standing_daily"

    day: Mapped[datetime]
    metric: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(Text)
    purpose_id: Mapped[uuid.UUID | None]
    taken_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint(
            "workspace_id",
            "day",
            "metric",
            "channel",
            "purpose_id",
            name="uq_report_standing_daily_key",
            postgresql_nulls_not_distinct=True,
        ),
        # the last snapshot of each workspace, every minute in every process (migration 0038)
        Index("ix_report_standing_daily_workspace_id_taken_at", "workspace_id", "taken_at"),
    )
