"""Send windows: inside or not, and when the window next opens, across midnight, DST changes and time zones.

The reference the property test compares with is written here from the rule, not from the gate: a window is
open for ``(end - start) mod 24 h`` from ``start`` (24 hours when they are equal), on the recipient's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.gate import Window, next_opening

NIGHT = Window(time(22), time(6))
DAY = Window(time(8), time(21))
JUST_BEFORE = timedelta(microseconds=1)
DAY_MINUTES = 24 * 60


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def minutes(clock: time) -> float:
    return clock.hour * 60 + clock.minute + clock.second / 60 + clock.microsecond / 60e6


def open_by_rule(window: Window, clock: time) -> bool:
    length = (minutes(window.end) - minutes(window.start)) % DAY_MINUTES or DAY_MINUTES
    return (minutes(clock) - minutes(window.start)) % DAY_MINUTES < length


def first_open_minute(window: Window, now: datetime, zone: str) -> datetime | None:
    """By brute force: the first whole minute after ``now`` whose local clock time is inside."""
    tz = ZoneInfo(zone)
    if open_by_rule(window, now.astimezone(tz).time()):
        return None
    moment = now.replace(second=0, microsecond=0)
    for _ in range(3 * DAY_MINUTES):
        moment += timedelta(minutes=1)
        if open_by_rule(window, moment.astimezone(tz).time()):
            return moment
    raise AssertionError("never opens")


# -- inside or not ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "inside"),
    [
        (time(8), True),
        (time(7, 59, 59, 999999), False),
        (time(20, 59, 59, 999999), True),
        (time(21), False),
        (time(0), False),
        (time(23, 59, 59, 999999), False),
        (time(12), True),
    ],
)
def test_a_daytime_window_includes_its_start_and_excludes_its_end(clock, inside):
    assert DAY.contains(clock) is inside


@pytest.mark.parametrize(
    ("clock", "inside"),
    [
        (time(22), True),
        (time(21, 59, 59, 999999), False),
        (time(23, 30), True),
        (time(23, 59, 59, 999999), True),
        (time(0), True),
        (time(3), True),
        (time(5, 59, 59, 999999), True),
        (time(6), False),
        (time(12), False),
    ],
)
def test_a_window_across_midnight_is_open_from_its_start_until_its_end_the_next_morning(clock, inside):
    assert NIGHT.contains(clock) is inside


@pytest.mark.parametrize("clock", [time(0), time(7, 59, 59, 999999), time(8), time(8, 0, 0, 1), time(23, 59)])
def test_a_window_whose_end_equals_its_start_is_the_whole_day(clock):
    assert Window(time(8), time(8)).contains(clock)
    assert Window(time(0), time(0)).contains(clock)


def test_a_window_ending_at_midnight_excludes_midnight_and_one_starting_there_includes_it():
    evening = Window(time(18), time(0))
    assert [evening.contains(time(h, m)) for h, m in [(18, 0), (23, 59), (0, 0), (17, 59)]] == [1, 1, 0, 0]
    morning = Window(time(0), time(6))
    assert [morning.contains(time(h, m)) for h, m in [(0, 0), (5, 59), (6, 0), (23, 59)]] == [1, 1, 0, 0]


# -- the next opening ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(2026, 6, 10, 21, 30), None),  # 23:30 CEST
        (at(2026, 6, 10, 22, 0), None),  # 00:00
        (at(2026, 6, 11, 3, 59, 59, 999999), None),  # 05:59:59.999999
        (at(2026, 6, 11, 4, 0), at(2026, 6, 11, 20, 0)),  # 06:00: this evening at 22:00
        (at(2026, 6, 11, 10, 0), at(2026, 6, 11, 20, 0)),  # noon
        (at(2026, 6, 11, 19, 59, 59, 999999), at(2026, 6, 11, 20, 0)),  # a microsecond before 22:00
        (at(2026, 6, 11, 20, 0), None),  # 22:00
    ],
)
def test_a_window_across_midnight_opens_on_both_sides_of_midnight_and_reopens_the_same_evening(now, expected):
    assert next_opening(NIGHT, now, "Europe/Berlin") == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(2026, 6, 10, 5, 59, 59), at(2026, 6, 10, 6, 0)),  # 07:59:59 CEST: today at 08:00
        (at(2026, 6, 10, 6, 0), None),
        (at(2026, 6, 10, 18, 59, 59, 999999), None),
        (at(2026, 6, 10, 19, 0), at(2026, 6, 11, 6, 0)),  # 21:00: tomorrow at 08:00
        (at(2026, 6, 10, 21, 59), at(2026, 6, 11, 6, 0)),  # 23:59
        (at(2026, 6, 10, 22, 0), at(2026, 6, 11, 6, 0)),  # 00:00: the same calendar day at 08:00
    ],
)
def test_a_daytime_window_opens_today_before_its_start_and_tomorrow_after_its_end(now, expected):
    assert next_opening(DAY, now, "Europe/Berlin") == expected


def test_a_whole_day_window_is_never_closed():
    for hour in range(24):
        assert next_opening(Window(time(9), time(9)), at(2026, 3, 29, hour, 30), "Europe/Berlin") is None


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        # Berlin springs forward on 29 March 2026: the night's window closes at 06:00 CEST = 04:00 UTC ...
        ("Europe/Berlin", at(2026, 3, 28, 21, 0), None),  # 22:00 CET, the evening before
        ("Europe/Berlin", at(2026, 3, 28, 20, 59), at(2026, 3, 28, 21, 0)),
        ("Europe/Berlin", at(2026, 3, 29, 1, 0), None),  # 03:00 CEST, just after the jump
        ("Europe/Berlin", at(2026, 3, 29, 3, 59), None),  # 05:59 CEST
        ("Europe/Berlin", at(2026, 3, 29, 4, 0), at(2026, 3, 29, 20, 0)),  # ... and reopens at 22:00 CEST
        # Berlin falls back on 25 October 2026: the night is an hour longer, closing at 06:00 CET = 05:00 UTC
        ("Europe/Berlin", at(2026, 10, 24, 20, 0), None),  # 22:00 CEST
        ("Europe/Berlin", at(2026, 10, 24, 19, 59), at(2026, 10, 24, 20, 0)),
        ("Europe/Berlin", at(2026, 10, 25, 0, 30), None),  # 02:30 CEST, first pass
        ("Europe/Berlin", at(2026, 10, 25, 1, 30), None),  # 02:30 CET, second pass
        ("Europe/Berlin", at(2026, 10, 25, 4, 59), None),  # 05:59 CET
        ("Europe/Berlin", at(2026, 10, 25, 5, 0), at(2026, 10, 25, 21, 0)),  # 06:00 CET; 22:00 CET
        # New York springs forward on 8 March and falls back on 1 November 2026
        ("America/New_York", at(2026, 3, 8, 9, 59), None),  # 05:59 EDT
        ("America/New_York", at(2026, 3, 8, 10, 0), at(2026, 3, 9, 2, 0)),  # 06:00 EDT; 22:00 EDT
        ("America/New_York", at(2026, 3, 8, 2, 59), at(2026, 3, 8, 3, 0)),  # 21:59 EST on the 7th; 22:00 EST
        ("America/New_York", at(2026, 11, 1, 10, 59), None),  # 05:59 EST
        ("America/New_York", at(2026, 11, 1, 11, 0), at(2026, 11, 2, 3, 0)),  # 06:00 EST; 22:00 EST
        ("America/New_York", at(2026, 11, 1, 1, 59), at(2026, 11, 1, 2, 0)),  # 21:59 EDT on 31 October
        # Kolkata: UTC+05:30 all year, so 22:00-06:00 is 16:30-00:30 UTC
        ("Asia/Kolkata", at(2026, 6, 10, 16, 29, 59), at(2026, 6, 10, 16, 30)),
        ("Asia/Kolkata", at(2026, 6, 10, 16, 30), None),
        ("Asia/Kolkata", at(2026, 6, 11, 0, 29, 59), None),
        ("Asia/Kolkata", at(2026, 6, 11, 0, 30), at(2026, 6, 11, 16, 30)),
        # Kathmandu (UTC+05:45), Newfoundland (UTC-02:30 in summer), Auckland (autumn change on 5 April 2026)
        ("Asia/Kathmandu", at(2026, 1, 1, 0, 15), at(2026, 1, 1, 16, 15)),
        ("America/St_Johns", at(2026, 7, 1, 8, 30), at(2026, 7, 2, 0, 30)),
        ("America/St_Johns", at(2026, 7, 1, 8, 29), None),
        ("Pacific/Auckland", at(2026, 4, 4, 13, 59), None),  # 02:59 NZDT on 5 April, then back to 02:00 NZST
        ("Pacific/Auckland", at(2026, 4, 4, 17, 59), None),  # 05:59 NZST
        ("Pacific/Auckland", at(2026, 4, 4, 18, 0), at(2026, 4, 5, 10, 0)),  # 06:00 NZST; 22:00 NZST
        ("UTC", at(2026, 6, 10, 6, 0), at(2026, 6, 10, 22, 0)),
    ],
)
def test_a_window_across_midnight_in_several_zones_and_across_dst_changes(zone, now, expected):
    assert next_opening(NIGHT, now, zone) == expected


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        # the night before Europe's spring-forward (29 March 2026): 08:00 CEST is 06:00 UTC, not 07:00
        ("Europe/Berlin", at(2026, 3, 28, 22, 0), at(2026, 3, 29, 6, 0)),
        # the night before fall-back (25 October 2026): 08:00 CET is 07:00 UTC
        ("Europe/Berlin", at(2026, 10, 24, 22, 0), at(2026, 10, 25, 7, 0)),
        # US spring-forward (8 March 2026): 08:00 EDT is 12:00 UTC
        ("America/New_York", at(2026, 3, 8, 3, 0), at(2026, 3, 8, 12, 0)),
        # US fall-back (1 November 2026): 08:00 EST is 13:00 UTC
        ("America/New_York", at(2026, 11, 1, 3, 0), at(2026, 11, 1, 13, 0)),
        ("Asia/Kolkata", at(2026, 6, 10, 15, 30), at(2026, 6, 11, 2, 30)),
    ],
)
def test_a_daytime_window_opens_at_local_time_across_dst_changes(zone, now, expected):
    assert next_opening(DAY, now, zone) == expected


@pytest.mark.parametrize(
    ("window", "zone", "now", "expected"),
    [
        # a start in the hour Berlin skips (02:00-03:00 on 29 March): open from the jump to 03:00 CEST
        (Window(time(2, 30), time(6)), "Europe/Berlin", at(2026, 3, 29, 0, 0), at(2026, 3, 29, 1, 0)),
        (Window(time(2), time(6)), "Europe/Berlin", at(2026, 3, 29, 0, 0), at(2026, 3, 29, 1, 0)),
        # Newfoundland skips 02:00-03:00 on 8 March: outside 01:30-02:30, it is open again at the jump
        (Window(time(2, 30), time(1, 30)), "America/St_Johns", at(2026, 3, 8, 5, 29, 17), at(2026, 3, 8, 5, 30)),
        # Havana skips midnight (00:00-01:00 on 8 March 2026)
        (Window(time(0, 45), time(18)), "America/Havana", at(2026, 3, 7, 23, 13), at(2026, 3, 8, 5, 0)),
        # Lord Howe skips half an hour (02:00-02:30 on 4 October 2026)
        (Window(time(2, 15), time(6)), "Australia/Lord_Howe", at(2026, 10, 3, 12, 0), at(2026, 10, 3, 15, 30)),
        # Berlin repeats 02:00-03:00 on 25 October: at 02:10 of the second pass, 02:30 is still to come
        (Window(time(2, 30), time(5)), "Europe/Berlin", at(2026, 10, 25, 1, 10), at(2026, 10, 25, 1, 30)),
        # ... and at 02:40 of the first pass a window ending at 02:30 opens again when the clock goes back
        (Window(time(22), time(2, 30)), "Europe/Berlin", at(2026, 10, 25, 0, 40), at(2026, 10, 25, 1, 0)),
        (Window(time(22), time(2, 30)), "Europe/Berlin", at(2026, 10, 25, 1, 30), at(2026, 10, 25, 21, 0)),
        # Santiago goes back from 24:00 to 23:00 on 4 April 2026: 23:40 comes a second time that evening
        (Window(time(23, 40), time(23, 50)), "America/Santiago", at(2026, 4, 5, 2, 55), at(2026, 4, 5, 3, 40)),
    ],
)
def test_a_clock_change_into_the_window_opens_it_at_the_change(window, zone, now, expected):
    assert next_opening(window, now, zone) == expected
    assert first_open_minute(window, now, zone) == expected


ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Pacific/Auckland",
]
CHANGE_DAYS = [
    datetime(2026, 3, 8, tzinfo=UTC),
    datetime(2026, 3, 29, tzinfo=UTC),
    datetime(2026, 4, 5, tzinfo=UTC),
    datetime(2026, 9, 6, tzinfo=UTC),
    datetime(2026, 9, 27, tzinfo=UTC),
    datetime(2026, 10, 4, tzinfo=UTC),
    datetime(2026, 10, 25, tzinfo=UTC),
    datetime(2026, 11, 1, tzinfo=UTC),
]
CLOCK = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))


@settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    day=st.sampled_from(CHANGE_DAYS),
    offset=st.integers(-36 * 3600, 36 * 3600),
    start=CLOCK,
    end=CLOCK,
)
def test_the_next_opening_is_the_first_moment_the_window_is_open(zone, day, offset, start, end):
    window, now = Window(start, end), day + timedelta(seconds=offset)
    expected = first_open_minute(window, now, zone)
    assert next_opening(window, now, zone) == expected
    assert window.contains(now.astimezone(ZoneInfo(zone)).time()) is (expected is None)
