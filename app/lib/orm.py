"""The declarative base every model derives from, with deterministic constraint names for Alembic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Constraint, DateTime, ForeignKey, ForeignKeyConstraint, MetaData, Table, func
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from app.lib.ids import uuid7

#: The distribution column of every tenant table (Citus, docs/scaling.md).
TENANT_COLUMN = "workspace_id"


def _key_column(constraint: Constraint, table: Table) -> str:  # noqa: ARG001  # SQLAlchemy's token signature
    """A foreign key's own column: the one beside ``workspace_id`` in a co-located key (``workspace_id`` alone else)."""
    assert isinstance(constraint, ForeignKeyConstraint)
    names = [column.name for column in constraint.columns] or list(constraint.column_keys)
    return next((name for name in names if name != TENANT_COLUMN), names[0])


NAMING_CONVENTION: dict[str, Any] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    # fk_contact_points_contact_id_contacts for (workspace_id, contact_id) -> contacts: the names from before
    # the keys were co-located (migration 0040)
    "fk": "fk_%(table_name)s_%(key_column)s_%(referred_table_name)s",
    "key_column": _key_column,
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; relationships are ``lazy="raise"`` by convention (load explicitly)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}  # noqa: RUF012  # SQLAlchemy's class-level map


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UUIDPrimaryKey:
    """A time-ordered UUID primary key generated in the process."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)


class TenantKey:
    """The tenant half of a tenant table's primary key, ``(id, workspace_id)`` (migration 0040).

    Citus enforces a key only when it includes the distribution column (docs/scaling.md); ``id`` comes first so a
    look-up by id alone still reads the key's index. The ORM's identity stays ``id`` (generated, unique by itself),
    so ``session.get(Model, id)`` keeps working.
    """

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)

    @declared_attr.directive
    @classmethod
    def __mapper_args__(cls) -> dict[str, Any]:
        """The ORM's identity: ``id`` alone."""
        return {"primary_key": [cls.__table__.c.id]}  # type: ignore[attr-defined]  # set by declarative by now


def tenant_key(column: str, table: str, *, ondelete: str) -> ForeignKeyConstraint:
    """A co-located foreign key: ``(workspace_id, column)`` to ``table (workspace_id, id)``; same shard under Citus.

    A row may then reference only a row of its own workspace. Never ``SET NULL``: it would clear ``workspace_id``
    too (and Citus refuses it even with PostgreSQL 15's column list).
    """
    return ForeignKeyConstraint([TENANT_COLUMN, column], [f"{table}.{TENANT_COLUMN}", f"{table}.id"], ondelete=ondelete)


class CreatedAt:
    """When the row was written (database clock)."""

    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
