"""When a consent ends: calendar months on the workspace's wall clock, clamping, DST (app/domain/validity.py)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.validity import (
    Policy,
    Span,
    SpanError,
    add_span,
    consent_end,
    parse_span,
    repermission_from,
    subtract_span,
)

BERLIN = "Europe/Berlin"
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC", "Pacific/Chatham"]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "span"),
    [("P24M", Span(24, 0)), ("P2Y", Span(24, 0)), ("P1Y6M", Span(18, 0)), ("P30D", Span(0, 30)), ("P2W", Span(0, 14))],
)
def test_spans_are_parsed_as_months_and_days(text: str, span: Span) -> None:
    assert parse_span(text) == span


@pytest.mark.parametrize("text", ["", "P", "P0M", "PT24H", "24M", "P1.5Y", "P-1M", "P1201M", "p24m", "P24M "])
def test_spans_that_are_not_calendar_spans_are_refused(text: str) -> None:
    with pytest.raises(SpanError):
        parse_span(text)


def test_end_of_month_is_clamped() -> None:
    # 2024-03-31 12:00 Berlin (CEST, +02:00) + 1 month: April has no 31st
    assert add_span(utc(2024, 3, 31, 10), Span(1, 0), BERLIN) == utc(2024, 4, 30, 10)
    # 2024-01-31 + 1 month: leap February
    assert add_span(utc(2024, 1, 31, 11), Span(1, 0), BERLIN) == utc(2024, 2, 29, 11)
    # 2024-02-29 + 12 months: 2025-02-28
    assert add_span(utc(2024, 2, 29, 11), Span(12, 0), BERLIN) == utc(2025, 2, 28, 11)


def test_the_same_wall_clock_time_across_a_dst_change() -> None:
    # 2024-01-15 10:00 CET (09:00 UTC) + 6 months = 2024-07-15 10:00 CEST (08:00 UTC)
    assert add_span(utc(2024, 1, 15, 9), Span(6, 0), BERLIN) == utc(2024, 7, 15, 8)


def test_24_months_since_a_berlin_night_that_later_falls_in_the_skipped_hour() -> None:
    # 2024-03-31 02:30 does not exist in Berlin; 2022-03-31 02:30 CEST (00:30 UTC) + 24 months lands on it:
    # read with the offset before the change (+01:00), so 01:30 UTC, which the clock shows as 03:30 CEST.
    assert add_span(utc(2022, 3, 31, 0, 30), Span(24, 0), BERLIN) == utc(2024, 3, 31, 1, 30)


def test_24_months_since_2024_03_31_0230_berlin_is_well_defined() -> None:
    given_at = datetime(2024, 3, 31, 3, 30, tzinfo=ZoneInfo(BERLIN))  # what "02:30" was on that day
    end = add_span(given_at, Span(24, 0), BERLIN)
    assert end.astimezone(ZoneInfo(BERLIN)) == datetime(2026, 3, 31, 3, 30, tzinfo=ZoneInfo(BERLIN))


def test_a_repeated_hour_is_read_as_its_second_occurrence() -> None:
    # 2024-10-27 02:30 happens twice in Berlin (CEST 00:30 UTC, then CET 01:30 UTC): the later one
    assert add_span(utc(2024, 9, 27, 0, 30), Span(1, 0), BERLIN) == utc(2024, 10, 27, 1, 30)


def test_months_then_days() -> None:
    # 2024-01-31 + P1M2D: February 29th, then two days: March 2nd
    assert add_span(utc(2024, 1, 31, 11), Span(1, 2), BERLIN) == utc(2024, 3, 2, 11)


def test_the_earlier_end_wins_and_inactivity_counts_from_the_last_engagement() -> None:
    policy = Policy(validity=Span(24, 0), inactivity=Span(18, 0))
    given_at = utc(2024, 1, 10, 12)
    end = consent_end(policy, given_at=given_at, last_engagement=None, timezone="UTC")
    assert end is not None
    assert (end.at, end.rule) == (utc(2025, 7, 10, 12), "inactivity")
    engaged = consent_end(policy, given_at=given_at, last_engagement=utc(2024, 12, 1, 8), timezone="UTC")
    assert engaged is not None
    assert (engaged.at, engaged.rule) == (utc(2026, 1, 10, 12), "validity")
    old = consent_end(policy, given_at=given_at, last_engagement=utc(2020, 1, 1), timezone="UTC")
    assert old is not None
    assert old.at == utc(2025, 7, 10, 12)  # an engagement before the consent does not count
    assert consent_end(Policy(), given_at=given_at, last_engagement=None, timezone="UTC") is None


def test_repermission_starts_before_the_end() -> None:
    policy = Policy(validity=Span(24, 0), repermission_before=Span(0, 30))
    end = consent_end(policy, given_at=utc(2024, 1, 10, 12), last_engagement=None, timezone="UTC")
    assert end is not None
    assert repermission_from(policy, end, "UTC") == utc(2025, 12, 11, 12)
    assert repermission_from(Policy(validity=Span(1, 0)), end, "UTC") is None


_EARLIEST = datetime(2000, 1, 1)  # noqa: DTZ001  # hypothesis takes naive bounds
_LATEST = datetime(2060, 1, 1)  # noqa: DTZ001
instants = st.datetimes(min_value=_EARLIEST, max_value=_LATEST, timezones=st.just(UTC))
spans = st.builds(Span, months=st.integers(0, 60), days=st.integers(0, 400)).filter(lambda s: s.months or s.days)


@given(start=instants, span=spans, zone=st.sampled_from(ZONES))
def test_the_end_keeps_the_wall_clock_and_the_clamped_day(start: datetime, span: Span, zone: str) -> None:
    end = add_span(start, span, zone)
    local_start, local_end = start.astimezone(ZoneInfo(zone)), end.astimezone(ZoneInfo(zone))
    assert end > start
    assert end.tzinfo is UTC
    wall = local_start.replace(tzinfo=None)
    shown = local_end.replace(tzinfo=None)
    # the wall clock is kept, except in a skipped hour, where it moves forward by the gap (at most 1 hour here)
    delta = abs(
        (shown - datetime.combine(shown.date(), wall.time())).total_seconds() if shown.time() != wall.time() else 0
    )
    assert delta <= 3600
    if span.days == 0:
        assert shown.day == wall.day or shown.day == _last_day(shown)


@given(start=instants, months=st.integers(1, 60), zone=st.sampled_from(ZONES))
def test_an_end_never_comes_earlier_for_a_later_start(start: datetime, months: int, zone: str) -> None:
    """Except where month-end clamping pulls the later start's day back to the target month's last day (28 June
    23:15 and 29 June 00:15 + 20 months both land on 28 February): then earlier by less than a day."""
    later = start + timedelta(hours=1)
    later_end, end = add_span(later, Span(months, 0), zone), add_span(start, Span(months, 0), zone)
    if later_end < end:
        local = later_end.astimezone(ZoneInfo(zone))
        assert local.day == _last_day(local), "only clamping may pull an end back"
        assert end - later_end < timedelta(days=1, hours=1)


@given(end=instants, days=st.integers(1, 90), zone=st.sampled_from(ZONES))
def test_subtracting_days_undoes_adding_them_outside_dst_gaps(end: datetime, days: int, zone: str) -> None:
    start = subtract_span(end, Span(0, days), zone)
    assert start < end
    assert abs((add_span(start, Span(0, days), zone) - end).total_seconds()) <= 3600


def _last_day(moment: datetime) -> int:
    return calendar.monthrange(moment.year, moment.month)[1]
