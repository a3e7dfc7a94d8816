"""The retry delay of the dispatcher and the webhook sender; the start-up heap out of the collector's way."""

from __future__ import annotations

import gc
import weakref

from app.lib.rounds import backoff, freeze_startup_heap


def test_the_delay_doubles_within_jitter_and_stops_at_the_maximum():
    for attempt, middle in [(1, 30), (2, 60), (3, 120)]:
        assert all(middle * 0.5 <= backoff(attempt, 30, 3600) <= middle * 1.5 for _ in range(100))
    assert all(backoff(20, 30, 3600) <= 3600 * 1.5 for _ in range(100))


class _Node:
    """A container the cyclic garbage collector tracks."""

    other: object = None


def test_the_startup_heap_is_frozen_after_its_garbage_is_collected():
    garbage = _Node()
    garbage.other = garbage  # a cycle: only the cyclic collector frees it
    gone = weakref.ref(garbage)
    del garbage
    kept = _Node()
    kept.other = kept
    try:
        freeze_startup_heap()
        assert gone() is None, "garbage made during start-up is collected, not frozen"
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects()), "what lives is no longer walked by the collections"
        later = _Node()
        later.other = later
        made_later = weakref.ref(later)
        del later
        gc.collect()
        assert made_later() is None, "cycles made after start-up are collected as before"
    finally:
        gc.unfreeze()
