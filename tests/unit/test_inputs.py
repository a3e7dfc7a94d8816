"""Finding a NUL character in raw JSON and form bodies without decoding them."""

from __future__ import annotations

import json

import pytest

from app.lib.inputs import form_has_nul, json_has_nul


@pytest.mark.parametrize(
    ("value", "has_nul"),
    [
        ("plain", False),
        ("a\u0000b", True),
        ("\u0000", True),
        ("a\\u0000", False),  # a backslash, then the text u0000
        ("a\\\u0000", True),  # a backslash, then a NUL
        ("a\\\\u0000", False),
    ],
)
def test_json_has_nul_tells_a_nul_from_its_escaped_spelling(value, has_nul):
    body = json.dumps({"name": value}).encode()
    assert json.loads(body)["name"] == value
    assert json_has_nul(body) is has_nul


def test_form_has_nul_finds_an_encoded_or_a_raw_nul():
    assert form_has_nul(b"Body=STOP%00&From=x")
    assert form_has_nul(b"Body=STOP\0")
    assert not form_has_nul(b"Body=STOP%2000&From=x")
