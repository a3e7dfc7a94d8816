"""API types of imports."""

from __future__ import annotations

import uuid

import msgspec


class RowErrorOut(msgspec.Struct, kw_only=True):
    """A line that was not taken, and why."""

    line: int
    code: str
    message: str


class MatchOut(msgspec.Struct, kw_only=True):
    """A known contact whose postal address is on the list; its print consent is now `objected`."""

    contact_id: uuid.UUID
    external_id: str | None
    contact_point_id: uuid.UUID


class RobinsonReportOut(msgspec.Struct, kw_only=True):
    """What the import did. `errors` lists the first 100 rejected lines, `matches` the first 10,000 matches."""

    rows: int
    accepted: int
    rejected: int
    new_entries: int
    matched: int
    matches: list[MatchOut]
    errors: list[RowErrorOut]


class ImportProblemOut(msgspec.Struct, kw_only=True):
    """A line that was not recorded: `rejected` (fix it and import again) or `skipped` (nothing to do)."""

    line: int
    outcome: str
    code: str
    message: str


class ConsentImportReportOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the import did. `problems` lists the first 1,000 lines not recorded (all are counted).

    `expired`: recorded opt-ins whose purpose's `validity` or `inactivity` had already ended at their
    `captured_at` plus that span: recorded as given, then ended (`validity_ended`, state `expired`) at once. They
    are counted in `recorded` too; not an error. Left out while 0 (the report stays as it was for purposes
    without an end).
    """

    lines: int
    recorded: int
    skipped: int
    rejected: int
    contacts_created: int
    problems: list[ImportProblemOut]
    problems_truncated: bool
    expired: int = 0
