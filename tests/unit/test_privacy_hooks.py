"""Every table is answered for by a privacy hook or declared free of personal data, so no erasure forgets one."""

from __future__ import annotations

from collections import Counter

import pytest

from app.models import metadata
from app.privacy.hooks import HOOKS, NO_PERSONAL_DATA

#: Columns that hold or lead to a person; a table with one cannot be declared free of personal data.
PERSONAL_COLUMNS = {"contact_id", "contact_point_id", "value", "personal", "payload", "body", "external_id"}


def test_every_table_is_covered_by_a_hook_or_declared_free_of_personal_data():
    covered = Counter(table for hook in HOOKS for table in hook.tables)
    assert [t for t, n in covered.items() if n > 1] == [], "a table answered for by two hooks"
    assert set(covered) & set(NO_PERSONAL_DATA) == set(), "a table both covered and declared free"
    unknown = (set(covered) | set(NO_PERSONAL_DATA)) - set(metadata.tables)
    assert unknown == set(), "a hook names a table that does not exist"
    forgotten = set(metadata.tables) - set(covered) - set(NO_PERSONAL_DATA)
    assert forgotten == set(), f"tables with no privacy hook and no reason why they hold no personal data: {forgotten}"


@pytest.mark.parametrize("table", sorted(NO_PERSONAL_DATA))
def test_a_table_declared_free_of_personal_data_has_no_column_that_leads_to_a_person(table):
    columns = {column.name for column in metadata.tables[table].columns}
    assert columns & PERSONAL_COLUMNS == set()


def test_every_hook_says_what_happens_to_each_of_its_tables():
    for hook in HOOKS:
        for table, fate in hook.tables.items():
            assert fate.strip(), f"{hook.package}: no word on {table}"


def test_the_ledger_hook_runs_last_since_the_other_rows_reference_its_contacts():
    assert HOOKS[-1].package == "ledger"
