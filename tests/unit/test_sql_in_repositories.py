"""All SQL is in the repositories: a scan of the service's code finds no query outside them.

Allowed: each package's ``repository.py`` (and ``models.py`` for table definitions), ``lib/db.py`` (engine,
sessions, migrations), ``lib/orm.py`` (the declarative base and its column defaults), ``lib/embedded_pg.py``
(administers the embedded server: creates the database) and ``lib/copystream.py`` (runs a repository's COPY
statement into a response).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
ALLOWED = {"repository.py", "models.py"}
ALLOWED_PATHS = {APP / "lib" / name for name in ("db.py", "orm.py", "embedded_pg.py", "copystream.py")}
#: Query builders of SQLAlchemy; importing one means writing a query.
BUILDERS = {"select", "insert", "update", "delete", "text", "func", "and_", "or_", "exists", "case", "literal_column"}
#: Methods of sessions, connections and asyncpg drivers that run SQL or stage ORM writes.
SQL_METHODS = {
    "execute", "scalar", "scalars", "stream", "stream_scalars", "get", "add", "add_all", "delete", "merge",
    "flush", "refresh", "fetch", "fetchrow", "fetchval", "executemany", "copy_from_query",
    "copy_records_to_table", "copy_to_table", "copy_from_table",
}  # fmt: skip
#: The names the code gives to sessions, connections and drivers.
RECEIVERS = {"session", "db", "db_session", "driver", "connection", "conn"}


def _sources() -> list[Path]:
    return sorted(path for path in APP.rglob("*.py") if path.name not in ALLOWED and path not in ALLOWED_PATHS)


def _findings(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [f"imports sqlalchemy's {a.name}" for a in node.names if a.name in BUILDERS]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_METHODS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in RECEIVERS
        ):
            found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}(…)")
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(APP)))
def test_no_sql_outside_the_repositories(path):
    assert _findings(path) == []
