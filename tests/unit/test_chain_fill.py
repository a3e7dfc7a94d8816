"""Filling a chain step's content with a run's variables (hostile review): plain text, escaped in HTML, bounded."""

from __future__ import annotations

import pytest

from app.chains.service import MAX_FILLED, ContentTooLarge, fill


def test_a_variable_is_plain_text_in_the_text_and_escaped_in_the_html():
    content = {"email": {"subject": "Hallo {{name}}", "text": "Code {{code}}", "html": "<p>Hallo {{name}}</p>"}}
    name = '<a href="https://evil.example/login">Konto bestätigen</a>'
    filled = fill(content, {"name": name, "code": "X1"})
    assert filled["email"]["subject"] == f"Hallo {name}"
    assert filled["email"]["text"] == "Code X1"
    assert filled["email"]["html"] == (
        "<p>Hallo &lt;a href=&quot;https://evil.example/login&quot;&gt;Konto bestätigen&lt;/a&gt;</p>"
    )


def test_an_unknown_placeholder_stays_and_a_value_is_never_filled_again():
    assert fill("{{a}} {{b}}", {"a": "{{b}}"}) == "{{b}} {{b}}"


def test_variables_repeated_by_many_placeholders_cannot_make_a_huge_field():
    html = "{{a}}" * 1000
    assert len(fill(html, {"a": "x" * 400})) == 400_000
    with pytest.raises(ContentTooLarge):
        fill(html, {"a": "x" * (MAX_FILLED // 1000 + 1)})
