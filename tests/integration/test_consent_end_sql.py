"""When a consent ends, as the database computes it for every reader (app.eligibility.repository.span_end_sql).

The rules are stated in app/domain/validity.py; these tests hold the SQL to them: clamping at the month's end, the
same wall-clock time across a DST change, a skipped or repeated hour read the later way, months then days, the
earlier of validity and inactivity, and the re-permission start (days back, then months).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.domain.validity import Span, parse_span
from app.eligibility.repository import earlier_end, end_sql, ends_sql, span_end_sql, span_start_sql

BERLIN = "Europe/Berlin"
TZ = "CAST(:tz AS text)"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


async def end_of(session, start: datetime, span: Span | str, zone: str) -> datetime:
    """The database's end of ``start`` + ``span`` (a parsed span, or a stored one such as ``'P1Y6M'``)."""
    expression = span_end_sql("CAST(:s AS timestamptz)", span if isinstance(span, Span) else "CAST(:v AS text)", TZ)
    params = {"s": start, "tz": zone} | ({} if isinstance(span, Span) else {"v": span})
    return (await session.execute(text(f"SELECT {expression}"), params)).scalar_one()


async def test_the_end_of_a_month_is_clamped(session):
    # 2024-03-31 12:00 Berlin (CEST, +02:00) + 1 month: April has no 31st
    assert await end_of(session, utc(2024, 3, 31, 10), Span(1, 0), BERLIN) == utc(2024, 4, 30, 10)
    # 2024-01-31 + 1 month: leap February
    assert await end_of(session, utc(2024, 1, 31, 11), Span(1, 0), BERLIN) == utc(2024, 2, 29, 11)
    # 2024-02-29 + 12 months: 2025-02-28
    assert await end_of(session, utc(2024, 2, 29, 11), Span(12, 0), BERLIN) == utc(2025, 2, 28, 11)


async def test_the_same_wall_clock_time_across_a_dst_change(session):
    # 2024-01-15 10:00 CET (09:00 UTC) + 6 months = 2024-07-15 10:00 CEST (08:00 UTC)
    assert await end_of(session, utc(2024, 1, 15, 9), Span(6, 0), BERLIN) == utc(2024, 7, 15, 8)


async def test_a_skipped_hour_is_read_with_the_offset_before_the_change(session):
    # 2024-03-31 02:30 does not exist in Berlin; 2022-03-31 02:30 CEST (00:30 UTC) + 24 months lands on it:
    # read with the offset before the change (+01:00), so 01:30 UTC, which the clock shows as 03:30 CEST.
    assert await end_of(session, utc(2022, 3, 31, 0, 30), Span(24, 0), BERLIN) == utc(2024, 3, 31, 1, 30)
    # what "02:30" was on that day (03:30 CEST, 01:30 UTC) + 24 months: 2026-03-31 03:30 CEST
    assert await end_of(session, utc(2024, 3, 31, 1, 30), Span(24, 0), BERLIN) == utc(2026, 3, 31, 1, 30)


async def test_a_repeated_hour_is_read_as_its_second_occurrence(session):
    # 2024-10-27 02:30 happens twice in Berlin (CEST 00:30 UTC, then CET 01:30 UTC): the later one
    assert await end_of(session, utc(2024, 9, 27, 0, 30), Span(1, 0), BERLIN) == utc(2024, 10, 27, 1, 30)


async def test_months_then_days(session):
    # 2024-01-31 + P1M2D: February 29th, then two days: March 2nd
    assert await end_of(session, utc(2024, 1, 31, 11), Span(1, 2), BERLIN) == utc(2024, 3, 2, 11)


@pytest.mark.parametrize("stored", ["P24M", "P2Y", "P1Y6M", "P30D", "P2W", "P1Y2M3W4D", "P13M2D"])
async def test_a_stored_span_gives_the_end_its_parsed_form_gives(session, stored):
    """The facts queries cast the purpose's stored text; the sweep and the export use the parsed span."""
    starts = [utc(2023, 1, 31, 23, 30) + timedelta(days=37 * n, hours=5 * n) for n in range(40)]
    for zone in (BERLIN, "America/New_York", "Pacific/Chatham"):
        for start in starts:
            assert await end_of(session, start, stored, zone) == await end_of(session, start, parse_span(stored), zone)


async def _ends(session, since, engaged, validity, inactivity, zone="UTC"):
    by_validity, by_inactivity = ends_sql(
        "CAST(:since AS timestamptz)",
        engaged="CAST(:engaged AS timestamptz)",
        validity=validity,
        inactivity=inactivity,
        timezone=TZ,
    )
    least = end_sql(
        "CAST(:since AS timestamptz)",
        engaged="CAST(:engaged AS timestamptz)",
        validity=validity,
        inactivity=inactivity,
        timezone=TZ,
    )
    row = (
        await session.execute(
            text(f"SELECT {by_validity} AS v, {by_inactivity} AS i, {least} AS e"),
            {"since": since, "engaged": engaged, "tz": zone},
        )
    ).one()
    end = earlier_end(row.v, row.i)
    assert (end.at if end else None) == row.e  # the SQL's least() and the named rule agree
    return end


async def test_the_earlier_end_wins_and_inactivity_counts_from_the_last_engagement(session):
    given_at = utc(2024, 1, 10, 12)
    end = await _ends(session, given_at, None, Span(24, 0), Span(18, 0))
    assert end is not None
    assert (end.at, end.rule) == (utc(2025, 7, 10, 12), "inactivity")
    engaged = await _ends(session, given_at, utc(2024, 12, 1, 8), Span(24, 0), Span(18, 0))
    assert engaged is not None
    assert (engaged.at, engaged.rule) == (utc(2026, 1, 10, 12), "validity")
    old = await _ends(session, given_at, utc(2020, 1, 1), Span(24, 0), Span(18, 0))
    assert old is not None
    assert old.at == utc(2025, 7, 10, 12)  # an engagement before the consent does not count
    tie = await _ends(session, given_at, None, Span(12, 0), Span(0, 366))  # 2024 is a leap year: both 2025-01-10
    assert tie is not None
    assert (tie.at, tie.rule) == (utc(2025, 1, 10, 12), "validity")
    assert await _ends(session, given_at, None, None, None) is None


async def test_a_repermission_starts_days_then_months_before_the_end(session):
    async def start(end: datetime, span: Span, zone: str = "UTC") -> datetime:
        expression = span_start_sql("CAST(:e AS timestamptz)", span, TZ)
        return (await session.execute(text(f"SELECT {expression}"), {"e": end, "tz": zone})).scalar_one()

    assert await start(utc(2026, 1, 10, 12), Span(0, 30)) == utc(2025, 12, 11, 12)
    # 2024-03-31 back P1M1D: the day first (30 March), then the month (29 February); months first would give 28
    assert await start(utc(2024, 3, 31, 12), Span(1, 1)) == utc(2024, 2, 29, 12)
    # the wall clock is kept across the spring change in Berlin: 1 April 10:00 CEST back 7 days is 25 March 10:00 CET
    assert await start(utc(2024, 4, 1, 8), Span(0, 7), BERLIN) == utc(2024, 3, 25, 9)


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC", "Pacific/Chatham"]
_PROPERTIES = text(
    f"""
    SELECT u.s AS start, e AS end_at, u.s AT TIME ZONE {TZ} AS wall, e AT TIME ZONE {TZ} AS shown,
           u.m AS months, u.d AS days
      FROM unnest(CAST(:starts AS timestamptz[]), CAST(:months AS int[]), CAST(:days AS int[])) AS u(s, m, d)
      CROSS JOIN LATERAL (SELECT {span_end_sql("u.s", "make_interval(months => u.m, days => u.d)", TZ)} AS e) x
    """  # noqa: S608  # our own expressions; every input is a bind parameter
)


def _random_starts(rng: random.Random, count: int) -> list[datetime]:
    return [utc(2000, 1, 1) + timedelta(seconds=rng.randrange(60 * 365 * 86400)) for _ in range(count)]


async def test_random_ends_keep_the_wall_clock_and_the_clamped_day_in_every_zone(session):
    """Properties over 12,000 random starts and spans (2000-2060), each zone's in one statement."""
    rng = random.Random(20261205)  # noqa: S311  # a repeatable sample, not a secret
    for zone in ZONES:
        starts = _random_starts(rng, 2000)
        months = [rng.choice((0, rng.randrange(1, 61))) for _ in starts]
        days = [rng.randrange(0 if m else 1, 400) for m in months]
        params = {"starts": starts, "months": months, "days": days, "tz": zone}
        for row in (await session.execute(_PROPERTIES, params)).all():
            assert row.end_at > row.start, (zone, row)
            # the wall clock is kept, except in a skipped hour, where it moves forward by the gap (at most 1 hour)
            moved = datetime.combine(row.shown.date(), row.wall.time()) - row.shown
            assert abs(moved.total_seconds()) <= 3600, (zone, row)
            if row.days == 0:  # months only: the same day of the month, or the target month's last day
                last = (row.shown.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
                assert row.shown.day in (row.wall.day, last.day), (zone, row)


@pytest.mark.parametrize("days", [1, 7, 30, 90])
async def test_days_back_undo_days_forward_outside_a_skipped_hour(session, days):
    span = Span(0, days)
    sql = text(
        f"SELECT u.s AS start, {span_start_sql(span_end_sql('u.s', span, TZ), span, TZ)} AS back "  # noqa: S608
        "FROM unnest(CAST(:starts AS timestamptz[])) AS u(s)"
    )
    rng = random.Random(days)  # noqa: S311
    for zone in ZONES:
        for row in (await session.execute(sql, {"starts": _random_starts(rng, 500), "tz": zone})).all():
            assert abs((row.back - row.start).total_seconds()) <= 3600, (zone, row)
