"""The built-in SMS/WhatsApp replies (CHANNEL_RULES.md §2.5): whole sentences whatever the workspace has set."""

from __future__ import annotations

import msgspec
import pytest

from app.workspaces.settings import PhoneSettings, ReplyTexts, WorkspaceSettings, reply_text

KINDS = ("opt_in", "help", "stop", "not_subscribed")


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_reply_without_a_help_contact_or_signup_page_leaves_their_clause_out(language, kind):
    text = reply_text(WorkspaceSettings(brand="Acme"), kind, language, purposes="News")
    assert text.endswith("."), text
    for dangling in (" or.", " at.", " oder.", " unter.", ": .", "an:", "first:", "  "):
        assert dangling not in text, text
    assert text.startswith("Acme") or "Acme" in text


@pytest.mark.parametrize(
    ("language", "kind", "expected"),
    [
        ("en", "help", "Acme: Help at help@acme.example. Msg&data rates may apply."),
        ("en", "stop", "Reply HELP for help or contact help@acme.example."),
        ("en", "not_subscribed", "To subscribe, please sign up first: https://acme.example/sms"),
        ("de", "help", "Acme: Hilfe unter help@acme.example."),
        ("de", "stop", "Hilfe: HILFE oder help@acme.example."),
        ("de", "not_subscribed", "Bitte melden Sie sich zuerst an: https://acme.example/sms"),
    ],
)
def test_a_reply_names_the_help_contact_and_signup_page_where_they_are_set(language, kind, expected):
    phone = PhoneSettings(help_contact="help@acme.example", signup_url="https://acme.example/sms")
    assert expected in reply_text(WorkspaceSettings(brand="Acme", phone=phone), kind, language)


def test_the_workspaces_own_text_is_used_as_written():
    own = ReplyTexts(help="{brand} hilft: 0800 123 456. {frequency}.")
    settings = WorkspaceSettings(brand="Acme", phone=PhoneSettings(texts={"de": own}))
    assert reply_text(settings, "help", "de") == "Acme hilft: 0800 123 456. Nachrichten nach Bedarf."
    other = msgspec.structs.replace(settings, locale="de")
    assert reply_text(other, "stop", "en").startswith("You are unsubscribed from Acme.")
