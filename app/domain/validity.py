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
  shows 03:30), a repeated 02:30 is its second occurrence (PostgreSQL's reading of a local time).

The consent ends at the earlier of the two ends (on a tie, ``validity`` is named); inactivity counts from the latest
engagement, or from when the consent was given where there was none since. A re-permission may be asked from
``repermission_before`` before the end (days first, then months, on the wall clock).

**One source.** The instants are computed by the database only
(:func:`app.eligibility.repository.span_end_sql`), for eligibility, the audience export, the sweep and the import
alike: the time-zone rules of the server and of the application may be different releases (they differ for
America/Vancouver from November 2026, for instance), and an end computed twice could then differ by an hour near a
clock change. This module parses and validates the spans; nothing here reads a clock or a database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

#: The longest span accepted (100 years): anything longer means "no end" and is better left unset.
MAX_MONTHS = 1200
MAX_DAYS = 36_500

_SPAN = re.compile(
    r"^P(?:(?P<years>\d{1,3})Y)?(?:(?P<months>\d{1,4})M)?(?:(?P<weeks>\d{1,4})W)?(?:(?P<days>\d{1,5})D)?$"
)

#: The pattern the API and the database accept (the same language as :func:`parse_span`).
SPAN_PATTERN = r"^P([0-9]{1,3}Y)?([0-9]{1,4}M)?([0-9]{1,4}W)?([0-9]{1,5}D)?$"


def span_check_sql(column: str) -> str:
    """The database's check of a stored span: :data:`SPAN_PATTERN`, longer than zero, at most 100 years.

    The same limits as :func:`parse_span` (:data:`MAX_MONTHS`, :data:`MAX_DAYS`): the facts queries cast the stored
    text as it is, so a span the API would refuse (``P0D``: every consent expired at once) must not be storable.
    """
    interval = f"CAST({column} AS interval)"
    return (
        f"{column} ~ '{SPAN_PATTERN}' AND {column} <> 'P' AND {interval} <> interval '0'"
        f" AND extract(year FROM {interval}) * 12 + extract(month FROM {interval}) <= {MAX_MONTHS}"
        f" AND extract(day FROM {interval}) <= {MAX_DAYS}"
    )


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
