"""The reports' pure parts: which counters an event adds to, percentiles, buckets, parameter checks, CSV cells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.console.service import opt_out_causes
from app.lib.errors import InvalidInput
from app.reports.schemas import ReportOut, ReportRowOut, csv_safe, to_csv
from app.reports.service import CONSENT_GROUPS, buckets, consent_metrics_of, parse_query, percentile

NOW = datetime(2026, 12, 4, 21, 17, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (("signup", "none", "pending", None), {"events", "signups"}),
        (("signup", "pending", "pending", None), {"events"}),  # a repeated signup starts nothing
        (("confirm", "pending", "opted_in", "scanner_signal"), {"events", "confirmations", "opt_ins",
                                                              "confirmations_with_scanner_signal"}),
        (("start_word", "pending", "opted_in", None), {"events", "confirmations", "opt_ins"}),  # SMS double opt-in
        (("start_word", "none", "opted_in", None), {"events", "opt_ins"}),  # keyword-only: nothing was pending
        (("stop_word", "opted_in", "opted_out", None), {"events", "opt_outs", "opted_in_exits"}),
        (("stop_word", "opted_out", "opted_out", None), {"events"}),  # a second STOP is evidence, not an opt-out
        (("unsubscribe", "opted_in", "opted_out", "rfc8058_one_click"),
         {"events", "opt_outs", "opted_in_exits", "opt_outs_one_click"}),
        (("unsubscribe", "opted_in", "opted_out", "unsubscribe_page"),
         {"events", "opt_outs", "opted_in_exits", "opt_outs_unsubscribe_page"}),
        (("unsubscribe", "opted_in", "opted_out", "preference_centre"),
         {"events", "opt_outs", "opted_in_exits", "opt_outs_preference_centre"}),
        (("unsubscribe", "opted_in", "opted_out", "api"), {"events", "opt_outs", "opted_in_exits", "opt_outs_api"}),
        (("unsubscribe", "opted_in", "opted_out", None), {"events", "opt_outs", "opted_in_exits"}),  # way unknown
        (("unsubscribe", "opted_out", "opted_out", "api"), {"events"}),  # a repeat changes nothing
        (("lapse", "pending", "expired", None), {"events", "lapsed"}),
        (("validity_ended", "opted_in", "expired", None), {"events", "expired", "opted_in_exits"}),
        (("objection", "none", "objected", "sticker"), {"events", "objections", "objections_sticker"}),
        (("robinson_match", "none", "objected", "robinson"), {"events", "robinson_matches"}),
        (("permission_granted", "none", "opted_in", None), {"events", "opt_ins", "push_granted"}),
        (("permission_denied", "none", "declined", None), {"events", "declined", "push_denied"}),
        (("uninstalled", "opted_in", "opted_out", None), {"events", "opt_outs", "opted_in_exits", "push_token_gone"}),
        (("erasure", "opted_in", "opted_out", None), {"events", "opt_outs", "opted_in_exits", "erasures"}),
    ],
)  # fmt: skip
def test_each_event_adds_to_the_counters_docs_reporting_names(event, expected):
    assert set(consent_metrics_of(*event)) == expected


def test_the_consoles_opt_out_causes_split_an_unsubscribe_by_the_way_it_came():
    metrics = {"opt_outs": 7, "opt_outs_unsubscribe_page": 1, "opt_outs_one_click": 2, "opt_outs_api": 3,
               "opt_outs_preference_centre": 0}  # fmt: skip
    assert opt_out_causes("unsubscribe", metrics) == {
        "unsubscribe": 3,  # the link in a mail: its page and one-click
        "unsubscribe_preference_centre": 0,
        "unsubscribe_api": 3,
        "unsubscribe_other": 1,  # counted before the way was kept apart
    }
    assert opt_out_causes("stop_word", {"opt_outs": 2, "opt_outs_api": 0}) == {"stop_word": 2}


def test_nearest_rank_percentiles_over_weighted_values():
    assert percentile([], 0.5) is None
    assert percentile([(30, 1), (60, 1), (600, 1)], 0.5) == 60
    assert percentile([(30, 1), (60, 1), (600, 1)], 0.9) == 600
    assert percentile([(5, 99), (1000, 1)], 0.99) == 5
    assert percentile([(5, 98), (1000, 2)], 0.99) == 1000


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=200), st.floats(0.01, 1.0))
def test_a_weighted_percentile_equals_the_percentile_of_the_values_written_out(values, fraction):
    weighted: dict[int, int] = {}
    for value in values:
        weighted[value] = weighted.get(value, 0) + 1
    ordered = sorted(values)
    rank = max(1, -(-fraction * len(values) // 1))
    assert percentile(weighted.items(), fraction) == ordered[int(rank) - 1]


def test_buckets_start_where_postgresql_date_trunc_does():
    start = datetime(2026, 12, 2, 5, tzinfo=UTC)  # a Wednesday
    assert buckets(start, start + timedelta(hours=3), "hour")[-1] == start + timedelta(hours=2)
    assert buckets(start, start + timedelta(days=1), "day") == [datetime(2026, 12, 2, tzinfo=UTC),
                                                                datetime(2026, 12, 3, tzinfo=UTC)]  # fmt: skip
    assert buckets(start, start + timedelta(days=7), "week")[0] == datetime(2026, 11, 30, tzinfo=UTC)  # Monday
    assert buckets(start, datetime(2027, 2, 1, tzinfo=UTC), "month") == [
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    ]


def _query(**overrides):
    params = {"start": None, "end": None, "granularity": "day", "group_by": None, "channels": (), "purposes": (),
              "allowed_groups": CONSENT_GROUPS, "now": NOW} | overrides  # fmt: skip
    return parse_query(**params)


def test_the_default_range_is_30_days_up_to_the_end_of_today_or_of_this_hour():
    query = _query()
    assert query.end == datetime(2026, 12, 5, tzinfo=UTC)
    assert query.end - query.start == timedelta(days=30)
    assert _query(granularity="hour", start=datetime(2026, 12, 1, tzinfo=UTC)).end == datetime(
        2026, 12, 4, 22, tzinfo=UTC
    )
    assert _query(group_by=" channel,trigger,channel ").group_by == ("channel", "trigger")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"granularity": "year"}, "invalid_granularity"),
        ({"group_by": "provider"}, "invalid_group_by"),
        ({"start": datetime(2026, 12, 1, 0, 30, tzinfo=UTC)}, "invalid_range"),
        ({"start": datetime(2026, 12, 1)}, "timezone_required"),  # noqa: DTZ001  # the mistake under test
        ({"start": datetime(2026, 12, 5, tzinfo=UTC), "end": datetime(2026, 12, 4, tzinfo=UTC)}, "invalid_range"),
        ({"start": datetime(2025, 1, 1, tzinfo=UTC)}, "range_too_long"),
        ({"start": datetime(2026, 10, 1, tzinfo=UTC), "granularity": "hour"}, "range_too_long"),
    ],
)
def test_bad_parameters_name_what_is_wrong(overrides, code):
    with pytest.raises(InvalidInput) as raised:
        _query(**overrides)
    assert raised.value.code == code


def test_csv_cells_are_neutralised_like_the_other_exports():
    assert csv_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_safe("@SUM(A1)") == "'@SUM(A1)"
    assert csv_safe("-3") == "-3"  # a negative count (net growth) stays a number
    assert csv_safe("+4915112345678") == "+4915112345678"
    assert csv_safe("form:=x") == "form:=x"
    report = ReportOut(
        from_=NOW, to=NOW, granularity="day", group_by=["source"], metrics=["opt_ins", "opted_in_total"],
        series=[ReportRowOut(bucket=NOW, group={"source": "=cmd"}, metrics={"opt_ins": 1, "opted_in_total": None})],
        source_names={"=cmd": "@key name"},
    )  # fmt: skip
    assert to_csv(report).splitlines() == [
        "bucket,source,source_name,opt_ins,opted_in_total",
        "2026-12-04T21:17:00Z,'=cmd,'@key name,1,",
    ]
