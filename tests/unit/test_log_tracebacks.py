"""A traceback in the console log shows no local variables: they held API keys and request bodies (hostile review)."""

from __future__ import annotations

import sys

from app.lib.observability import console_renderer


def _fail(secret: str) -> None:
    raise ValueError("boom " + secret[:3])


def test_the_console_traceback_shows_no_local_variables():
    secret = "csk_" + "live_" * 3  # built, so no source line the traceback quotes holds it
    try:
        _fail(secret)  # a local of the failing frame, which the traceback must not print
    except ValueError:
        info = sys.exc_info()
    line = console_renderer()(None, "error", {"event": "failed", "exc_info": info})
    assert "ValueError: boom csk" in line
    assert secret not in line
