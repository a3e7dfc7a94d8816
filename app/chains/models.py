"""Chains (versioned definitions), their runs, and each run's steps: the rows the chain runner claims."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.orm import Base, CreatedAt, TenantKey, UUIDPrimaryKey, tenant_key


class RunStatus(enum.StrEnum):
    """Where a run stands (``chain_runs.status``)."""

    ACTIVE = "active"
    """A step is still to be decided."""
    COMPLETED = "completed"
    """Every step was decided (sent or skipped)."""
    CANCELLED = "cancelled"
    """``DELETE``: the remaining steps were cancelled."""
    ENDED = "ended"
    """An opt-out or objection on the chain's purpose ended the remaining steps."""


class StepStatus(enum.StrEnum):
    """What became of one step of a run (``chain_steps.status``)."""

    PENDING = "pending"
    """Not decided yet: due at ``due_at``, or (``due_at`` empty) once the step before it is decided."""
    SENT = "sent"
    """A message was accepted for it (its delivery outcome is the message's)."""
    SKIPPED = "skipped"
    """Decided not to send: ``reason`` says why."""
    CANCELLED = "cancelled"
    """The run was cancelled before the step was due."""
    ENDED = "ended"
    """An opt-out or objection (``event_id``) ended it."""


def _known(column: str, values: type[enum.StrEnum]) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v.value) for v in values)})", name=f"{column}_known")


class Chain(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """One immutable version of a workspace's chain: a new definition under the same key is version n+1."""

    __tablename__ = "chains"

    key: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    purpose_id: Mapped[uuid.UUID]
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    stop_on_opt_out: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("workspace_id", "key", "version"),
        tenant_key("purpose_id", "purposes", ondelete="RESTRICT"),
        CheckConstraint("key ~ '^[a-z][a-z0-9_-]{0,62}$'", name="key_format"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("stop_on_opt_out IN ('purpose', 'channel')", name="stop_on_opt_out_known"),
    )


class ChainRun(UUIDPrimaryKey, TenantKey, CreatedAt, Base):
    """One contact going through one chain version."""

    __tablename__ = "chain_runs"

    chain_id: Mapped[uuid.UUID]
    contact_id: Mapped[uuid.UUID]
    variables: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    campaign: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    ended_by_event_id: Mapped[uuid.UUID | None]
    """The ledger event (an opt-out or objection) that ended the run, kept as an id like the ledger keeps ids."""
    key: Mapped[str | None] = mapped_column(Text)
    """The caller's key of a run started in a batch (``POST /v1/chains/{id}/runs/batch``, an item's ``key``): one
    run per chain version and key, however often the batch is retried. Empty for runs started one at a time."""

    __table_args__ = (
        tenant_key("chain_id", "chains", ondelete="CASCADE"),
        tenant_key("contact_id", "contacts", ondelete="CASCADE"),
        _known("status", RunStatus),
        CheckConstraint("char_length(campaign) BETWEEN 1 AND 100", name="campaign_length"),
        # the form of an Idempotency-Key value: 1 to 255 visible ASCII characters
        CheckConstraint("key ~ '^[!-~]{1,255}$'", name="key_format"),
        Index("ix_chain_runs_contact_id", "contact_id"),
        Index("ix_chain_runs_chain_id", "chain_id"),
        # an item key names one run of the chain version (migration 0044); the workspace leads, as in every key
        Index(
            "uq_chain_runs_key",
            "workspace_id",
            "chain_id",
            "key",
            unique=True,
            postgresql_where=text("key IS NOT NULL"),
        ),
    )


class ChainStep(UUIDPrimaryKey, TenantKey, Base):
    """One step of a run: pending until its ``due_at``, then decided once by whichever runner claims it."""

    __tablename__ = "chain_steps"

    run_id: Mapped[uuid.UUID]
    position: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime | None]
    """When the step is decided; empty while it waits for the step before it (``after_previous`` or order)."""
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    decided_at: Mapped[datetime | None]
    message_id: Mapped[uuid.UUID | None]
    """The message sent for the step. No foreign key since migration 0040: ``ON DELETE SET NULL`` through a key
    that includes ``workspace_id`` is what Citus cannot do, and a message goes only with its contact (the run goes
    first: the chains' privacy hook runs before the messages') or with its workspace."""
    reason: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[uuid.UUID | None]
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (
        UniqueConstraint("run_id", "position", "workspace_id", name="uq_chain_steps_run_id_position"),
        tenant_key("run_id", "chain_runs", ondelete="CASCADE"),
        _known("status", StepStatus),
        # what runners scan: armed steps that are still pending
        Index("ix_chain_steps_due", "due_at", postgresql_where=text("status = 'pending' AND due_at IS NOT NULL")),
        Index("ix_chain_steps_message_id", "message_id", postgresql_where=text("message_id IS NOT NULL")),
    )
