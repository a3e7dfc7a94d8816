"""The Twilio transport's form body is the one aiohttp's ``FormData`` makes of the same fields."""

from __future__ import annotations

import string
from urllib.parse import quote_plus

from aiohttp import FormData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel_providers.twilio import _quote_plus, form_body

TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.text(string.printable, max_size=40)
FIELDS = st.dictionaries(
    st.sampled_from(["To", "From", "Body", "StatusCallback", "ContentSid", "ContentVariables", "MessagingServiceSid"]),
    TEXT | st.lists(TEXT, max_size=3),
    max_size=6,
)


def test_every_ascii_character_is_quoted_as_quote_plus_quotes_it():
    for code in range(128):
        assert _quote_plus(chr(code)) == quote_plus(chr(code))


@settings(suppress_health_check=[HealthCheck.too_slow])  # a shared machine generates slowly
@given(FIELDS)
def test_the_body_is_the_one_aiohttp_makes(fields):
    assert form_body(fields) == FormData(fields)()._value
