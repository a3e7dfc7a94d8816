"""The schema keeps Citus' multi-tenant rules (issue 21, item 6; docs/scaling.md), read from the migrated catalog.

Every table is either a **tenant** table (it has ``workspace_id``, the distribution column), a **reference** table
(a global catalogue replicated to every node, named below with the reason) or a **local** one (Alembic's own). For
a tenant table, Citus enforces a primary key, unique constraint or unique index only when it includes the
distribution column, and a foreign key to another tenant table only when both sides carry ``workspace_id`` at the
same position (the rows are then on the same shard); such a key may not ``SET NULL`` / ``SET DEFAULT`` on delete
(it would clear the distribution column too, even with PostgreSQL 15's column list: Citus refuses it) nor cascade
an update. A reference table may reference only reference tables. A new table that fits none of this fails here,
named, before it can fail ``create_distributed_table`` on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

DISTRIBUTION_COLUMN = "workspace_id"

#: Global catalogues: replicated to every node (``create_reference_table``), each with the reason it is one.
REFERENCE_TABLES = {
    "workspaces": "the tenants themselves; every tenant table's workspace_id references it",
    "operator_keys": "the service operator's keys: they belong to no workspace",
    "workspace_deletions": "the operator's record of deleted workspaces, keyed by the former id (no workspace left)",
    "api_keys": "found by the secret's hash on every request, before the workspace is known; written rarely",
    "sender_identities": "a sender belongs to one workspace across the service (its primary key) and is looked up "
    "by an inbound message before the workspace is known",
}
#: Tables that stay on the coordinator only.
LOCAL_TABLES = {"alembic_version": "Alembic's bookkeeping"}

_TABLES = text(
    """
    SELECT c.relname AS name,
           EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attname = :dist AND a.attnum > 0 AND NOT a.attisdropped) AS tenant
      FROM pg_class c
     WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    """
)

#: Primary keys, unique and exclusion constraints, and unique indexes that back no constraint (partial ones
#: included), with their key columns (an expression's position has no name: it never counts as the column).
_UNIQUE_KEYS = text(
    """
    SELECT t.relname AS table_name, i.relname AS key_name,
           coalesce(con.contype::text, 'i') AS kind,
           array_agg(a.attname::text ORDER BY k.n) FILTER (WHERE a.attname IS NOT NULL) AS columns
      FROM pg_index x
      JOIN pg_class i ON i.oid = x.indexrelid
      JOIN pg_class t ON t.oid = x.indrelid
      LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = x.indrelid
       AND con.contype IN ('p', 'u', 'x')
      CROSS JOIN LATERAL unnest(x.indkey[0:x.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, n)
      LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum AND k.attnum > 0
     WHERE t.relnamespace = current_schema()::regnamespace AND NOT t.relispartition
       AND (x.indisunique OR x.indisexclusion)
     GROUP BY t.relname, i.relname, con.contype
    """
)

_FOREIGN_KEYS = text(
    """
    SELECT con.conname AS name, t.relname AS table_name, r.relname AS referenced,
           (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) AS columns,
           (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
              JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum) AS referenced_columns,
           con.confdeltype::text AS on_delete, con.confupdtype::text AS on_update
      FROM pg_constraint con
      JOIN pg_class t ON t.oid = con.conrelid
      JOIN pg_class r ON r.oid = con.confrelid
     WHERE con.contype = 'f' AND t.relnamespace = current_schema()::regnamespace AND NOT t.relispartition
       AND con.conparentid = 0
    """
)


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the rules read: tenant and other tables, unique keys and foreign keys."""

    tenant: frozenset[str]
    others: frozenset[str]
    unique_keys: list[tuple[str, str, str, list[str]]]
    foreign_keys: list[tuple[str, str, str, list[str], list[str], str, str]]


async def read_catalog(conn: AsyncConnection) -> Catalog:
    """The schema's tables, unique keys and foreign keys, as ``conn`` sees them."""
    tables = (await conn.execute(_TABLES, {"dist": DISTRIBUTION_COLUMN})).all()
    keys = (await conn.execute(_UNIQUE_KEYS)).all()
    fks = (await conn.execute(_FOREIGN_KEYS)).all()
    return Catalog(
        tenant=frozenset(t.name for t in tables if t.tenant and t.name not in REFERENCE_TABLES),
        others=frozenset(t.name for t in tables if not t.tenant or t.name in REFERENCE_TABLES),
        unique_keys=[(k.table_name, k.key_name, k.kind, list(k.columns or [])) for k in keys],
        foreign_keys=[
            (f.name, f.table_name, f.referenced, f.columns, f.referenced_columns, f.on_delete, f.on_update) for f in fks
        ],
    )


_KINDS = {"p": "primary key", "u": "unique constraint", "x": "exclusion constraint", "i": "unique index"}
_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def violations(catalog: Catalog) -> list[str]:
    """Every break of the rules, one line each naming the table and the constraint."""
    dist = DISTRIBUTION_COLUMN
    unlisted = sorted(catalog.others - set(REFERENCE_TABLES) - set(LOCAL_TABLES))
    found = [f"{name}: no {dist} column and not listed as a reference table" for name in unlisted]
    gone = sorted(set(REFERENCE_TABLES) - catalog.others - catalog.tenant)
    found += [f"{name}: listed as a reference table but not in the schema" for name in gone]
    found += [
        f"{table}: {_KINDS[kind]} {key} ({', '.join(columns) or 'an expression'}) lacks {dist}"
        for table, key, kind, columns in sorted(catalog.unique_keys)
        if table in catalog.tenant and dist not in columns
    ]
    for foreign_key in sorted(catalog.foreign_keys):
        found += _foreign_key_violations(catalog, *foreign_key)
    return found


def _foreign_key_violations(
    catalog: Catalog,
    name: str,
    table: str,
    referenced: str,
    columns: list[str],
    referenced_columns: list[str],
    on_delete: str,
    on_update: str,
) -> list[str]:
    dist = DISTRIBUTION_COLUMN
    found = []
    if table in catalog.tenant and referenced in catalog.tenant:
        paired = dist in columns and dist in referenced_columns
        if not paired or columns.index(dist) != referenced_columns.index(dist):
            found.append(
                f"{table}: foreign key {name} ({', '.join(columns)}) -> {referenced} "
                f"({', '.join(referenced_columns)}) does not pair {dist} with {dist}"
            )
    elif table not in catalog.tenant and referenced in catalog.tenant:
        found.append(
            f"{table}: not a tenant table, but its foreign key {name} references the tenant table {referenced}"
        )
    if table in catalog.tenant and dist in columns:
        if on_delete in {"n", "d"}:
            found.append(f"{table}: foreign key {name} is ON DELETE {_ACTIONS[on_delete]} and includes {dist}")
        if on_update in {"n", "d", "c"}:
            found.append(f"{table}: foreign key {name} is ON UPDATE {_ACTIONS[on_update]} and includes {dist}")
    return found


async def test_every_table_keeps_the_distribution_rules(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        catalog = await read_catalog(conn)
    assert catalog.tenant, "no tenant table found: is the schema migrated?"
    found = violations(catalog)
    assert not found, "tables break Citus' multi-tenant rules (docs/scaling.md):\n" + "\n".join(found)


async def test_the_rules_catch_each_kind_of_break(engine: AsyncEngine) -> None:
    """The check itself: tables made to break each rule are named (in a transaction rolled back)."""
    async with engine.connect() as conn, conn.begin() as transaction:
        for statement in (
            "CREATE TABLE zz_orphan (id uuid PRIMARY KEY)",
            "CREATE TABLE zz_parent (id uuid, workspace_id uuid, code text UNIQUE, PRIMARY KEY (id, workspace_id))",
            """
            CREATE TABLE zz_child (
                id uuid PRIMARY KEY,
                workspace_id uuid NOT NULL,
                parent_code text REFERENCES zz_parent (code),
                other_id uuid,
                swapped_id uuid,
                FOREIGN KEY (workspace_id, other_id) REFERENCES zz_parent (workspace_id, id) ON DELETE SET NULL,
                FOREIGN KEY (swapped_id, workspace_id) REFERENCES zz_parent (workspace_id, id) ON UPDATE CASCADE
            )
            """,
            "CREATE UNIQUE INDEX zz_child_other ON zz_child (other_id) WHERE other_id IS NOT NULL",
            (
                "ALTER TABLE workspaces ADD CONSTRAINT zz_ref_to_tenant FOREIGN KEY (id, id) "
                "REFERENCES zz_parent (id, workspace_id) NOT VALID"
            ),
        ):
            await conn.execute(text(statement))
        found = "\n".join(violations(await read_catalog(conn)))
        await transaction.rollback()
    assert "zz_orphan: no workspace_id column and not listed as a reference table" in found
    assert "zz_parent: unique constraint zz_parent_code_key (code) lacks workspace_id" in found
    assert "zz_parent: primary key" not in found
    assert "zz_child: primary key zz_child_pkey (id) lacks workspace_id" in found
    assert "zz_child: unique index zz_child_other (other_id) lacks workspace_id" in found
    assert "(parent_code) -> zz_parent (code) does not pair workspace_id with workspace_id" in found
    assert "(swapped_id, workspace_id) -> zz_parent (workspace_id, id) does not pair" in found
    assert "(workspace_id, other_id) -> zz_parent (workspace_id, id) does not pair" not in found
    assert "is ON DELETE SET NULL and includes workspace_id" in found
    assert "is ON UPDATE CASCADE and includes workspace_id" in found
    assert "workspaces: not a tenant table, but its foreign key zz_ref_to_tenant references the tenant table" in found


async def test_the_commands_name_every_table(engine: AsyncEngine) -> None:
    """docs/scaling.md distributes every tenant table and makes every listed reference table one."""
    commands = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    async with engine.connect() as conn:
        catalog = await read_catalog(conn)
    missing = [name for name in REFERENCE_TABLES if f"create_reference_table('{name}')" not in commands]
    missing += [
        name
        for name in sorted(catalog.tenant)
        if f"create_distributed_table('{name}', '{DISTRIBUTION_COLUMN}'" not in commands
    ]
    assert not missing, f"docs/scaling.md has no command for: {missing}"
