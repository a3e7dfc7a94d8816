"""An independent model of the consent-end rules in Python (app/domain/validity.py states them), for tests only.

The service computes every end in the database (:func:`app.eligibility.repository.span_end_sql`); tests use this
model for expected values and to check the SQL in zones whose rules the database's and Python's time-zone data
agree on (Europe/Berlin, America/New_York, Australia/Sydney, Asia/Kolkata, UTC).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from app.domain.validity import Span


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _local_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a naive wall-clock time names in ``zone``: the later reading where there are two or none.

    Both readings are ``wall`` minus an offset (fold 0: the offset before a change, fold 1: after it); the later
    instant is the one with the smaller offset.
    """
    offset = zone.utcoffset(wall)
    other = zone.utcoffset(wall.replace(fold=1))
    assert offset is not None  # a ZoneInfo always has one
    if other is not None and other < offset:
        offset = other
    return (wall - offset).replace(tzinfo=UTC)


def _shifted(start: datetime, span: Span, timezone: str, *, back: bool) -> datetime:
    zone = ZoneInfo(timezone)
    local = start.astimezone(zone).replace(tzinfo=None, fold=0)
    if back:
        day = _add_months(local.date() - timedelta(days=span.days), -span.months)
    else:
        day = _add_months(local.date(), span.months) + timedelta(days=span.days)
    return _local_instant(local.replace(year=day.year, month=day.month, day=day.day), zone)


def add_span(start: datetime, span: Span, timezone: str) -> datetime:
    """``start`` plus ``span`` on the wall clock of ``timezone`` (module docstring), as a UTC instant."""
    return _shifted(start, span, timezone, back=False)


def subtract_span(end: datetime, span: Span, timezone: str) -> datetime:
    """``end`` minus ``span`` on the wall clock (days first, then months; clamped as :func:`add_span` is)."""
    return _shifted(end, span, timezone, back=True)
