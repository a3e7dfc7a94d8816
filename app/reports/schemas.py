"""API types of the reports, and their CSV form."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from datetime import datetime

import msgspec

_NUMBER = re.compile(r"[+-]?[0-9]+")


class ReportRowOut(msgspec.Struct, kw_only=True):
    """One bucket of one group: the bucket's start (UTC), the group's values, the metrics (docs/reporting.md)."""

    bucket: datetime
    group: dict[str, str | None]
    metrics: dict[str, float | None]


class ReportOut(msgspec.Struct, kw_only=True):
    """A report: the range [`from`, `to`), the bucket size, the groups and one row per bucket and group."""

    from_: datetime = msgspec.field(name="from")
    to: datetime
    granularity: str
    group_by: list[str]
    metrics: list[str]
    series: list[ReportRowOut]
    source_names: dict[str, str] = msgspec.field(default_factory=dict)
    """Grouped by `source`: the name of each API key a source value names (`api_key:<id>` → the key's name, as
    given when it was created; a key deleted since has none)."""


def csv_safe(value: str) -> str:
    """A cell a spreadsheet shows as text: OWASP's CSV-injection rule, as ``app.lib.copystream.csv_cell`` in SQL."""
    if value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def to_csv(report: ReportOut) -> str:
    """The report as CSV: ``bucket``, one column per group, one per metric; empty cells for no value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    named = "source" in report.group_by
    writer.writerow(["bucket", *report.group_by, *(["source_name"] if named else []), *report.metrics])
    for row in report.series:
        source = row.group.get("source")
        cells: Sequence[object] = [
            row.bucket.isoformat().replace("+00:00", "Z"),
            *(row.group.get(name) for name in report.group_by),
            *([report.source_names.get(source) if source else None] if named else []),
            *(row.metrics.get(name) for name in report.metrics),
        ]
        writer.writerow(["" if cell is None else csv_safe(str(cell)) for cell in cells])
    return out.getvalue()
