"""Workspaces (a brand / data controller) and their API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, LargeBinary, String, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.auth import TENANT_SCOPES
from app.lib.orm import Base, CreatedAt, UUIDPrimaryKey

_SCOPES_SQL = ", ".join(f"'{scope.value}'" for scope in TENANT_SCOPES)  # never "operator"


class Workspace(UUIDPrimaryKey, CreatedAt, Base):
    """A brand or data controller; every other row belongs to exactly one."""

    __tablename__ = "workspaces"

    name: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    mail_domains: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    """The domains the tenant's ``email.from_address`` may use, set by the operator (CLI) only; ``NULL``: the
    default (the domain of ``MAIL_FROM``). A column of its own: the tenant's settings ``PUT`` cannot touch it."""
    exported_at: Mapped[datetime | None]
    """When the operator last took the workspace's export (``POST /v1/workspaces/{id}/export``): deletion asks
    for one taken after the ledger's last event."""
    exported_seq: Mapped[int | None] = mapped_column(BigInteger)
    """The ledger's last ``seq`` that export contained: a later event makes it outdated (``409 export_outdated``)."""
    deleted_at: Mapped[datetime | None]
    """Set when the workspace was deleted keeping its suppression keys: the row is then a tombstone that holds
    only the suppressions (and the purposes they name); no key, settings or other row is left."""

    __table_args__ = (CheckConstraint("length(name) BETWEEN 1 AND 200", name="name_length"),)


class SenderIdentity(Base):
    """A sender number, short code, alphanumeric sender or Messaging Service SID, claimed by one workspace.

    The primary key makes a sender belong to one workspace across the service: with a shared Twilio account,
    another workspace could otherwise send from it, and the replies to it (STOP included) would be recorded in
    the wrong ledger. Written in the transaction of the settings ``PUT`` that names the sender.
    """

    __tablename__ = "sender_identities"

    identity: Mapped[str] = mapped_column(Text, primary_key=True)
    """Normalised: E.164 for numbers, ``MG`` + lower-case hex for a Messaging Service, else upper-case text."""
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index("ix_sender_identities_workspace_id", "workspace_id"),)


class ApiKey(UUIDPrimaryKey, CreatedAt, Base):
    """An API key: only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    display_prefix: Mapped[str] = mapped_column(String(12))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("octet_length(secret_hash) = 32", name="secret_hash_sha256"),
        CheckConstraint("cardinality(scopes) >= 1", name="scopes_not_empty"),
        CheckConstraint(f"scopes <@ ARRAY[{_SCOPES_SQL}]::text[]", name="scopes_known"),
        Index("ix_api_keys_workspace_id", "workspace_id"),
    )


class OperatorKey(UUIDPrimaryKey, CreatedAt, Base):
    """The service operator's API key (scope ``operator``): belongs to no workspace, so it has a table of its own.

    It may create, list, export and delete workspaces and nothing else; only the SHA-256 of the secret is stored.
    Made and revoked by the CLI (``consent apikey create --operator``, ``consent apikey revoke --operator``).
    """

    __tablename__ = "operator_keys"

    name: Mapped[str] = mapped_column(Text)
    display_prefix: Mapped[str] = mapped_column(String(12))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    revoked_at: Mapped[datetime | None]

    __table_args__ = (CheckConstraint("octet_length(secret_hash) = 32", name="secret_hash_sha256"),)


class WorkspaceDeletion(Base):
    """The record of a workspace deleted for good, kept as the operator's accountability evidence.

    Keyed by the former workspace id (no foreign key: the workspace is gone); it holds when, by which operator key,
    when the export was taken and how many rows of each table went. No name, no settings, no personal data.
    """

    __tablename__ = "workspace_deletions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    deleted_at: Mapped[datetime]
    operator_key_id: Mapped[uuid.UUID | None]
    exported_at: Mapped[datetime | None]
    report: Mapped[dict[str, Any]] = mapped_column(JSONB)
