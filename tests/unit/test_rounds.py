"""The retry delay shared by the dispatcher and the webhook sender."""

from __future__ import annotations

from app.lib.rounds import backoff


def test_the_delay_doubles_within_jitter_and_stops_at_the_maximum():
    for attempt, middle in [(1, 30), (2, 60), (3, 120)]:
        assert all(middle * 0.5 <= backoff(attempt, 30, 3600) <= middle * 1.5 for _ in range(100))
    assert all(backoff(20, 30, 3600) <= 3600 * 1.5 for _ in range(100))
