"""When a consent ends: a purpose's ``validity`` and ``inactivity`` (CHANNEL_RULES.md E11), defined once.

A purpose may say that a consent lasts ``validity`` since it was given (``P24M``) and/or ends after ``inactivity``
without engagement on its address (``P18M``: no delivered, opened or clicked message). Both are calendar spans
(years, months, weeks, days), counted on the wall clock of the workspace's time zone:

- months first, then days; a day of the month the target month lacks is clamped to its last day
  (2024-03-31 + P1M = 2024-04-30, 2024-01-31 + P1M = 2024-02-29);
- the same wall-clock time on the target day, whatever daylight saving time did in between
  (2024-01-15 10:00 Europe/Berlin + P6M = 2024-07-15 10:00, which is 08:00 UTC instead of 09:00);
- a wall-clock time that does not exist on the target day (the hour skipped in spring) or exists twice (the hour
  repeated in autumn) is read the later way: a skipped 02:30 is read with the offset before the change (the clock
  shows 03:30), a repeated 02:30 is its second occurrence. This is also how PostgreSQL reads local times, so the
  audience export's SQL (:func:`app.eligibility.repository.audience_sql`) computes the same instant; a test checks
  that both agree.

The consent ends at the earlier of the two ends. Nothing here reads a clock or a database.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

#: The longest span accepted (100 years): anything longer means "no end" and is better left unset.
MAX_MONTHS = 1200
MAX_DAYS = 36_500

_SPAN = re.compile(
    r"^P(?:(?P<years>\d{1,3})Y)?(?:(?P<months>\d{1,4})M)?(?:(?P<weeks>\d{1,4})W)?(?:(?P<days>\d{1,5})D)?$"
)

#: The pattern the API and the database accept (the same language as :func:`parse_span`).
SPAN_PATTERN = r"^P([0-9]{1,3}Y)?([0-9]{1,4}M)?([0-9]{1,4}W)?([0-9]{1,5}D)?$"


class SpanError(ValueError):
    """Not a calendar span a purpose can carry (the message says why)."""


@dataclass(frozen=True, slots=True)
class Span:
    """A calendar span: whole months, then whole days."""

    months: int
    days: int


def parse_span(value: str) -> Span:
    """An ISO 8601 duration of years, months, weeks and days (``P24M``, ``P2Y``, ``P30D``), longer than zero.

    Hours and smaller are refused: a consent's life is counted in calendar days.
    """
    match = _SPAN.match(value)
    if match is None or value == "P":
        raise SpanError("must be an ISO 8601 duration of years, months, weeks or days, such as P24M, P2Y or P30D")
    parts = {name: int(number) for name, number in match.groupdict().items() if number is not None}
    span = Span(
        months=parts.get("years", 0) * 12 + parts.get("months", 0),
        days=parts.get("weeks", 0) * 7 + parts.get("days", 0),
    )
    if span.months == 0 and span.days == 0:
        raise SpanError("must be longer than zero")
    if span.months > MAX_MONTHS or span.days > MAX_DAYS:
        raise SpanError("must be at most 100 years")
    return span


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


@dataclass(frozen=True, slots=True)
class Policy:
    """A purpose's rules for the life of a consent (either may be unset)."""

    validity: Span | None = None
    inactivity: Span | None = None
    repermission_before: Span | None = None

    @property
    def ends(self) -> bool:
        """Whether consents of the purpose end at all."""
        return self.validity is not None or self.inactivity is not None


def policy_of(validity: str | None, inactivity: str | None, repermission_before: str | None = None) -> Policy:
    """The policy from a purpose's stored spans (``None``: not set)."""
    return Policy(
        validity=parse_span(validity) if validity else None,
        inactivity=parse_span(inactivity) if inactivity else None,
        repermission_before=parse_span(repermission_before) if repermission_before else None,
    )


@dataclass(frozen=True, slots=True)
class End:
    """When a consent ends and which rule ends it (``validity`` or ``inactivity``)."""

    at: datetime
    rule: str


def consent_end(policy: Policy, *, given_at: datetime, last_engagement: datetime | None, timezone: str) -> End | None:
    """When a consent given at ``given_at`` ends under ``policy`` (``None``: never).

    Inactivity counts from the latest engagement on the address, or from ``given_at`` where there was none since
    (a consent given yesterday is not inactive because of an old message). On a tie, ``validity`` is named.
    """
    ends: list[End] = []
    if policy.validity is not None:
        ends.append(End(add_span(given_at, policy.validity, timezone), "validity"))
    if policy.inactivity is not None:
        active = max(given_at, last_engagement) if last_engagement is not None else given_at
        ends.append(End(add_span(active, policy.inactivity, timezone), "inactivity"))
    return min(ends, key=lambda end: end.at) if ends else None


def repermission_from(policy: Policy, end: End, timezone: str) -> datetime | None:
    """From when a re-permission message may be queued for a consent ending at ``end`` (``None``: never)."""
    if policy.repermission_before is None:
        return None
    return subtract_span(end.at, policy.repermission_before, timezone)
