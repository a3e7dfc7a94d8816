"""Purposes: the stored lifecycle spans checked as the API checks them (hostile review of 2026-12-05).

The facts queries cast a purpose's stored ``validity`` / ``inactivity`` to an interval as it is (the database
computes every end), so the checks now hold the API's limits too: longer than zero (``P0D`` would end every
consent at once), at most 100 years. A span only a hand edit could have stored and the service cannot parse
(``parse_span`` refuses it: the sweep skipped such a purpose) is cleared first, as the API would have refused it;
``repermission_before`` goes with the spans it needs (its own check).

Revision ID: 0037
Revises: 0034
Create Date: 2026-12-05 22:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0037"
down_revision: str | None = "0034"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SPAN = "^P([0-9]{1,3}Y)?([0-9]{1,4}M)?([0-9]{1,4}W)?([0-9]{1,5}D)?$"
_COLUMNS = ("validity", "inactivity", "repermission_before")


def _check(column: str) -> str:
    interval = f"CAST({column} AS interval)"
    return (
        f"{column} ~ '{_SPAN}' AND {column} <> 'P' AND {interval} <> interval '0'"
        f" AND extract(year FROM {interval}) * 12 + extract(month FROM {interval}) <= 1200"
        f" AND extract(day FROM {interval}) <= 36500"
    )


def upgrade() -> None:
    for column in _COLUMNS:
        op.drop_constraint(op.f(f"ck_purposes_{column}_span"), "purposes", type_="check")
        op.execute(f"UPDATE purposes SET {column} = NULL WHERE {column} IS NOT NULL AND NOT ({_check(column)})")  # noqa: S608
    op.execute(
        "UPDATE purposes SET repermission_before = NULL WHERE validity IS NULL AND inactivity IS NULL"
        " AND repermission_before IS NOT NULL"
    )
    for column in _COLUMNS:
        op.create_check_constraint(op.f(f"ck_purposes_{column}_span"), "purposes", _check(column))


def downgrade() -> None:
    for column in _COLUMNS:
        op.drop_constraint(op.f(f"ck_purposes_{column}_span"), "purposes", type_="check")
        op.create_check_constraint(
            op.f(f"ck_purposes_{column}_span"), "purposes", f"{column} ~ '{_SPAN}' AND {column} <> 'P'"
        )
