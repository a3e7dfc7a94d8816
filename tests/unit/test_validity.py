"""The spans a purpose's lifecycle is written in (app/domain/validity.py); the instants they give are computed by the
database and tested in tests/integration/test_consent_end_sql.py."""

from __future__ import annotations

import pytest

from app.domain.validity import Policy, Span, SpanError, parse_span, policy_of


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


def test_a_policy_ends_only_with_a_validity_or_an_inactivity() -> None:
    assert not Policy().ends
    assert not policy_of(None, None, "P30D").ends  # a re-permission span alone ends nothing
    assert policy_of("P24M", None).ends
    assert policy_of(None, "P18M") == Policy(inactivity=Span(18, 0))
