"""The collector's settings for a bulk job are in force within it and restored after."""

import gc

from app.lib.collector import YOUNG_THRESHOLD, bulk_job


def test_a_bulk_job_freezes_what_exists_and_collects_the_young_less_often_then_restores():
    before = gc.get_threshold()
    made_before = [object() for _ in range(3)]  # noqa: F841  # alive through the job

    with bulk_job():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])

    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cycles_are_still_collected_within_a_bulk_job():
    class Node:
        def __init__(self) -> None:
            self.other = self

    with bulk_job():
        Node()
        assert gc.collect() > 0
