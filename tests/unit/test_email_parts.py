"""Pure parts of the email channel: link tokens, webhook signatures, scanner signals, rendering, the outbox."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime

import pytest

from app.domain.scanners import FAST_CONFIRMATION, NO_USER_AGENT, SCANNER_USER_AGENT, scanner_signals
from app.emails import render
from app.emails.service import smtp_code
from app.emails.tokens import (
    UnsubscribeTarget,
    new_confirmation_token,
    sign_unsubscribe,
    token_hash,
    verify_unsubscribe,
)
from app.lib import signatures
from channel_providers.email import MailOutcome, OutboxSender, compose

KEY = b"k" * 32


def test_confirmation_tokens_are_random_256_bit_and_stored_as_sha256():
    tokens = {new_confirmation_token()[0] for _ in range(100)}
    assert len(tokens) == 100
    token, digest = new_confirmation_token()
    assert len(token) == 43  # 32 bytes, base64url
    assert digest == token_hash(token)
    assert len(digest) == 32
    assert token.encode() not in digest


@pytest.mark.parametrize("purpose", [uuid.uuid4(), None])
@pytest.mark.parametrize("message", [uuid.uuid4(), None])
def test_unsubscribe_tokens_round_trip(purpose, message):
    target = UnsubscribeTarget(uuid.uuid4(), purpose, message)
    token = sign_unsubscribe(KEY, target)
    assert verify_unsubscribe(KEY, token) == target
    assert token.startswith("2" if message else "1"), "version 1 tokens of mails already sent keep working"
    assert token.isascii()
    assert "=" not in token
    assert len(token) <= 108


def test_a_token_cannot_change_its_version_to_reread_its_body():
    """Version 1 with a purpose and version 2 without one both hold two ids: the MAC covers the version."""
    one = sign_unsubscribe(KEY, UnsubscribeTarget(uuid.uuid4(), uuid.uuid4()))
    two = sign_unsubscribe(KEY, UnsubscribeTarget(uuid.uuid4(), None, uuid.uuid4()))
    assert verify_unsubscribe(KEY, "2" + one[1:]) is None
    assert verify_unsubscribe(KEY, "1" + two[1:]) is None


def test_unsubscribe_tokens_cannot_be_forged_or_redirected():
    target = UnsubscribeTarget(uuid.uuid4(), uuid.uuid4())
    token = sign_unsubscribe(KEY, target)
    assert verify_unsubscribe(b"other" * 8, token) is None
    other = sign_unsubscribe(KEY, UnsubscribeTarget(uuid.uuid4(), None))
    spliced = token[:23] + other[23:]
    assert verify_unsubscribe(KEY, spliced) is None
    for broken in ("", "1", "1!!!!", token[:-1], "9" + token[1:], token + "A", "x" * 500):
        assert verify_unsubscribe(KEY, broken) is None


def test_webhook_signatures():
    body = b'{"events": []}'
    now = 1_800_000_000
    header = signatures.sign("secret" * 6, body, now)
    assert signatures.verify("secret" * 6, header, body, now)
    assert signatures.verify("secret" * 6, header, body, now + 299)
    assert not signatures.verify("secret" * 6, header, body, now + 301), "replayed too late"
    assert not signatures.verify("secret" * 6, header, body + b" ", now)
    assert not signatures.verify("other" * 7, header, body, now)
    assert not signatures.verify("secret" * 6, "", body, now)
    assert not signatures.verify("secret" * 6, "t=abc,v1=00", body, now)
    rotated = f"{header},v1={'0' * 64}"
    assert signatures.verify("secret" * 6, rotated, body, now), "any of several v1 values may match"


def test_scanner_signals():
    assert scanner_signals("Mozilla/5.0 (Windows NT 10.0) Firefox/130.0", 300, 10) == []
    assert scanner_signals("Mozilla/5.0 Firefox/130.0", 2.5, 10) == [FAST_CONFIRMATION]
    assert scanner_signals("BingPreview/1.0b", 300, 10) == [SCANNER_USER_AGENT]
    assert scanner_signals(None, 1, 10) == [FAST_CONFIRMATION, NO_USER_AGENT]
    assert scanner_signals("Mozilla/5.0", None, 10) == []


def test_locale_choice():
    assert render.locale_of("de-AT") == "de"
    assert render.locale_of(None, "en") == "en"
    assert render.locale_of("fr", "de") == "de"
    assert render.locale_of("fr", None) == "en"


@pytest.mark.parametrize("lang", ["de", "en"])
def test_confirmation_mail_is_plain_and_names_link_and_expiry(lang):
    mail = render.confirmation_mail(
        lang,
        brand="Acme <b>",
        purpose="Newsletter",
        link="https://c.example/c/abc",
        expires=datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        timezone="Europe/Berlin",
    )
    assert "https://c.example/c/abc" in mail.text
    assert "29.03.2026 01:30 CET" in mail.text or "2026-03-29 01:30 CET" in mail.text
    assert "Acme &lt;b&gt;" in mail.html, "the brand is escaped in HTML"
    assert 'href="https://c.example/c/abc"' in mail.html


def test_pages_escape_what_they_show():
    html = render.page("en", "confirm", address="<script>", purpose="x", brand="y")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


async def test_the_outbox_writes_complete_eml_files(tmp_path):
    sender = OutboxSender(tmp_path / "outbox")
    message = compose(sender="A <a@acme.example>", to="b@example.com", subject="Hi", text="Hello")
    result = await sender.send(message)
    assert result.outcome is MailOutcome.ACCEPTED
    [path] = (tmp_path / "outbox").iterdir()
    assert path.suffix == ".eml"
    assert "b@example.com" not in path.name, "no address in file names"
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed["Message-ID"] == result.message_id
    assert "@acme.example>" in result.message_id


@pytest.mark.parametrize(
    ("diagnostic", "code"),
    [
        ("5.1.1", "5.1.1"),
        ("550 5.1.1 <jane@example.com>: Recipient address rejected", "5.1.1"),
        ("452 4.2.2 Mailbox full (Jane Roe)", "4.2.2"),
        ("Mailbox full for jane@example.com", None),
        ("", None),
        (None, None),
    ],
)
def test_only_the_enhanced_status_code_of_a_diagnostic_is_kept(diagnostic, code):
    assert smtp_code(diagnostic) == code
