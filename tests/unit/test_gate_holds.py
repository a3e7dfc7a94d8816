"""How long an eligible decision holds on the same facts (``holds_until``): its consent's end, its window's close.

The dispatcher marks no call in flight past it (hostile review 2026-12-06, R3: a call that waited for its slot past
a consent's end or a window's close was sent, the facts being unchanged).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.gate import Window, decide_point, window_closes
from app.domain.model import PurposeKind, State
from tests.unit.test_gate import DAYTIME, NOON_BERLIN, facts
from tests.unit.test_gate_window import open_by_rule

BERLIN = "Europe/Berlin"


def decide(f, kind=PurposeKind.MARKETING, now=NOON_BERLIN, window=DAYTIME):
    return decide_point(f, kind, now=now, window=window, default_timezone=BERLIN)


def ending(f, at):
    assert f.purpose_consent is not None
    return dataclasses.replace(f, purpose_consent=dataclasses.replace(f.purpose_consent, ends_at=at))


def test_an_eligible_decision_holds_until_its_window_closes():
    decision = decide(facts())  # 12:00 in Berlin, open 08:00-21:00
    assert decision.eligible
    assert decision.holds_until == datetime(2026, 6, 10, 19, 0, tzinfo=UTC)  # 21:00 CEST


def test_a_consent_that_ends_before_the_window_closes_ends_the_decision_there():
    end = NOON_BERLIN + timedelta(seconds=90)
    assert decide(ending(facts(), end)).holds_until == end
    later = NOON_BERLIN + timedelta(days=2)
    assert decide(ending(facts(), later)).holds_until == datetime(2026, 6, 10, 19, 0, tzinfo=UTC)
    assert decide(ending(facts(), end), window=None).holds_until == end


def test_decisions_that_hold_by_themselves_have_no_end():
    assert decide(facts(), window=None).holds_until is None
    assert decide(facts(), kind=PurposeKind.TRANSACTIONAL).holds_until is None
    assert decide(facts(), window=Window(time(8), time(8))).holds_until is None  # a whole day
    assert decide(facts(State.OPTED_OUT)).holds_until is None  # not eligible


def test_a_window_across_midnight_closes_the_next_morning():
    night = Window(time(22), time(6))
    assert window_closes(night, datetime(2026, 6, 10, 21, 0, tzinfo=UTC), BERLIN) == datetime(
        2026, 6, 11, 4, 0, tzinfo=UTC
    )
    assert window_closes(night, datetime(2026, 6, 11, 2, 0, tzinfo=UTC), BERLIN) == datetime(
        2026, 6, 11, 4, 0, tzinfo=UTC
    )


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 23),
    length=st.integers(1, 23),
    minute=st.integers(0, 2 * 366 * 24 * 60),
    zone=st.sampled_from([BERLIN, "America/New_York", "Australia/Lord_Howe", "UTC"]),
)
def test_a_decision_inside_a_window_never_holds_past_its_close(start, length, minute, zone):
    """Every minute from now up to the close is inside the window by the rule (never too long), the close is after
    now, and where no clock change lies between, it is the first minute outside."""
    window = Window(time(start), time((start + length) % 24))
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute, seconds=17)
    tz = ZoneInfo(zone)
    if not open_by_rule(window, now.astimezone(tz).time()):
        return
    closes = window_closes(window, now, zone)
    assert closes is not None
    assert closes > now
    step = now
    while step < closes:
        assert open_by_rule(window, step.astimezone(tz).time()), (window, now, closes, step)
        step += timedelta(minutes=1)
    if now.astimezone(tz).utcoffset() == closes.astimezone(tz).utcoffset():
        assert not open_by_rule(window, closes.astimezone(tz).time())
