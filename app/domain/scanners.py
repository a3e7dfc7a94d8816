"""Signals that a link was followed by a mail security scanner rather than by the person (CHANNEL_RULES.md §1.4).

The signals are recorded in the confirmation's evidence; they never block a real POST (a person clicking fast
is still a person) and are never applied to the RFC 8058 one-click POST, which is unattended by design.
"""

from __future__ import annotations

#: Substrings (lower case) of user agents of link scanners, sandboxes and preview fetchers.
SCANNER_AGENTS = (
    "bingpreview",
    "barracuda",
    "proofpoint",
    "mimecast",
    "safelinks",
    "ms-office",
    "microsoft office",
    "appengine-google",
    "googleimageproxy",
    "symantec",
    "trendmicro",
    "forcepoint",
    "ironport",
    "fortiguard",
    "sophos",
    "zscaler",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "go-http-client",
    "curl/",
    "wget/",
    "urlscan",
    "bot",
    "spider",
    "crawler",
)

FAST_CONFIRMATION = "fast_confirmation"
SCANNER_USER_AGENT = "scanner_user_agent"
NO_USER_AGENT = "no_user_agent"


def scanner_signals(user_agent: str | None, seconds_after_sending: float | None, threshold: float) -> list[str]:
    """The signals a confirmation carries: clicked within ``threshold`` seconds, a scanner's user agent, none."""
    signals: list[str] = []
    if seconds_after_sending is not None and seconds_after_sending < threshold:
        signals.append(FAST_CONFIRMATION)
    agent = (user_agent or "").strip().lower()
    if not agent:
        signals.append(NO_USER_AGENT)
    elif any(marker in agent for marker in SCANNER_AGENTS):
        signals.append(SCANNER_USER_AGENT)
    return signals
