"""Signals that a confirmation link was followed by a mail scanner (CHANNEL_RULES.md §1.4, E19)."""

from __future__ import annotations

import pytest

from app.domain.scanners import FAST_CONFIRMATION, NO_USER_AGENT, SCANNER_USER_AGENT, scanner_signals

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
# link scanners, sandboxes and preview fetchers, each named by the one marker it is known by
SCANNERS = {
    "bingpreview": "Mozilla/5.0 (Windows NT 10.0) BingPreview/1.0b",
    "barracuda": "Barracuda Sentinel (EE)",
    "proofpoint": "Proofpoint URL Defense",
    "mimecast": "Mimecast Link Checker",
    "safelinks": "Microsoft SafeLinks",
    "ms-office": "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
    "microsoft office": "Microsoft Office Existence Discovery",
    "appengine-google": "AppEngine-Google; (+http://code.google.com/appengine)",
    "googleimageproxy": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)",
    "symantec": "Symantec Web Isolation",
    "trendmicro": "TrendMicro URL Filter",
    "forcepoint": "Forcepoint Web Security",
    "ironport": "Cisco IronPort WSA",
    "fortiguard": "FortiGuard URL Rating",
    "sophos": "Sophos Email Protection",
    "zscaler": "Zscaler Link Sandbox",
    "headlesschrome": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0",
    "phantomjs": "Mozilla/5.0 (Unknown; Linux x86_64) PhantomJS/2.1.1",
    "python-requests": "python-requests/2.32.3",
    "go-http-client": "Go-http-client/1.1",
    "curl/": "curl/8.5.0",
    "wget/": "Wget/1.21.4",
    "urlscan": "urlscan.io checker",
    "bot": "Slackbot-LinkExpanding 1.0",
    "spider": "Baiduspider-render/2.0",
    "crawler": "facebookexternalhit crawler/1.1",
}


@pytest.mark.parametrize(("marker", "agent"), SCANNERS.items())
def test_each_known_scanner_is_flagged_by_its_own_marker(marker, agent):
    others = [m for m in SCANNERS if m != marker and m in agent.lower()]
    assert others == [], "each example is recognised by exactly one marker"
    assert scanner_signals(agent, 600, 10) == [SCANNER_USER_AGENT]
    assert scanner_signals(agent.upper(), 600, 10) == [SCANNER_USER_AGENT]


def test_a_browser_clicking_late_sends_no_signal():
    assert scanner_signals(BROWSER, 600, 10) == []
    assert scanner_signals(BROWSER, None, 10) == []


def test_a_click_faster_than_the_threshold_is_flagged_and_one_at_the_threshold_is_not():
    assert scanner_signals(BROWSER, 9.999, 10) == [FAST_CONFIRMATION]
    assert scanner_signals(BROWSER, 10, 10) == []
    assert scanner_signals(BROWSER, 0, 10) == [FAST_CONFIRMATION]


@pytest.mark.parametrize("agent", [None, "", "   ", "\t\n"])
def test_no_user_agent_is_a_signal_of_its_own(agent):
    assert scanner_signals(agent, 600, 10) == [NO_USER_AGENT]
    assert scanner_signals(agent, 1, 10) == [FAST_CONFIRMATION, NO_USER_AGENT]


def test_a_fast_scanner_carries_both_signals_in_order():
    assert scanner_signals("  curl/8.5.0  ", 0.5, 10) == [FAST_CONFIRMATION, SCANNER_USER_AGENT]


def test_the_signals_are_stored_under_stable_names():
    assert (FAST_CONFIRMATION, SCANNER_USER_AGENT, NO_USER_AGENT) == (
        "fast_confirmation",
        "scanner_user_agent",
        "no_user_agent",
    )
